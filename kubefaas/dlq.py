"""`kubefaas dlq`: list, redrive and purge dead-lettered async invocations on a gateway.

    kubefaas dlq list [--function NS/NAME] [--limit N] [--json]
    kubefaas dlq redrive ID
    kubefaas dlq purge ID
    kubefaas dlq purge --all [--function NS/NAME]

It talks to the gateway's admin routes over HTTP (`--gateway`, default
http://127.0.0.1:8080) with the admin token from `--token` or `$KUBEFAAS_ADMIN_TOKEN`.
Only the standard library is used, so the command works wherever `kubefaas` is installed,
without the gateway's dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
TOKEN_ENV = "KUBEFAAS_ADMIN_TOKEN"
REQUEST_TIMEOUT_SECONDS = 30.0
PAGE_SIZE = 100

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class DlqError(Exception):
    """A failure to report to the user as one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubefaas dlq",
        description="List, redrive or purge dead-lettered async invocations on a gateway.",
    )
    parser.add_argument(
        "--gateway", default=DEFAULT_GATEWAY, help=f"gateway base URL (default {DEFAULT_GATEWAY})"
    )
    parser.add_argument("--token", help=f"admin bearer token (default ${TOKEN_ENV})")
    commands = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="show dead letters, oldest first")
    listing.add_argument("--function", help="only this function (NS/NAME, or NAME)")
    listing.add_argument(
        "--limit", type=int, default=None, help="show at most this many (default: all)"
    )
    listing.add_argument("--json", action="store_true", help="print the records as JSON lines")

    redrive = commands.add_parser("redrive", help="queue a dead letter again")
    redrive.add_argument("id", help="invocation id")

    purge = commands.add_parser("purge", help="delete one dead letter, or all of them")
    purge.add_argument("id", nargs="?", help="invocation id")
    purge.add_argument("--all", action="store_true", help="every dead letter (see --function)")
    purge.add_argument("--function", help="with --all: only this function's (NS/NAME, or NAME)")
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run one dlq command; returns the process exit status."""
    out = out if out is not None else sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        print(
            f"kubefaas dlq: no admin token: pass --token or set {TOKEN_ENV} "
            "(the same value the gateway was started with)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    client = _Client(args.gateway, token)
    try:
        if args.action == "list":
            return _list(client, args.function, args.limit, args.json, out)
        if args.action == "redrive":
            record = client.call("POST", f"/{_quote(args.id)}/redrive")
            print(f"redriven {record['invocationId']} ({record['function']}): queued", file=out)
            return EXIT_OK
        if args.id and args.all:
            parser.error("purge takes an ID or --all, not both")
        if args.id:
            if args.function:
                parser.error("--function goes with --all")
            client.call("DELETE", f"/{_quote(args.id)}")
            print(f"purged {args.id}", file=out)
            return EXIT_OK
        if not args.all:
            parser.error("purge needs an ID, or --all to purge every dead letter")
        query = {"function": args.function} if args.function else {}
        purged = client.call("DELETE", "", query)["purged"]
        scope = f" of {args.function}" if args.function else ""
        print(f"purged {purged} dead letter(s){scope}", file=out)
        return EXIT_OK
    except DlqError as exc:
        print(f"kubefaas dlq: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _list(
    client: _Client, function: str | None, limit: int | None, as_json: bool, out: TextIO
) -> int:
    shown = 0
    cursor: str | None = None
    if not as_json:
        print(
            f"{'INVOCATION':<36}  {'FUNCTION':<28}  {'ATTEMPTS':>8}  REASON / LAST ERROR", file=out
        )
    while True:
        query: dict[str, str] = {"limit": str(PAGE_SIZE)}
        if function:
            query["function"] = function
        if cursor:
            query["cursor"] = cursor
        page = client.call("GET", "", query)
        for record in page["items"]:
            if limit is not None and shown >= limit:
                return EXIT_OK
            shown += 1
            if as_json:
                print(json.dumps(record), file=out)
                continue
            error = record.get("error") or {}
            reason = (record.get("deadLetter") or {}).get("reason", "")
            detail = error.get("errorMessage") or error.get("message") or ""
            print(
                f"{record['invocationId']:<36}  {record['function']:<28}  "
                f"{len(record['attempts']):>8}  {reason}: {detail[:80]}",
                file=out,
            )
        cursor = page.get("nextCursor")
        if not cursor:
            break
    if not as_json and shown == 0:
        print("(no dead letters)", file=out)
    return EXIT_OK


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class _Client:
    def __init__(self, gateway: str, token: str) -> None:
        self.base = gateway.rstrip("/") + "/system/dead-letters"
        self.gateway = gateway
        self.token = token

    def call(self, method: str, path: str, query: dict[str, str] | None = None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(
            url,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise DlqError(_describe(exc)) from None
        except urllib.error.URLError as exc:
            raise DlqError(
                f"cannot reach the gateway at {self.gateway}: {exc.reason} "
                "(is it running? pass --gateway URL)"
            ) from None
        except TimeoutError:
            raise DlqError(
                f"the gateway at {self.gateway} did not answer in {REQUEST_TIMEOUT_SECONDS:g}s"
            ) from None
        except ValueError:
            raise DlqError(
                f"{self.gateway} did not answer with JSON: is it a kubefaas gateway?"
            ) from None


def _describe(exc: urllib.error.HTTPError) -> str:
    """The gateway's own error message when it sent one, with a hint for the usual causes."""
    message = ""
    try:
        body = json.loads(exc.read())
        message = str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        pass
    hint = {
        401: f" (check --token / ${TOKEN_ENV})",
        403: "",
    }.get(exc.code, "")
    return f"{exc.code} {exc.reason}: {message or 'no details'}{hint}"
