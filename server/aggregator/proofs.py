"""Validity proofs at ingest: which reports must carry one, and checking a batch's together.

A metric with ``validity = "proof"`` (the Paillier default, shared/policy.py) takes a report
only with a proof (shared/validity) that its ciphertexts encrypt a valid encoding, bound to
the report's own (metric, version, window, key id, report id): so a proof cannot be replayed
under another id, window or metric. A metric with ``validity = "none"`` refuses a proof
rather than ignoring it, so no client believes a check was made that was not.

A batch's proofs are verified together, per (metric, version, key id), with
``verify_reports``: one random combination of every report's equations (measured at 3072
bits in benchmarks/validity.py, cheaper per report than one check each), falling back to
per-report checks only to name the bad ones. Any failure refuses the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blindsum.shared.codec import Report
from blindsum.shared.errors import InvalidInput, InvalidProof
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.validity import ProofContext, ReportProof, proof_kind, verify_reports

ProofCounter = Callable[[str, int], None]
"""Told ``(reason, reports)`` for every refused batch: ``missing``, ``unexpected``,
``malformed`` or ``invalid`` (the /metrics counter of refused proofs)."""

NOTHING_STORED = "nothing in this batch was stored"


@dataclass(frozen=True)
class ProofItem:
    """One report whose proof must verify: where it sits in the batch and under what key."""

    index: int
    report: Report
    policy: MetricPolicy
    public: PaillierPublic
    spec: SlotSpec


def check_presence(report: Report, policy: MetricPolicy, where: str,
                   count: ProofCounter) -> None:
    """A proof where the policy requires one, none where it declares ``validity = "none"``.

    Raises:
        InvalidProof: naming the report and what is wrong.
    """
    if policy.proven and report.proof is None:
        count("missing", 1)
        raise InvalidProof(
            f"{where}: metric {policy.name!r} requires a validity proof "
            '(validity = "proof") and the report carries none')
    if not policy.proven and report.proof is not None:
        count("unexpected", 1)
        raise InvalidProof(
            f"{where}: metric {policy.name!r} has validity = \"none\" and takes no proof: "
            "nothing would check it, so it is refused rather than ignored")


def context_of(report: Report) -> ProofContext:
    """What the report's proof must be bound to: the report's own fields."""
    return ProofContext(report.metric, report.version, report.window, report.key_id,
                        report.report_id)


def verify_batch(items: Sequence[ProofItem], count: ProofCounter) -> None:
    """Verify every item's proof, a group per (metric, version, key id) at a time.

    Raises:
        InvalidProof: naming the first bad report (by batch index), what failed, and how
            many reports of the batch failed.
    """
    groups: dict[tuple[str, int, str], list[ProofItem]] = {}
    for item in items:
        key = (item.report.metric, item.report.version, item.report.key_id)
        groups.setdefault(key, []).append(item)
    for members in groups.values():
        _verify_group(members, count)


def _verify_group(members: list[ProofItem], count: ProofCounter) -> None:
    first = members[0]
    kind = proof_kind(first.policy)
    parsed = []
    for item in members:
        try:
            proof = ReportProof.from_json(item.report.proof, item.public, item.spec, kind)
        except InvalidProof as exc:
            count("malformed", 1)
            raise InvalidProof(f"batch.reports[{item.index}]: {exc.detail}; {NOTHING_STORED}"
                               ) from None
        parsed.append((item.report.ciphertexts, proof, context_of(item.report)))
    try:
        bad = verify_reports(first.public, kind, first.spec, parsed)  # type: ignore[arg-type]
    except InvalidInput as exc:  # the metric's spec does not fit the key: not the client's
        raise RuntimeError(f"cannot verify {kind} proofs: {exc.detail}") from None
    if bad:
        where = ", ".join(f"batch.reports[{members[i].index}]" for i in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        count("invalid", len(bad))
        raise InvalidProof(
            f"{where}{more}: the validity proof does not verify for metric "
            f"{first.policy.name!r} ({kind}) bound to this report's metric, version, window, "
            f"key id and report id; {NOTHING_STORED}")


def ignore(reason: str, reports: int) -> None:
    """A ``ProofCounter`` that counts nothing (an Ingestor without telemetry)."""
