"""SDK queues and contribution counts: FIFO until acknowledged, and durable on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from client_support import TOKEN, FakeServer, issue, policy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.client import Client, ContributionLimit, InvalidConfig
from blindsum.client.limits import ContributionLimiter
from blindsum.client.queue import DiskQueue, MemoryQueue, ReportQueue
from blindsum.shared.codec import BatchReceipt, Report
from blindsum.shared.signing import identity_string

HOUR = 3600
NOW = 1_800_000_000.0


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
    clicks = policy("clicks", upper=5, contributions_per_window=2)
    path = tmp_path / "q.sqlite"
    limiter = ContributionLimiter(path)
    limiter.reserve(clicks, 0)
    limiter.reserve(clicks, 0)
    limiter.reserve(clicks, HOUR)
    limiter.close()
    again = ContributionLimiter(path)
    with pytest.raises(ContributionLimit):
        again.reserve(clicks, 0)
    assert (again.used("clicks", 0), again.used("clicks", HOUR)) == (2, 1)
    again.release("clicks", HOUR)
    assert again.used("clicks", HOUR) == 0
    # Only the current and previous windows take reports: older counts are forgotten.
    again.reserve(clicks, 3 * HOUR)
    assert again.used("clicks", 0) == 0
    again.close()
    reopened = ContributionLimiter(path)
    assert reopened.used("clicks", 0) == 0
    reopened.close()


@pytest.fixture
def server(identity, paillier_secret) -> Iterator[FakeServer]:  # type: ignore[no-untyped-def]
    fake = FakeServer(issue(identity, 1, paillier_secret)).start()
    yield fake
    fake.stop()


def client(server: FakeServer, identity: Ed25519PrivateKey, path: Path) -> Client:
    return Client(server.url, TOKEN, identity_string(identity.public_key()), queue_path=path,
                  backoff=0.001, max_retries=0)


def test_unsent_reports_survive_an_app_restart_and_are_sent_with_their_ids(
    server: FakeServer, identity: Ed25519PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "blindsum-queue.sqlite"
    first = client(server, identity, path)
    for value in (1.0, 2.0, 3.0):
        first.record("temp", value, at=NOW + value * HOUR)  # one per window (limit 1)
    queued = [r.report_id for r in first._queue.peek(10)]
    first.close()  # no flush: the app "crashes"
    second = client(server, identity, path)
    assert second.pending == 3
    assert second.flush() == BatchReceipt(3, 0)
    assert list(server.stored) == queued
    second.close()
    assert client(server, identity, path).pending == 0


def test_a_failed_flush_leaves_reports_on_disk(
    server: FakeServer, identity: Ed25519PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "q.sqlite"
    first = client(server, identity, path)
    first.record("temp", 1.0, at=NOW)
    server.fail_next(1, status=503)
    with pytest.raises(Exception, match="503"):
        first.flush()
    first.close()
    second = client(server, identity, path)
    assert second.pending == 1
    second.close()


def test_the_contribution_limit_survives_an_app_restart(
    server: FakeServer, identity: Ed25519PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "q.sqlite"
    first = client(server, identity, path)
    first.record("clicks", 1, at=NOW)
    first.record("clicks", 1, at=NOW)
    first.flush()
    first.close()
    second = client(server, identity, path)
    with pytest.raises(ContributionLimit, match="clicks"):
        second.record("clicks", 1, at=NOW)
    second.close()
