"""The aggregator's HTTP routes, one blueprint per resource (contract: docs/API.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, request

from blindsum.server.aggregator.dashboard import render_dashboard
from blindsum.server.aggregator.openapi import openapi_document
from blindsum.server.aggregator.release import ReleaseOutcome
from blindsum.server.aggregator.services import Aggregator
from blindsum.server.aggregator.store import STATES, StoredResult
from blindsum.server.http import read_body, reply, require_token
from blindsum.shared.codec import ReportBatch
from blindsum.shared.errors import InvalidInput, NotFound
from blindsum.shared.policy import NAME_PATTERN

EXTENSION = "blindsum.aggregator"

keys = Blueprint("keys", __name__)
reports = Blueprint("reports", __name__)
published = Blueprint("published", __name__)
windows = Blueprint("windows", __name__)
meta = Blueprint("meta", __name__)
dashboard = Blueprint("dashboard", __name__)
BLUEPRINTS = (keys, reports, published, windows, meta, dashboard)


def aggregator() -> Aggregator:
    service: Aggregator = current_app.extensions[EXTENSION]
    return service


def _require(role: str) -> None:
    require_token(aggregator().token_digests, role)


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
    _require("ingest")
    data, _ = read_body()
    receipt = aggregator().ingestor.ingest(ReportBatch.from_wire(data))
    return reply(receipt.to_wire())


# -- published results ---------------------------------------------------------------------


def _published(results: list[StoredResult]) -> dict[str, Any]:
    return {"results": [{**r.payload, "document": r.document} for r in results]}


@published.get("/v1/published")
def get_published() -> Response:
    return reply(_published(aggregator().store.results()))


@published.get("/v1/published/<metric>")
def get_published_metric(metric: str) -> Response:
    service = aggregator()
    results = service.store.results(metric)
    known = not service.manifests.loaded or metric in service.manifests.manifest().policies
    if not results and not known:
        raise NotFound(f"metric {metric!r} is not in the manifest and has no results")
    return reply(_published(results))


# -- windows (operators) -------------------------------------------------------------------


@windows.get("/v1/windows")
def get_windows() -> Response:
    _require("admin")
    metric = request.args.get("metric")
    state = request.args.get("state")
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {list(STATES)}")
    rows = aggregator().store.windows(metric=metric, states=(state,) if state else STATES)
    return reply({"windows": [row.to_json() for row in rows]})


@windows.post("/v1/windows/release")
def post_release() -> Response:
    _require("admin")
    metric, window = _release_filters()
    outcomes = aggregator().releases.release_requested(metric, window)
    return reply(_outcome_lists(outcomes))


def _release_filters() -> tuple[str | None, int | None]:
    data: Any = read_body()[0] if request.content_length else {}
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


@dashboard.get("/")
def index() -> str:
    return render_dashboard(aggregator().store.results())
