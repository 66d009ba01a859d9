"""The aggregator's configuration: one typed value, loaded from the environment in one place.

CLI flags arrive as ``overrides`` and win over the environment. Every missing or invalid
setting raises ``InvalidConfig`` naming the setting and where it came from, so a
misconfigured server refuses to start instead of running half-configured.

Bearer tokens given in the environment (``BLINDSUM_INGEST_TOKENS``, ``BLINDSUM_ADMIN_TOKENS``)
are hashed as they are parsed: the configuration holds their SHA-256 digests only. Tokens
created with ``blindsum server token create`` live (hashed, scoped, revocable) in the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import limits

from blindsum.server.http import token_digest
from blindsum.shared.errors import InvalidConfig, InvalidInput
from blindsum.shared.signing import parse_identity

MIB = 1 << 20

ENV_VARS: Mapping[str, str] = {
    "data_dir": "BLINDSUM_SERVER_DATA_DIR",
    "keyholder_url": "BLINDSUM_KEYHOLDER_URL",
    "keyholder_identity": "BLINDSUM_KEYHOLDER_IDENTITY",
    "ingest_tokens": "BLINDSUM_INGEST_TOKENS",
    "admin_tokens": "BLINDSUM_ADMIN_TOKENS",
    "release_token": "BLINDSUM_RELEASE_TOKEN",
    "auto_release": "BLINDSUM_AUTO_RELEASE",
    "manifest_refresh_seconds": "BLINDSUM_MANIFEST_REFRESH_SECONDS",
    "ca_bundle": "BLINDSUM_CA_BUNDLE",
    "keystore_passphrase": "BLINDSUM_SERVER_KEYSTORE_PASSPHRASE",
    "max_body_bytes": "BLINDSUM_MAX_BODY_BYTES",
    "rate_limit_ingest": "BLINDSUM_RATE_LIMIT_INGEST",
    "rate_limit_admin": "BLINDSUM_RATE_LIMIT_ADMIN",
    "rate_limit_public": "BLINDSUM_RATE_LIMIT_PUBLIC",
    "rate_limit_auth_failures": "BLINDSUM_RATE_LIMIT_AUTH_FAILURES",
    "report_retention_seconds": "BLINDSUM_REPORT_RETENTION_SECONDS",
}
# Settings whose parsed value is stored under another field name (tokens become digests).
_FIELD_OF: Mapping[str, str] = {
    "ingest_tokens": "ingest_token_digests",
    "admin_tokens": "admin_token_digests",
}
REQUIRED = ("data_dir", "keyholder_url", "keyholder_identity", "release_token")
_OFF = ("off", "none", "unlimited")


@dataclass(frozen=True)
class AggregatorConfig:
    """Everything one aggregator process needs.

    Attributes:
        data_dir: directory of ``aggregator.db`` (created if missing).
        keyholder_url: base URL of the key-holder, ``http://`` or ``https://``.
        keyholder_identity: the pinned ``ed25519:<b64url>`` identity that must sign the
            manifest and every release result.
        release_token: the bearer token this server presents to the key-holder.
        ingest_token_digests: SHA-256 digests (``token_digest``) of the unscoped tokens apps
            may use to ``POST /v1/reports``, from ``ingest_tokens``.
        admin_token_digests: the same for operators' tokens (``/v1/windows``).
        auto_release: release every due window in the background.
        release_interval_seconds: how often the background thread looks for due windows.
        manifest_refresh_seconds: how often the manifest is re-fetched (0: only on demand).
        max_body_bytes: largest request body accepted (413 beyond).
        ca_bundle: CA file to verify the key-holder's TLS certificate (None: system CAs).
        keystore_passphrase: seals ``<data_dir>/keys/``, where a threshold key's ceremony
            put this server's share (None: the share file is unsealed).
        rate_limit_ingest: requests per ingest token (``limits`` notation, e.g.
            ``600/minute``; None: unlimited).
        rate_limit_admin: requests per admin token.
        rate_limit_public: requests per client address to the unauthenticated endpoints.
        rate_limit_auth_failures: failed authentications (401) per client address; once
            spent, unauthenticated requests from that address are refused with 429.
        report_retention_seconds: how long after its window is released or refused a
            report's ciphertexts are kept (its id stays, for duplicates); see retention.py.
    """

    data_dir: Path
    keyholder_url: str
    keyholder_identity: str
    release_token: str
    ingest_token_digests: tuple[str, ...] = ()
    admin_token_digests: tuple[str, ...] = ()
    auto_release: bool = True
    release_interval_seconds: float = 5.0
    # short, so a retired (e.g. compromised) key stops being accepted within seconds
    manifest_refresh_seconds: float = 10.0
    max_body_bytes: int = 64 * MIB
    ca_bundle: str | None = None
    keystore_passphrase: str | None = None
    rate_limit_ingest: str | None = "600/minute"
    rate_limit_admin: str | None = "120/minute"
    rate_limit_public: str | None = "6000/minute"
    rate_limit_auth_failures: str | None = "30/minute"
    # a day: time to look into a release that went wrong, then the ciphertexts go
    report_retention_seconds: float = 86_400.0


def load_config(
    overrides: Mapping[str, object] | None = None, env: Mapping[str, str] = os.environ
) -> AggregatorConfig:
    """Build the configuration from ``env`` (``BLINDSUM_*``), with ``overrides`` winning.

    ``overrides`` maps setting names (the field names, and ``ingest_tokens`` /
    ``admin_tokens`` for plaintext tokens) to values (``None`` means "not given"); strings are
    parsed like environment values, so CLI flags can be passed through unchanged. A rate
    limit of ``off`` disables that limit.

    Raises:
        InvalidConfig: an unknown override, or a missing or invalid setting (named).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(overrides) - set(_PARSERS)
    if unknown:
        raise InvalidConfig(f"unknown aggregator settings {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        source = f"--{name.replace('_', '-')}"
        raw: object = overrides.get(name)
        if raw is None and name in ENV_VARS and env.get(ENV_VARS[name], "") != "":
            raw, source = env[ENV_VARS[name]], ENV_VARS[name]
        if raw is None:
            continue
        values[_FIELD_OF.get(name, name)] = parse(raw, f"{name} ({source})")
    for name in REQUIRED:
        if name not in values:
            hint = f" (set {ENV_VARS[name]} or --{name.replace('_', '-')})"
            raise InvalidConfig(f"aggregator setting {name} is required{hint}")
    ingest = set(values.get("ingest_token_digests", ()))
    admin = set(values.get("admin_token_digests", ()))
    if ingest & admin or token_digest(values["release_token"]) in ingest | admin:
        raise InvalidConfig(
            "ingest_tokens, admin_tokens and release_token must not share a token "
            "(each role gets its own credential)"
        )
    return AggregatorConfig(**values)


def _text(raw: object, what: str) -> str:
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidConfig(f"{what} must be a non-empty string")
    return raw.strip()


def _path(raw: object, what: str) -> Path:
    return Path(_text(raw, what)).expanduser()


def _url(raw: object, what: str) -> str:
    text = _text(raw, what)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidConfig(f"{what} must be an http:// or https:// URL, got {text!r}")
    if parts.query or parts.fragment:
        raise InvalidConfig(f"{what} must not carry a query or fragment")
    return text.rstrip("/")


def _identity(raw: object, what: str) -> str:
    text = _text(raw, what)
    try:
        parse_identity(text)
    except InvalidInput as exc:
        raise InvalidConfig(f"{what}: {exc.detail}") from None
    return text


def _token(raw: object, what: str) -> str:
    token = _text(raw, what)
    if any(c.isspace() or c == "," or not c.isprintable() for c in token):
        raise InvalidConfig(f"{what}: a token must not contain spaces, commas or controls")
    return token


def _token_digests(raw: object, what: str) -> tuple[str, ...]:
    """Comma-separated tokens (or a list) -> their digests; plaintexts are not kept."""
    items: list[object]
    if isinstance(raw, str):
        items = [part.strip() for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise InvalidConfig(f"{what} must be a comma-separated list of tokens")
    if not items:
        raise InvalidConfig(f"{what} must name at least one token")
    return tuple(dict.fromkeys(token_digest(_token(item, what)) for item in items))


def _rate_limit(raw: object, what: str) -> str | None:
    text = _text(raw, what).lower()
    if text in _OFF:
        return None
    try:
        parsed = limits.parse_many(text)
    except ValueError:
        parsed = []
    if not parsed or any(item.amount < 1 for item in parsed):
        raise InvalidConfig(
            f"{what} must be a rate such as '600/minute' or '10/second;500/hour' "
            f"(or 'off'), got {raw!r}"
        )
    return text


def _boolean(raw: object, what: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidConfig(f"{what} must be true or false, got {raw!r}")


def _seconds(raw: object, what: str) -> float:
    value = None
    if isinstance(raw, str | int | float) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except ValueError:
            value = None
    if value is None or not 0 <= value <= 86_400:
        raise InvalidConfig(f"{what} must be a number of seconds in 0..86400, got {raw!r}")
    return value


def _positive_seconds(raw: object, what: str) -> float:
    value = _seconds(raw, what)
    if value < 0.05:
        raise InvalidConfig(f"{what} must be at least 0.05 seconds")
    return value


def _byte_count(raw: object, what: str) -> int:
    value = None
    if isinstance(raw, str | int) and not isinstance(raw, bool):
        try:
            value = int(raw)
        except ValueError:
            value = None
    if value is None or not 1024 <= value <= 1 << 32:
        raise InvalidConfig(f"{what} must be an integer number of bytes in 1024..2**32")
    return value


def _passphrase(raw: object, what: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise InvalidConfig(f"{what} must be a non-empty string")
    return raw


def _ca_bundle(raw: object, what: str) -> str:
    path = _path(raw, what)
    if not path.is_file():
        raise InvalidConfig(f"{what}: no CA bundle file at {str(path)!r}")
    return str(path)


_PARSERS: Mapping[str, Callable[[object, str], Any]] = {
    "data_dir": _path,
    "keyholder_url": _url,
    "keyholder_identity": _identity,
    "release_token": _token,
    "ingest_tokens": _token_digests,
    "admin_tokens": _token_digests,
    "auto_release": _boolean,
    "release_interval_seconds": _positive_seconds,
    "manifest_refresh_seconds": _seconds,
    "max_body_bytes": _byte_count,
    "ca_bundle": _ca_bundle,
    "keystore_passphrase": _passphrase,
    "rate_limit_ingest": _rate_limit,
    "rate_limit_admin": _rate_limit,
    "rate_limit_public": _rate_limit,
    "rate_limit_auth_failures": _rate_limit,
    "report_retention_seconds": _seconds,
}
