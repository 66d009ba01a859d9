"""An SDK pinned to the real key-holder identity trusts no manifest it did not sign.

The attacker here is a server of our own on 127.0.0.1 that answers ``GET /v1/manifest``
with whatever the test hands it (a manifest signed by a fresh Ed25519 key, the genuine
manifest with an edited payload, an older genuine manifest) and records every report sent
to it. The SDK must refuse the manifest and send the attacker nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from security_kit import TIMEOUT, record_error

from blindsum.client import Client
from blindsum.server.processes import Deployment
from blindsum.shared.errors import ManifestError
from blindsum.shared.manifest import KeyEntry, Manifest
from blindsum.shared.schemes.paillier import generate_paillier
from blindsum.shared.signing import identity_string, parse_identity, sign_document


class AttackerServer:
    """A hostile aggregator: serves ``document`` as the manifest, keeps what it receives."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {}
        self.received: list[tuple[str, bytes]] = []
        attacker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/v1/manifest":
                    self._answer(200, json.dumps(attacker.document).encode())
                else:
                    self._answer(404, b'{"code": "not-found", "detail": "no"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                attacker.received.append((self.path, self.rfile.read(length)))
                self._answer(200, b'{"v": 1, "accepted": 1, "duplicates": 0}')

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AttackerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@pytest.fixture
def attacker() -> Iterator[AttackerServer]:
    with AttackerServer() as server:
        yield server


@pytest.fixture(scope="module")
def genuine(deployed: Deployment) -> dict[str, Any]:
    response = requests.get(f"{deployed.keyholder.url}/v1/manifest", timeout=TIMEOUT)
    response.raise_for_status()
    return response.json()


def _sdk(attacker: AttackerServer, deployed: Deployment) -> Client:
    return Client(attacker.url, deployed.ingest_token, deployed.identity, max_retries=0,
                  enforce_contribution_limit=False)


def _refused(sdk: Client, attacker: AttackerServer, needle: str) -> None:
    with pytest.raises(ManifestError) as refusal:
        sdk.record("seconds", 42)
    record_error("sdk", 0, refusal.value.detail)
    assert needle in refusal.value.detail, refusal.value.detail
    assert sdk.pending == 0
    sent = sdk.flush()
    assert (sent.accepted, sent.duplicates) == (0, 0)
    assert attacker.received == []


def test_sdk_rejects_a_manifest_signed_by_another_key(
    deployed: Deployment, genuine: dict[str, Any], attacker: AttackerServer,
) -> None:
    real = json.loads(genuine["payload"])
    own_key = generate_paillier(2048, key_id="pai-attacker")
    forger = Ed25519PrivateKey.generate()
    # the real policies, but the attacker's own Paillier key as the active one
    payload = {**real, "serial": real["serial"] + 1000,
               "keys": [KeyEntry("paillier", own_key.key_id, "active",
                                 own_key.public.public_json()).to_json()]}
    attacker.document = sign_document(forger, payload)
    assert attacker.document["signer"] == identity_string(forger.public_key())
    with _sdk(attacker, deployed) as sdk:
        _refused(sdk, attacker, "not signed by the pinned key-holder identity")


def test_sdk_rejects_the_genuine_manifest_with_an_edited_payload(
    deployed: Deployment, genuine: dict[str, Any], attacker: AttackerServer,
) -> None:
    payload = json.loads(genuine["payload"])
    for policy in payload["policies"]:
        if policy["name"] == "seconds":
            policy["upper"] = 1  # shrink the bounds, so the noise shrinks too
    edited = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert edited != genuine["payload"]
    attacker.document = {**genuine, "payload": edited}
    with _sdk(attacker, deployed) as sdk:
        _refused(sdk, attacker, "not signed by the pinned key-holder identity")


def test_sdk_rejects_a_manifest_that_only_claims_the_pinned_signer(
    deployed: Deployment, genuine: dict[str, Any], attacker: AttackerServer,
) -> None:
    forger = Ed25519PrivateKey.generate()
    forged = sign_document(forger, json.loads(genuine["payload"]))
    attacker.document = {**forged, "signer": deployed.identity}
    with _sdk(attacker, deployed) as sdk:
        _refused(sdk, attacker, "not signed by the pinned key-holder identity")


def test_sdk_refuses_to_roll_back_to_an_older_genuine_manifest(
    deployed: Deployment, genuine: dict[str, Any], attacker: AttackerServer,
) -> None:
    uri = f"file:{deployed.keyholder_dir / 'keyholder.db'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        (older,) = conn.execute("SELECT document FROM manifests ORDER BY serial LIMIT 1")
    old_document = json.loads(older[0])
    # genuinely signed by the pinned key-holder, only older
    old = Manifest.verify(old_document, parse_identity(deployed.identity))
    attacker.document = genuine
    with _sdk(attacker, deployed) as sdk:
        current = sdk.manifest()
        assert old.serial < current.serial
        attacker.document = old_document
        with pytest.raises(ManifestError) as refusal:
            sdk.refresh_manifest()
        record_error("sdk", 0, refusal.value.detail)
        assert "roll back" in refusal.value.detail
        assert sdk.manifest().serial == current.serial
