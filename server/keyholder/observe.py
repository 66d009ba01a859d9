"""Operators' view of the key-holder: request ids, access log, metrics, readiness.

Added around the app that ``create_app`` builds, from the outside: releases are counted and
logged from the answer to ``POST /v1/releases`` (201 released; a problem document refused,
with its code), and the budget gauges are read from the ledger at scrape time. A release
log line names the outcome and the error code only: the metric, window and value stay in
the signed result and the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client.core import GaugeMetricFamily, Metric

from blindsum.server.keyholder import ledger
from blindsum.server.keyholder.service import Keyholder
from blindsum.server.observability import Telemetry, install_observability
from blindsum.server.readiness import storage_check

log = logging.getLogger("blindsum.keyholder.releases")
RELEASE_ROUTE = "/v1/releases"


class BudgetGauges:
    """``blindsum_budget_{spent,remaining}_epsilon{metric}`` and releases per metric."""

    def __init__(self, holder: Keyholder) -> None:
        self._holder = holder

    def collect(self) -> Iterator[Metric]:
        db = self._holder.db
        states = [ledger.budget(db.conn, policy) for policy in db.current_policies()]
        spent = GaugeMetricFamily("blindsum_budget_spent_epsilon",
                                  "Privacy budget spent (epsilon, basic composition)",
                                  labels=["metric"])
        left = GaugeMetricFamily("blindsum_budget_remaining_epsilon",
                                 "Privacy budget left (epsilon)", labels=["metric"])
        for state in states:
            spent.add_metric([state.metric], state.spent_epsilon)
            left.add_metric([state.metric], state.remaining_epsilon)
        yield spent
        yield left


def instrument(app: Flask) -> Flask:
    """Install observability on a key-holder app built by ``create_app``."""
    holder: Keyholder = app.extensions["blindsum.keyholder"]
    telemetry = Telemetry.build([BudgetGauges(holder)])
    install_observability(app, telemetry, [("storage", storage_check(holder.db.path.parent))])

    @app.after_request
    def _count_release(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else None
        if rule != RELEASE_ROUTE or request.method != "POST":
            return response
        if response.status_code == 201:
            outcome, code = "released", ""
        elif response.status_code == 200:
            # a retry whose first answer was lost: the stored document again, nothing drawn
            outcome, code = "repeated", ""
        else:
            code = g.get("error_code") or str(response.status_code)
            outcome = "failed" if response.status_code >= 500 else "refused"
        telemetry.releases.labels(outcome, code).inc()
        window = g.get("release_window") or {}
        what = (f" metric {window['metric']!r} version {window['version']} window "
                f"{window['window']} key {window['kid']!r}" if window else "")
        log.info("release %s%s%s", outcome, what, f" ({code})" if code else "",
                 extra={"fields": {"outcome": outcome, "error_code": code or None, **window}})
        return response

    return app
