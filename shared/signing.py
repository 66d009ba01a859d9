"""The key-holder's Ed25519 identity and the signed documents it issues.

A signed document carries its payload as the exact JSON text that was signed, so nobody has
to re-canonicalise JSON to check a signature:
``{"payload": "<json text>", "signer": "ed25519:<base64url key>", "signature": "<base64url>"}``.
The manifest and every release result are signed this way; SDKs and the server check them
against an identity pinned out of band (``--keyholder-identity``), never against the
``signer`` field alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from blindsum.shared.codec import b64decode, b64encode
from blindsum.shared.errors import InvalidInput, ManifestError

IDENTITY_PREFIX = "ed25519:"


def identity_string(public_key: Ed25519PublicKey) -> str:
    """The printable, pinnable form of an identity: ``ed25519:`` + base64url raw key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return IDENTITY_PREFIX + b64encode(raw)


def parse_identity(text: str) -> Ed25519PublicKey:
    """Parse a pinned identity string.

    Raises:
        InvalidInput: not of the form ``ed25519:<43 base64url characters>``.
    """
    if not isinstance(text, str) or not text.startswith(IDENTITY_PREFIX):
        raise InvalidInput(f"key-holder identity must start with {IDENTITY_PREFIX!r}")
    raw = b64decode(text[len(IDENTITY_PREFIX):], "key-holder identity")
    if len(raw) != 32:
        raise InvalidInput("key-holder identity must hold a 32-byte Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign_document(key: Ed25519PrivateKey, payload: Mapping[str, Any]) -> dict[str, str]:
    """Sign a JSON payload, returning the signed-document object."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return {
        "payload": text,
        "signer": identity_string(key.public_key()),
        "signature": b64encode(key.sign(text.encode())),
    }


def verify_document(document: Any, pinned: Ed25519PublicKey, what: str) -> dict[str, Any]:
    """Check a signed document against the pinned identity and return its payload.

    Raises:
        ManifestError: malformed, signed by another key, or tampered with.
    """
    if not isinstance(document, Mapping):
        raise ManifestError(f"{what} is not a signed document")
    payload, signature = document.get("payload"), document.get("signature")
    if not isinstance(payload, str) or not isinstance(signature, str):
        raise ManifestError(f"{what} lacks a payload or signature")
    try:
        pinned.verify(b64decode(signature, "signature"), payload.encode())
    except (InvalidSignature, InvalidInput):
        raise ManifestError(
            f"{what} is not signed by the pinned key-holder identity {identity_string(pinned)}"
        ) from None
    try:
        body = json.loads(payload)
    except ValueError:
        raise ManifestError(f"{what} payload is not JSON") from None
    if not isinstance(body, dict):
        raise ManifestError(f"{what} payload is not an object")
    return body
