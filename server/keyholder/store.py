"""The key-holder's SQLite database: policies, key index, manifests, tokens, ledger, audit.

Secrets never live here (they are in the key store); this file holds what the key-holder
must remember to enforce policy: every registered policy version, which keys exist and
their status, every manifest it signed, release-token digests, and the release ledger.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from blindsum.server.keyholder import audit, intake, ledger
from blindsum.server.keyholder.cost import release_cost
from blindsum.server.sqlite import connect, write_transaction
from blindsum.shared.errors import InvalidPolicy, KeyStoreError
from blindsum.shared.policy import MetricPolicy, UnitBudget

SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS retired_metrics (
    name TEXT PRIMARY KEY,
    retired_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    kid TEXT PRIMARY KEY,
    scheme TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'accepted', 'retired')),
    public TEXT NOT NULL,
    context BLOB,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS manifests (
    serial INTEGER PRIMARY KEY,
    document TEXT NOT NULL,
    issued_at REAL NOT NULL
);
-- the per-device budget across all metrics; the newest row is in force
CREATE TABLE IF NOT EXISTS unit_budget (
    seq INTEGER PRIMARY KEY,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    period INTEGER NOT NULL,
    set_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at REAL NOT NULL
);
""" + ledger.SCHEMA + audit.SCHEMA + intake.SCHEMA


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    scheme: str
    status: str
    public: dict[str, object]
    context: bytes | None


class KeyholderDB:
    """One SQLite file, one connection per thread."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        # registration times bound the release horizon: tests inject their own clock
        self.clock = clock
        self._local = threading.local()
        self.conn.executescript(SCHEMA)
        ledger.migrate(self.conn)
        self._book_missing_rho()

    def _book_missing_rho(self) -> None:
        """Give ledger rows from before zCDP accounting the rho their policy version costs."""
        if self.conn.execute("SELECT 1 FROM releases WHERE rho IS NULL LIMIT 1").fetchone():
            def rho_of(metric: str, version: int) -> float | None:
                policy = self.policy(metric, version)
                return None if policy is None else release_cost(policy).rho

            with self.write() as conn:
                filled = ledger.backfill_rho(conn, rho_of)
                audit.append(conn, "ledger-migrated", {"rho_booked_rows": filled})

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self.conn) as conn:
            yield conn

    # -- policies --------------------------------------------------------------------------

    def add_policy(self, conn: sqlite3.Connection, policy: MetricPolicy) -> bool:
        """Register a policy version; False if that exact version is already registered.

        Raises:
            InvalidPolicy: the version exists with different content, or is not newer than
                the latest registered version of the metric.
        """
        body = json.dumps(policy.to_json(), sort_keys=True)
        row = conn.execute(
            "SELECT body FROM policies WHERE name = ? AND version = ?",
            (policy.name, policy.version),
        ).fetchone()
        if row is not None:
            # compared as policies, so a body stored before a field existed still matches
            stored = MetricPolicy.from_mapping(policy.name, json.loads(row[0]))
            if stored != policy:
                raise InvalidPolicy(
                    f"metric {policy.name!r} version {policy.version} is already registered "
                    "with different settings: bump its version to change it"
                )
            return False
        if self.is_retired(policy.name, conn):
            raise InvalidPolicy(
                f"metric {policy.name!r} was retired (its budget stays spent): use a new name"
            )
        latest = conn.execute(
            "SELECT MAX(version) FROM policies WHERE name = ?", (policy.name,)
        ).fetchone()[0]
        if latest is not None and policy.version <= latest:
            raise InvalidPolicy(
                f"metric {policy.name!r}: version {policy.version} is not newer than {latest}"
            )
        conn.execute(
            "INSERT INTO policies (name, version, body, added_at) VALUES (?, ?, ?, ?)",
            (policy.name, policy.version, body, self.clock()),
        )
        audit.append(conn, "policy-added", {"metric": policy.name, "version": policy.version})
        return True

    def policy(self, name: str, version: int) -> MetricPolicy | None:
        row = self.conn.execute(
            "SELECT body FROM policies WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return None if row is None else MetricPolicy.from_mapping(name, json.loads(row[0]))

    def latest_policy(self, name: str, conn: sqlite3.Connection | None = None
                      ) -> MetricPolicy | None:
        """The newest registered version of a metric (retired or not), or None."""
        row = (conn or self.conn).execute(
            "SELECT body FROM policies WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
        ).fetchone()
        return None if row is None else MetricPolicy.from_mapping(name, json.loads(row[0]))

    def unit_budget(self, conn: sqlite3.Connection | None = None) -> UnitBudget | None:
        """The per-device budget across all metrics, or None if none was ever set."""
        row = (conn or self.conn).execute(
            "SELECT epsilon, delta, period FROM unit_budget ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return None if row is None else UnitBudget(float(row[0]), float(row[1]), int(row[2]))

    def set_unit_budget(self, conn: sqlite3.Connection, budget: UnitBudget,
                        raised: bool) -> None:
        conn.execute("INSERT INTO unit_budget (epsilon, delta, period, set_at) "
                     "VALUES (?, ?, ?, ?)",
                     (budget.epsilon, budget.delta, budget.period, self.clock()))
        audit.append(conn, "unit-budget-set", {**budget.to_json(), "raised": raised})

    def registered_at(self, name: str, version: int) -> float | None:
        """When this policy version was registered (key-holder clock), or None."""
        row = self.conn.execute(
            "SELECT added_at FROM policies WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return None if row is None else float(row[0])

    def is_retired(self, name: str, conn: sqlite3.Connection | None = None) -> bool:
        return (conn or self.conn).execute(
            "SELECT 1 FROM retired_metrics WHERE name = ?", (name,)
        ).fetchone() is not None

    def retire_policy(self, conn: sqlite3.Connection, name: str) -> bool:
        """Retire every version of a metric; False if it was already retired.

        Raises:
            InvalidPolicy: no such metric.
        """
        known = conn.execute("SELECT 1 FROM policies WHERE name = ?", (name,)).fetchone()
        if known is None:
            raise InvalidPolicy(f"no metric {name!r} is registered")
        if self.is_retired(name, conn):
            return False
        conn.execute("INSERT INTO retired_metrics (name, retired_at) VALUES (?, ?)",
                     (name, time.time()))
        audit.append(conn, "policy-retired", {"metric": name})
        return True

    def current_policies(self, conn: sqlite3.Connection | None = None) -> list[MetricPolicy]:
        rows = (conn or self.conn).execute(
            "SELECT name, body FROM policies p WHERE version = "
            "(SELECT MAX(version) FROM policies q WHERE q.name = p.name) "
            "AND name NOT IN (SELECT name FROM retired_metrics) ORDER BY name"
        ).fetchall()
        return [MetricPolicy.from_mapping(name, json.loads(body)) for name, body in rows]

    # -- keys ------------------------------------------------------------------------------

    def add_key(self, conn: sqlite3.Connection, record: KeyRecord) -> None:
        conn.execute(
            "UPDATE keys SET status = 'accepted' WHERE scheme = ? AND status = 'active'",
            (record.scheme,),
        )
        conn.execute(
            "INSERT INTO keys (kid, scheme, status, public, context, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (record.key_id, record.scheme, record.status, json.dumps(record.public),
             record.context, self.clock()),
        )
        audit.append(conn, "key-added", {"kid": record.key_id, "scheme": record.scheme})

    def key_records(self, conn: sqlite3.Connection | None = None) -> list[KeyRecord]:
        rows = (conn or self.conn).execute(
            "SELECT kid, scheme, status, public, context FROM keys ORDER BY created_at"
        ).fetchall()
        return [KeyRecord(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def key_created_at(self, key_id: str) -> float | None:
        row = self.conn.execute("SELECT created_at FROM keys WHERE kid = ?", (key_id,)).fetchone()
        return None if row is None else float(row[0])

    def key(self, key_id: str) -> KeyRecord | None:
        return next((k for k in self.key_records() if k.key_id == key_id), None)

    # -- manifests -------------------------------------------------------------------------

    def next_manifest_serial(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT MAX(serial) FROM manifests").fetchone()
        return (row[0] or 0) + 1

    def store_manifest(self, conn: sqlite3.Connection, serial: int, document: dict) -> None:
        conn.execute(
            "INSERT INTO manifests (serial, document, issued_at) VALUES (?, ?, ?)",
            (serial, json.dumps(document), time.time()),
        )

    def latest_manifest(self) -> dict:
        row = self.conn.execute(
            "SELECT document FROM manifests ORDER BY serial DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise KeyStoreError("no manifest issued yet: run `blindsum keyholder init`")
        return json.loads(row[0])

    # -- tokens ----------------------------------------------------------------------------

    def add_token(self, conn: sqlite3.Connection, digest: str, role: str, label: str) -> None:
        conn.execute(
            "INSERT INTO tokens (digest, role, label, created_at) VALUES (?, ?, ?, ?)",
            (digest, role, label, time.time()),
        )
        audit.append(conn, "token-added", {"role": role, "label": label})

    def token_digests(self) -> dict[str, list[str]]:
        digests: dict[str, list[str]] = {}
        for digest, role in self.conn.execute("SELECT digest, role FROM tokens"):
            digests.setdefault(role, []).append(digest)
        return digests
