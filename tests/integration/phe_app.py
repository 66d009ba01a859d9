"""What an app that has only phe, requests and cryptography does (docs/INTEROP.md).

Nothing from blindsum is imported here: these are the recipe's steps, shared by the tests
that run them against real services on loopback.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

import phe
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

INTEROP_DOC = Path(__file__).parents[2] / "docs" / "INTEROP.md"
RECIPE_MARKER = "proven report recipe"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verified_manifest(server: str, identity: str) -> dict[str, Any]:
    doc = requests.get(f"{server}/v1/manifest", timeout=30).json()
    key = Ed25519PublicKey.from_public_bytes(b64url_decode(identity.removeprefix("ed25519:")))
    key.verify(b64url_decode(doc["signature"]), doc["payload"].encode())
    return json.loads(doc["payload"])


def metric_key_layout(manifest: dict[str, Any], metric: str
                      ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    policy = next(p for p in manifest["policies"] if p["name"] == metric)
    key = next(k for k in manifest["keys"]
               if k["scheme"] == "paillier" and k["status"] == "active")
    layout = next(entry for entry in manifest["layouts"]
                  if entry["metric"] == metric and entry["kid"] == key["kid"])
    return policy, key, layout


def public_key(key: dict[str, Any]) -> phe.PaillierPublicKey:
    return phe.PaillierPublicKey(int.from_bytes(b64url_decode(key["public"]["n"]), "big"))


def encode(policy: dict[str, Any], value: float) -> list[int]:
    if policy["kind"] == "histogram":
        edges = policy["buckets"]
        index = max(0, min(len(edges) - 2, sum(1 for e in edges if e <= value) - 1))
        return [1 if i == index else 0 for i in range(len(edges) - 1)]
    clipped = min(max(value, policy["lower"]), policy["upper"])
    return [round((clipped - policy["lower"]) / policy["precision"])]


def plaintexts(layout: dict[str, Any], slots: list[int]) -> list[int]:
    per, width = layout["per"], layout["width"]
    return [sum(slot << (width * j) for j, slot in enumerate(slots[k:k + per]))
            for k in range(0, len(slots), per)]


def current_window(policy: dict[str, Any]) -> int:
    return int(time.time()) // policy["window_seconds"] * policy["window_seconds"]


def phe_report(manifest: dict[str, Any], metric: str, value: float) -> dict[str, Any]:
    """Step 4: an unproven report (for a ``validity = "none"`` metric)."""
    policy, key, layout = metric_key_layout(manifest, metric)
    encrypted = [public_key(key).encrypt(m) for m in plaintexts(layout, encode(policy, value))]
    return {"id": b64url(secrets.token_bytes(16)), "metric": metric,
            "version": policy["version"], "kid": key["kid"], "window": current_window(policy),
            "ct": [[str(c.ciphertext()), c.exponent] for c in encrypted]}


def recipe_namespace() -> dict[str, Any]:
    """Step 5's code block, executed exactly as docs/INTEROP.md prints it."""
    blocks = re.findall(r"```python\n(.*?)```", INTEROP_DOC.read_text(), re.S)
    (block,) = [b for b in blocks if RECIPE_MARKER in b]
    assert "blindsum" not in block.replace("blindsum/", "")  # domain tags only, no imports
    namespace: dict[str, Any] = {}
    exec(compile(block, str(INTEROP_DOC), "exec"), namespace)
    return namespace


def post(server: str, token: str, reports: list[dict[str, Any]]) -> requests.Response:
    return requests.post(f"{server}/v1/reports", json={"v": 1, "reports": reports},
                         headers={"Authorization": f"Bearer {token}"}, timeout=120)


def release_and_fetch(server: str, admin_token: str, metric: str) -> dict[str, Any]:
    response = requests.post(f"{server}/v1/windows/release", json={"metric": metric},
                             timeout=300, headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 200 and response.json()["refused"] == [], response.text
    (result,) = requests.get(f"{server}/v1/published/{metric}", timeout=30).json()["results"]
    return result
