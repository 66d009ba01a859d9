"""A metric whose budget is spent is paused in the manifest, and SDKs stop sending it.

Against the real services: the release goes to the key-holder, the pause reaches SDKs
through the server's relayed manifest, and the budget endpoint and the dashboard say so.
"""

from __future__ import annotations

import pytest
import requests
from security_kit import (
    bearer,
    closed_window,
    keyholder_manifest,
    post_release,
    valid_release,
    wait_until,
)

from blindsum.client import Client, ManifestError, MetricPaused
from blindsum.server.processes import Deployment
from blindsum.shared.manifest import Manifest
from blindsum.shared.signing import parse_identity

METRIC = "sec_pause"  # budget: one release of epsilon 1, for the metric's lifetime


def server_manifest(dep: Deployment) -> Manifest:
    answer = requests.get(f"{dep.server.url}/v1/manifest", verify=dep.verify, timeout=30)
    answer.raise_for_status()
    return Manifest.verify(answer.json(), parse_identity(dep.identity))


def budget_row(dep: Deployment) -> dict:
    answer = requests.get(f"{dep.keyholder.url}/v1/budget", headers=bearer(dep.release_token),
                          verify=dep.verify, timeout=30)
    answer.raise_for_status()
    (row,) = [m for m in answer.json()["metrics"] if m["metric"] == METRIC]
    return row


def dashboard_page(dep: Deployment) -> str:
    answer = requests.get(f"{dep.server.url}/metrics/{METRIC}", verify=dep.verify, timeout=30)
    return answer.text if answer.status_code == 200 else ""


def test_a_spent_budget_pauses_the_metric_and_sdks_stop_sending_it(
    deployed: Deployment, tmp_path
) -> None:
    before = Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                    verify=deployed.verify, limits_path=tmp_path / "a.sqlite3")
    before.record(METRIC, 1)  # not paused yet
    assert before.pending == 1
    before.close()
    assert budget_row(deployed)["paused"] is False
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(METRIC)
    answer = post_release(deployed, valid_release(manifest, METRIC, closed_window(policy, 3),
                                                  [1, 0, 1]))
    assert answer.status_code == 201, answer.text[:300]

    paused = keyholder_manifest(deployed).paused[METRIC]
    assert paused.until is None and "budget (1, 0) for its lifetime is spent" in paused.reason
    row = budget_row(deployed)
    assert row["paused"] is True and row["paused_until"] is None
    assert row["remaining_epsilon"] == 0
    # the dashboard keeps listing the metric, paused, instead of dropping it
    index = requests.get(f"{deployed.server.url}/", verify=deployed.verify, timeout=30).text
    listed = index.split(f'<a href="/metrics/{METRIC}">')[1].split("</tr>")[0]
    assert "paused: budget spent" in listed and "0 releases left" in listed

    # each server worker relays the new manifest on its next refresh; an SDK keeps the
    # newest manifest it has verified (it refuses an older one), and then refuses to record
    assert wait_until(lambda: METRIC in server_manifest(deployed).paused, timeout=60)
    sdk = Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                 verify=deployed.verify, limits_path=tmp_path / "b.sqlite3")

    def sdk_sees_the_pause() -> bool:
        try:
            return METRIC in sdk.refresh_manifest().paused
        except ManifestError:  # a worker not yet refreshed answered the older manifest
            return METRIC in sdk.manifest().paused

    try:
        assert wait_until(sdk_sees_the_pause, timeout=60)
        held = sdk.pending  # the first Client's report, left in the install's default queue
        with pytest.raises(MetricPaused, match=r"'sec_pause' is paused for good: its privacy"):
            sdk.record(METRIC, 1)
        assert sdk.pending == held  # nothing was encrypted or queued
        sdk.record("sec_victim", 1)  # other metrics carry on
        assert sdk.pending == held + 1
    finally:
        sdk.close()
    # the public dashboard says so too, in the manifest's words
    assert wait_until(lambda: f"paused for good: {paused.reason}" in dashboard_page(deployed),
                      timeout=60, interval=1.0)
