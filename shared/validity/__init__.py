"""NIZK validity proofs for Paillier reports (see ``sigma.py`` for the argument).

A client proves, without revealing its slots, that its report's ciphertexts encrypt a valid
encoding for its metric's kind, bound to a ``ProofContext``; anyone holding the public key
verifies it, one report at a time or many at once.
"""

from .codec import ReportProof
from .report import (
    proof_kind,
    prove_range,
    prove_report,
    verify_range,
    verify_report,
    verify_report_each,
    verify_reports,
)
from .slots import SLOTS_KIND, SlotLayout, parse_slots_proof, prove_slots, verify_slots
from .statements import KINDS, ProofContext, range_weights

__all__ = [
    "KINDS",
    "SLOTS_KIND",
    "ProofContext",
    "ReportProof",
    "SlotLayout",
    "parse_slots_proof",
    "proof_kind",
    "prove_range",
    "prove_report",
    "prove_slots",
    "range_weights",
    "verify_range",
    "verify_report",
    "verify_report_each",
    "verify_reports",
    "verify_slots",
]
