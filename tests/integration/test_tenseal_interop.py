"""An app that uses only TenSEAL, requests and cryptography can report CKKS metrics
(docs/INTEROP.md, "CKKS metrics with TenSEAL").

Nothing from blindsum is imported to build the reports: this is the recipe a TenSEAL user
follows, run against real services on loopback. The manifest check and the slot encoding are
the Paillier recipe's (test_phe_interop.py); what differs is the key (a public context
fetched by id and checked against the signed digest) and the ciphertexts (one 2048-slot
vector per 2048 slots, scale 2**27, base64url in JSON).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from blindsum.server.processes import Deployment, deployment

POLICIES = Path(__file__).parent / "tenseal_interop_policies.toml"
SLOTS = 2048  # slots per CKKS vector: poly_modulus_degree / 2 (the manifest's key says 4096)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("tenseal"), [POLICIES],
                    paillier_bits=2048) as running:
        yield running


def verified_manifest(server: str, identity: str) -> dict[str, Any]:
    doc = requests.get(f"{server}/v1/manifest", timeout=30).json()
    key = Ed25519PublicKey.from_public_bytes(b64url_decode(identity.removeprefix("ed25519:")))
    key.verify(b64url_decode(doc["signature"]), doc["payload"].encode())
    return json.loads(doc["payload"])


def public_context(server: str, key: dict[str, Any]) -> ts.Context:
    """The key's public context, fetched by id and checked against the signed digest."""
    data = requests.get(f"{server}/v1/keys/{key['kid']}/context", timeout=30).content
    if hashlib.sha256(data).hexdigest() != key["public"]["context_sha256"]:
        raise ValueError("the CKKS context does not match the signed manifest")
    return ts.context_from(data)


def encode(policy: dict[str, Any], value: float | list[float]) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [round((min(max(v, policy["lower"]), policy["upper"]) - policy["lower"])
                  / policy["precision"]) for v in values]


def ckks_report(server: str, manifest: dict[str, Any], metric: str,
                value: float | list[float], scale_bits: int | None = None) -> dict[str, Any]:
    policy = next(p for p in manifest["policies"] if p["name"] == metric)
    key = next(k for k in manifest["keys"] if k["scheme"] == "ckks" and k["status"] == "active")
    context = public_context(server, key)
    scale = 2.0 ** (scale_bits or key["public"]["scale_bits"])
    slots = [float(s) for s in encode(policy, value)]
    cts = []
    for start in range(0, len(slots), SLOTS):
        chunk = slots[start:start + SLOTS]
        chunk += [0.0] * (SLOTS - len(chunk))  # every vector has exactly 2048 slots
        cts.append(b64url(ts.ckks_vector(context, chunk, scale=scale).serialize()))
    window = int(time.time()) // policy["window_seconds"] * policy["window_seconds"]
    return {"id": b64url(secrets.token_bytes(16)), "metric": metric,
            "version": policy["version"], "kid": key["kid"], "window": window, "ct": cts}


def post(deployed: Deployment, reports: list[dict[str, Any]]) -> requests.Response:
    return requests.post(f"{deployed.server.url}/v1/reports", json={"v": 1, "reports": reports},
                         headers={"Authorization": f"Bearer {deployed.ingest_token}"},
                         timeout=60)


def release_and_fetch(deployed: Deployment, metric: str) -> dict[str, Any]:
    response = requests.post(f"{deployed.server.url}/v1/windows/release",
                             json={"metric": metric}, timeout=120,
                             headers={"Authorization": f"Bearer {deployed.admin_token}"})
    assert response.status_code == 200 and response.json()["refused"] == [], response.text
    (result,) = requests.get(f"{deployed.server.url}/v1/published/{metric}",
                             timeout=30).json()["results"]
    return result


def _near(truth: float, noisy: float, scale: float) -> bool:
    # Against the raw noisy value and the noise scale, not the published interval: the
    # interval is clipped to the domain, and a draw far below a small truth clips it to
    # [0, 0]. Six scales: a false failure about once in 10^9 releases.
    return abs(noisy - truth) <= 6 * scale


def test_tenseal_user_reports_a_ckks_sum(deployed: Deployment) -> None:
    server = deployed.server.url
    manifest = verified_manifest(server, deployed.identity)
    values = [12.5, 250.0, 599.5, 1000.0, -5.0]  # the last two are clipped to 600 and 0
    reports = [ckks_report(server, manifest, "ckks_seconds", v) for v in values]
    answer = post(deployed, reports)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"v": 1, "accepted": 5, "duplicates": 0}
    assert post(deployed, reports).json()["duplicates"] == 5  # a retry is counted once
    result = release_and_fetch(deployed, "ckks_seconds")
    assert result["report_count"] == 5
    assert _near(12.5 + 250 + 599.5 + 600 + 0, result["noisy_value"], result["scale"])


def test_tenseal_user_reports_a_ckks_vector(deployed: Deployment) -> None:
    server = deployed.server.url
    manifest = verified_manifest(server, deployed.identity)
    values = [[10.0, 20.0, 30.0], [1.0, 2.0, 300.0], [0.0, 50.0, 7.0]]
    answer = post(deployed, [ckks_report(server, manifest, "ckks_minutes", v) for v in values])
    assert answer.status_code == 200, answer.text
    result = release_and_fetch(deployed, "ckks_minutes")
    truth = [11.0, 72.0, 137.0]  # 300 is clipped to 100
    assert len(result["value"]) == 3
    assert all(_near(t, noisy, result["scale"])
               for t, noisy in zip(truth, result["noisy_value"], strict=True))


def test_a_vector_at_another_scale_is_refused_with_the_expected_one(
    deployed: Deployment,
) -> None:
    manifest = verified_manifest(deployed.server.url, deployed.identity)
    report = ckks_report(deployed.server.url, manifest, "ckks_seconds", 5.0, scale_bits=40)
    answer = post(deployed, [report])
    assert answer.status_code == 400
    assert "2048-slot CKKS vector at scale 2**27" in answer.json()["detail"]
