"""The whole pipeline with real processes on loopback: SDK -> server -> key-holder -> result.

One deployment (a key-holder and a server, each its own gunicorn process) serves the
module; every test stops nothing it did not start, and the fixture stops both services.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.client import Client
from blindsum.server.processes import Deployment, deployment
from blindsum.shared import codec
from blindsum.shared.codec import Report, ReportBatch
from blindsum.shared.encoding import clipped_value, encode
from blindsum.shared.errors import ManifestError
from blindsum.shared.manifest import slot_spec
from blindsum.shared.signing import identity_string
from blindsum.shared.validity import ProofContext, proof_kind, prove_report

POLICIES = Path(__file__).parent.parent / "policies"
INSTALLS = 40


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("e2e")
    with deployment(root, [POLICIES / "paillier.toml", POLICIES / "ckks.toml"],
                    paillier_bits=2048) as running:
        yield running


def admin(deployed: Deployment) -> dict[str, str]:
    return {"Authorization": f"Bearer {deployed.admin_token}"}


def ingest_headers(deployed: Deployment, media: str = codec.JSON) -> dict[str, str]:
    return {"Authorization": f"Bearer {deployed.ingest_token}", "Content-Type": media}


def windows(deployed: Deployment) -> list[dict[str, Any]]:
    response = requests.get(f"{deployed.server.url}/v1/windows", headers=admin(deployed),
                            timeout=30)
    response.raise_for_status()
    return sorted(response.json()["windows"], key=lambda w: (w["metric"], w["window"]))


def release(deployed: Deployment, metric: str) -> dict[str, Any]:
    response = requests.post(f"{deployed.server.url}/v1/windows/release",
                             json={"metric": metric}, headers=admin(deployed), timeout=120)
    response.raise_for_status()
    return response.json()


def published(deployed: Deployment, metric: str) -> list[dict[str, Any]]:
    response = requests.get(f"{deployed.server.url}/v1/published/{metric}", timeout=30)
    response.raise_for_status()
    return response.json()["results"]


def client(deployed: Deployment, **options: Any) -> Client:
    return Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                  enforce_contribution_limit=False, **options)


def _half_width(policy: Any, result: dict[str, Any]) -> float:
    """The 95% half-width in the metric's units, from the noise plan the result states
    (its ``ci`` is clipped to the domain, so it is not always symmetric)."""
    from blindsum.server.keyholder.release import noise_plan

    plan = noise_plan(policy)
    assert (plan.mechanism, plan.scale) == (result["mechanism"], result["scale"])
    unit = policy.precision / (result["report_count"] if policy.kind == "mean" else 1)
    return plan.half_width(0.05) * (1.0 if policy.kind in ("count", "histogram") else unit)


VALUES = {
    "opened": lambda rng: rng.choice([0, 1, 1]),
    "seconds": lambda rng: rng.uniform(-100, 700),
    "temp": lambda rng: rng.gauss(30, 15),
    "load_ms": lambda rng: rng.lognormvariate(5.5, 1.2),
    "features": lambda rng: [rng.uniform(0, 70) for _ in range(8)],
    "latency": lambda rng: rng.lognormvariate(4, 1.5),
}


@pytest.mark.parametrize("metric", sorted(VALUES))
def test_published_value_is_within_its_interval_of_the_truth(deployed, metric) -> None:
    rng = random.Random(metric)
    with client(deployed) as sdk:
        policy = sdk.manifest().policy(metric)
        reports = [VALUES[metric](rng) for _ in range(INSTALLS)]
        for value in reports:
            sdk.record(metric, value)
    outcome = release(deployed, metric)
    assert outcome["refused"] == [], outcome
    (result,) = published(deployed, metric)
    assert result["report_count"] == INSTALLS
    clipped = [clipped_value(policy, v) for v in reports]
    if isinstance(clipped[0], list):
        truth = [sum(column) for column in zip(*clipped, strict=True)]
    else:
        truth = [sum(clipped) / (INSTALLS if policy.kind == "mean" else 1)]
    noisy = result["noisy_value"]
    values = noisy if isinstance(noisy, list) else [noisy]
    half = _half_width(policy, result)
    # A 95% interval misses 1 time in 20; four half-widths miss less than 1 in 10^5 per
    # coordinate, so this checks calibration without flaking.
    for got, want in zip(values, truth, strict=True):
        assert abs(got - want) <= 4 * half + 1e-6, (metric, got, want, half)
    assert result["epsilon"] == policy.privacy.epsilon


def test_small_window_is_not_released(deployed) -> None:
    with client(deployed) as sdk:
        for _ in range(2):  # k = 3 for the test policies
            sdk.record("tiny", 1)
    outcome = release(deployed, "tiny")
    assert any("needs at least 3" in json.dumps(r) for r in outcome["refused"]), outcome
    assert published(deployed, "tiny") == []


def test_second_release_of_a_window_is_refused_by_the_keyholder(deployed) -> None:
    (result,) = [r for r in published(deployed, "seconds")]
    row = next(w for w in windows(deployed) if w["metric"] == "seconds"
               and w["window"] == result["window"])
    assert row["state"] == "released"
    # The server will not send it again; a server that tried would be refused:
    replay = codec.ReleaseRequest("seconds", 1, result["window"], row["kid"],
                                  result["report_count"], secrets.token_bytes(32),
                                  (b"\x01" * 512,), early=True)
    response = requests.post(
        f"{deployed.keyholder.url}/v1/releases", data=codec.dumps(replay.to_wire()),
        headers={"Authorization": f"Bearer {deployed.release_token}",
                 "Content-Type": codec.JSON}, timeout=30)
    assert response.status_code == 409
    assert response.json()["code"] == "already-released"


def _one_report(sdk: Client, metric: str, value: Any, window_time: float) -> Report:
    """A hand-built Paillier report (proven like the SDK's, when the metric says so), for
    tests that need to replay or tamper with one."""
    from blindsum.shared.schemes.paillier import PaillierPublic

    manifest = sdk.manifest()
    policy = manifest.policy(metric)
    key = manifest.active_key(policy.scheme)
    scheme = PaillierPublic.from_json(key.public)
    window = policy.window_start(window_time)
    report_id = secrets.token_bytes(16)
    if not policy.proven:
        return Report(report_id, metric, policy.version, key.key_id, window,
                      tuple(scheme.encrypt(encode(policy, value), slot_spec(policy))))
    context = ProofContext(metric, policy.version, window, key.key_id, report_id)
    cts, proof = prove_report(scheme, proof_kind(policy), slot_spec(policy),
                              encode(policy, value), context)
    return Report(report_id, metric, policy.version, key.key_id, window, tuple(cts),
                  proof.to_json())


def test_retried_batch_is_counted_once(deployed) -> None:
    with client(deployed) as sdk:
        batch = ReportBatch(tuple(_one_report(sdk, "replayed", 1, time.time())
                                  for _ in range(3)))
    body = codec.dumps(batch.to_wire(), codec.CBOR)
    url = f"{deployed.server.url}/v1/reports"
    first = requests.post(url, data=body, headers=ingest_headers(deployed, codec.CBOR),
                          timeout=30)
    again = requests.post(url, data=body, headers=ingest_headers(deployed, codec.CBOR),
                          timeout=30)
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    receipts = [codec.loads(r.content, codec.media_type(r.headers["Content-Type"]))
                for r in (first, again)]
    assert (receipts[0]["accepted"], receipts[0]["duplicates"]) == (3, 0)
    assert (receipts[1]["accepted"], receipts[1]["duplicates"]) == (0, 3)
    row = [w for w in windows(deployed) if w["metric"] == "replayed"
           and w["window"] == batch.reports[0].window]
    assert row and row[0]["report_count"] == 3


def _snapshot(deployed: Deployment) -> list[dict[str, Any]]:
    return windows(deployed)


BAD_BODIES = [
    (b"{", codec.JSON, "not valid JSON"),
    (b"[]", codec.JSON, "batch must be an object"),
    (b'{"v":1,"reports":[]}', codec.JSON, "1..5000"),
    (b"\x9f\x9f", codec.CBOR, "CBOR"),
    (b"hello", "text/plain", "Content-Type"),
]


@pytest.mark.parametrize(("body", "media", "message"), BAD_BODIES)
def test_malformed_bodies_get_4xx_and_change_nothing(deployed, body, media, message) -> None:
    before = _snapshot(deployed)
    response = requests.post(f"{deployed.server.url}/v1/reports", data=body,
                             headers=ingest_headers(deployed, media), timeout=30)
    assert 400 <= response.status_code < 500
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert message in response.json()["detail"]
    assert _snapshot(deployed) == before


def _tampered(report: Report, ciphertexts: tuple[bytes, ...]) -> Report:
    # the proof stays: the ciphertext checks, which come first, must refuse the report
    return Report(secrets.token_bytes(16), report.metric, report.version, report.key_id,
                  report.window, ciphertexts, report.proof)


def test_malformed_ciphertexts_get_4xx_and_change_no_aggregate(deployed) -> None:
    with client(deployed) as sdk:
        good = _one_report(sdk, "replayed", 1, time.time())
        n_bytes = len(good.ciphertexts[0])
        from blindsum.shared.schemes.paillier import PaillierPublic

        n = PaillierPublic.from_json(sdk.manifest().key(good.key_id).public).n
    bad_cts = [
        (b"\x00" * n_bytes, "zero"),
        (b"\xff" * n_bytes, "n^2"),
        (b"\x01" * (n_bytes - 1), "length"),
        (int(n).to_bytes(n_bytes, "big"), "gcd"),
    ]
    before = _snapshot(deployed)
    for ciphertext, _reason in bad_cts:
        batch = ReportBatch((good, _tampered(good, (ciphertext,))))
        response = requests.post(f"{deployed.server.url}/v1/reports",
                                 data=codec.dumps(batch.to_wire(), codec.CBOR),
                                 headers=ingest_headers(deployed, codec.CBOR), timeout=30)
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert "reports[1]" in detail or "report 1" in detail, detail
    assert _snapshot(deployed) == before


def test_unknown_key_and_wrong_version_are_refused(deployed) -> None:
    with client(deployed) as sdk:
        good = _one_report(sdk, "seconds", 10, time.time())
    before = _snapshot(deployed)
    for report in (
        Report(good.report_id, "seconds", good.version, "pai-unknown", good.window,
               good.ciphertexts),
        Report(good.report_id, "seconds", good.version + 1, good.key_id, good.window,
               good.ciphertexts),
        Report(good.report_id, "seconds", good.version, good.key_id, 3600,
               good.ciphertexts),
    ):
        response = requests.post(f"{deployed.server.url}/v1/reports",
                                 data=codec.dumps(ReportBatch((report,)).to_wire()),
                                 headers=ingest_headers(deployed), timeout=30)
        assert 400 <= response.status_code < 500, response.text
    assert _snapshot(deployed) == before


def test_ingest_needs_an_ingest_token(deployed) -> None:
    url = f"{deployed.server.url}/v1/reports"
    assert requests.post(url, data=b"{}", timeout=30,
                         headers={"Content-Type": codec.JSON}).status_code == 401
    wrong_role = {"Authorization": f"Bearer {deployed.admin_token}",
                  "Content-Type": codec.JSON}
    assert requests.post(url, data=b"{}", headers=wrong_role, timeout=30).status_code == 403


def test_sdk_rejects_a_manifest_signed_by_another_identity(deployed) -> None:
    stranger = identity_string(Ed25519PrivateKey.generate().public_key())
    sdk = Client(deployed.server.url, deployed.ingest_token, stranger)
    with pytest.raises(ManifestError):
        sdk.manifest()
    sdk.close()


def test_server_pinned_to_another_identity_accepts_nothing(deployed, tmp_path) -> None:
    from blindsum.server.processes import free_port, start_service

    port = free_port()
    stranger = identity_string(Ed25519PrivateKey.generate().public_key())
    env = {key: value for key, value in deployed.env.items()
           if key.startswith("BLINDSUM_") and "PASSPHRASE" not in key}
    impostor = start_service(
        "impostor",
        ["server", "serve", "--data-dir", str(tmp_path), "--port", str(port),
         "--keyholder-url", deployed.keyholder.url, "--keyholder-identity", stranger],
        port, tmp_path, env, wait=False)
    try:
        health = None
        deadline = time.monotonic() + 30
        while health is None and time.monotonic() < deadline:
            try:
                health = requests.get(f"{impostor.url}/healthz", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.1)
        assert health is not None and health.status_code == 503
        assert "not signed by the pinned" in json.dumps(health.json())
        manifest = requests.get(f"{impostor.url}/v1/manifest", timeout=30)
        assert manifest.status_code >= 500
        with client(deployed) as sdk:
            report = _one_report(sdk, "replayed", 1, time.time())
        refused = requests.post(f"{impostor.url}/v1/reports",
                                data=codec.dumps(ReportBatch((report,)).to_wire()),
                                headers=ingest_headers(deployed), timeout=30)
        assert refused.status_code >= 400
    finally:
        impostor.stop()


def _server_pids(deployed: Deployment) -> list[int]:
    master = deployed.server.process.pid
    pids = [master]
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(master):
            pids.append(int(status.parent.name))
    return pids


def _memory_contains(pid: int, needles: list[bytes]) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for line in maps:
            span, perms = line.split()[:2]
            if "r" not in perms:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            if end - start > 1 << 30:
                continue
            try:
                memory.seek(start)
                chunk = memory.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            if any(needle in chunk for needle in needles):
                return True
    return False


def test_server_holds_no_secret_key_or_plaintext(deployed) -> None:
    from blindsum.server.keyholder.service import Keyholder

    holder = Keyholder.open(deployed.keyholder_dir,
                            deployed.env["BLINDSUM_KEYSTORE_PASSPHRASE"])
    key = next(k for k in holder.db.key_records() if k.scheme == "paillier")
    secret = holder.secret_for("paillier", key.key_id)
    p, q = int(secret.p), int(secret.q)
    size = (p.bit_length() + 7) // 8
    needles = [x.to_bytes(size, order) for x in (p, q) for order in ("big", "little")]
    needles += [str(p).encode(), str(q).encode()]
    # the data directory: no factor in any encoding, no key-store file
    for path in deployed.server_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(needle in data for needle in needles), path
            assert b"blindsum-keystore" not in data, path
    # the processes: no factor anywhere in the memory of the master or its workers
    for pid in _server_pids(deployed):
        assert not _memory_contains(pid, needles), f"secret factor found in server pid {pid}"
    # no plaintext value: a distinctive value recorded now never appears in the clear
    marker = 512.375
    with client(deployed) as sdk:
        for _ in range(3):
            sdk.record("marked", marker)
    for path in deployed.server_dir.rglob("*"):
        if path.is_file():
            assert b"512.375" not in path.read_bytes()


def test_results_are_signed_by_the_keyholder(deployed) -> None:
    from blindsum.shared.signing import parse_identity, verify_document

    for result in published(deployed, "seconds"):
        payload = verify_document(result["document"], parse_identity(deployed.identity),
                                  "result")
        assert payload["metric"] == "seconds"
        assert math.isfinite(payload["value"])
