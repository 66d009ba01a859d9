"""A token created with a per-window report cap cannot send more than that into a window:
the excess is refused, nothing of its batch is stored, and retries of stored reports do not
count against the cap."""

from __future__ import annotations

import json

import pytest
from security_kit import (
    keyholder_manifest,
    paillier_report,
    post_reports,
    problem,
    receipt,
    run_cli,
    windows_of,
)

from blindsum.client import Client, ReportsDropped
from blindsum.server.processes import Deployment

METRIC = "sec_capped"


def test_reports_beyond_a_tokens_cap_are_refused_and_change_nothing(
    deployed: Deployment,
) -> None:
    code, out, err, _ = run_cli(["server", "token", "create", "--data-dir",
                                 str(deployed.server_dir), "--role", "ingest", "--label",
                                 "capped-install", "--max-reports-per-window", "2", "--json"], {})
    assert code == 0, err
    token = json.loads(out)["token"]
    manifest = keyholder_manifest(deployed)
    first = [paillier_report(manifest, METRIC, 1) for _ in range(2)]
    assert receipt(post_reports(deployed, first, token=token)) == (2, 0)
    assert receipt(post_reports(deployed, first, token=token)) == (0, 2)  # retries are free
    before = windows_of(deployed, METRIC)
    over = post_reports(deployed, [paillier_report(manifest, METRIC, 1)], token=token)
    assert over.status_code == 409, over.text
    body = problem(over)
    assert body["code"] == "report-cap-exceeded" and "2" in body["detail"]
    assert windows_of(deployed, METRIC) == before  # nothing stored
    # another token still reports into the same window
    assert receipt(post_reports(deployed, [paillier_report(manifest, METRIC, 1)])) == (1, 0)


def _capped_token(deployed: Deployment, label: str, cap: int) -> str:
    code, out, err, _ = run_cli(["server", "token", "create", "--data-dir",
                                 str(deployed.server_dir), "--role", "ingest", "--label", label,
                                 "--max-reports-per-window", str(cap), "--json"], {})
    assert code == 0, err
    return json.loads(out)["token"]


def test_the_refusal_names_exactly_the_reports_beyond_the_cap(deployed: Deployment) -> None:
    token = _capped_token(deployed, "capped-batch", 2)
    manifest = keyholder_manifest(deployed)
    batch = [paillier_report(manifest, METRIC, 1) for _ in range(4)]
    over = post_reports(deployed, batch, token=token)
    assert over.status_code == 409, over.text
    detail = problem(over)["detail"]
    assert "batch.reports[2], batch.reports[3]:" in detail
    assert "batch.reports[0]" not in detail and "batch.reports[1]" not in detail
    assert receipt(post_reports(deployed, batch[:2], token=token)) == (2, 0)


def test_an_sdk_sharing_a_capped_token_drops_only_its_excess(deployed: Deployment,
                                                            tmp_path) -> None:
    # Two installs behind one partner token capped at one report per window: the second
    # install's report of the capped metric can never be stored, so its SDK drops it and
    # delivers what else it queued instead of blocking the whole queue.
    token = _capped_token(deployed, "capped-partner", 1)
    with Client(deployed.server.url, token, deployed.identity,
                limits_path=tmp_path / "a.sqlite3") as first:
        first.record(METRIC, 1)
    before = windows_of(deployed, "sec_capped_beside")
    with Client(deployed.server.url, token, deployed.identity,
                limits_path=tmp_path / "b.sqlite3") as second:
        second.record(METRIC, 1)
        second.record("sec_capped_beside", 1)
        with pytest.raises(ReportsDropped) as dropped:  # the app is told, once
            second.flush()
        assert [d.report.metric for d in dropped.value.dropped] == [METRIC]
        assert dropped.value.receipt.accepted == 1  # the other metric's report went through
        assert second.pending == 0
    after = windows_of(deployed, "sec_capped_beside")
    assert sum(w["report_count"] for w in after) == sum(w["report_count"] for w in before) + 1
