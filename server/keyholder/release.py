"""One release: policy check -> decrypt -> noise -> ledger + audit -> signed result.

Everything from the first check to the ledger debit runs in one ``BEGIN IMMEDIATE``
transaction: two racing requests serialise, so a window is released at most once and the
budget is never overspent. The noisy result is signed and stored *before* it is returned;
if anything fails, nothing is debited and the refusal is written to the audit log.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.server.keyholder import audit, ledger
from blindsum.server.keyholder.noise import NoisePlan, plan_noise
from blindsum.server.keyholder.store import KeyholderDB
from blindsum.shared.codec import ReleaseRequest
from blindsum.shared.encoding import decode
from blindsum.shared.errors import (
    AlreadyReleased,
    BlindsumError,
    BudgetExhausted,
    InvalidCiphertext,
    ReleaseRefused,
)
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import SecretScheme
from blindsum.shared.signing import sign_document

RELEASE_TYPE = "blindsum.release"


def noise_plan(policy: MetricPolicy) -> NoisePlan:
    """The noise a policy's releases get, calibrated from its bounds and privacy settings."""
    return plan_noise(
        policy.privacy.mechanism,
        policy.privacy.epsilon,
        policy.privacy.delta,
        policy.l1_sensitivity,
        policy.l2_sensitivity,
        policy.slot_count,
    )


@dataclass
class Releaser:
    """Performs releases for one key-holder; secrets come from ``secret_for``."""

    db: KeyholderDB
    identity: Ed25519PrivateKey
    secret_for: Callable[[str, str], SecretScheme]
    clock: Callable[[], float] = time.time

    def release(self, request: ReleaseRequest) -> dict[str, str]:
        """Release one window's aggregate, or raise the reason it may not be released."""
        try:
            with self.db.write() as conn:
                return self._release(conn, request)
        except BlindsumError as exc:
            with self.db.write() as conn:
                audit.append(conn, "release-refused", {
                    "metric": request.metric, "version": request.version,
                    "window": request.window, "kid": request.key_id,
                    "report_count": request.report_count, "reason": exc.code,
                    "detail": exc.detail,
                })
            raise

    def stored(self, metric: str, version: int, window: int,
               key_id: str | None = None) -> dict | None:
        if version > 2**31 - 1 or window > 2**40:  # never released; SQLite cannot bind it
            return None
        return ledger.released_document(self.db.conn, metric, version, window, key_id)

    def _release(self, conn: sqlite3.Connection, request: ReleaseRequest) -> dict[str, str]:
        policy = self._checked_policy(conn, request)
        plan = noise_plan(policy)
        state = ledger.budget(conn, policy)
        if not state.allows(policy.privacy.epsilon):
            raise BudgetExhausted(
                f"metric {policy.name!r} has spent {state.spent_epsilon:g} of its "
                f"{state.budget_epsilon:g} epsilon; a release costs {policy.privacy.epsilon:g}"
            )
        secret = self.secret_for(policy.scheme, request.key_id)
        slot_sums = secret.decrypt(list(request.aggregate), slot_spec(policy))
        _check_consistent(policy, slot_sums, request.report_count)
        noisy = plan.apply(slot_sums)
        decoded = decode(policy, noisy, request.report_count, plan.half_width(0.05))
        seq = audit.append(conn, "release", {
            "metric": policy.name, "version": policy.version, "window": request.window,
            "kid": request.key_id, "report_count": request.report_count,
            "report_ids_digest": request.report_ids_digest.hex(),
            "epsilon": policy.privacy.epsilon, "delta": policy.privacy.delta,
            "early": request.early,
        })
        payload = _payload(policy, request, decoded.value, decoded.ci, plan, seq, self.clock())
        document = sign_document(self.identity, payload)
        ledger.record_release(
            conn,
            metric=policy.name, version=policy.version, window=request.window,
            key_id=request.key_id, report_count=request.report_count,
            report_ids_digest=request.report_ids_digest.hex(),
            epsilon=policy.privacy.epsilon, delta=policy.privacy.delta, document=document,
        )
        return document

    def _checked_policy(self, conn: sqlite3.Connection, request: ReleaseRequest) -> MetricPolicy:
        policy = self.db.policy(request.metric, request.version)
        if policy is None:
            raise ReleaseRefused(
                f"metric {request.metric!r} version {request.version} is not registered"
            )
        if self.db.is_retired(policy.name, conn):
            raise ReleaseRefused(f"metric {policy.name!r} is retired: nothing more is released")
        # A retired key takes no new reports, but windows collected under it are released.
        key = self.db.key(request.key_id)
        if key is None or key.scheme != policy.scheme:
            raise ReleaseRefused(f"key {request.key_id!r} is unknown or not a {policy.scheme} key")
        if request.window % policy.window_seconds:
            raise ReleaseRefused(
                f"window {request.window} is not aligned to {policy.window_seconds} s windows"
            )
        closes_at = request.window + policy.window_seconds + policy.late_seconds
        now = self.clock()
        if now < closes_at and not (request.early and policy.allow_early_release):
            raise ReleaseRefused(
                f"window {request.window} of {policy.name!r} is still open "
                f"for {closes_at - now:.0f} s"
                + ("" if policy.allow_early_release else " (its policy forbids early release)")
            )
        if request.report_count < policy.min_contributors:
            raise ReleaseRefused(
                f"window has {request.report_count} reports; {policy.name!r} needs at least "
                f"{policy.min_contributors}"
            )
        if request.report_count > policy.max_contributors:
            raise ReleaseRefused(
                f"window claims {request.report_count} reports, above the policy's "
                f"max_contributors {policy.max_contributors}"
            )
        if ledger.released_document(conn, policy.name, policy.version, request.window,
                                    request.key_id):
            raise AlreadyReleased(
                f"window {request.window} of {policy.name!r} v{policy.version} under key "
                f"{request.key_id!r} was already released"
            )
        return policy


def _check_consistent(policy: MetricPolicy, slot_sums: list[int], count: int) -> None:
    """Refuse aggregates that cannot come from ``count`` honest reports.

    A server that under-states the count to pass more data than it claims (or sends garbage)
    is caught here before anything is noised or debited.
    """
    ceiling = count * policy.slot_max
    if any(s < 0 or s > ceiling for s in slot_sums):
        raise InvalidCiphertext(
            f"aggregate is inconsistent with {count} reports of {policy.name!r}"
        )
    if policy.kind == "histogram" and sum(slot_sums) != count:
        raise InvalidCiphertext(
            f"histogram aggregate counts {sum(slot_sums)} values but claims {count} reports"
        )


def _payload(
    policy: MetricPolicy,
    request: ReleaseRequest,
    value: Any,
    ci: Any,
    plan: NoisePlan,
    audit_seq: int,
    now: float,
) -> dict[str, Any]:
    return {
        "type": RELEASE_TYPE,
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
        "value": value,
        "ci": [list(pair) for pair in ci] if isinstance(ci, list) else list(ci),
        "confidence": 0.95,
        "mechanism": plan.mechanism,
        "epsilon": plan.epsilon,
        "delta": plan.delta,
        "rho": plan.rho,
        "scale": plan.scale,
        "released_at": now,
        "audit_seq": audit_seq,
    }
