"""One release: public checks -> pay -> decrypt once -> noise -> clamp -> signed result.

The order is the privacy argument (issue "pay before decrypting"):

1. **Public checks only.** Everything that can refuse a release looks at public facts: the
   policy and key exist and match, the window is aligned, inside the horizon (it ended after
   the policy version and key were registered, and it is closed, or still collecting and
   the policy allows early release), the claimed report count is within [k, max], the
   aggregate's ciphertexts are well formed, and the budget can pay. Error details name only
   those facts.
2. **Pay first.** In one ``BEGIN IMMEDIATE`` transaction the budget is debited and the
   window consumed (a ledger row keyed by metric, version, window and key id, with the
   digest of the request) and a ``release-paid`` audit entry written. Committed before any
   decryption: a window is decrypted at most once, ever, and every decryption is paid for.
3. **Decrypt once, decide on nothing.** Decryption is total (``SecretScheme.decrypt`` never
   refuses on content); OpenDP's exact discrete noise is added; everything after that is
   post-processing of the noisy sums (``encoding.publish``: clamp to the domain, clip the
   interval, flag a result that honest reports could not explain). There is no refusal
   after decryption, so neither the answer nor its presence depends on a plaintext except
   through the noise.
4. **Store, then answer.** The signed result (with the audit head of its ``release``
   entry) is stored in the ledger row before it is returned. A retry with the same request
   digest gets the stored document back, never a fresh noise draw; a different request for
   a consumed window is refused as already released. If the process fails between 2 and 4
   the row is settled ``interrupted``: consumed and paid, never decrypted again.

With a threshold key (``shared/threshold``) step 3 decrypts nothing here: the key-holder
draws the same plan's noise, encrypts it and folds it into the aggregate, and signs its
partial decryption of that noised aggregate with a proof (a *partial release*,
``threshold.py``). Steps 1, 2 and 4 are unchanged, so a retry gets the stored partial
release back: one noise draw and one debit per window. The server combines and publishes;
the key-holder never sees a sum, exact or noisy, and nothing it answers depends on one.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.server.keyholder import audit, ledger, threshold
from blindsum.server.keyholder.accounting import Spend
from blindsum.server.keyholder.cost import noise_plan, release_cost
from blindsum.server.keyholder.intake import Intake
from blindsum.server.keyholder.store import KeyholderDB
from blindsum.server.noise import NoisePlan
from blindsum.shared.codec import RELEASE_RESULT_TYPE, ReleaseRequest, ReleaseResult, release_digest
from blindsum.shared.encoding import Published, publish, published_values
from blindsum.shared.errors import (
    AlreadyReleased,
    BlindsumError,
    BudgetExhausted,
    ReleaseInProgress,
    ReleaseInterrupted,
    ReleaseRefused,
)
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import SecretScheme
from blindsum.shared.signing import sign_document
from blindsum.shared.threshold.keys import KeyShare
from blindsum.shared.threshold.release import PARTIAL_TYPE

RELEASE_TYPE = RELEASE_RESULT_TYPE
# A ``paid`` row older than this belongs to a release that died mid-way (a release takes
# milliseconds to seconds; the server's read timeout is 120 s).
PAID_LEASE_SECONDS = 300.0
# Per-slot probability that honest noise lands beyond the "consistent" bound.
TAIL_ALPHA = 1e-9
log = logging.getLogger("blindsum.keyholder.release")


def request_digest(request: ReleaseRequest) -> str:
    """SHA-256 of what a release decrypts and for whom (``codec.release_digest``)."""
    return release_digest(request)


@dataclass(frozen=True)
class ReleaseAnswer:
    """A signed result; ``created`` is False when it was stored by an earlier request."""

    document: dict[str, str]
    created: bool


@dataclass(frozen=True)
class _Paid:
    row: ledger.LedgerRow
    policy: MetricPolicy
    secret: SecretScheme | KeyShare


@dataclass
class Releaser:
    """Performs releases for one key-holder; secrets come from ``secret_for``."""

    db: KeyholderDB
    identity: Ed25519PrivateKey
    secret_for: Callable[[str, str], SecretScheme | KeyShare]
    clock: Callable[[], float] = time.time
    # called in the paying transaction when that payment spent the budget of its period,
    # so the key-holder pauses the metric in its manifest (exhaustion is never silent)
    on_exhausted: Callable[[sqlite3.Connection], None] | None = None
    # a threshold window is released only as the key-holder's own verified sum
    # (``intake.py``); None only for tests of single-key releases
    intake: Intake | None = None

    def release(self, request: ReleaseRequest) -> ReleaseAnswer:
        """Release one window, or raise the public reason it may not be released."""
        digest = request_digest(request)
        try:
            paid = self._pay(request, digest)
        except BlindsumError as exc:
            self._refused(request, exc)
            raise
        if isinstance(paid, ReleaseAnswer):
            return paid
        return ReleaseAnswer(self._decrypt_and_sign(paid, request), created=True)

    def settle_abandoned(self) -> int:
        """Settle every ``paid`` row as interrupted; only while no release can be running
        (the key-holder calls it at start, before its worker). Returns how many."""
        with self.db.write() as conn:
            abandoned = [row for row in ledger.rows(conn) if row.state == "paid"]
            for row in abandoned:
                self._settle_interrupted(conn, row, "the releasing process stopped")
        return len(abandoned)

    def stored(self, metric: str, version: int, window: int,
               key_id: str | None = None) -> dict | None:
        if version > 2**31 - 1 or window > 2**40:  # never released; SQLite cannot bind it
            return None
        return ledger.released_document(self.db.conn, metric, version, window, key_id)

    # -- 1 and 2: public checks, then pay ------------------------------------------------

    def _pay(self, request: ReleaseRequest, digest: str) -> _Paid | ReleaseAnswer:
        stale: ledger.LedgerRow | None = None
        with self.db.write() as conn:
            existing = ledger.consumed(conn, request.metric, request.version,
                                       request.window, request.key_id)
            if existing is not None:
                if existing.request_digest != digest or existing.state == "released":
                    return self._answer_consumed(existing, digest)
                if existing.state == "paid" and self.clock() - existing.paid_at < \
                        PAID_LEASE_SECONDS:
                    raise ReleaseInProgress(
                        f"window {request.window} of {request.metric!r} is being released; "
                        "retry shortly for its result")
                if existing.state == "paid":
                    stale = existing
                    self._settle_interrupted(conn, existing, "the releasing process stopped")
            else:
                policy = self._checked_policy(conn, request)
                secret = self.secret_for(policy.scheme, request.key_id)
                # Well-formedness of the bytes is public; it is checked before paying.
                _check_decryptable(secret, policy, request)
                if isinstance(secret, KeyShare):
                    if self.intake is None:
                        raise ReleaseRefused("threshold windows need the key-holder's intake")
                    self.intake.check_release(conn, request)
                cost = release_cost(policy)
                state = ledger.budget(conn, policy, at=request.window)
                if not state.allows(cost):
                    raise BudgetExhausted(
                        f"metric {policy.name!r} has spent epsilon {state.epsilon:g} "
                        f"({state.accounting}) of its budget ({state.budget_epsilon:g}, "
                        f"{state.budget_delta:g}); one more release would exceed it")
                paid = _Paid(self._debit(conn, policy, request, digest, cost), policy, secret)
                if self.on_exhausted is not None and not state.spent.plus(cost).plus(
                        cost).fits(state.budget_epsilon, state.budget_delta):
                    self.on_exhausted(conn)
                return paid
        assert stale is not None or existing is not None
        raise _interrupted(request)

    def _answer_consumed(self, row: ledger.LedgerRow, digest: str) -> ReleaseAnswer:
        if row.request_digest == digest and row.document is not None:
            return ReleaseAnswer(row.document, created=False)
        raise AlreadyReleased(
            f"window {row.window} of {row.metric!r} v{row.version} under key {row.key_id!r} "
            "was already released" + (" with other reports" if row.request_digest != digest
                                      else ""))

    def _debit(self, conn: sqlite3.Connection, policy: MetricPolicy,
               request: ReleaseRequest, digest: str, cost: Spend) -> ledger.LedgerRow:
        seq = audit.append(conn, "release-paid", {
            "metric": policy.name, "version": policy.version, "window": request.window,
            "kid": request.key_id, "report_count": request.report_count,
            "report_ids_digest": request.report_ids_digest.hex(), "request_digest": digest,
            "epsilon": policy.privacy.epsilon, "delta": policy.privacy.delta,
            "rho": cost.rho, "early": request.early,
        })
        ledger.pay(conn, metric=policy.name, version=policy.version, window=request.window,
                   key_id=request.key_id, report_count=request.report_count,
                   report_ids_digest=request.report_ids_digest.hex(), request_digest=digest,
                   epsilon=policy.privacy.epsilon, delta=policy.privacy.delta, rho=cost.rho,
                   paid_seq=seq)
        row = ledger.consumed(conn, policy.name, policy.version, request.window,
                              request.key_id)
        assert row is not None
        return row

    def _checked_policy(self, conn: sqlite3.Connection, request: ReleaseRequest) -> MetricPolicy:
        policy = self.db.policy(request.metric, request.version)
        if policy is None:
            raise ReleaseRefused(
                f"metric {request.metric!r} version {request.version} is not registered")
        if self.db.is_retired(policy.name, conn):
            raise ReleaseRefused(f"metric {policy.name!r} is retired: nothing more is released")
        # A retired key takes no new reports, but windows collected under it are released.
        key = self.db.key(request.key_id)
        if key is None or key.scheme != policy.scheme:
            raise ReleaseRefused(f"key {request.key_id!r} is unknown or not a {policy.scheme} key")
        self._check_horizon(policy, request)
        if request.report_count < policy.min_contributors:
            raise ReleaseRefused(
                f"window has {request.report_count} reports; {policy.name!r} needs at least "
                f"{policy.min_contributors}")
        if request.report_count > policy.max_contributors:
            raise ReleaseRefused(
                f"window claims {request.report_count} reports, above the policy's "
                f"max_contributors {policy.max_contributors}")
        return policy

    def _check_horizon(self, policy: MetricPolicy, request: ReleaseRequest) -> None:
        """Only a window the server could have collected: after registration, not ahead."""
        window, length = request.window, policy.window_seconds
        if window % length:
            raise ReleaseRefused(f"window {window} is not aligned to {length} s windows")
        registered = self.db.registered_at(policy.name, policy.version) or 0.0
        key_created = self.db.key_created_at(request.key_id) or 0.0
        born = max(registered, key_created)
        if window + length <= born:
            raise ReleaseRefused(
                f"window {window} of {policy.name!r} ended before version {policy.version} "
                f"and key {request.key_id!r} both existed ({born:.0f}): it holds no reports")
        now = self.clock()
        if window > now:
            raise ReleaseRefused(f"window {window} of {policy.name!r} has not started yet")
        closes_at = window + length + policy.late_seconds
        if now < closes_at and not (request.early and policy.allow_early_release):
            raise ReleaseRefused(
                f"window {window} of {policy.name!r} is still open for {closes_at - now:.0f} s"
                + ("" if policy.allow_early_release else " (its policy forbids early release)"))

    # -- 3 and 4: decrypt once, noise, post-process, sign, store -------------------------

    def _decrypt_and_sign(self, paid: _Paid, request: ReleaseRequest) -> dict[str, str]:
        policy, row = paid.policy, paid.row
        threshold_key = isinstance(paid.secret, KeyShare)
        try:
            plan = noise_plan(policy)
            if isinstance(paid.secret, KeyShare):
                # noise under encryption and this party's partial, never a decryption
                # (``server/keyholder/threshold.py``)
                fields = threshold.partial_release_fields(paid.secret, policy, request,
                                                          row.request_digest, plan)
                entry: dict[str, Any] = {"threshold": True}
            else:
                slot_sums = paid.secret.decrypt(list(request.aggregate), slot_spec(policy))
                noisy = plan.apply(slot_sums)
                del slot_sums  # the exact sums are not needed past this line
                result = publish(policy, noisy, request.report_count, plan.half_width(0.05),
                                 plan.half_width(TAIL_ALPHA))
                entry = {"consistent": result.consistent}
            with self.db.write() as conn:
                seq = audit.append(conn, "release", {
                    "metric": policy.name, "version": policy.version,
                    "window": request.window, "kid": request.key_id,
                    "request_digest": row.request_digest, "paid_seq": row.paid_seq, **entry,
                })
                head, now = audit.entry_hash(conn, seq), self.clock()
                if threshold_key:
                    payload = {**_statement(policy, request, row, plan, seq, head, now),
                               **fields}
                else:
                    payload = _payload(policy, request, row, result, plan, seq, head, now)
                document = sign_document(self.identity, payload)
                ledger.settle(conn, row, "released", document)
        except Exception:
            # Nothing of the failure reaches the caller but "interrupted"; the type goes to
            # the log (never a value: our exceptions carry no plaintext).
            log.exception("release of window %s of %r interrupted after payment",
                          request.window, policy.name)
            with self.db.write() as conn:
                self._settle_interrupted(conn, row, "internal error after payment")
            raise _interrupted(request) from None
        log.info("%s window %s of %r v%s key %s (%d reports, epsilon %g)",
                 "partial release of" if threshold_key else "released", request.window,
                 policy.name, policy.version, request.key_id, request.report_count,
                 policy.privacy.epsilon)
        return document

    def _settle_interrupted(self, conn: sqlite3.Connection, row: ledger.LedgerRow,
                            reason: str) -> None:
        ledger.settle(conn, row, "interrupted")
        audit.append(conn, "release-interrupted", {
            "metric": row.metric, "version": row.version, "window": row.window,
            "kid": row.key_id, "request_digest": row.request_digest, "reason": reason,
        })

    def _refused(self, request: ReleaseRequest, exc: BlindsumError) -> None:
        with self.db.write() as conn:
            audit.append(conn, "release-refused", {
                "metric": request.metric, "version": request.version,
                "window": request.window, "kid": request.key_id,
                "report_count": request.report_count, "reason": exc.code,
                "detail": exc.detail,
            })
        log.warning("release of window %s of %r refused: %s", request.window, request.metric,
                    exc.code)


def _check_decryptable(secret: SecretScheme | KeyShare, policy: MetricPolicy,
                       request: ReleaseRequest) -> None:
    """Public checks of what will be decrypted: the bytes, and for a threshold key that the
    noise fits its layout's headroom."""
    if isinstance(secret, KeyShare):
        secret.public.paillier.load(list(request.aggregate),
                                    slot_spec(policy))
        threshold.check_plan_fits(policy, noise_plan(policy))
        threshold.check_server_noise(secret.public, policy, request)
        return
    if request.server_noise or policy.noise == "both":
        # (a window of a two-noise policy under a single key, e.g. a late report under the
        # key a rotation to --threshold replaced: only the key-holder could noise it)
        raise ReleaseRefused(f"metric {policy.name!r}: server noise needs a threshold key; "
                             f"key {request.key_id!r} is a single key")
    secret.public.load(list(request.aggregate), slot_spec(policy))


def _statement(policy: MetricPolicy, request: ReleaseRequest, row: ledger.LedgerRow,
               plan: NoisePlan, audit_seq: int, audit_head: str, now: float
               ) -> dict[str, Any]:
    """A partial release's signed fields besides the threshold ones: no value, since the
    key-holder never has one; the widths the server's post-processing needs."""
    return {
        "type": PARTIAL_TYPE,
        **_window_fields(policy, request, row),
        "mechanism": plan.mechanism,
        "epsilon": plan.epsilon,
        "delta": plan.delta,
        "rho": plan.rho,
        "scale": plan.scale,
        # of the sum of every party's draw (wider with two: server/accuracy.py)
        "half_width_95": plan.half_width(0.05, len(policy.noise_parties)),
        "tail_width": plan.half_width(TAIL_ALPHA, len(policy.noise_parties)),
        "released_at": now,
        "audit_seq": audit_seq,
        "audit_head": audit_head,
    }


def _window_fields(policy: MetricPolicy, request: ReleaseRequest,
                   row: ledger.LedgerRow) -> dict[str, Any]:
    """What every signed release document says about the window it answers."""
    return {
        "v": 1,
        "metric": policy.name,
        "version": policy.version,
        "kind": policy.kind,
        "scheme": policy.scheme,
        "window": request.window,
        "window_seconds": policy.window_seconds,
        "kid": request.key_id,
        "report_count": request.report_count,
        "report_ids_digest": request.report_ids_digest.hex(),
        "request_digest": row.request_digest,
    }


def _interrupted(request: ReleaseRequest) -> ReleaseInterrupted:
    return ReleaseInterrupted(
        f"window {request.window} of {request.metric!r} was paid for by a release that was "
        "interrupted: it stays consumed and is never decrypted again")


def _payload(
    policy: MetricPolicy,
    request: ReleaseRequest,
    row: ledger.LedgerRow,
    result: Published,
    plan: NoisePlan,
    audit_seq: int,
    audit_head: str,
    now: float,
) -> dict[str, Any]:
    value, noisy, ci = published_values(result)
    return ReleaseResult(
        metric=policy.name, version=policy.version, kind=policy.kind, scheme=policy.scheme,
        window=request.window, window_seconds=policy.window_seconds, key_id=request.key_id,
        report_count=request.report_count,
        report_ids_digest=request.report_ids_digest.hex(), request_digest=row.request_digest,
        value=value, noisy_value=noisy, ci=ci, confidence=0.95, consistent=result.consistent,
        mechanism=plan.mechanism, epsilon=plan.epsilon, delta=plan.delta, rho=plan.rho,
        scale=plan.scale, released_at=now, audit_seq=audit_seq, audit_head=audit_head,
    ).to_json()
