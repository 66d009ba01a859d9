"""The key-holder's own account of a threshold window: reports it verified and summed itself.

With a single key the key-holder decrypts whatever aggregate the server sends and takes the
server's word for how many reports are in it. A malicious server can then scale a victim's
ciphertext (``Enc(10^6·x)``) and claim 10^6 reports, pad it with its own encryptions, or send
one report of a metric as the aggregate of another with looser bounds. For a threshold key
(nobody can decrypt alone, so individual ciphertexts are safe here) the server instead
forwards every report of the window, with its validity proof, before it asks for the
release, and this module:

- refuses a batch unless every report is well formed and, for a ``validity = "proof"``
  policy, its proof verifies under the key and the report's own (metric, version, window,
  key id, report id) (``shared.validity``): the server's ingest check is not relied on;
- counts each report id once (a re-forwarded batch adds nothing), refuses reports beyond the
  policy's ``max_contributors`` and, once the window is paid for, any report not already
  held (the release is fixed by then);
- keeps the window's aggregate (the product of its reports' ciphertexts), its report count,
  and the ids;
- before paying, a release is refused unless its count, report-id digest and aggregate are
  exactly this account's (``check_release``). Every refusal names only public facts: counts,
  digests, ids and the proofs' validity, never a plaintext.

The server's count is then never trusted: the published ``report_count`` is the number of
distinct proven reports the key-holder itself summed.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cbor2

from blindsum.server.keyholder import ledger
from blindsum.shared.codec import (
    IntakeReceipt,
    ReleaseRequest,
    Report,
    WindowReports,
    report_ids_digest,
)
from blindsum.shared.errors import (
    Conflict,
    InvalidCiphertext,
    InvalidProof,
    ReleaseRefused,
    ReportCapExceeded,
)
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.threshold.keys import KeyShare
from blindsum.shared.validity import ProofContext, ReportProof, proof_kind, verify_reports

log = logging.getLogger("blindsum.keyholder.intake")

if TYPE_CHECKING:  # the store builds its schema from this module's SCHEMA
    from blindsum.server.keyholder.store import KeyholderDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS intake_windows (
    metric TEXT NOT NULL,
    version INTEGER NOT NULL,
    window INTEGER NOT NULL,
    kid TEXT NOT NULL,
    report_count INTEGER NOT NULL,
    -- CBOR array of the aggregate's ciphertexts (the scheme's fixed-length bytes)
    aggregate BLOB NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (metric, version, window, kid)
);
CREATE TABLE IF NOT EXISTS intake_reports (
    metric TEXT NOT NULL,
    version INTEGER NOT NULL,
    window INTEGER NOT NULL,
    kid TEXT NOT NULL,
    report_id BLOB NOT NULL,
    PRIMARY KEY (metric, version, window, kid, report_id)
);
"""

Mpz = Any  # gmpy2.mpz
_KEY = "metric = ? AND version = ? AND window = ? AND kid = ?"


@dataclass(frozen=True)
class WindowAccount:
    """What the key-holder itself holds for one window."""

    report_count: int
    aggregate: tuple[bytes, ...]
    report_ids_digest: bytes


@dataclass
class Intake:
    """Receives forwarded windows for threshold keys; ``secret_for`` gives the key share."""

    db: KeyholderDB
    secret_for: Callable[[str, str], object]

    def accept(self, batch: WindowReports) -> IntakeReceipt:
        """Verify and add one forwarded batch; nothing is stored unless all of it is good.

        Raises:
            ReleaseRefused: the metric version is unknown or retired, or the key is not a
                threshold Paillier key of it.
            InvalidCiphertext / InvalidProof: a report is malformed, lacks its proof or its
                proof does not verify (named by index).
            ReportCapExceeded: the window would exceed ``max_contributors``.
            Conflict: the window is already paid for and the batch holds a new report.
        """
        policy, public = self._policy_and_key(batch)
        spec = slot_spec(policy)
        loaded = [self._load(public, spec, index, report)
                  for index, report in enumerate(batch.reports)]
        if policy.proven:
            self._verify(public, policy, batch.reports)
        with self.db.write() as conn:
            return self._add(conn, batch, policy, public, loaded)

    def account(self, conn: sqlite3.Connection, metric: str, version: int, window: int,
                key_id: str) -> WindowAccount | None:
        row = conn.execute(f"SELECT report_count, aggregate FROM intake_windows WHERE {_KEY}",
                           (metric, version, window, key_id)).fetchone()
        if row is None:
            return None
        ids = [r[0] for r in conn.execute(
            f"SELECT report_id FROM intake_reports WHERE {_KEY}",
            (metric, version, window, key_id))]
        return WindowAccount(int(row[0]), tuple(cbor2.loads(row[1])), report_ids_digest(ids))

    def check_release(self, conn: sqlite3.Connection, request: ReleaseRequest) -> None:
        """Refuse (before paying) a release that is not exactly the window we summed, and log
        the mismatch: a server claiming another count, other ids or another aggregate than
        what it forwarded is either broken or cheating, which an operator must hear of. The
        log line names public facts only (the window, the counts), never a ciphertext."""
        own = self.account(conn, request.metric, request.version, request.window,
                           request.key_id)
        where = f"window {request.window} of {request.metric!r} v{request.version}"
        if own is None:
            raise ReleaseRefused(f"the key-holder holds no reports of {where}: the server "
                                 "must forward them before asking for the release")
        problem = None
        if own.report_count != request.report_count:
            problem = (f"the key-holder verified {own.report_count} reports of {where}; the "
                       f"request claims {request.report_count}")
        elif own.report_ids_digest != request.report_ids_digest:
            problem = (f"the request's report ids for {where} are not the ones the key-holder "
                       "verified")
        elif tuple(request.aggregate) != own.aggregate:
            problem = (f"the request's aggregate for {where} is not the product of the "
                       "reports the key-holder verified")
        if problem is not None:
            log.warning("server's release request does not match the forwarded window "
                        "(refused before paying): %s", problem)
            raise ReleaseRefused(problem)

    # -- steps ---------------------------------------------------------------------------

    def _policy_and_key(self, batch: WindowReports) -> tuple[MetricPolicy, PaillierPublic]:
        policy = self.db.policy(batch.metric, batch.version)
        if policy is None:
            raise ReleaseRefused(f"metric {batch.metric!r} version {batch.version} is not "
                                 "registered")
        if self.db.is_retired(policy.name):
            raise ReleaseRefused(f"metric {policy.name!r} is retired")
        key = self.db.key(batch.key_id)
        if key is None or key.scheme != "paillier" or policy.scheme != "paillier" or \
                "threshold" not in key.public:
            raise ReleaseRefused(f"key {batch.key_id!r} is not a threshold Paillier key of "
                                 f"{policy.name!r}: only threshold windows are forwarded")
        share = self.secret_for("paillier", batch.key_id)
        assert isinstance(share, KeyShare)
        return policy, share.public.paillier

    @staticmethod
    def _load(public: PaillierPublic, spec: Any, index: int, report: Report) -> list[Mpz]:
        try:
            return public.load(list(report.ciphertexts), spec)
        except InvalidCiphertext as exc:
            raise InvalidCiphertext(f"report {index}: {exc.detail}") from None

    @staticmethod
    def _verify(public: PaillierPublic, policy: MetricPolicy,
                reports: Sequence[Report]) -> None:
        kind, spec = proof_kind(policy), slot_spec(policy)
        items = []
        for index, report in enumerate(reports):
            if report.proof is None:
                raise InvalidProof(f"report {index} has no validity proof; metric "
                                   f"{policy.name!r} requires one")
            try:
                proof = ReportProof.from_json(report.proof, public, spec, kind)
            except InvalidProof as exc:
                raise InvalidProof(f"report {index}: {exc.detail}") from None
            context = ProofContext(report.metric, report.version, report.window,
                                   report.key_id, report.report_id)
            items.append(([bytes(c) for c in report.ciphertexts], proof, context))  # type: ignore[arg-type]
        bad = verify_reports(public, kind, spec, items)
        if bad:
            raise InvalidProof(f"report(s) {bad} carry a validity proof that does not verify")

    def _add(self, conn: sqlite3.Connection, batch: WindowReports, policy: MetricPolicy,
             public: PaillierPublic, loaded: list[list[Mpz]]) -> IntakeReceipt:
        key = (batch.metric, batch.version, batch.window, batch.key_id)
        held = {r[0] for r in conn.execute(
            f"SELECT report_id FROM intake_reports WHERE {_KEY}", key)}
        fresh: dict[bytes, list[Mpz]] = {}
        for report, cts in zip(batch.reports, loaded, strict=True):
            if report.report_id not in held:
                fresh.setdefault(report.report_id, cts)
        duplicates = len(batch.reports) - len(fresh)
        row = conn.execute(f"SELECT report_count, aggregate FROM intake_windows WHERE {_KEY}",
                           key).fetchone()
        count = 0 if row is None else int(row[0])
        if not fresh:
            return IntakeReceipt(0, duplicates, count)
        if ledger.consumed(conn, *key) is not None:
            raise Conflict(f"window {batch.window} of {batch.metric!r} is already paid for: "
                           f"{len(fresh)} report(s) not held before cannot be added")
        if count + len(fresh) > policy.max_contributors:
            raise ReportCapExceeded(
                f"window {batch.window} of {batch.metric!r} would hold {count + len(fresh)} "
                f"reports, above max_contributors {policy.max_contributors}")
        parts = list(fresh.values())
        if row is not None:
            parts.insert(0, public.load(list(cbor2.loads(row[1])), slot_spec(policy)))
        aggregate = cbor2.dumps(public.dump(public.add_many(parts)))
        conn.executemany(
            "INSERT INTO intake_reports (metric, version, window, kid, report_id) "
            "VALUES (?, ?, ?, ?, ?)", [(*key, report_id) for report_id in fresh])
        conn.execute(
            "INSERT INTO intake_windows (metric, version, window, kid, report_count, "
            "aggregate, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (metric, version, window, kid) DO UPDATE SET "
            "report_count = excluded.report_count, aggregate = excluded.aggregate, "
            "updated_at = excluded.updated_at",
            (*key, count + len(fresh), aggregate, self.db.clock()))
        return IntakeReceipt(len(fresh), duplicates, count + len(fresh))
