"""The ingest hot path: validate a whole batch, then store and fold it in one transaction.

Order matters:

1. Reports whose id is already stored are duplicates: counted, not re-validated (a retry
   whose acknowledgement was lost may arrive after its window closed, and must still be told
   its reports are safe).
2. Every other report is validated before anything is written: metric and version in the
   verified manifest, a key id the manifest accepts for the metric's scheme, a window that
   takes reports now, ciphertexts the scheme accepts (count, length, range, gcd), and a
   validity proof exactly where the metric's policy requires one (``proofs.py``). The
   first fault refuses the whole batch with a 4xx naming the report. Then the proofs of
   all the batch's new reports are verified together (the costly step, still before any
   write); one that fails refuses the batch with 400 ``invalid-proof``. An id repeated within
   the batch is validated too unless it repeats the same report byte for byte; a repeat
   with other content refuses the batch (one id, one report), so nothing in a batch is
   skipped unchecked.
3. One ``BEGIN IMMEDIATE`` transaction inserts the new reports, adds each group's
   homomorphic sum into its window aggregate and commits durably. A window that is no
   longer open, or whose count would pass ``max_contributors`` (the packing headroom: one
   report more could carry into a neighbouring slot), refuses the whole batch.

The receipt is returned only after the commit, so an acknowledged report is never lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from blindsum.server.aggregator import proofs
from blindsum.server.aggregator.manifests import ManifestSource
from blindsum.server.aggregator.proofs import ProofCounter, ProofItem
from blindsum.server.aggregator.store import (
    Store,
    Transaction,
    WindowKey,
    pack_blobs,
    pack_proof,
)
from blindsum.server.aggregator.tokens import TokenRecord
from blindsum.server.aggregator.windows import check_report_window, due_at
from blindsum.shared.codec import BatchReceipt, Report, ReportBatch
from blindsum.shared.errors import (
    BlindsumError,
    Conflict,
    InvalidCiphertext,
    InvalidInput,
    ReportCapExceeded,
)
from blindsum.shared.manifest import Keyring, slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import PublicScheme, SlotSpec
from blindsum.shared.schemes.paillier import PaillierPublic


@dataclass(frozen=True)
class _Route:
    """Where reports of one (metric, version, key id, window) go, checked once per batch."""

    key: WindowKey
    policy: MetricPolicy
    scheme: PublicScheme
    spec: SlotSpec


@dataclass(frozen=True)
class _Checked:
    index: int
    report: Report
    route: _Route
    loaded: list[Any]


def _canonical(checked: _Checked) -> list[bytes]:
    """Stored ciphertexts are always wire bytes: phe's decimal JSON form is re-encoded."""
    blobs = checked.report.ciphertexts
    if all(isinstance(blob, bytes) for blob in blobs):
        return list(blobs)  # type: ignore[arg-type]
    return checked.route.scheme.dump(checked.loaded)


class _ManifestMiss(Exception):
    """A fault a newer manifest might cure (unknown metric, newer version, unknown key)."""

    def __init__(self, error: BlindsumError) -> None:
        super().__init__(error.detail)
        self.error = error


class Ingestor:
    """Turns validated report batches into durable reports and window aggregates."""

    def __init__(
        self, store: Store, manifests: ManifestSource, clock: Callable[[], float] = time.time,
        refused_proofs: ProofCounter = proofs.ignore,
    ) -> None:
        self._store = store
        self._manifests = manifests
        self._clock = clock
        self._refused_proofs = refused_proofs

    def ingest(self, batch: ReportBatch, sender: TokenRecord | None = None) -> BatchReceipt:
        """Validate, store and fold a batch; return once every new report is durable.

        ``sender`` is the ingest token's record: a token with ``max_reports_per_window``
        may add at most that many reports to each window of a metric.

        Raises:
            ReportCapExceeded: the sender's cap would be exceeded (nothing is stored).
            InvalidInput / InvalidCiphertext: a report is invalid (named by index).
            InvalidProof: a report lacks the proof its policy requires, carries one its
                policy does not take, or its proof does not verify (named by index).
            Conflict: a window was sealed for release or would exceed max_contributors.
            UpstreamError: no verified manifest is available.
        """
        now = self._clock()
        ids = [r.report_id for r in batch.reports]
        known = self._store.existing_report_ids(ids)
        pending, first_index = _to_validate(batch.reports, known)
        checked = self._check_all(pending, now)
        _refuse_conflicting_repeats(checked, first_index)
        if not checked:
            return BatchReceipt(accepted=0, duplicates=len(ids))
        sums = _group_sums(checked)  # first: it names a ciphertext sharing a factor with n
        proofs.verify_batch([_proof_item(c) for c in checked if c.route.policy.proven],
                            self._refused_proofs)
        # everything but the writes happens before the write lock: it is the serial part
        rows = {c.report.report_id: (c.report.report_id, c.report.metric, c.report.version,
                                     c.report.key_id, c.report.window,
                                     pack_blobs(_canonical(c)), now,
                                     pack_proof(c.report.proof)) for c in checked}
        with self._store.transaction() as tx:
            stored = tx.existing_report_ids([c.report.report_id for c in checked])
            fresh = [c for c in checked if c.report.report_id not in stored]
            if len(fresh) != len(checked):  # a concurrent retry stored some of them first
                sums = _group_sums(fresh)
            if sender is not None and sender.max_reports_per_window is not None:
                _count_against_cap(tx, sender, fresh)
            _fold(tx, sums, now)
            tx.insert_reports([rows[c.report.report_id] for c in fresh])
        return BatchReceipt(accepted=len(fresh), duplicates=len(ids) - len(fresh))

    # -- validation ----------------------------------------------------------------------

    def _check_all(self, pending: Sequence[tuple[int, Report]], now: float) -> list[_Checked]:
        if not pending:
            return []
        keyring = self._manifests.keyring()
        try:
            return _check_batch(pending, keyring, now, self._refused_proofs)
        except _ManifestMiss as miss:
            self._manifests.refresh_on_demand()
            newer = self._manifests.keyring()
            if newer is keyring:
                raise miss.error from None
        try:
            return _check_batch(pending, newer, now, self._refused_proofs)
        except _ManifestMiss as miss:
            raise miss.error from None


def _to_validate(
    reports: Sequence[Report], known: set[bytes]
) -> tuple[list[tuple[int, Report]], dict[bytes, int]]:
    """(index, report) of every report not stored yet, except exact repeats of an earlier
    one in the batch; and the index of each new id's first occurrence."""
    first: dict[bytes, int] = {}
    pending = []
    for index, report in enumerate(reports):
        if report.report_id in known:
            continue
        earlier = first.setdefault(report.report_id, index)
        if earlier == index or reports[earlier] != report:
            pending.append((index, report))
    return pending, first


def _refuse_conflicting_repeats(checked: list[_Checked], first_index: dict[bytes, int]) -> None:
    """Refuse a batch that repeats an id with other (valid) content.

    Raises:
        InvalidInput: naming both reports.
    """
    for item in checked:
        first = first_index[item.report.report_id]
        if first != item.index:
            raise InvalidInput(
                f"batch.reports[{item.index}] repeats the id of batch.reports[{first}] with "
                "other content (one id, one report); nothing in this batch was stored"
            )


def _check_batch(
    pending: Sequence[tuple[int, Report]], keyring: Keyring, now: float,
    refused_proofs: ProofCounter,
) -> list[_Checked]:
    routes: dict[tuple[str, int, str, int], _Route] = {}
    checked = []
    for index, report in pending:
        where = f"batch.reports[{index}]"
        try:
            lookup = (report.metric, report.version, report.key_id, report.window)
            route = routes.get(lookup)
            if route is None:
                route = routes[lookup] = _route(report, keyring, now)
            loaded = route.scheme.load_deferred(report.ciphertexts, route.spec)
            proofs.check_presence(report, route.policy, where, refused_proofs)
        except _ManifestMiss as miss:
            error = miss.error
            raise _ManifestMiss(type(error)(f"{where}: {error.detail}")) from None
        except BlindsumError as exc:
            if exc.status >= 500 or exc.detail.startswith(where):
                raise
            raise type(exc)(f"{where}: {exc.detail}") from None
        checked.append(_Checked(index, report, route, loaded))
    return checked


def _proof_item(checked: _Checked) -> ProofItem:
    scheme = checked.route.scheme
    if not isinstance(scheme, PaillierPublic):  # policy.py allows proofs for Paillier only
        raise RuntimeError(f"metric {checked.report.metric!r} is proven but not Paillier")
    return ProofItem(checked.index, checked.report, checked.route.policy, scheme,
                     checked.route.spec)


def _route(report: Report, keyring: Keyring, now: float) -> _Route:
    manifest = keyring.manifest
    policy = manifest.policies.get(report.metric)
    if policy is None:
        raise _ManifestMiss(InvalidInput(
            f"metric {report.metric!r} is not in the manifest (serial {manifest.serial})"
        ))
    if report.version != policy.version:
        error = InvalidInput(
            f"metric {report.metric!r} is at version {policy.version}, the report has "
            f"version {report.version}: refresh the manifest (GET /v1/manifest) and encode "
            "new reports with the current policy"
        )
        if report.version > policy.version:
            raise _ManifestMiss(error)
        raise error
    if all(entry.key_id != report.key_id for entry in manifest.keys):
        raise _ManifestMiss(InvalidCiphertext(
            f"key id {report.key_id!r} is unknown or retired: refresh the manifest"
        ))
    scheme = keyring.check_report_key(policy, report.key_id)
    check_report_window(policy, report.window, now)
    key = WindowKey(report.metric, report.version, report.window, report.key_id)
    return _Route(key, policy, scheme, slot_spec(policy))


# -- folding -------------------------------------------------------------------------------


def _group_sums(checked: Sequence[_Checked]) -> dict[WindowKey, tuple[_Checked, int, list[Any]]]:
    """Per window: (first report, report count, homomorphic sum of the group)."""
    groups: dict[WindowKey, list[_Checked]] = {}
    for item in checked:
        groups.setdefault(item.route.key, []).append(item)
    sums = {}
    for key, members in groups.items():
        scheme = members[0].route.scheme
        loaded = [m.loaded for m in members]
        total = scheme.add_many(loaded)
        bad = scheme.first_invalid(loaded, total)  # the checks load_deferred left
        if bad is not None:
            raise InvalidCiphertext(
                f"batch.reports[{members[bad].index}]: a ciphertext shares a factor with the "
                "key's modulus (not an encryption); nothing in this batch was stored"
            )
        sums[key] = (members[0], len(members), total)
    return sums


MAX_NAMED_OVER_CAP = 200


def _count_against_cap(tx: Transaction, sender: TokenRecord, fresh: Sequence[_Checked]
                       ) -> None:
    """Count the sender's new reports per (metric, window); refuse any beyond its cap.

    Duplicates (retries) are not counted again: only reports stored for the first time are.
    The count says how many reports a token sent, which the server knows anyway.
    """
    cap = sender.max_reports_per_window
    assert cap is not None
    groups: dict[tuple[str, int], list[int]] = {}
    for checked in fresh:
        key = (checked.report.metric, checked.report.window)
        groups.setdefault(key, []).append(checked.index)
    for (metric, window), indices in groups.items():
        count = len(indices)
        row = tx.conn.execute(
            'SELECT n FROM token_reports WHERE digest = ? AND metric = ? AND "window" = ?',
            (sender.digest, metric, window)).fetchone()
        sent = row[0] if row else 0
        if sent + count > cap:
            # Name every report beyond the cap (up to a bounded list): no retry can ever
            # store them, so a client drops them all at once and sends the rest again.
            over = sorted(indices)[max(0, cap - sent):]
            named = ", ".join(f"batch.reports[{i}]" for i in over[:MAX_NAMED_OVER_CAP])
            more = (f" and {len(over) - MAX_NAMED_OVER_CAP} more"
                    if len(over) > MAX_NAMED_OVER_CAP else "")
            raise ReportCapExceeded(
                f"{named}{more}: token {sender.label!r} may send at most {cap} report(s) per "
                f"window of a metric (max_reports_per_window); window {window} of "
                f"{metric!r} already has {sent} from it, so {len(over)} of these {count} are "
                "beyond the cap; nothing in this batch was stored")
        tx.conn.execute(
            'INSERT INTO token_reports (digest, metric, "window", n) VALUES (?, ?, ?, ?) '
            'ON CONFLICT (digest, metric, "window") DO UPDATE SET n = excluded.n',
            (sender.digest, metric, window, sent + count))


def _fold(
    tx: Transaction,
    sums: dict[WindowKey, tuple[_Checked, int, list[Any]]],
    now: float,
) -> None:
    for key, (first, count, group_sum) in sums.items():
        route = first.route
        row = tx.window(key)
        where = f"batch.reports[{first.index}]"
        if row is not None and row.state != "open":
            raise Conflict(
                f"{where}: {key.describe()} is {row.state} and takes no more reports; "
                "nothing in this batch was stored"
            )
        total = count + (row.report_count if row else 0)
        if total > route.policy.max_contributors:
            raise Conflict(
                f"{where}: {key.describe()} holds {row.report_count if row else 0} reports; "
                f"{count} more would exceed max_contributors = "
                f"{route.policy.max_contributors} (the packing headroom), so the whole batch "
                "was refused"
            )
        if row is None:
            tx.create_window(key, route.scheme.dump(group_sum), count,
                             due_at(route.policy, key.window), now)
            continue
        try:
            stored = route.scheme.load(row.aggregate, route.spec)
        except BlindsumError as exc:
            raise RuntimeError(f"stored aggregate of {key.describe()} is corrupt: {exc}") from None
        total_sum = route.scheme.add(stored, group_sum)
        tx.fold_window(key, route.scheme.dump(total_sum), total, now)
