"""Reading published results: query parameters, keyset pages, the derived view, exports.

A result as served is its signed payload (every field, unchanged; the raw noisy value is
there), its signed ``document`` (verify it, not us), and ``derived``: what this server
computes from the payload and the policy for readers (a consistent histogram, intervals
clipped to the domain, a simultaneous band, a rounding step; see ``presentation.py``).
``derived`` is not signed and costs no privacy: it is post-processing of the release.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from blindsum.server.aggregator.manifests import ManifestSource
from blindsum.server.aggregator.presentation import View, build_view
from blindsum.server.aggregator.store import ResultKey, StoredResult
from blindsum.shared.codec import KEY_ID_PATTERN
from blindsum.shared.errors import BlindsumError, InvalidInput
from blindsum.shared.policy import NAME_PATTERN, MetricPolicy

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_EXPORT = 20_000  # results per export: a year of hourly windows, twice over
MAX_TIME = 2**40
LIST_PARAMS = ("metric", "from", "to", "limit", "cursor")
EXPORT_PARAMS = ("from", "to")
_MAX_CURSOR = 512


@dataclass(frozen=True)
class PublishedQuery:
    """Which results to list: a metric, window starts in ``[start, end)``, one page."""

    metric: str | None = None
    start: int | None = None
    end: int | None = None
    limit: int = DEFAULT_LIMIT
    after: ResultKey | None = None


def parse_query(args: Mapping[str, str], getlist: Callable[[str], list[str]],
                allowed: Iterable[str],
                metric: str | None = None) -> PublishedQuery:
    """Validate query parameters (each at most once, none unknown) into a query.

    Raises:
        InvalidInput: naming the parameter and what it accepts.
    """
    allowed = tuple(allowed)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown query parameters {unknown[:5]}: use {', '.join(allowed)}")
    repeated = sorted(name for name in args if len(getlist(name)) > 1)
    if repeated:
        raise InvalidInput(f"give each query parameter at most once ({', '.join(repeated)})")
    if "metric" in args:
        metric = args["metric"]
        if not NAME_PATTERN.match(metric):
            raise InvalidInput(f"metric must match {NAME_PATTERN.pattern}")
    start = parse_time("from", args["from"]) if "from" in args else None
    end = parse_time("to", args["to"]) if "to" in args else None
    if start is not None and end is not None and start >= end:
        raise InvalidInput(f"from ({start}) must be before to ({end})")
    limit = _limit(args["limit"]) if "limit" in args else DEFAULT_LIMIT
    after = decode_cursor(args["cursor"]) if "cursor" in args else None
    if after is not None and metric is not None and after[0] != metric:
        raise InvalidInput("cursor belongs to another metric's listing; start again without it")
    return PublishedQuery(metric, start, end, limit, after)


def parse_time(name: str, text: str) -> int:
    """Unix seconds, or an ISO 8601 date or date-time (UTC unless it says otherwise).

    Raises:
        InvalidInput: anything else, or a time before 1970 or after 2**40 s.
    """
    if text.isascii() and text.isdigit() and len(text) <= 13:
        seconds = int(text)
    else:
        try:
            if len(text) > 40 or not text.isascii():
                raise ValueError
            when = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise InvalidInput(f"{name} must be unix seconds or an ISO 8601 date/time such as "
                               f"2026-12-01 or 2026-12-01T10:00:00Z, got {text[:40]!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = math.floor(when.timestamp())
    if not 0 <= seconds <= MAX_TIME:
        raise InvalidInput(f"{name} must lie between 1970 and 2**40 unix seconds")
    return seconds


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not \
            1 <= int(text) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}, got {text[:20]!r}")
    return int(text)


def encode_cursor(result: StoredResult) -> str:
    """An opaque cursor resuming a listing after ``result``."""
    key = [result.metric, result.window, result.version, result.key_id]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> ResultKey:
    """The key a cursor from ``encode_cursor`` resumes after.

    Raises:
        InvalidInput: not a cursor this server issued.
    """
    bad = InvalidInput("cursor is not one this server issued; start again without it")
    if len(text) > _MAX_CURSOR or not text.isascii():
        raise bad
    try:
        key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise bad from None
    if not (isinstance(key, list) and len(key) == 4 and isinstance(key[0], str)
            and NAME_PATTERN.match(key[0]) and isinstance(key[3], str)
            and KEY_ID_PATTERN.match(key[3])
            and all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= MAX_TIME
                    for k in key[1:3])):
        raise bad
    return key[0], key[1], key[2], key[3]


def policy_of(manifests: ManifestSource, metric: str, version: int) -> MetricPolicy | None:
    """The manifest's policy of exactly this metric version, if a manifest is loaded."""
    if not manifests.loaded:
        return None
    policy = manifests.manifest().policies.get(metric)
    return policy if policy is not None and policy.version == version else None


def view_of(result: StoredResult, policy: MetricPolicy | None) -> View | None:
    """The reader's view of a stored result, or None if its payload cannot be read as one."""
    try:
        return build_view(result.result, policy)
    except BlindsumError:
        return None


def result_json(result: StoredResult, policy: MetricPolicy | None) -> dict[str, Any]:
    """A result as served: signed payload fields, the signed document, the derived view."""
    view = view_of(result, policy)
    return {**result.payload, "document": result.document,
            "derived": None if view is None else view.to_json()}


# -- exports -----------------------------------------------------------------------------

CSV_COLUMNS = (
    "metric", "version", "kid", "window", "window_start_utc", "window_seconds",
    "report_count", "slot", "label", "noisy_value", "value", "shown", "ci_low", "ci_high",
    "ci_low_clipped", "ci_high_clipped", "simultaneous_low", "simultaneous_high",
    "low_signal", "mechanism", "epsilon", "delta", "rho", "scale", "released_at",
    "audit_seq",
)


def _cell(value: Any) -> str:
    """Floats in shortest round-trip form (``repr``) so a CSV reads back exactly."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_rows(result: StoredResult, policy: MetricPolicy | None) -> list[dict[str, str]]:
    """One row per slot (one for a count, sum or mean; one per bucket or coordinate)."""
    view = view_of(result, policy)
    if view is None:
        return []
    typed = result.result
    signed = list(typed.value) if isinstance(typed.value, tuple) else [typed.value]
    cis = [typed.ci] if typed.scalar else list(typed.ci)
    start = datetime.fromtimestamp(result.window, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {"window_seconds": typed.window_seconds, "report_count": typed.report_count,
              "mechanism": typed.mechanism, "epsilon": typed.epsilon, "delta": typed.delta,
              "rho": typed.rho, "scale": typed.scale, "released_at": typed.released_at,
              "audit_seq": typed.audit_seq}
    rows = []
    for index, (slot, value, (low, high)) in enumerate(zip(view.slots, signed, cis,
                                                           strict=True)):
        row = {**common, "metric": result.metric, "version": result.version,
               "kid": result.key_id, "window": result.window, "window_start_utc": start,
               "slot": index, "label": slot.label, "noisy_value": slot.raw, "value": value,
               "shown": slot.shown, "ci_low": low, "ci_high": high,
               "ci_low_clipped": slot.low, "ci_high_clipped": slot.high,
               "simultaneous_low": slot.simultaneous_low,
               "simultaneous_high": slot.simultaneous_high, "low_signal": slot.low_signal}
        rows.append({name: _cell(row.get(name)) for name in CSV_COLUMNS})
    return rows


def export_csv(results: Iterable[tuple[StoredResult, MetricPolicy | None]]) -> str:
    """Long-format CSV: a header, then one row per published slot."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result, policy in results:
        writer.writerows(csv_rows(result, policy))
    return out.getvalue()


def export_filename(metric: str, query: PublishedQuery, extension: str) -> str:
    def stamp(seconds: int | None, default: str) -> str:
        if seconds is None:
            return default
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%dT%H%M%SZ")

    return f"{metric}_{stamp(query.start, 'start')}_{stamp(query.end, 'now')}.{extension}"


def range_links(query: PublishedQuery) -> dict[str, str]:
    """What the metric page's range form and export links need for ``query``'s range."""
    params = [f"{name}={value}" for name, value in (("from", query.start), ("to", query.end))
              if value is not None]

    def day(seconds: int | None) -> str:
        return "" if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime(
            "%Y-%m-%d")

    if query.start is None and query.end is None:
        label = "every window"
    else:
        label = (f"windows from {day(query.start) or 'the first'} to "
                 f"{day(query.end) or 'now'}")
    return {"suffix": "?" + "&".join(params) if params else "", "label": label,
            "from_date": day(query.start), "to_date": day(query.end)}
