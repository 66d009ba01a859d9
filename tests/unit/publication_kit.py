"""A published history for the publication tests: several released windows per metric.

Real parts only: reports are encrypted by the kit, posted to the aggregator app, and each
window is released by the app's own release driver through the real key-holder on loopback;
the test clock moves from one window to the next. ``serving`` puts the aggregator app on
127.0.0.1 too (werkzeug in a thread), for the CLI, the notebook and the browser.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from typing import Any

from aggregator_kit import HOUR, T0, RunningKeyholder, make_report, post_reports
from flask import Flask
from werkzeug.serving import make_server

from blindsum.server.aggregator.release import GRACE_SECONDS
from blindsum.server.aggregator.services import Aggregator

FIRST_WINDOW = T0 - T0 % HOUR
WINDOWS = 5


def _values(metric: str, index: int, rng: random.Random) -> list[Any]:
    if metric == "visits":
        return [1, 1, 0, 1][: 2 + index % 3]
    if metric == "latency":
        return [rng.uniform(100, 900) for _ in range(4)]
    if metric == "pages":
        return [rng.choice([0.5, 1.5, 1.5, 2.5]) for _ in range(6)]
    return [[rng.uniform(0, 10) for _ in range(8)] for _ in range(3)]


def publish_history(client: Any, app: Flask, keyholder: RunningKeyholder,
                    metrics: tuple[str, ...] = ("visits", "latency", "pages"),
                    windows: int = WINDOWS) -> list[int]:
    """Report and release ``windows`` consecutive hourly windows of each metric.

    Returns the window starts. The clock ends after the last window was released.
    """
    service: Aggregator = app.extensions["blindsum.aggregator"]
    rng = random.Random(11)
    starts = []
    for index in range(windows):
        start = FIRST_WINDOW + index * HOUR
        keyholder.clock.now = start + 1200
        reports = [make_report(metric, value, now=keyholder.clock.now)
                   for metric in metrics for value in _values(metric, index, rng)]
        response = post_reports(client, reports)
        assert response.status_code == 200, response.get_data(as_text=True)
        keyholder.clock.now = start + HOUR + 600 + GRACE_SECONDS + 1
        outcomes = service.releases.release_due()
        assert {o.status for o in outcomes} == {"released"}, outcomes
        starts.append(start)
    return starts


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 until exit; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
