"""The aggregator's HTTP routes, one blueprint per resource (contract: docs/API.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, request

from blindsum.server.aggregator.auth import require_metrics
from blindsum.server.aggregator.budget import Budget
from blindsum.server.aggregator.dashboard import (
    PAGE_RESULTS,
    SPARK_WINDOWS,
    MetricState,
    render_index,
    render_metric,
    sections_for,
    windows_of,
)
from blindsum.server.aggregator.openapi import openapi_document
from blindsum.server.aggregator.published import (
    EXPORT_PARAMS,
    LIST_PARAMS,
    MAX_EXPORT,
    PublishedQuery,
    encode_cursor,
    export_csv,
    export_filename,
    parse_query,
    policy_of,
    range_links,
    result_json,
)
from blindsum.server.aggregator.release import ReleaseOutcome
from blindsum.server.aggregator.services import Aggregator
from blindsum.server.aggregator.store import STATES, StoredResult
from blindsum.server.aggregator.tokens import TokenRecord
from blindsum.server.bodies import BATCH_ITEMS, read_wire_body
from blindsum.server.http import reply
from blindsum.shared import codec
from blindsum.shared.codec import ReportBatch
from blindsum.shared.errors import BlindsumError, InvalidInput, NotFound
from blindsum.shared.policy import NAME_PATTERN, MetricPolicy

EXTENSION = "blindsum.aggregator"

keys = Blueprint("keys", __name__)
reports = Blueprint("reports", __name__)
published = Blueprint("published", __name__)
windows = Blueprint("windows", __name__)
meta = Blueprint("meta", __name__)
dashboard = Blueprint("dashboard", __name__, template_folder="templates")
BLUEPRINTS = (keys, reports, published, windows, meta, dashboard)
AUTHENTICATED = ((reports, "ingest"), (windows, "admin"))
PUBLIC = (keys, published, meta, dashboard)
RELEASE_FILTER_BYTES = 4096


def aggregator() -> Aggregator:
    service: Aggregator = current_app.extensions[EXTENSION]
    return service


def _require(role: str) -> TokenRecord:
    return aggregator().auth.require_role(role)


# -- keys: the manifest and CKKS contexts, relayed from the key-holder ---------------------


@keys.get("/v1/manifest")
def get_manifest() -> Response:
    return reply(dict(aggregator().manifests.manifest().document))


@keys.get("/v1/keys/<kid>/context")
def get_context(kid: str) -> Response:
    data = aggregator().manifests.context_bytes(kid)
    response = Response(data, mimetype="application/octet-stream")
    response.set_etag(hashlib.sha256(data).hexdigest())
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    return response.make_conditional(request)


# -- reports -------------------------------------------------------------------------------


@reports.post("/v1/reports")
def post_reports() -> Response:
    telemetry = aggregator().telemetry
    try:
        # before the body is read (strangers cost no parsing), inside the try so a wrong or
        # revoked token is counted as a refused batch, as the runbook's alert expects
        principal = _require("ingest")
        batch = ReportBatch.from_wire(read_wire_body(BATCH_ITEMS))
        require_metrics(principal, ((f"batch.reports[{index}]", report.metric)
                                    for index, report in enumerate(batch.reports)))
        receipt = aggregator().ingestor.ingest(batch, principal)
    except BlindsumError as exc:
        telemetry.refused_batches.labels(exc.code).inc()
        raise
    telemetry.reports.labels("accepted").inc(receipt.accepted)
    telemetry.reports.labels("duplicate").inc(receipt.duplicates)
    return reply(receipt.to_wire())


MAX_WINDOW = 2**40  # the wire format's largest window start (shared/codec.py)

# -- published results ---------------------------------------------------------------------


def _check_name(metric: str) -> None:
    if not NAME_PATTERN.match(metric):
        raise NotFound(f"no metric of that name (names match {NAME_PATTERN.pattern})")


def _require_known(metric: str) -> None:
    service = aggregator()
    known = not service.manifests.loaded or metric in service.manifests.manifest().policies
    if not known and not service.store.results_page(metric, limit=1):
        raise NotFound(f"metric {metric!r} is not in the manifest and has no results")


def _page(query: PublishedQuery) -> Response:
    service = aggregator()
    if query.metric is not None:
        _require_known(query.metric)
    rows = service.store.results_page(query.metric, query.start, query.end, query.after,
                                      query.limit + 1)
    page = rows[:query.limit]
    body: dict[str, Any] = {"results": [
        result_json(r, policy_of(service.manifests, r.metric, r.version)) for r in page]}
    if len(rows) > query.limit:
        body["next_cursor"] = encode_cursor(page[-1])
    return reply(body)


@published.get("/v1/published")
def get_published() -> Response:
    return _page(parse_query(request.args, request.args.getlist, LIST_PARAMS))


@published.get("/v1/published/<metric>")
def get_published_metric(metric: str) -> Response:
    _check_name(metric)
    allowed = [name for name in LIST_PARAMS if name != "metric"]
    return _page(parse_query(request.args, request.args.getlist, allowed, metric=metric))


@published.get("/v1/published/<metric>/windows/<int:window>")
def get_published_window(metric: str, window: int) -> Response:
    """One window's result, as ``blindsum verify`` reads it (the dashboard's "verify" link).

    A window released under several policy versions answers with the newest version's.
    """
    _check_name(metric)
    if request.args:
        raise InvalidInput(f"unknown query parameters {sorted(request.args)}: this endpoint "
                           "takes none")
    if window > MAX_WINDOW:
        raise NotFound(f"no window starts at {window}")
    service = aggregator()
    rows = service.store.results_page(metric, window, window + 1)
    if not rows:
        raise NotFound(f"metric {metric!r} has no published result for window {window}")
    newest = max(rows, key=lambda r: r.version)
    return reply(result_json(newest, policy_of(service.manifests, metric, newest.version)))


@published.get("/v1/published/<metric>/export.csv")
def get_export_csv(metric: str) -> Response:
    return _export(metric, "csv")


@published.get("/v1/published/<metric>/export.json")
def get_export_json(metric: str) -> Response:
    return _export(metric, "json")


def _export(metric: str, fmt: str) -> Response:
    _check_name(metric)
    query = parse_query(request.args, request.args.getlist, EXPORT_PARAMS, metric=metric)
    _require_known(metric)
    service = aggregator()
    rows = service.store.results_page(metric, query.start, query.end, limit=MAX_EXPORT + 1)
    if len(rows) > MAX_EXPORT:
        raise InvalidInput(f"more than {MAX_EXPORT} results in range: narrow it with from/to")
    pairs = [(r, policy_of(service.manifests, r.metric, r.version)) for r in rows]
    if fmt == "csv":
        response = Response(export_csv(pairs), mimetype="text/csv")
    else:
        body = {"metric": metric, "from": query.start, "to": query.end,
                "results": [result_json(r, policy) for r, policy in pairs]}
        response = Response(codec.dumps(body), mimetype=codec.JSON)
    filename = export_filename(metric, query, fmt)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# -- windows (operators) -------------------------------------------------------------------


@windows.get("/v1/windows")
def get_windows() -> Response:
    _require("admin")
    metric, state, window = _window_filters()
    rows = aggregator().store.windows(metric=metric, states=(state,) if state else STATES,
                                      window=window)
    return reply({"windows": [row.to_json() for row in rows]})


def _window_filters() -> tuple[str | None, str | None, int | None]:
    args = request.args
    unknown = set(args) - {"metric", "state", "window"}
    if unknown:
        raise InvalidInput(f"unknown query parameters {sorted(unknown)[:5]}: "
                           "filter by metric, state or window")
    if any(len(args.getlist(name)) > 1 for name in args):
        raise InvalidInput("give each query parameter at most once")
    metric, state, window = args.get("metric"), args.get("state"), args.get("window")
    if metric is not None and not NAME_PATTERN.match(metric):
        raise InvalidInput(f"metric must match {NAME_PATTERN.pattern}")
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {list(STATES)}")
    if window is not None and not (window.isascii() and window.isdigit()
                                   and len(window) <= 13 and int(window) <= 2**40):
        raise InvalidInput("window must be an integer window start in 0..2**40")
    return metric, state, None if window is None else int(window)


@windows.get("/v1/audit-heads")
def get_audit_heads() -> Response:
    """The key-holder's signed audit heads this server kept (for ``keyholder audit``)."""
    _require("admin")
    if request.args:
        raise InvalidInput("this endpoint takes no query parameters")
    return reply({"heads": aggregator().store.audit_heads()})


@windows.post("/v1/windows/release")
def post_release() -> Response:
    _require("admin")
    metric, window = _release_filters()
    service = aggregator()
    outcomes = service.releases.release_requested(metric, window)
    service.telemetry.count_releases(outcomes)
    return reply(_outcome_lists(outcomes))


def _release_filters() -> tuple[str | None, int | None]:
    # An absent body means "everything"; a chunked one has no Content-Length but is read.
    bodyless = request.content_length == 0 or (
        request.content_length is None and "chunked" not in
        request.headers.get("Transfer-Encoding", "").lower())
    data: Any = {} if bodyless else read_wire_body(64, max_bytes=RELEASE_FILTER_BYTES)
    if not isinstance(data, Mapping):
        raise InvalidInput("release request must be an object")
    unknown = set(data) - {"metric", "window", "v"}
    if unknown:
        raise InvalidInput(f"release request has unknown fields {sorted(map(str, unknown))}")
    if data.get("v", 1) != 1:
        raise InvalidInput(f"release request has unsupported version {data.get('v')!r}")
    metric = data.get("metric")
    if metric is not None and (not isinstance(metric, str) or not NAME_PATTERN.match(metric)):
        raise InvalidInput(f"release.metric must match {NAME_PATTERN.pattern}")
    window = data.get("window")
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= 2**40
    ):
        raise InvalidInput("release.window must be an integer window start in 0..2**40")
    return metric, window


def _outcome_lists(outcomes: list[ReleaseOutcome]) -> dict[str, list[dict[str, Any]]]:
    lists: dict[str, list[dict[str, Any]]] = {"released": [], "refused": [], "failed": []}
    for outcome in outcomes:
        lists[outcome.status].append(outcome.to_json())
    return lists


# -- meta ----------------------------------------------------------------------------------


@meta.get("/healthz")
def healthz() -> Response:
    manifests = aggregator().manifests
    if not manifests.loaded:
        manifests.refresh_on_demand()
    if manifests.loaded:
        return reply({"status": "ok", "manifest_serial": manifests.manifest().serial})
    return reply({"status": "no-manifest", "detail": manifests.last_error}, status=503)


@meta.get("/openapi.json")
def openapi() -> Response:
    return reply(openapi_document())


# -- dashboard -----------------------------------------------------------------------------


def _policy_for(result: StoredResult) -> MetricPolicy | None:
    return policy_of(aggregator().manifests, result.metric, result.version)


def _metric_state(name: str, results: list[StoredResult],
                  budgets: dict[str, Budget] | None) -> MetricState:
    service = aggregator()
    manifests = service.manifests
    manifest = manifests.manifest() if manifests.loaded else None
    policy = manifest.policies.get(name) if manifest is not None else None
    pause = manifest.paused.get(name) if manifest is not None else None
    return MetricState(name, policy, None if budgets is None else budgets.get(name),
                       budgets is not None, service.clock(), windows_of(results, _policy_for),
                       pause)


@dashboard.get("/")
def index() -> str:
    service = aggregator()
    names = set(service.store.result_metrics())
    if service.manifests.loaded:
        names |= set(service.manifests.manifest().policies)
    budgets = service.budget.states()
    states = [_metric_state(name, service.store.results_page(
        name, limit=SPARK_WINDOWS, newest_first=True)[::-1], budgets) for name in sorted(names)]
    return render_index(states, service.config.keyholder_identity)


@dashboard.get("/metrics/<metric>")
def metric_page(metric: str) -> str:
    _check_name(metric)
    args = {name: value for name, value in request.args.items() if value != ""}
    query = parse_query(args, request.args.getlist, EXPORT_PARAMS, metric=metric)
    _require_known(metric)
    service = aggregator()
    results = service.store.results_page(metric, query.start, query.end,
                                         limit=PAGE_RESULTS + 1)
    state = _metric_state(metric, results[:PAGE_RESULTS], service.budget.states())
    sections = sections_for(state, service.config.keyholder_identity,
                            service.config.report_retention_seconds)
    return render_metric(state, sections, range_links(query),
                         truncated=len(results) > PAGE_RESULTS)
