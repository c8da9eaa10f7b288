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


def _cmd_build(args: argparse.Namespace) -> int:
    from kubefaas import oci
    from kubefaas.build import build_image, image_dependency_cache
    from kubefaas.deps import InstallFailed

    if not args.directory.is_dir():
        print(f"error: {args.directory}: not a folder", file=sys.stderr)
        return EXIT_USAGE
    if args.output is None and args.push is None:
        print("error: give --output ARCHIVE and/or --push REGISTRY/NAME[:TAG]", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.push is not None:
            oci.split_reference(args.push)
    except ValueError as exc:
        print(f"error: --push {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        base = oci.read_archive(args.base)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: --base {args.base}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        built = build_image(args.directory, base=base, cache=image_dependency_cache(args.cache_dir))
    except InstallFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for label, layer in (("dependencies", built.deps), ("code", built.code)):
        if layer is not None:
            print(f"{label} layer: {layer.blob.digest} ({len(layer.blob.data)} bytes)")
    if args.output is not None:
        tag = oci.split_reference(args.push)[2] if args.push else None
        oci.write_archive(built.image, args.output, tag=tag)
        print(f"wrote {args.output}")
    if args.push is not None:
        host = args.push.split("/", 1)[0].rsplit(":", 1)[0]
        plain = args.plain_http or host in ("127.0.0.1", "localhost", "[::1]")
        try:
            oci.push(built.image, args.push, scheme="http" if plain else "https")
        except (OSError, ValueError, oci.PushError) as exc:
            print(f"error: push to {args.push}: {exc}", file=sys.stderr)
            return 1
        host, name, _ = oci.split_reference(args.push)
        print(f"pushed {args.push}: {host}/{name}@{built.image.digest}")
    print(f"image digest: {built.image.digest}")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    import yaml

    from kubefaas import oci
    from kubefaas.api import InvalidFunction
    from kubefaas.deploy import apply, build_all
    from kubefaas.deps import InstallFailed

    if not args.path.exists():
        print(f"error: {args.path}: no such file or folder", file=sys.stderr)
        return EXIT_USAGE
    host = args.registry.split("/", 1)[0].rsplit(":", 1)[0]
    plain = args.plain_http or host in ("127.0.0.1", "localhost", "[::1]")
    try:
        base = oci.read_archive(args.base)
        deployed = build_all(
            args.path,
            base=base,
            registry=args.registry,
            cache_dir=args.cache_dir,
            scheme="http" if plain else "https",
        )
    except (InvalidFunction, InstallFailed, oci.PushError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for item in deployed:
        name = item.document["metadata"]["name"]
        print(f"{name}: {item.image or 'unchanged (no build needed)'}", file=sys.stderr)
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump_all([d.document for d in deployed], sort_keys=False))
        return 0
    return apply(deployed, args.kubectl.split())


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

    build = commands.add_parser(
        "build",
        help="build a function folder into an OCI image (no Docker)",
        description="Build the function folder DIR (its files, and the packages of its "
        "requirements.txt) into an OCI image on top of the runtime image, written as an OCI "
        "archive and/or pushed to a registry (docs/packaging.md).",
    )
    build.add_argument("directory", type=Path, metavar="DIR", help="the function's folder")
    build.add_argument(
        "--base", type=Path, required=True, help="the runtime image, as an OCI archive"
    )
    build.add_argument("--output", "-o", type=Path, default=None, help="OCI archive to write")
    build.add_argument("--push", default=None, metavar="REGISTRY/NAME[:TAG]", help="push here")
    build.add_argument(
        "--plain-http", action="store_true", help="the registry speaks HTTP (loopback: always)"
    )
    build.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".state") / "build",
        help="where installed requirements are cached (default .state/build)",
    )
    build.set_defaults(handler=_cmd_build)

    deploy = commands.add_parser(
        "deploy",
        help="build, push and apply Functions whose code needs an image",
        description="For every Function at PATH (a manifest or a folder of them) with "
        "spec.code.path or inline code with a requirements.txt: build its image, push it to "
        "REGISTRY/<namespace>-<name>, and apply the Function with spec.image pinned by "
        "digest (kubectl apply). Other Functions are applied as they are.",
    )
    deploy.add_argument("path", type=Path, metavar="PATH", help="a manifest or a folder")
    deploy.add_argument("--base", type=Path, required=True, help="the runtime image (OCI archive)")
    deploy.add_argument("--registry", required=True, help="REGISTRY[/PREFIX] to push to")
    deploy.add_argument("--plain-http", action="store_true", help="the registry speaks HTTP")
    deploy.add_argument("--kubectl", default="kubectl", help="the kubectl command to apply with")
    deploy.add_argument("--dry-run", action="store_true", help="print the Functions, apply none")
    deploy.add_argument(
        "--cache-dir", type=Path, default=Path(".state") / "build", help="installed requirements"
    )
    deploy.set_defaults(handler=_cmd_deploy)

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

    from kubefaas.observe_cli import add_commands as add_observe_commands

    add_observe_commands(commands)  # logs, usage

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
