"""An app that uses only phe, requests and cryptography can report (docs/INTEROP.md).

Nothing from blindsum is imported to build the reports: this is the recipe a phe user
follows, run against real services on loopback.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import phe
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from blindsum.server.processes import Deployment, deployment

# phe alone cannot make validity proofs: these metrics opt out (docs/INTEROP.md)
INTEROP_POLICIES = Path(__file__).parent / "interop_policies.toml"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("interop"), [INTEROP_POLICIES],
                    paillier_bits=2048) as running:
        yield running


def verified_manifest(server: str, identity: str) -> dict[str, Any]:
    doc = requests.get(f"{server}/v1/manifest", timeout=30).json()
    key = Ed25519PublicKey.from_public_bytes(b64url_decode(identity.removeprefix("ed25519:")))
    key.verify(b64url_decode(doc["signature"]), doc["payload"].encode())
    return json.loads(doc["payload"])


def encode(policy: dict[str, Any], value: float) -> list[int]:
    if policy["kind"] == "histogram":
        edges = policy["buckets"]
        index = max(0, min(len(edges) - 2, sum(1 for e in edges if e <= value) - 1))
        return [1 if i == index else 0 for i in range(len(edges) - 1)]
    clipped = min(max(value, policy["lower"]), policy["upper"])
    return [round((clipped - policy["lower"]) / policy["precision"])]


def phe_report(manifest: dict[str, Any], metric: str, value: float) -> dict[str, Any]:
    policy = next(p for p in manifest["policies"] if p["name"] == metric)
    key = next(k for k in manifest["keys"]
               if k["scheme"] == "paillier" and k["status"] == "active")
    public_key = phe.PaillierPublicKey(int.from_bytes(b64url_decode(key["public"]["n"]), "big"))
    slots = encode(policy, value)
    slot_max = 1 if policy["kind"] == "histogram" else round(
        (policy["upper"] - policy["lower"]) / policy["precision"])
    width = (slot_max * policy["max_contributors"]).bit_length()
    plaintext = sum(slot << (i * width) for i, slot in enumerate(slots))
    encrypted = public_key.encrypt(plaintext)
    window = int(time.time()) // policy["window_seconds"] * policy["window_seconds"]
    return {"id": b64url(secrets.token_bytes(16)), "metric": metric,
            "version": policy["version"], "kid": key["kid"], "window": window,
            "ct": [[str(encrypted.ciphertext()), encrypted.exponent]]}


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


def test_phe_user_reports_a_sum_with_decimal_ciphertexts(deployed) -> None:
    manifest = verified_manifest(deployed.server.url, deployed.identity)
    values = [12.0, 250.0, 599.0, 1000.0, -5.0]  # the last two are clipped to 600 and 0
    reports = [phe_report(manifest, "seconds", v) for v in values]
    answer = post(deployed, reports)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"v": 1, "accepted": 5, "duplicates": 0}
    assert post(deployed, reports).json()["duplicates"] == 5  # a retry is counted once
    result = release_and_fetch(deployed, "seconds")
    assert result["report_count"] == 5
    low, high = result["ci"]
    truth = 12 + 250 + 599 + 600 + 0
    assert low - 3 * (high - low) <= truth <= high + 3 * (high - low)


def test_phe_user_reports_a_packed_histogram(deployed) -> None:
    manifest = verified_manifest(deployed.server.url, deployed.identity)
    values = [5, 50, 150, 700, 700, 4000, 9000]
    answer = post(deployed, [phe_report(manifest, "load_ms", v) for v in values])
    assert answer.status_code == 200, answer.text
    result = release_and_fetch(deployed, "load_ms")
    assert result["report_count"] == len(values)
    assert len(result["value"]) == 4  # buckets [0,100) [100,500) [500,1000) [1000,5000]


def test_phe_pair_with_a_nonzero_exponent_is_refused(deployed) -> None:
    manifest = verified_manifest(deployed.server.url, deployed.identity)
    report = phe_report(manifest, "opened", 1)
    report["ct"][0][1] = -3  # what phe.encrypt(0.125) would send
    answer = post(deployed, [report])
    assert answer.status_code == 400
    assert "exponent 0" in answer.json()["detail"]


def test_decimal_ciphertexts_are_stored_as_canonical_bytes(deployed) -> None:
    import sqlite3

    import cbor2

    manifest = verified_manifest(deployed.server.url, deployed.identity)
    report = phe_report(manifest, "replayed", 1)
    assert post(deployed, [report]).status_code == 200
    with sqlite3.connect(deployed.server_dir / "aggregator.db") as db:
        (stored,) = db.execute("SELECT ciphertexts FROM reports WHERE report_id = ?",
                               (b64url_decode(report["id"]),)).fetchone()
    (blob,) = cbor2.loads(stored)
    assert isinstance(blob, bytes) and int.from_bytes(blob, "big") == int(report["ct"][0][0])
