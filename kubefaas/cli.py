"""The `kubefaas` command line: one entry point for every component.

Components are imported only by the command that needs them, so `kubefaas crd` works
without the gateway's or operator's dependencies installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubefaas import __version__, limits

DESCRIPTION = """\
kubefaas: serverless functions (handler(event, context)) on Kubernetes, or locally.

`kubefaas COMMAND --help` explains each command's options.
"""

EXIT_USAGE = 2


def _cmd_local(args: argparse.Namespace) -> int:
    from kubefaas_gateway.local_mode import serve_local

    options = {"host": args.host, "port": args.port}
    if args.state_dir is not None:
        options["state_dir"] = args.state_dir
    if args.redis_url is not None:
        options["redis_url"] = args.redis_url
    if args.console:
        options["console"] = True
    return int(serve_local(args.directory, **options) or 0)


def _cmd_validate(args: argparse.Namespace) -> int:
    from kubefaas.manifests import load_directory

    if not args.path.exists():
        print(f"error: {args.path}: no such file or folder", file=sys.stderr)
        return EXIT_USAGE
    result = load_directory(args.path)
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    for fn in result.functions:
        print(f"ok: {fn.key}")
    return 1 if result.errors else 0


def _cmd_crd(args: argparse.Namespace) -> int:
    from kubefaas.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    from kubefaas_operator.main import run

    return int(run(args) or 0)


def _cmd_gateway(args: argparse.Namespace) -> int:
    from kubefaas_gateway.cluster_mode import serve_cluster

    return int(serve_cluster(host=args.host, port=args.port) or 0)


def _cmd_dlq(argv: list[str]) -> int:
    from kubefaas.dlq import main as dlq_main

    return int(dlq_main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubefaas",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubefaas {__version__}")
    # The command list of `kubefaas --help` is argparse's own, so it is always the real one.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    local = commands.add_parser(
        "local",
        help="serve Function manifests as local processes, no cluster",
        description="Serve every Function manifest in DIR (YAML, several documents per file "
        "allowed) through the gateway on HOST:PORT, running each function as local runtime "
        "processes that scale to zero when idle. Bad manifests are reported with their file, "
        "field and rule; the good ones are served.",
    )
    local.add_argument("directory", type=Path, metavar="DIR", help="folder of manifests")
    local.add_argument("--host", default="127.0.0.1", help="address to listen on")
    local.add_argument("--port", type=int, default=limits.GATEWAY_PORT, help="port to listen on")
    local.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the durable async queue (SQLite) is kept",
    )
    local.add_argument(
        "--redis-url", default=None, help="use Redis Streams for the async queue instead"
    )
    local.add_argument(
        "--console",
        action="store_true",
        help="serve the web console at /console (log in with $KUBEFAAS_ADMIN_TOKEN)",
    )
    local.set_defaults(handler=_cmd_local)

    validate = commands.add_parser(
        "validate",
        help="check Function manifests and report every problem",
        description="Validate Function manifests with the same rules the API server applies.",
    )
    validate.add_argument("path", type=Path, help="a manifest file or a folder of them")
    validate.set_defaults(handler=_cmd_validate)

    crd = commands.add_parser(
        "crd",
        help="print the Function CRD generated from the API model",
        description="Print the CRD YAML generated from the Python API model.",
    )
    crd.set_defaults(handler=_cmd_crd)

    operator = commands.add_parser(
        "operator",
        help="run the kopf operator (Functions into Deployments, Services)",
        description="Reconcile Functions into ConfigMaps, Deployments and Services, and run "
        "the autoscaler. Uses KUBECONFIG or the in-cluster service account.",
    )
    operator.add_argument(
        "--namespace",
        action="append",
        default=None,
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    operator.add_argument(
        "--gateway-url",
        default=None,
        help="base URL reported in Function status (default from KUBEFAAS_GATEWAY_URL)",
    )
    operator.add_argument("--verbose", action="store_true", help="debug logging")
    operator.set_defaults(handler=_cmd_operator)

    gateway = commands.add_parser(
        "gateway",
        help="run the HTTP gateway against a Kubernetes cluster",
        description="Serve invocations for the Functions of a Kubernetes cluster, routing to "
        "their pods and activating functions scaled to zero.",
    )
    gateway.add_argument("--host", default="0.0.0.0", help="address to listen on")
    gateway.add_argument("--port", type=int, default=limits.GATEWAY_PORT, help="port to listen on")
    gateway.set_defaults(handler=_cmd_gateway)

    commands.add_parser(
        "dlq",
        help="list, redrive or purge dead-lettered async invocations",
        description="See `kubefaas dlq --help`.",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dlq"]:
        return _cmd_dlq(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
