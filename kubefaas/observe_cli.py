"""`kubefaas logs` and `kubefaas usage`: what a function printed, and what it used.

    kubefaas logs FUNCTION [--invocation ID] [--since 10m] [--follow] [--namespace NS]
                  [--gateway URL | --cluster [--kubeconfig PATH]]
    kubefaas usage [--by function|namespace] [--since 30d] [--namespace NS] [--json]

See docs/logs.md. Against a gateway (`--gateway`, default http://127.0.0.1:8080, the
admin token or a namespace token from `--token`, else `$KUBEFAAS_NAMESPACE_TOKEN`, else
`$KUBEFAAS_ADMIN_TOKEN`) `logs` reads the local mode's function log
store through `GET /system/logs`; with `--cluster` it reads the pod logs of every instance
of the function through the API server instead (`kubefaas.kube_logs`). Lines are printed
as the function wrote them: JSON lines, ready for `jq`. `usage` prints a table from
`GET /system/usage`. Only the standard library is used for the gateway calls.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
TOKEN_ENV = "KUBEFAAS_ADMIN_TOKEN"
NAMESPACE_TOKEN_ENV = "KUBEFAAS_NAMESPACE_TOKEN"
REQUEST_TIMEOUT_SECONDS = 30.0
FOLLOW_INTERVAL_SECONDS = 1.0
PAGE = 1000
KEPT_LIMIT = 10_000  # the most `GET /system/logs` gives in one page

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


class ObserveError(Exception):
    """A failure to report to the user as one line, without a traceback."""


def parse_duration(text: str) -> float:
    """`10m` -> 600.0; units s, m, h, d (seconds without a unit)."""
    found = _DURATION.match(text)
    if not found:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number with s, m, h or d (e.g. 10m, 30d)"
        )
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gateway",
        default=None,
        help=f"gateway base URL (default {DEFAULT_GATEWAY}; with --cluster, also read the "
        "lines the gateway kept of ended pods)",
    )
    parser.add_argument(
        "--token",
        help=f"the admin token or a namespace token (default ${NAMESPACE_TOKEN_ENV}, "
        f"else ${TOKEN_ENV}); a namespace token sees its own namespaces only",
    )


def add_commands(commands: Any) -> None:
    """Add `logs` and `usage` to the `kubefaas` command list."""
    logs = commands.add_parser(
        "logs",
        help="show what a function's instances printed (JSON lines)",
        description="Print the log lines of FUNCTION, oldest first: from the local gateway's "
        "store, or with --cluster from the pod logs of every instance through the API server.",
    )
    logs.add_argument("function", metavar="FUNCTION", help="NAME or NS/NAME")
    logs.add_argument("--namespace", default=None, help="namespace (default: default)")
    logs.add_argument("--invocation", default=None, help="only the lines of this invocation id")
    logs.add_argument(
        "--since", type=parse_duration, default=None, help="only lines newer than this (10m)"
    )
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument("--cluster", action="store_true", help="read pod logs through the API server")
    logs.add_argument("--kubeconfig", default=None, help="with --cluster (default $KUBECONFIG)")
    _common(logs)
    logs.set_defaults(handler=run_logs)

    usage = commands.add_parser(
        "usage",
        help="requests, GB-seconds and cold starts per function or namespace",
        description="Print metered usage from the gateway's usage API as a table.",
    )
    usage.add_argument("--by", choices=("function", "namespace"), default="function")
    usage.add_argument(
        "--since", type=parse_duration, default=parse_duration("30d"), help="default 30d"
    )
    usage.add_argument("--namespace", default=None, help="only this namespace")
    usage.add_argument("--json", action="store_true", help="print the rows as JSON")
    _common(usage)
    usage.set_defaults(handler=run_usage)


def _split(function: str, namespace: str | None) -> tuple[str, str]:
    if "/" in function:
        ns, _, name = function.partition("/")
        return ns, name
    return namespace or "default", function


def run_logs(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    namespace, name = _split(args.function, args.namespace)
    try:
        if args.cluster:
            from kubefaas.kube_logs import print_pod_logs

            kept = None
            if args.gateway is not None:
                kept_client = _client(args)

                def kept(since: float | None) -> list[str]:
                    query = {"function": f"{namespace}/{name}", "limit": str(KEPT_LIMIT)}
                    if since is not None:
                        query["since"] = str(since)
                    page = kept_client.get("/system/logs", query)
                    return [str(item["line"]) for item in page["items"]]

            return print_pod_logs(
                namespace,
                name,
                invocation=args.invocation,
                since_seconds=args.since,
                follow=args.follow,
                kubeconfig=args.kubeconfig,
                out=out,
                kept=kept,
            )
        client = _client(args)
        query: dict[str, str] = {"function": f"{namespace}/{name}", "limit": str(PAGE)}
        if args.invocation:
            query["invocation"] = args.invocation
        if args.since is not None:
            query["since"] = str(args.since)
        after: int | None = None
        while True:
            if after is not None:
                query["after"] = str(after)
            page = client.get("/system/logs", query)
            for item in page["items"]:
                print(item["line"], file=out)
                after = item["seq"]
            out.flush()
            if not args.follow:
                return EXIT_OK
            if after is None:
                after = 0
            query.pop("since", None)
            time.sleep(FOLLOW_INTERVAL_SECONDS)
    except ObserveError as exc:
        print(f"kubefaas logs: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


def run_usage(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    now = time.time()
    query = {"from": f"{now - args.since:.3f}", "to": f"{now + 60:.3f}"}
    if args.namespace:
        query["namespace"] = args.namespace
    try:
        items = _client(args).get("/system/usage", query)["items"]
    except ObserveError as exc:
        print(f"kubefaas usage: {exc}", file=sys.stderr)
        return EXIT_FAILED
    rows = group_usage(items, by=args.by)
    if args.json:
        for row in rows:
            print(json.dumps(row), file=out)
        return EXIT_OK
    print(usage_table(rows, by=args.by), file=out)
    return EXIT_OK


def group_usage(items: list[dict[str, Any]], *, by: str) -> list[dict[str, Any]]:
    """Rows per function (`ns/name`) or per namespace, summed exactly (MiB-ms)."""
    grouped: dict[str, dict[str, Any]] = {}
    for item in items:
        key = item["namespace"] if by == "namespace" else f"{item['namespace']}/{item['function']}"
        row = grouped.setdefault(
            key, {by: key, "requests": 0, "mibMilliseconds": 0, "coldStarts": 0}
        )
        row["requests"] += item["requests"]
        row["mibMilliseconds"] += item["mibMilliseconds"]
        row["coldStarts"] += item["coldStarts"]
    for row in grouped.values():
        row["gbSeconds"] = row["mibMilliseconds"] / (1024 * 1000)
    return [grouped[key] for key in sorted(grouped)]


def usage_table(rows: list[dict[str, Any]], *, by: str) -> str:
    header = f"{by.upper():<40}  {'REQUESTS':>10}  {'GB-SECONDS':>14}  {'COLD STARTS':>11}"
    lines = [header]
    for row in rows:
        lines.append(
            f"{row[by]:<40}  {row['requests']:>10}  {row['gbSeconds']:>14.6f}  "
            f"{row['coldStarts']:>11}"
        )
    if not rows:
        lines.append("(no usage in this period)")
    return "\n".join(lines)


class _Client:
    def __init__(self, gateway: str | None, token: str) -> None:
        self.gateway = (gateway or DEFAULT_GATEWAY).rstrip("/")
        self.token = token

    def get(self, path: str, query: dict[str, str]) -> Any:
        url = f"{self.gateway}{path}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            message = ""
            with contextlib.suppress(ValueError, KeyError, TypeError):
                message = str(json.loads(exc.read())["error"]["message"])
            hint = (
                f" (check --token, ${NAMESPACE_TOKEN_ENV}, ${TOKEN_ENV})" if exc.code == 401 else ""
            )
            raise ObserveError(
                f"{exc.code} {exc.reason}: {message or 'no details'}{hint}"
            ) from None
        except urllib.error.URLError as exc:
            raise ObserveError(
                f"cannot reach the gateway at {self.gateway}: {exc.reason} "
                "(is it running? pass --gateway URL)"
            ) from None
        except TimeoutError:
            raise ObserveError(f"the gateway at {self.gateway} did not answer in time") from None
        except ValueError:
            raise ObserveError(f"{self.gateway} did not answer with JSON") from None


def _client(args: argparse.Namespace) -> _Client:
    token = args.token or os.environ.get(NAMESPACE_TOKEN_ENV) or os.environ.get(TOKEN_ENV)
    if not token:
        raise ObserveError(
            f"no token: pass --token, or set {NAMESPACE_TOKEN_ENV} (a namespace token) "
            f"or {TOKEN_ENV} (the admin token)"
        )
    return _Client(args.gateway, token)


def main(argv: Sequence[str]) -> int:
    """For tests: `main(["logs", ...])` as the `kubefaas` command would run it."""
    parser = argparse.ArgumentParser(prog="kubefaas")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))
