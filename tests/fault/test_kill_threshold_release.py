"""kill -9 of either party mid-release with a two-party threshold key: every window recovers
without a second noise draw, a second debit or a second publication.

Reports go in through the server's ingest API (the SDK) for a dozen one-second windows of a
threshold-key metric; once every window is due, the operator's release endpoint releases
them one after another, and either the key-holder's or the server's process group is killed
with SIGKILL mid-way, after the key-holder answered a few statements: the key-holder while
it holds a paid window it has not answered yet, the server while it finishes (or is about to
request) a window. The party is restarted on its data directory and port, and the release
endpoint is called again until no window is left open or sealed.

Allowed outcomes per window, and why:

- **published**, exactly once: the key-holder paid, drew the noise ``E`` once, stored its
  signed partial release and answered it (perhaps to a server that died or lost the answer:
  the server re-sends the same request and gets the same stored statement back, so the
  published statement is the ledger's, byte for byte, with the same noise ciphertexts);
- **refused as interrupted**: the key-holder was killed between paying and storing its
  statement; at restart it settles the row ``interrupted`` (consumed and paid, never
  decrypted: no ``release`` audit entry, nothing published) and the server's retry is told
  so and gives the window up. Only a key-holder kill can cause this.

Nothing else: no window stays open or sealed, none is paid for twice (one ``release-paid``
audit entry each), none has two ``release`` entries (two noise draws), and the budget spent
is one release's epsilon per consumed window. Every published document verifies offline.

A server killed mid-call leaves the window it was finishing ``sealed`` under its 300 s
claim (``aggregator/release.py``, ``LEASE_SECONDS``); a restarted server drops such claims
before its workers run (``Store.release_claims``), so the window is retried at once with
the same request.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from fault_kit import POLICIES

from blindsum.client import Client
from blindsum.server.processes import Deployment, ServiceProcess, deployment, start_service
from blindsum.shared.signing import parse_identity
from blindsum.shared.verification import verify_result

METRIC = "blink"  # one-second windows, one second late (fault_policies.toml)
WINDOWS = 12
REPORTS = 3  # the policy's min_contributors
ANSWERED_BEFORE_KILL = 3
EPSILON = 1.0
DEADLINE_SECONDS = 120.0


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def _ledger(dep: Deployment) -> dict[int, tuple[str, str]]:
    """The key-holder's ledger rows of METRIC: window -> (state, stored statement text)."""
    with contextlib.closing(_ro(dep.keyholder_dir / "keyholder.db")) as db:
        rows = db.execute('SELECT "window", state, document FROM releases WHERE metric = ?',
                          (METRIC,)).fetchall()
    return {int(w): (str(s), str(d)) for w, s, d in rows}


def _audit(dep: Deployment, event: str) -> Counter[int]:
    """How many audit entries of ``event`` name each window of METRIC."""
    with contextlib.closing(_ro(dep.keyholder_dir / "keyholder.db")) as db:
        details = [json.loads(row[0]) for row in db.execute(
            "SELECT detail FROM audit WHERE event = ?", (event,))]
    return Counter(d["window"] for d in details if d.get("metric") == METRIC)


def _server_windows(dep: Deployment) -> dict[int, str]:
    with contextlib.closing(_ro(dep.server_dir / "aggregator.db")) as db:
        rows = db.execute('SELECT "window", state FROM windows WHERE metric = ?', (METRIC,))
        return {int(w): str(s) for w, s in rows}


def _server_results(dep: Deployment) -> dict[int, tuple[str, float]]:
    """What the server stored as published: window -> (document text, released_at)."""
    with contextlib.closing(_ro(dep.server_dir / "aggregator.db")) as db:
        rows = db.execute('SELECT "window", document, released_at FROM results '
                          "WHERE metric = ?", (METRIC,))
        return {int(w): (str(d), float(t)) for w, d, t in rows}


def _fill_windows(dep: Deployment) -> list[int]:
    """REPORTS reports in each of WINDOWS consecutive windows, through the server's ingest."""
    windows: list[int] = []
    with Client(dep.server.url, dep.ingest_token, dep.identity,
                enforce_contribution_limit=False) as sdk:
        while len(windows) < WINDOWS:
            now = time.time()
            start = math.floor(now)
            # early in a fresh window; late_seconds covers a flush that ends after it
            if (windows and start <= windows[-1]) or now - start > 0.5:
                time.sleep(0.02)
                continue
            for _ in range(REPORTS):
                sdk.record(METRIC, 1, at=now)
            assert sdk.flush().accepted == REPORTS
            windows.append(start)
    while time.time() < windows[-1] + 3:  # every window due: end + late_seconds, + slack
        time.sleep(0.1)
    return windows


def _release(dep: Deployment) -> dict[str, Any]:
    answer = requests.post(f"{dep.server.url}/v1/windows/release", json={"metric": METRIC},
                           headers={"Authorization": f"Bearer {dep.admin_token}"},
                           timeout=300)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _kill_mid_release(dep: Deployment, victim: ServiceProcess, *, mid_payment: bool) -> None:
    """Start the operator's release and kill ``victim``'s process group once the key-holder
    has answered ANSWERED_BEFORE_KILL statements (and, with ``mid_payment``, while it holds
    a paid window it has not answered yet)."""

    def fire() -> None:
        with contextlib.suppress(requests.RequestException):  # the server may be gone
            requests.post(f"{dep.server.url}/v1/windows/release", json={"metric": METRIC},
                          headers={"Authorization": f"Bearer {dep.admin_token}"}, timeout=300)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        states = Counter(state for state, _ in _ledger(dep).values())
        if states["released"] >= ANSWERED_BEFORE_KILL and (states["paid"] or not mid_payment):
            break
        time.sleep(0.02)
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait(30)
    thread.join(DEADLINE_SECONDS)
    assert not thread.is_alive(), "the release call did not return after the kill"


def _port(service: ServiceProcess) -> int:
    return int(service.url.rsplit(":", 1)[1])


def _restart_keyholder(dep: Deployment, root: Path) -> None:
    port = _port(dep.keyholder)
    dep.keyholder = start_service(
        "keyholder-after-kill",
        ["keyholder", "serve", "--data-dir", str(dep.keyholder_dir), "--port", str(port)],
        port, root, {k: v for k, v in dep.env.items() if k.startswith("BLINDSUM_")})


def _restart_server(dep: Deployment, root: Path) -> None:
    port = _port(dep.server)
    args = ["server", "serve", "--data-dir", str(dep.server_dir), "--port", str(port),
            "--keyholder-url", dep.keyholder.url, "--keyholder-identity", dep.identity]
    # the server's own share passphrase stays; the key-holder's is not the server's business
    env = {k: v for k, v in dep.env.items() if k != "BLINDSUM_KEYSTORE_PASSPHRASE"}
    dep.server = start_service("server-after-kill", args, port, root, env)


def _release_until_settled(dep: Deployment) -> None:
    """Call the release endpoint until no window is open or sealed (a failed window is
    retried after the server's RETRY_SECONDS, so this takes a few rounds)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        _release(dep)
        pending = [w for w, s in _server_windows(dep).items() if s in ("open", "sealed")]
        if not pending:
            return
        time.sleep(2.0)
    pytest.fail(f"windows still pending after {DEADLINE_SECONDS:.0f} s: "
                f"{_server_windows(dep)}\n{dep.server.log_tail()}")


def _published(dep: Deployment) -> list[dict[str, Any]]:
    answer = requests.get(f"{dep.server.url}/v1/published/{METRIC}", timeout=30)
    answer.raise_for_status()
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def _noise(statement_text: str) -> list[str]:
    noise: list[str] = json.loads(json.loads(statement_text)["payload"])["noise"]
    return noise


def _check_recovered(dep: Deployment, windows: list[int],
                     ledger_at_kill: dict[int, tuple[str, str]],
                     results_at_kill: dict[int, tuple[str, float]]) -> dict[int, str]:
    """The assertions both kills share; returns the key-holder's final states by window."""
    ledger = _ledger(dep)
    states = {w: state for w, (state, _) in ledger.items()}
    server = _server_windows(dep)
    stored = _server_results(dep)
    published = _published(dep)
    paid, drawn = _audit(dep, "release-paid"), _audit(dep, "release")
    budget = requests.get(f"{dep.keyholder.url}/v1/budget", timeout=30,
                          headers={"Authorization": f"Bearer {dep.release_token}"}).json()

    # every window was consumed once and paid once; none is left paid-but-unsettled
    assert sorted(ledger) == sorted(server) == windows
    assert set(states.values()) <= {"released", "interrupted"}, states
    assert paid == Counter(windows)
    (spent,) = [m for m in budget["metrics"] if m["metric"] == METRIC]
    assert spent["releases"] == WINDOWS
    assert spent["spent_epsilon"] == pytest.approx(WINDOWS * EPSILON)

    # one noise draw per answered window, none for an interrupted one
    released = sorted(w for w, s in states.items() if s == "released")
    interrupted = sorted(w for w, s in states.items() if s == "interrupted")
    assert drawn == Counter(released)

    # published at most once: one entry per released window, none for an interrupted one
    assert sorted(w for w, s in server.items() if s == "released") == released
    assert sorted(w for w, s in server.items() if s == "refused") == interrupted
    assert sorted(stored) == released
    assert sorted(entry["window"] for entry in published) == released
    # what was published before the kill was never published again
    for window, before in results_at_kill.items():
        assert stored[window] == before, f"window {window} was published a second time"

    identity = parse_identity(dep.identity)
    for entry in published:
        result = verify_result(entry, identity)
        assert result.report_count == REPORTS and result.threshold is True
        window, statement = entry["window"], entry["document"]["statement"]
        # the published statement is the one stored before it was first answered: the
        # same noise ciphertexts E, never a second draw
        stored_statement = ledger[window][1]
        assert statement == json.loads(stored_statement)
        before = ledger_at_kill.get(window)
        if before is not None and before[0] == "released":
            assert before[1] == stored_statement
            assert _noise(before[1]) == _noise(stored_statement)
    return states


@pytest.mark.slow  # about 70 s: a 2048-bit ceremony, a dozen windows, one retry delay
def test_kill_9_of_the_keyholder_mid_threshold_release_draws_and_debits_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("kill-threshold-keyholder")
    with deployment(root, POLICIES, threshold=True, paillier_bits=2048) as dep:
        windows = _fill_windows(dep)
        _kill_mid_release(dep, dep.keyholder, mid_payment=True)
        ledger_at_kill = _ledger(dep)
        results_at_kill = _server_results(dep)
        _restart_keyholder(dep, root)
        _release_until_settled(dep)
        states = _check_recovered(dep, windows, ledger_at_kill, results_at_kill)
    answered = [w for w, (s, _) in ledger_at_kill.items() if s == "released"]
    assert ANSWERED_BEFORE_KILL <= len(answered) < WINDOWS  # the kill landed mid-way
    # a row the killed process left paid is the only way to an interrupted window
    left_paid = {w for w, (s, _) in ledger_at_kill.items() if s == "paid"}
    assert len(left_paid) == 1  # killed between paying and answering
    assert {w for w, s in states.items() if s == "interrupted"} == left_paid


@pytest.mark.slow  # about 70 s: a 2048-bit ceremony, a dozen windows, one retry delay
def test_kill_9_of_the_server_mid_threshold_release_publishes_each_window_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("kill-threshold-server")
    with deployment(root, POLICIES, threshold=True, paillier_bits=2048) as dep:
        windows = _fill_windows(dep)
        _kill_mid_release(dep, dep.server, mid_payment=False)
        ledger_at_kill = _ledger(dep)
        results_at_kill = _server_results(dep)
        _restart_server(dep, root)
        _release_until_settled(dep)
        states = _check_recovered(dep, windows, ledger_at_kill, results_at_kill)
    answered = [w for w, (s, _) in ledger_at_kill.items() if s == "released"]
    assert ANSWERED_BEFORE_KILL <= len(answered) < WINDOWS  # the kill landed mid-way
    assert len(results_at_kill) < WINDOWS
    # the key-holder never stopped: every window it was asked for it answered
    assert set(states.values()) == {"released"}
