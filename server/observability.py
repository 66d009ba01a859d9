"""What both services show operators: request ids, access log, Prometheus metrics, readiness.

- ``X-Request-Id``: taken from the request when it is a short token (so a proxy's or an SDK's
  id follows the request), otherwise made here; echoed on every answer and in every log line.
- Access log: one JSON line per request (method, route, status, duration, request id). No
  client address (it is personal data, and the service has no use for it), no query string,
  no header, no body.
- ``/metrics``: counters and histograms of this app, plus collectors that read state at
  scrape time (windows by state, budget left). With several gunicorn workers the server sets
  ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts (``server/metrics_dir.py``), and a
  scrape sums every worker's files. Labels are routes, statuses, outcomes and error codes:
  never a token, a value or an aggregate.
- ``/readyz``: the service's own checks (storage writable, peers reachable...), each named in
  the answer; 503 problem document when one fails. ``/healthz`` stays a liveness check.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from blindsum.server.http import problem

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
EXTENSION = "blindsum.telemetry"
access_log = logging.getLogger("blindsum.access")
log = logging.getLogger("blindsum.observability")

Check = Callable[[], str | None]
"""A readiness check: None when ready, else a one-line reason (no secret in it)."""


@dataclass
class Telemetry:
    """The metrics of one app, in their own registry (no module-level state)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    reports: Counter
    refused_batches: Counter
    refused_proofs: Counter
    releases: Counter
    upstream_errors: Counter
    live: list[Collector]

    @classmethod
    def build(cls, live: Sequence[Collector] = ()) -> Telemetry:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter("blindsum_http_requests", "HTTP requests answered",
                             ["route", "method", "status"], registry=registry),
            latency=Histogram("blindsum_http_request_seconds", "Time to answer a request",
                              ["route", "method"], registry=registry,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                       5, 10, 30)),
            reports=Counter("blindsum_reports", "Reports stored, by outcome (accepted, "
                            "duplicate)", ["outcome"], registry=registry),
            refused_batches=Counter("blindsum_refused_batches", "Report batches refused "
                                    "as a whole, by error code", ["reason"],
                                    registry=registry),
            refused_proofs=Counter("blindsum_refused_proofs", "Reports refused at ingest "
                                   "for their validity proof, by reason (missing, "
                                   "unexpected, malformed, invalid)", ["reason"],
                                   registry=registry),
            releases=Counter("blindsum_releases", "Window releases by outcome (released, "
                             "refused, failed) and code", ["outcome", "reason"],
                             registry=registry),
            upstream_errors=Counter("blindsum_upstream_errors", "Failed calls to a peer "
                                    "service, by operation", ["operation"],
                                    registry=registry),
            live=list(live),
        )

    def count_releases(self, outcomes: Iterable[Any]) -> None:
        """Count release outcomes (anything with ``status`` and ``code``, e.g. ReleaseOutcome)."""
        for outcome in outcomes:
            self.releases.labels(outcome.status, getattr(outcome, "code", None) or "").inc()
            if outcome.status == "failed":
                self.upstream_errors.labels("release").inc()

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = self.registry
        scrape = CollectorRegistry()
        for collector in (registry, *self.live):
            scrape.register(collector)
        return generate_latest(scrape)


def telemetry() -> Telemetry:
    found: Telemetry = current_app.extensions[EXTENSION]
    return found


def install_observability(
    app: Flask, metrics: Telemetry, checks: Iterable[tuple[str, Check]]
) -> Blueprint:
    """Request ids, access log, ``/metrics`` and ``/readyz`` on ``app``.

    Returns the blueprint of ``/metrics`` and ``/readyz`` (public: rate-limit it with the
    other public routes).
    """
    app.extensions[EXTENSION] = metrics
    named_checks = tuple(checks)

    @app.before_request
    def _begin() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        g.started = time.monotonic()

    @app.after_request
    def _end(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        seconds = time.monotonic() - g.get("started", time.monotonic())
        try:
            metrics.requests.labels(route, request.method, str(response.status_code)).inc()
            metrics.latency.labels(route, request.method).observe(seconds)
        except Exception:  # counting must never turn an answer into a 500
            log.exception("could not update request metrics")
        access_log.info("%s %s %d", request.method, route, response.status_code, extra={
            "fields": {"method": request.method, "route": route,
                       "status": response.status_code,
                       "duration_ms": round(seconds * 1000, 1),
                       "error_code": g.get("error_code")}})
        return response

    blueprint = _endpoints(named_checks)
    app.register_blueprint(blueprint)
    return blueprint


def _endpoints(checks: tuple[tuple[str, Check], ...]) -> Blueprint:
    blueprint = Blueprint("observability", __name__)

    @blueprint.get("/metrics")
    def metrics() -> Response:
        return Response(telemetry().exposition(),
                        content_type="text/plain; version=0.0.4; charset=utf-8")

    @blueprint.get("/readyz")
    def readyz() -> Response:
        results = {name: check() for name, check in checks}
        failed = {name: reason for name, reason in results.items() if reason is not None}
        if not failed:
            return Response('{"status": "ready"}', content_type="application/json")
        detail = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
        response = problem(503, "Not ready", detail, "not-ready",
                           extensions={"checks": {name: reason or "ok"
                                                  for name, reason in results.items()}})
        response.headers["Retry-After"] = "10"
        return response

    return blueprint
