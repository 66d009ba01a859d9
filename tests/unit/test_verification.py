"""``shared.verification.verify_result`` and ``blindsum verify`` on single-key results.

(Threshold results: tests/unit/test_threshold_release.py and the security suite.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.shared.errors import InvalidProof, ManifestError
from blindsum.shared.signing import identity_string, sign_document
from blindsum.shared.verification import verify_result

KEY = Ed25519PrivateKey.generate()
PAYLOAD: dict[str, Any] = {
    "type": "blindsum.release", "v": 1, "metric": "visits", "version": 1, "kind": "count",
    "scheme": "paillier", "window": 1_700_000_000, "window_seconds": 3600, "kid": "pai-1",
    "report_count": 30, "report_ids_digest": "ab" * 32, "request_digest": "cd" * 32,
    "value": 27.0, "noisy_value": 27.0, "ci": [22.0, 30.0], "confidence": 0.95,
    "consistent": True, "mechanism": "laplace", "epsilon": 1.0, "delta": 0.0, "rho": None,
    "scale": 2.0, "released_at": 1_700_003_700.0, "audit_seq": 4, "audit_head": "ef" * 32,
}


def _signed(payload: dict[str, Any], key: Ed25519PrivateKey = KEY) -> dict[str, str]:
    return sign_document(key, payload)


def test_a_signed_result_verifies_alone_or_as_a_published_entry() -> None:
    document = _signed(PAYLOAD)
    result = verify_result(document, KEY.public_key())
    assert result.to_json() == PAYLOAD and not result.threshold
    entry = {**PAYLOAD, "value": 1e9, "document": document}  # unsigned fields are ignored
    assert verify_result(entry, KEY.public_key()).value == 27.0


def test_another_identity_or_a_changed_payload_does_not_verify() -> None:
    document = _signed(PAYLOAD)
    with pytest.raises(ManifestError):
        verify_result(document, Ed25519PrivateKey.generate().public_key())
    changed = {**document, "payload": document["payload"].replace("27.0", "28.0")}
    with pytest.raises(ManifestError):
        verify_result(changed, KEY.public_key())


def test_a_signed_payload_claiming_threshold_without_proofs_is_refused() -> None:
    with pytest.raises(InvalidProof, match="claims threshold decryption"):
        verify_result(_signed({**PAYLOAD, "threshold": True}), KEY.public_key())


def test_a_signed_document_that_is_not_a_release_result_is_refused() -> None:
    with pytest.raises(InvalidProof, match="not a release result"):
        verify_result(_signed({"type": "blindsum.manifest", "v": 1}), KEY.public_key())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blindsum.server.cli", "verify", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_cli_verifies_a_single_key_result_and_names_what_is_wrong(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    document = _signed(PAYLOAD)
    good.write_text(json.dumps({"document": document}))
    bad.write_text(json.dumps({**document, "payload": document["payload"].replace(
        '"report_count":30', '"report_count":31')}))
    identity = identity_string(KEY.public_key())
    done = _cli(str(good), "--identity", identity, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["verified"] and answer["threshold"] is False
    assert answer["payload"] == PAYLOAD
    refused = _cli(str(bad), "--identity", identity)
    assert refused.returncode != 0 and "not signed by the pinned" in refused.stderr
    assert "Traceback" not in refused.stderr
