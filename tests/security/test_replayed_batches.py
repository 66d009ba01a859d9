"""A report is counted once however often, however concurrently, and in whatever encoding
it arrives; a replayed id cannot smuggle in a different ciphertext.

Counting is checked twice: the window's report count (GET /v1/windows) and the window
aggregate itself, decrypted with the key-holder's secret key (the test plays both
operators), so a report folded in twice, or a substituted ciphertext, would show in the sum.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from security_kit import (
    decrypted_window,
    keyholder_manifest,
    paillier_report,
    post_reports,
    problem,
    receipt,
    snapshot,
    windows_of,
)

from blindsum.server.processes import Deployment
from blindsum.shared import codec
from blindsum.shared.codec import Report
from blindsum.shared.manifest import Manifest

METRIC = "sec_replay"


@pytest.fixture(scope="module")
def manifest(deployed: Deployment) -> Manifest:
    return keyholder_manifest(deployed)


@pytest.fixture
def fresh_window(manifest: Manifest) -> int:
    """The current window of the replay metric, at least 5 s away from its end."""
    policy = manifest.policy(METRIC)
    window = policy.window_start(time.time())
    if policy.window_start(time.time() + 5) != window:  # too close to a boundary
        time.sleep(6)
        window = policy.window_start(time.time())
    return window


def _count_and_sum(dep: Deployment, manifest: Manifest, window: int) -> tuple[int, int]:
    rows = [w for w in windows_of(dep, METRIC) if w["window"] == window]
    if not rows:
        return 0, 0
    (row,) = rows
    (total,) = decrypted_window(dep, manifest, METRIC, window)
    return row["report_count"], total


def _batch(manifest: Manifest, values: list[int]) -> list[Report]:
    return [paillier_report(manifest, METRIC, v) for v in values]


def test_replayed_batch_is_counted_once(
    deployed: Deployment, manifest: Manifest, fresh_window: int,
) -> None:
    count, total = _count_and_sum(deployed, manifest, fresh_window)
    values = [3, 5, 7, 11]
    batch = _batch(manifest, values)
    receipts = [receipt(post_reports(deployed, batch, media=media))
                for media in (codec.JSON, codec.CBOR, codec.JSON, codec.CBOR, codec.JSON)]
    assert receipts == [(4, 0)] + [(0, 4)] * 4
    assert _count_and_sum(deployed, manifest, fresh_window) == (count + 4, total + sum(values))


def test_batch_replayed_concurrently_from_threads_is_counted_once(
    deployed: Deployment, manifest: Manifest, fresh_window: int,
) -> None:
    count, total = _count_and_sum(deployed, manifest, fresh_window)
    values = list(range(1, 11))
    batch = _batch(manifest, values)
    barrier = threading.Barrier(5)
    results: list[tuple[int, int]] = []
    failures: list[BaseException] = []

    def post(media: str) -> None:
        try:
            with requests.Session() as session:
                barrier.wait()
                results.append(receipt(post_reports(deployed, batch, media=media,
                                                    session=session)))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=post, args=(codec.CBOR if i % 2 else codec.JSON,))
               for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert len(results) == 5
    assert sum(accepted for accepted, _ in results) == len(values)
    assert all(accepted + duplicates == len(values) for accepted, duplicates in results)
    assert _count_and_sum(deployed, manifest, fresh_window) == (
        count + len(values), total + sum(values))


def test_replayed_id_with_another_ciphertext_changes_nothing(
    deployed: Deployment, manifest: Manifest, fresh_window: int,
) -> None:
    original = paillier_report(manifest, METRIC, 2)
    assert receipt(post_reports(deployed, [original])) == (1, 0)
    count, total = _count_and_sum(deployed, manifest, fresh_window)
    before = snapshot(deployed)
    forged = paillier_report(manifest, METRIC, 100, report_id=original.report_id)
    assert receipt(post_reports(deployed, [forged])) == (0, 1)
    assert snapshot(deployed) == before
    assert _count_and_sum(deployed, manifest, fresh_window) == (count, total)


def test_exact_repeat_inside_one_batch_is_counted_once(
    deployed: Deployment, manifest: Manifest, fresh_window: int,
) -> None:
    count, total = _count_and_sum(deployed, manifest, fresh_window)
    first = paillier_report(manifest, METRIC, 9)
    assert receipt(post_reports(deployed, [first, first, first])) == (1, 2)
    assert _count_and_sum(deployed, manifest, fresh_window) == (count + 1, total + 9)


def test_repeated_id_with_other_content_inside_one_batch_never_counts_twice(
    deployed: Deployment, manifest: Manifest, fresh_window: int,
) -> None:
    """Either answer keeps the property: the batch is refused whole (nothing stored), or
    the first report is counted and its twin is a duplicate (never folded in)."""
    count, total = _count_and_sum(deployed, manifest, fresh_window)
    before = snapshot(deployed)
    first = paillier_report(manifest, METRIC, 9)
    twin = paillier_report(manifest, METRIC, 90, report_id=first.report_id)
    response = post_reports(deployed, [first, twin])
    if response.status_code == 200:
        assert receipt(response) == (1, 1)
        assert _count_and_sum(deployed, manifest, fresh_window) == (count + 1, total + 9)
    else:
        assert response.status_code == 400, response.text
        assert "reports[1]" in problem(response)["detail"]
        assert snapshot(deployed) == before
