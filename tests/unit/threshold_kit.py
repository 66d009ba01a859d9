"""Windows as a threshold key-holder sees them: proven reports, forwarded before a release.

A threshold key-holder releases only the sum of reports it verified itself
(``server/keyholder/intake.py``), so in-process tests of threshold releases build each
window's reports the way the SDK does (encrypted and proven, bound to their window) and
forward them the way the server does, then ask for the release of exactly that sum.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from blindsum.server.keyholder.service import Keyholder
from blindsum.shared.codec import Report, WindowReports, report_ids_digest
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.validity import ProofContext, proof_kind, prove_report


@dataclass(frozen=True)
class ForwardedWindow:
    """A window the key-holder holds: its reports, their product and their ids' digest."""

    reports: tuple[Report, ...]
    aggregate: tuple[bytes, ...]
    report_ids_digest: bytes


def proven_reports(public: PaillierPublic, policy: MetricPolicy, key_id: str, window: int,
                   slots: Sequence[Sequence[int]]) -> list[Report]:
    """One SDK report per slot vector, each with its validity proof."""
    reports = []
    for report_slots in slots:
        report_id = secrets.token_bytes(16)
        context = ProofContext(policy.name, policy.version, window, key_id, report_id)
        blobs, proof = prove_report(public, proof_kind(policy), slot_spec(policy),
                                    list(report_slots), context)
        reports.append(Report(report_id, policy.name, policy.version, key_id, window,
                              tuple(blobs), proof.to_json()))
    return reports


def forward(holder: Keyholder, public: PaillierPublic, policy: MetricPolicy,
            reports: Sequence[Report]) -> ForwardedWindow:
    """Hand ``reports`` (one window's) to the key-holder as the server does."""
    first = reports[0]
    holder.intake().accept(WindowReports(first.metric, first.version, first.window,
                                         first.key_id, tuple(reports)))
    spec = slot_spec(policy)
    aggregate = tuple(public.dump(public.add_many(
        [public.load(list(r.ciphertexts), spec) for r in reports])))
    return ForwardedWindow(tuple(reports), aggregate,
                           report_ids_digest([r.report_id for r in reports]))
