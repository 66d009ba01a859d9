"""A malicious server (it holds the release token and every stored ciphertext) against a
running threshold key-holder: it cannot get a single report, a scaled one, or a report of
another metric released as a window aggregate, and nothing it tries is paid for.

The key-holder releases only the sum of the reports it verified itself
(``server/keyholder/intake.py``). Real processes on loopback; the attacker talks to the
key-holder directly with the server's credential, using the server's own stored reports.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from security_kit import call, keyholder_manifest, paillier_scheme, snapshot

from blindsum.client import Client
from blindsum.server.processes import Deployment, deployment
from blindsum.shared import codec
from blindsum.shared.codec import ReleaseRequest, Report, WindowReports, report_ids_digest
from blindsum.shared.manifest import slot_spec
from blindsum.shared.signing import parse_identity
from blindsum.shared.verification import verify_result

POLICIES = Path(__file__).parent.parent / "policies" / "paillier.toml"
METRIC, OTHER = "opened", "seconds"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("malicious-server"), [POLICIES],
                    paillier_bits=2048, threshold=True) as running:
        yield running


def _stored(dep: Deployment, metric: str) -> list[Report]:
    """What the server holds for ``metric`` (the attacker reads its own database)."""
    from blindsum.server.aggregator.store import Store, WindowKey

    with contextlib.closing(sqlite3.connect(dep.server_dir / "aggregator.db")) as db:
        keys = db.execute('SELECT DISTINCT metric, version, "window", key_id FROM reports '
                          "WHERE metric = ?", (metric,)).fetchall()
    store = Store(dep.server_dir)
    try:
        return [r for key in keys for r in store.window_reports(WindowKey(*key))]
    finally:
        store.close()


def _to_keyholder(dep: Deployment, path: str, body: dict[str, object]) -> requests.Response:
    return call("POST", f"{dep.keyholder.url}{path}", token=dep.release_token,
                data=codec.dumps(body), media=codec.JSON, timeout=120)


def test_a_malicious_server_gets_nothing_released_but_the_verified_sum(
        deployed: Deployment) -> None:
    with Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                enforce_contribution_limit=False) as sdk:
        for value in (1, 0, 1):
            sdk.record(METRIC, value)
        sdk.record(OTHER, 42)
        assert sdk.flush().accepted == 4
    manifest = keyholder_manifest(deployed)
    public = paillier_scheme(manifest)
    policy = manifest.policy(METRIC)
    victim = _stored(deployed, METRIC)[0]
    spec = slot_spec(policy)
    c = public.load(list(victim.ciphertexts), spec)[0]
    before = snapshot(deployed)

    # 1. the victim's ciphertext scaled 1000x, posing as one report with the victim's proof
    scaled = Report(secrets.token_bytes(16), METRIC, policy.version, victim.key_id,
                    victim.window, tuple(public.dump([pow(int(c), 1000,
                                                         int(public.nsquare))])),
                    victim.proof)
    answer = _to_keyholder(deployed, "/v1/windows/reports", WindowReports(
        METRIC, policy.version, victim.window, victim.key_id, (scaled,)).to_wire())
    assert answer.status_code == 400 and answer.json()["code"] == "invalid-proof"

    # 2. a report of another metric (looser bounds) forwarded as this one
    other = _stored(deployed, OTHER)[0]
    relabelled = Report(other.report_id, METRIC, policy.version, other.key_id, victim.window,
                        other.ciphertexts, other.proof)
    answer = _to_keyholder(deployed, "/v1/windows/reports", WindowReports(
        METRIC, policy.version, victim.window, other.key_id, (relabelled,)).to_wire())
    assert answer.status_code == 400, answer.text

    # 3. a release claiming 1000 reports for the scaled ciphertext, never forwarded
    lie = ReleaseRequest(METRIC, policy.version, victim.window, victim.key_id, 1000,
                         report_ids_digest([secrets.token_bytes(16) for _ in range(1000)]),
                         tuple(public.dump([pow(int(c), 1000, int(public.nsquare))])),
                         early=True)
    answer = _to_keyholder(deployed, "/v1/releases", lie.to_wire())
    assert answer.status_code == 422 and "holds no reports" in answer.json()["detail"]

    # 4. the one honest report forwarded alone, then released as "the window"
    honest = _to_keyholder(deployed, "/v1/windows/reports", WindowReports(
        METRIC, policy.version, victim.window, victim.key_id, (victim,)).to_wire())
    assert honest.status_code == 200 and honest.json()["report_count"] == 1
    single = ReleaseRequest(METRIC, policy.version, victim.window, victim.key_id, 3,
                            report_ids_digest([r.report_id for r in _stored(deployed,
                                                                              METRIC)]),
                            tuple(public.dump([c])), early=True)
    answer = _to_keyholder(deployed, "/v1/releases", single.to_wire())
    assert answer.status_code == 422 and "verified 1 reports" in answer.json()["detail"]
    # the operator hears of it: the key-holder logs the mismatch (public facts only)
    logged = deployed.keyholder.log_path.read_text(errors="replace")
    assert "does not match the forwarded window" in logged
    assert "verified 1 reports" in logged and "claims 3" in logged

    after = snapshot(deployed)
    assert after.budget == before.budget and after.published == before.published

    # the honest server's release forwards all three and publishes their sum, once
    response = call("POST", f"{deployed.server.url}/v1/windows/release",
                    token=deployed.admin_token, data=codec.dumps({"metric": METRIC}),
                    media=codec.JSON, timeout=300)
    assert response.status_code == 200 and response.json()["refused"] == [], response.text
    (entry,) = [r for r in call("GET", f"{deployed.server.url}/v1/published/{METRIC}"
                                ).json()["results"]]
    result = verify_result(entry, parse_identity(deployed.identity))
    assert result.report_count == 3 and result.threshold
