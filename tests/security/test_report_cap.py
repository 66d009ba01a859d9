"""A token created with a per-window report cap cannot send more than that into a window:
the excess is refused, nothing of its batch is stored, and retries of stored reports do not
count against the cap."""

from __future__ import annotations

import json

from security_kit import (
    keyholder_manifest,
    paillier_report,
    post_reports,
    problem,
    receipt,
    run_cli,
    windows_of,
)

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
