"""``blindsum published | windows | release``: the server's HTTP API for collectors and operators.

Every command calls the running server, never its database, and writes only to stdout: a
read-only command creates no file. The admin token comes from ``--token`` (``-`` reads it
from stdin, so it need not appear in process arguments) or ``BLINDSUM_ADMIN_TOKEN``; it is
sent as a bearer token and never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import requests

from blindsum.client.transport import Answer, error_from_answer
from blindsum.server.aggregator.rounding import format_number
from blindsum.shared.errors import InvalidConfig, UpstreamError

SERVER_ENV = "BLINDSUM_SERVER_URL"
TOKEN_ENV = "BLINDSUM_ADMIN_TOKEN"
DEFAULT_SERVER = "http://127.0.0.1:8700"
TIMEOUT = (5.0, 60.0)
RELEASE_TIMEOUT = (5.0, 600.0)  # a release waits for the key-holder to decrypt and noise
PAGE = 1000


class ServerApi:
    """Plain HTTP to one aggregator server; errors become the project's exceptions."""

    def __init__(self, url: str, token: str | None = None, ca_bundle: str | None = None):
        if not url.startswith(("http://", "https://")):
            raise InvalidConfig(f"server URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self._token = token
        self._verify: str | bool = ca_bundle or True

    def get(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self._call("POST", path, json_body=body, timeout=RELEASE_TIMEOUT)

    def _call(self, method: str, path: str, params: dict[str, Any] | None = None,
              json_body: Any = None, timeout: tuple[float, float] = TIMEOUT,
              ) -> requests.Response:
        headers = {"Accept": "application/json", "User-Agent": "blindsum-cli/1"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        query = f"?{urlencode(params)}" if params else ""
        try:
            response = requests.request(method, self.url + path + query, json=json_body,
                                        headers=headers, timeout=timeout, verify=self._verify)
        except requests.exceptions.SSLError as exc:
            raise UpstreamError(f"TLS with {self.url} failed: {exc}") from None
        except requests.RequestException as exc:
            raise UpstreamError(f"cannot reach the server at {self.url} "
                                f"({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise error_from_answer(Answer(response.status_code, response.reason or "",
                                           response.headers, response.content))
        return response


def _api(args: argparse.Namespace, admin: bool) -> ServerApi:
    token = None
    if admin:
        token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
        if token == "-":
            token = sys.stdin.readline()
        token = (token or "").strip()
        if not token or any(c in token for c in "\r\n"):
            raise InvalidConfig(f"an admin token is needed: --token TOKEN, --token - (stdin) "
                                f"or {TOKEN_ENV}")
    return ServerApi(args.server, token, args.ca_bundle)


def _range(args: argparse.Namespace) -> dict[str, str]:
    return {name: value for name, value in (("from", args.start), ("to", args.end))
            if value is not None}


def _pages(api: ServerApi, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        page = api.get("/v1/published",
                       {**params, "limit": PAGE, **({"cursor": cursor} if cursor else {})})
        body = page.json()
        yield from body["results"]
        cursor = body.get("next_cursor")
        if not cursor:
            return


def _shown(result: dict[str, Any]) -> tuple[str, str]:
    """The value and interval as the dashboard shows them (the derived view, rounded)."""
    derived = result.get("derived") or {}
    step = derived.get("rounding_step")
    value, ci = derived.get("value", result.get("value")), derived.get("ci", result.get("ci"))

    def fmt(x: Any) -> str:
        if not isinstance(x, int | float):
            return str(x)
        return format_number(x, step) if isinstance(step, float) and step > 0 else f"{x:g}"

    if isinstance(value, list):
        return f"{len(value)} values: [{', '.join(fmt(v) for v in value[:8])}" + (
            ", …]" if len(value) > 8 else "]"), "per value: see --format json"
    return fmt(value), f"{fmt(ci[0])} to {fmt(ci[1])}"


def cmd_published(args: argparse.Namespace) -> int:
    api = _api(args, admin=False)
    if args.format == "csv":
        if args.metric is None:
            raise InvalidConfig("--format csv exports one metric: give --metric")
        response = api.get(f"/v1/published/{quote(args.metric, safe='')}/export.csv",
                           _range(args))
        sys.stdout.write(response.text)
        return 0
    params = {**_range(args), **({"metric": args.metric} if args.metric else {})}
    results = list(_pages(api, params))
    if args.format == "json":
        print(json.dumps({"results": results}))
        return 0
    rows = [("METRIC", "WINDOW (UTC)", "VALUE", "95% INTERVAL", "REPORTS", "EPSILON")]
    for result in results:
        window = datetime.fromtimestamp(result["window"], UTC).strftime("%Y-%m-%d %H:%M")
        value, ci = _shown(result)
        rows.append((result["metric"], window, value, ci, str(result["report_count"]),
                     f"{result['epsilon']:g}"))
    _table(rows)
    if len(rows) == 1:
        print("no published results match", file=sys.stderr)
    return 0


def cmd_windows(args: argparse.Namespace) -> int:
    api = _api(args, admin=True)
    params = {name: value for name, value in (("metric", args.metric), ("state", args.state),
                                              ("window", args.window)) if value is not None}
    windows = api.get("/v1/windows", params).json()["windows"]
    if args.json:
        print(json.dumps({"windows": windows}))
        return 0
    rows = [("METRIC", "VERSION", "WINDOW", "KEY", "REPORTS", "STATE", "DETAIL")]
    rows += [(w["metric"], str(w["version"]), str(w["window"]), w["kid"],
              str(w["report_count"]), w["state"], w.get("detail") or "") for w in windows]
    _table(rows)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    api = _api(args, admin=True)
    body = {name: value for name, value in (("metric", args.metric), ("window", args.window))
            if value is not None}
    outcome = api.post("/v1/windows/release", body).json()
    if args.json:
        print(json.dumps(outcome))
    else:
        for status in ("released", "refused", "failed"):
            for item in outcome.get(status, []):
                what = f"{item['metric']} v{item['version']} window {item['window']}"
                why = "" if status == "released" else f": {item.get('detail')}"
                print(f"{status:8} {what} ({item['report_count']} reports){why}")
        if not any(outcome.get(s) for s in ("released", "refused", "failed")):
            print("nothing to release")
    return 1 if outcome.get("failed") else 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


def _window_start(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"window must be a window start in unix seconds, "
                                         f"got {text!r}")
    return int(text)


def add_parsers(roles: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``published``, ``windows`` and ``release`` on the top-level parser."""

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--server", default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
                         help=f"server base URL (or set {SERVER_ENV}; default {DEFAULT_SERVER})")
        sub.add_argument("--ca-bundle", help="CA file that verifies the server's certificate")

    def admin(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--token", help=f"admin token ('-': read it from stdin; default "
                                         f"${TOKEN_ENV})")

    published = roles.add_parser("published", help="published results (public, read-only)")
    common(published)
    published.add_argument("--metric", help="one metric (default: every metric)")
    published.add_argument("--from", dest="start", metavar="TIME",
                           help="windows starting at or after TIME (unix seconds or ISO 8601)")
    published.add_argument("--to", dest="end", metavar="TIME",
                           help="windows starting before TIME")
    published.add_argument("--format", choices=("table", "json", "csv"), default="table")
    published.set_defaults(handler=cmd_published)

    windows = roles.add_parser("windows", help="window aggregates and their state (admin)")
    common(windows)
    admin(windows)
    windows.add_argument("--metric")
    windows.add_argument("--state", choices=("open", "sealed", "released", "refused"))
    windows.add_argument("--window", type=_window_start, help="one window start")
    windows.add_argument("--json", action="store_true", help="print JSON")
    windows.set_defaults(handler=cmd_windows)

    release = roles.add_parser("release", help="release windows now (admin; early if the "
                                               "policy allows)")
    common(release)
    admin(release)
    release.add_argument("--metric", help="default: every metric")
    release.add_argument("--window", type=_window_start, help="default: every open window")
    release.add_argument("--json", action="store_true", help="print JSON")
    release.set_defaults(handler=cmd_release)
