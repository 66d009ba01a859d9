"""Raw reports are erased once their window is final; their ids stay for duplicates.

Against the real key-holder over HTTP (``aggregator_kit``): reports are ingested, the window
released (or refused), then the retention sweep runs at a moved test clock.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from aggregator_kit import HOUR, T0, RunningKeyholder, make_report, post_reports
from flask import Flask

from blindsum.server.aggregator.release import GRACE_SECONDS
from blindsum.server.aggregator.services import Aggregator

WINDOW = T0 - T0 % HOUR
DUE = WINDOW + HOUR + 600 + GRACE_SECONDS  # "latency": one-hour windows, 600 s late grace


def ciphertext_sizes(data_dir: Path) -> dict[tuple[bytes, int], int]:
    with contextlib.closing(sqlite3.connect(data_dir / "aggregator.db")) as db:
        rows = db.execute('SELECT report_id, "window", length(ciphertexts) FROM reports')
        return {(bytes(rid), window): size for rid, window, size in rows}


def service_of(app: Flask) -> Aggregator:
    return app.extensions["blindsum.aggregator"]


def test_released_window_loses_its_ciphertexts_after_the_retention_but_keeps_its_ids(
    app: Flask, client: Any, keyholder: RunningKeyholder,
) -> None:
    service = service_of(app)
    released = [make_report("latency", v) for v in (10, 20, 30)]
    assert post_reports(client, released).status_code == 200
    keyholder.clock.now = DUE
    assert [o.status for o in service.releases.release_due()] == ["released"]
    later = [make_report("latency", 5, now=DUE)]  # the next window, still open
    assert post_reports(client, later).status_code == 200
    retention = service.retention

    keyholder.clock.now = DUE + retention.retention_seconds - 1
    assert retention.sweep() == 0  # not yet: the retention has not passed
    keyholder.clock.now = DUE + retention.retention_seconds + 1
    assert retention.sweep() == 3
    sizes = ciphertext_sizes(service.config.data_dir)
    assert sorted(sizes[(r.report_id, WINDOW)] for r in released) == [0, 0, 0]
    assert sizes[(later[0].report_id, later[0].window)] > 0  # open windows are untouched
    assert retention.sweep() == 0  # nothing twice

    retry = post_reports(client, released[:1])  # an SDK retrying an acknowledged batch
    assert retry.status_code == 200
    assert retry.get_json() == {"v": 1, "accepted": 0, "duplicates": 1}
    published = client.get("/v1/published/latency").get_json()["results"]
    assert [r["window"] for r in published] == [WINDOW]


def test_refused_window_is_erased_too(app: Flask, client: Any,
                                      keyholder: RunningKeyholder) -> None:
    service = service_of(app)
    lonely = [make_report("latency", 10)]  # below min_contributors = 2: refused when due
    assert post_reports(client, lonely).status_code == 200
    keyholder.clock.now = DUE
    assert [o.status for o in service.releases.release_due()] == ["refused"]
    keyholder.clock.now = DUE + service.retention.retention_seconds + 1
    assert service.retention.sweep() == 1
    assert ciphertext_sizes(service.config.data_dir)[(lonely[0].report_id, WINDOW)] == 0


def test_gc_command_erases_settled_reports_and_refuses_a_foreign_directory(
    app: Flask, client: Any, keyholder: RunningKeyholder, tmp_path: Path, capsys: Any,
) -> None:
    from blindsum.server.cli import main

    service = service_of(app)
    assert post_reports(client, [make_report("latency", v) for v in (1, 2)]).status_code == 200
    keyholder.clock.now = DUE
    assert [o.status for o in service.releases.release_due()] == ["released"]
    # the command judges by the wall clock, years after the test clock's window
    assert main(["server", "gc", "--data-dir", str(service.config.data_dir),
                 "--retention-seconds", "0"]) == 0
    assert "erased the ciphertexts of 2 reports" in capsys.readouterr().out
    assert set(ciphertext_sizes(service.config.data_dir).values()) == {0}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["server", "gc", "--data-dir", str(empty)]) == 2
    assert "not an aggregator data directory" in capsys.readouterr().err
    assert list(empty.iterdir()) == []
