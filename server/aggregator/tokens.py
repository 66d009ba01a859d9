"""The aggregator's bearer tokens: hashed, scoped to roles and metrics, revocable at once.

A token is ``ing_`` or ``adm_`` followed by 256 random bits (``secrets.token_urlsafe(32)``).
It is shown once, when created; the server keeps only its SHA-256 digest
(``server.http.token_digest``) in the ``tokens`` table, with its role (``ingest`` or
``admin``), a label for operators, the metrics an ingest token may report (``None``: all),
and when it was created and revoked. Tokens from the environment (``BLINDSUM_INGEST_TOKENS``,
``BLINDSUM_ADMIN_TOKENS``) are hashed when the configuration is loaded and act as unscoped
tokens that only a restart without them revokes.

Every request looks its token up by digest: one primary-key lookup, so a revocation made by
the CLI in another process is seen by the next request, in every worker, with no restart.
Looking up a SHA-256 digest is not a timing oracle on the token: a caller who varies the
token cannot steer which digest bytes match a stored one, so learns nothing from the time a
B-tree or dict lookup takes (the reason ``require_token`` compares in constant time is that
it scans candidates; a keyed lookup has no candidates to scan).
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from blindsum.server.aggregator.store import Store
from blindsum.server.http import token_digest
from blindsum.shared.errors import Conflict, InvalidInput, NotFound
from blindsum.shared.policy import NAME_PATTERN

ROLES = ("ingest", "admin")
PREFIXES: Mapping[str, str] = {"ingest": "ing_", "admin": "adm_"}
MIN_PREFIX = 8  # hex digits of a digest prefix that may name a token on the command line
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:@/+-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_COLUMNS = "digest, role, label, metrics, created_at, revoked_at, max_reports_per_window"
MAX_CAP = 10**9


@dataclass(frozen=True)
class TokenRecord:
    """What the server knows about one token (never the token itself).

    Attributes:
        digest: SHA-256 hex digest of the token.
        role: ``ingest`` or ``admin``.
        label: the operator's name for it (unique among active tokens).
        metrics: metric names an ingest token may report; ``None`` means every metric.
        created_at: unix seconds.
        revoked_at: unix seconds, or ``None`` while the token is valid.
        source: ``store`` (created by the CLI) or ``environment``.
        max_reports_per_window: reports this (ingest) token may send per window of each
            metric; ``None``: no cap. An operator who issues a token per install bounds
            what one install sends, whatever its SDK does.
    """

    digest: str
    role: str
    label: str
    metrics: frozenset[str] | None
    created_at: float
    revoked_at: float | None = None
    source: str = "store"
    max_reports_per_window: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def may_report(self, metric: str) -> bool:
        return self.metrics is None or metric in self.metrics

    def to_json(self) -> dict[str, Any]:
        """The listing form: no token, only a digest prefix."""
        return {
            "label": self.label,
            "role": self.role,
            "metrics": None if self.metrics is None else sorted(self.metrics),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "max_reports_per_window": self.max_reports_per_window,
            "digest_prefix": self.digest[:12],
        }


def new_token(role: str) -> str:
    return PREFIXES[role] + secrets.token_urlsafe(32)


def environment_records(digests_by_role: Mapping[str, Iterable[str]]) -> dict[str, TokenRecord]:
    """Unscoped records for the token digests from the configuration, by digest."""
    return {
        digest: TokenRecord(digest, role, f"environment ({role})", None, 0.0,
                            source="environment")
        for role, digests in digests_by_role.items() for digest in digests
    }


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {list(ROLES)}, got {role!r}")
    return role


def check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise InvalidInput(
            "a label is 1..64 characters: letters, digits, space and _ . : @ / + - "
            f"(starting with a letter or digit), got {label!r}"
        )
    return label


def check_metrics(metrics: Iterable[str]) -> frozenset[str]:
    names = frozenset(metrics)
    bad = sorted(name for name in names if not NAME_PATTERN.match(name))
    if bad:
        raise InvalidInput(f"metric names must match {NAME_PATTERN.pattern}, got {bad}")
    return names


class TokenBook:
    """The ``tokens`` table of one aggregator store; safe to use from several processes."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def find(self, digest: str) -> TokenRecord | None:
        row = self._store.connection().execute(
            f"SELECT {_COLUMNS} FROM tokens WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else _record(row)

    def all(self) -> list[TokenRecord]:
        rows = self._store.connection().execute(
            f"SELECT {_COLUMNS} FROM tokens ORDER BY created_at, label"
        )
        return [_record(row) for row in rows]

    def create(self, role: str, label: str | None = None,
               metrics: Iterable[str] | None = None,
               max_reports_per_window: int | None = None) -> tuple[str, TokenRecord]:
        """Make a token; returns (the token, to show once, and its record).

        Raises:
            InvalidInput: a bad role, label, metric name or cap, or metrics or a cap on an
                admin token.
            Conflict: an active token already has this label.
        """
        check_role(role)
        cap = max_reports_per_window
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)
                                or not 1 <= cap <= MAX_CAP):
            raise InvalidInput(f"max_reports_per_window must be an integer in 1..{MAX_CAP}, "
                               f"got {cap!r}")
        if cap is not None and role != "ingest":
            raise InvalidInput("only ingest tokens have a report cap")
        scope = None if metrics is None else check_metrics(metrics)
        if scope is not None and role != "ingest":
            raise InvalidInput("only ingest tokens are scoped to metrics")
        if scope is not None and not scope:
            raise InvalidInput("a scoped token needs at least one metric")
        token = new_token(role)
        digest = token_digest(token)
        record = TokenRecord(digest, role, check_label(label or f"{role}-{digest[:8]}"), scope,
                             time.time(), max_reports_per_window=cap)
        try:
            with self._store.transaction() as tx:
                tx.conn.execute(
                    f"INSERT INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, ?)",
                    (digest, role, record.label,
                     None if scope is None else json.dumps(sorted(scope)), record.created_at,
                     cap),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"an active token is already labelled {record.label!r}") from None
        return token, record

    def resolve(self, reference: str) -> list[TokenRecord]:
        """Tokens named by a token, a label, or a digest prefix of >= 8 hex digits.

        A label names its active token (or, if none is active, every revoked one).
        """
        exact = self.find(token_digest(reference))
        if exact is not None:
            return [exact]
        labelled = [r for r in self.all() if r.label == reference]
        if labelled:
            return [r for r in labelled if r.active] or labelled
        if len(reference) >= MIN_PREFIX and _HEX.match(reference):
            return [r for r in self.all() if r.digest.startswith(reference)]
        return []

    def revoke(self, reference: str) -> tuple[TokenRecord, bool]:
        """Revoke the one token ``reference`` names; returns (its record, newly revoked).

        Raises:
            NotFound: nothing matches (environment tokens are not in the store).
            Conflict: a digest prefix matches more than one token.
        """
        matches = self.resolve(reference)
        if not matches:
            raise NotFound(
                "no token in this data directory matches that token, label or digest prefix "
                f"(>= {MIN_PREFIX} hex digits); tokens from BLINDSUM_INGEST_TOKENS / "
                "BLINDSUM_ADMIN_TOKENS are revoked by removing them and restarting"
            )
        if len(matches) > 1:
            prefixes = ", ".join(r.digest[:12] for r in matches)
            raise Conflict(f"{len(matches)} tokens match ({prefixes}): give more of the digest")
        record = matches[0]
        if not record.active:
            return record, False
        now = time.time()
        with self._store.transaction() as tx:
            tx.conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE digest = ? AND revoked_at IS NULL",
                (now, record.digest),
            )
        return self.find(record.digest) or record, True


def _record(row: tuple[Any, ...]) -> TokenRecord:
    metrics = None if row[3] is None else frozenset(json.loads(row[3]))
    return TokenRecord(row[0], row[1], row[2], metrics, row[4], row[5],
                       max_reports_per_window=row[6])
