"""The key-holder's audit log cannot be rewritten unnoticed; a lost answer is paid once.

Audit: the chain's head is signed at every release (inside the result) and after every
release attempt (``GET /v1/audit/head``, kept by the server). Each tampering an operator
with write access to the key-holder's database could try is made on a copy of the live
data directory, and ``blindsum keyholder audit --server-url`` must catch it.

Lost answer: the server reaches the key-holder through a relay that forwards an early
release and drops its answer after the key-holder committed. The window must stay sealed
(not re-opened to new reports), be published exactly once, and be paid for once.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from security_kit import (
    LossyProxy,
    batch_body,
    call,
    keyholder_manifest,
    paillier_report,
    port_of,
    post_reports,
    receipt,
    run_cli,
    running,
    service_env,
    snapshot,
    wait_until,
)

from blindsum.server.keyholder.audit import _entry_hash
from blindsum.server.processes import Deployment, free_port
from blindsum.shared import codec

AUDITED, TOO_FEW, LOST = "sec_audit", "sec_audit_few", "sec_lost"


def _release_through_server(dep: Deployment, server_url: str, metric: str) -> dict:  # type: ignore[type-arg]
    answer = call("POST", f"{server_url}/v1/windows/release", token=dep.admin_token,
                  data=codec.dumps({"metric": metric}), media=codec.JSON, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def history(deployed: Deployment) -> Deployment:
    """One release and one refusal, both driven by the server (which keeps the heads)."""
    manifest = keyholder_manifest(deployed)
    assert receipt(post_reports(deployed, [paillier_report(manifest, AUDITED, 1)
                                           for _ in range(3)])) == (3, 0)
    assert len(_release_through_server(deployed, deployed.server.url, AUDITED)["released"]) == 1
    assert receipt(post_reports(deployed, [paillier_report(manifest, TOO_FEW, 1)])) == (1, 0)
    assert len(_release_through_server(deployed, deployed.server.url, TOO_FEW)["refused"]) == 1
    return deployed


def _copy(dep: Deployment, target: Path) -> Path:
    shutil.copytree(dep.keyholder_dir, target, ignore=shutil.ignore_patterns("keyholder.db*"))
    source_uri = f"file:{dep.keyholder_dir / 'keyholder.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(source_uri, uri=True)) as source, \
            contextlib.closing(sqlite3.connect(target / "keyholder.db")) as copy:
        source.backup(copy)
    return target


def _rechain(conn: sqlite3.Connection) -> None:
    """What a forger with write access does after editing: renumber and recompute hashes."""
    rows = conn.execute("SELECT at, event, detail FROM audit ORDER BY seq").fetchall()
    conn.execute("DELETE FROM audit")
    prev = "0" * 64
    for seq, (at, event, detail) in enumerate(rows, start=1):
        digest = _entry_hash(seq, at, event, detail, prev)
        conn.execute("INSERT INTO audit (seq, at, event, detail, prev_hash, hash) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (seq, at, event, detail, prev, digest))
        prev = digest


def _rewrite_a_debit(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE audit SET detail = replace(detail, '\"epsilon\":1.0', "
                 "'\"epsilon\":0.1') WHERE event = 'release-paid' AND detail LIKE ?",
                 (f'%"{AUDITED}"%',))
    _rechain(conn)


def _delete_the_tail(conn: sqlite3.Connection) -> None:
    (last,) = conn.execute("SELECT MAX(seq) FROM audit").fetchone()
    conn.execute("DELETE FROM audit WHERE seq > ?", (last - 2,))


def _delete_every_refusal(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit WHERE event = 'release-refused'")
    _rechain(conn)


def _refund_a_release(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM releases WHERE metric = ?", (AUDITED,))


def _audit(dep: Deployment, data_dir: Path) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    env = {"BLINDSUM_KEYSTORE_PASSPHRASE": dep.env["BLINDSUM_KEYSTORE_PASSPHRASE"],
           "BLINDSUM_ADMIN_TOKEN": dep.admin_token}
    code, out, err, _ = run_cli(["keyholder", "audit", "--data-dir", str(data_dir),
                                 "--server-url", dep.server.url, "--json"], env)
    return code, json.loads(out) if out.strip() else {}, err


def test_an_untouched_log_verifies_with_the_servers_heads(history: Deployment,
                                                         tmp_path: Path) -> None:
    code, report, err = _audit(history, _copy(history, tmp_path / "kh"))
    assert code == 0 and report["intact"], (report, err)
    assert report["signed_heads"] >= 3  # one in the result, two kept by the server
    counts = {m["metric"]: m for m in report["metrics"]}
    assert counts[AUDITED]["releases"] == 1 and counts[TOO_FEW]["refusals"] >= 1


@pytest.mark.parametrize(("tamper", "found"), [
    (_rewrite_a_debit, "differs from the one the key-holder signed"),
    (_delete_the_tail, "missing from the log"),
    # renumbered: a signed head now names another entry, or lies past the shortened end
    (_delete_every_refusal, ("differs from the one the key-holder signed",
                             "missing from the log")),
    (_refund_a_release, "the ledger has no row for it"),
])
def test_tampering_with_the_log_or_the_ledger_is_detected(
    history: Deployment, tmp_path: Path, tamper: Callable[[sqlite3.Connection], None],
    found: str | tuple[str, ...],
) -> None:
    copy = _copy(history, tmp_path / "kh")
    with contextlib.closing(sqlite3.connect(copy / "keyholder.db")) as conn, conn:
        tamper(conn)
    code, report, err = _audit(history, copy)
    assert code == 1 and not report["intact"], (report, err)
    wanted = (found,) if isinstance(found, str) else found
    assert any(w in problem for problem in report["problems"] for w in wanted), (
        report["problems"])


@contextlib.contextmanager
def _server_behind(proxy: LossyProxy, dep: Deployment, root: Path) -> Iterator[str]:
    port = free_port()
    args = ["server", "serve", "--data-dir", str(root / "server"), "--port", str(port),
            "--keyholder-url", proxy.url, "--keyholder-identity", dep.identity]
    with running("lossy-server", args, port, root, service_env(dep, passphrase=False)) as srv:
        yield srv.url


def test_a_lost_answer_to_an_early_release_is_published_once_and_paid_once(
    deployed: Deployment, tmp_path: Path,
) -> None:
    manifest = keyholder_manifest(deployed)
    proxy = LossyProxy(port_of(deployed.keyholder))
    try:
        with _server_behind(proxy, deployed, tmp_path) as server:
            def send(count: int):  # type: ignore[no-untyped-def]
                return call("POST", f"{server}/v1/reports", token=deployed.ingest_token,
                            data=batch_body([paillier_report(manifest, LOST, 1)
                                             for _ in range(count)]), media=codec.JSON)

            assert receipt(send(3)) == (3, 0)
            proxy.lose_next("POST /v1/releases")
            outcome = _release_through_server(deployed, server, LOST)
            assert proxy.lost == 1 and len(outcome["failed"]) == 1, outcome
            (budget,) = [m for m in snapshot(deployed).budget if m["metric"] == LOST]
            assert (budget["releases"], budget["spent_epsilon"]) == (1, 1.0)  # it committed
            windows = call("GET", f"{server}/v1/windows", token=deployed.admin_token).json()
            assert [w["state"] for w in windows["windows"]] == ["sealed"]  # not re-opened
            late = send(1)
            assert late.status_code == 409, late.text

            outcomes: list[dict] = []  # type: ignore[type-arg]

            def published() -> bool:
                outcomes.append(_release_through_server(deployed, server, LOST))
                return len(outcomes[-1]["released"]) == 1

            assert wait_until(published, 90, interval=2.0), outcomes[-3:]
            results = call("GET", f"{server}/v1/published/{LOST}").json()["results"]
            assert len(results) == 1 and json.loads(
                results[0]["document"]["payload"])["report_count"] == 3
            (budget,) = [m for m in snapshot(deployed).budget if m["metric"] == LOST]
            assert (budget["releases"], budget["spent_epsilon"]) == (1, 1.0)
    finally:
        proxy.close()
