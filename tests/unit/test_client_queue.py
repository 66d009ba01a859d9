"""SDK queues and contribution counts: FIFO until acknowledged, and durable on disk.

That a Client's disk queue and counts survive an app restart and reach our server is
specified against the real services in tests/integration/test_sdk.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blindsum.client import ContributionLimit, InvalidConfig
from blindsum.client.limits import ContributionLimiter
from blindsum.client.queue import DiskQueue, MemoryQueue, ReportQueue
from blindsum.shared.codec import Report
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.validity import ProofContext, prove_report

HOUR = 3600
CLICKS = MetricPolicy.from_mapping("clicks", {
    "kind": "count", "scheme": "paillier", "upper": 5, "contributions_per_window": 2,
    "min_contributors": 1, "max_contributors": 10_000,
    "privacy": {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 10.0},
})


def report(n: int) -> Report:
    return Report(n.to_bytes(16, "big"), "latency", 1, "pai-test", 0, (bytes([n]) * 32,))


@pytest.fixture(params=["memory", "disk"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReportQueue]:
    made: ReportQueue = MemoryQueue() if request.param == "memory" else DiskQueue(
        tmp_path / "q.sqlite"
    )
    yield made
    made.close()


def test_a_queue_is_first_in_first_out_and_peek_does_not_remove(queue: ReportQueue) -> None:
    for n in range(5):
        queue.append(report(n))
    assert queue.peek(3) == [report(0), report(1), report(2)]
    assert queue.peek(10) == [report(n) for n in range(5)]
    assert len(queue) == 5


def test_a_queue_forgets_only_removed_reports(queue: ReportQueue) -> None:
    for n in range(4):
        queue.append(report(n))
    queue.remove([report(1).report_id, report(3).report_id, b"\x00" * 15 + b"\x63"])
    assert queue.peek(10) == [report(0), report(2)]
    queue.append(report(0))  # the same id again is one report
    assert len(queue) == 2


def test_a_disk_queue_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "q.sqlite"
    first = DiskQueue(path)
    for n in range(3):
        first.append(report(n))
    first.remove([report(0).report_id])
    first.close()
    again = DiskQueue(path)
    assert again.peek(10) == [report(1), report(2)]
    again.close()


def test_a_file_that_is_not_a_queue_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(InvalidConfig, match="junk"):
        DiskQueue(path)


def test_contribution_counts_survive_reopening_and_forget_old_windows(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    limiter = ContributionLimiter(path)
    limiter.reserve(CLICKS, 0)
    limiter.reserve(CLICKS, 0)
    limiter.reserve(CLICKS, HOUR)
    limiter.close()
    again = ContributionLimiter(path)
    with pytest.raises(ContributionLimit):
        again.reserve(CLICKS, 0)
    assert (again.used("clicks", 0), again.used("clicks", HOUR)) == (2, 1)
    again.release("clicks", HOUR)
    assert again.used("clicks", HOUR) == 0
    # Only the current and previous windows take reports: older counts are forgotten.
    again.reserve(CLICKS, 3 * HOUR)
    assert again.used("clicks", 0) == 0
    again.close()
    reopened = ContributionLimiter(path)
    assert reopened.used("clicks", 0) == 0
    reopened.close()


def test_a_queued_report_keeps_its_proof_across_a_restart(tmp_path: Path,
                                                          paillier_secret: Any) -> None:
    public = paillier_secret.public
    context = ProofContext("clicks", 1, 0, public.key_id, bytes(16))
    cts, proof = prove_report(public, "count", SlotSpec(1, 5, 10_000), [3], context)
    proven = Report(bytes(16), "clicks", 1, public.key_id, 0, tuple(cts), proof.to_json())
    first = DiskQueue(tmp_path / "q.sqlite")
    first.append(proven)
    first.close()
    again = DiskQueue(tmp_path / "q.sqlite")
    try:
        assert again.peek(1) == [proven]
    finally:
        again.close()


def test_batches_are_split_by_proof_bytes_as_well_as_by_ciphertext_bytes() -> None:
    from blindsum.client.client import MAX_BATCH_PROOF_BYTES, _within_bytes

    proof = {"v": 1, "aux": ["A" * (MAX_BATCH_PROOF_BYTES // 3)]}  # ~a third of the budget
    proven = [dataclasses.replace(report(n), proof=proof) for n in range(5)]
    assert _within_bytes(proven, 1 << 40) == proven[:2]
    assert _within_bytes(proven, MAX_BATCH_PROOF_BYTES // 4) == proven[:1]  # at least one
    plain = [report(n) for n in range(5)]
    assert _within_bytes(plain, 1 << 40) == plain


def test_default_queue_claims_are_exclusive_and_reused_after_release(tmp_path,
                                                                     monkeypatch) -> None:
    from blindsum.client.limits import QueueClaim

    monkeypatch.setenv("BLINDSUM_STATE_DIR", str(tmp_path / "state"))
    first = QueueClaim.acquire("https://metrics.example", "ed25519:x")
    second = QueueClaim.acquire("https://metrics.example", "ed25519:x")
    assert first is not None and second is not None and first.path != second.path
    other = QueueClaim.acquire("https://other.example", "ed25519:x")
    assert other is not None and other.path.name.startswith("queue-")
    first.release()
    again = QueueClaim.acquire("https://metrics.example", "ed25519:x")
    assert again is not None and again.path == first.path  # a restart finds its own file
    for claim in (second, other, again):
        claim.release()


def test_an_unwritable_state_directory_means_a_memory_queue_not_a_crash(tmp_path,
                                                                        monkeypatch) -> None:
    from blindsum.client.limits import QueueClaim

    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("BLINDSUM_STATE_DIR", str(blocked / "state"))
    assert QueueClaim.acquire("https://metrics.example", "ed25519:x") is None
