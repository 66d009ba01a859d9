"""Question: what a client validity proof costs against encrypting the same report without one.

At the deployment size (3072-bit ``n``) and per kind (count; a 40-bucket histogram; a sum in
0..3600; an 8-coordinate vector in 0..1000), per report:

- ``encrypt``: ``PaillierPublic.encrypt`` of the slots (table built, no pool): the baseline;
- ``prove``: ``validity.prove_report`` (encrypts too, so it is the whole client cost);
- ``verify``: ``validity.verify_report`` (the report's equations under random weights);
- ``verify_each``: ``validity.verify_report_each``, every equation checked on its own;
- ``batch_verify``: ``validity.verify_reports`` over ``batch`` reports, divided by ``batch``
  (random-weight combination with Pippenger multi-exponentiation);
- ``proof_bytes``: the proof's binary content (``ReportProof.size``) and its JSON length,
  beside the ciphertexts' bytes.

Every timed proof is first checked to verify (and the batch to accept), so the figures are
for a working path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from blindsum.benchmarks.timing import Timing, measure, ratio
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.paillier import PaillierPublic, generate_paillier
from blindsum.shared.validity import (
    ProofContext,
    prove_report,
    verify_report,
    verify_report_each,
    verify_reports,
)

CONTEXT = ProofContext("bench", 1, 1_764_075_600, "bench-kid", bytes(16))
MAX_CONTRIBUTORS = 100_000
CASES: dict[str, tuple[str, SlotSpec, list[int]]] = {
    "count": ("count", SlotSpec(1, 1, MAX_CONTRIBUTORS), [1]),
    "histogram_40": ("histogram", SlotSpec(40, 1, MAX_CONTRIBUTORS), [0] * 17 + [1] + [0] * 22),
    "sum_0_3600": ("sum", SlotSpec(1, 3600, MAX_CONTRIBUTORS), [2718]),
    "vector_8x1000": ("vector", SlotSpec(8, 1000, MAX_CONTRIBUTORS),
                      [0, 1000, 31, 415, 926, 535, 897, 932]),
}


@dataclass(frozen=True)
class ValidityConfig:
    key_bits: int = 3072
    repeat: int = 5
    batch: int = 20


def _case(public: PaillierPublic, kind: str, spec: SlotSpec, slots: list[int],
          config: ValidityConfig) -> dict[str, Any]:
    cts, proof = prove_report(public, kind, spec, slots, CONTEXT)
    verify_report(public, kind, spec, cts, proof, CONTEXT)
    items = [(*prove_report(public, kind, spec, slots, CONTEXT), CONTEXT)
             for _ in range(config.batch)]
    if verify_reports(public, kind, spec, items):
        raise RuntimeError(f"batch verification of honest {kind} reports failed")
    repeat = config.repeat
    ops: dict[str, Timing] = {
        "encrypt": measure(lambda: public.encrypt(slots, spec), repeat=repeat),
        "prove": measure(lambda: prove_report(public, kind, spec, slots, CONTEXT),
                         repeat=repeat),
        "verify": measure(lambda: verify_report(public, kind, spec, cts, proof, CONTEXT),
                          repeat=repeat),
        "verify_each": measure(lambda: verify_report_each(public, kind, spec, cts, proof,
                                                          CONTEXT), repeat=repeat),
    }
    batch = measure(lambda: verify_reports(public, kind, spec, items), repeat=max(1, repeat // 2))
    per_report = Timing(tuple(s / config.batch for s in batch.samples))
    ops["batch_verify"] = per_report
    encrypt = ops["encrypt"].median
    return {
        "kind": kind,
        "slots": spec.count,
        "max_value": spec.max_value,
        "ciphertexts": len(cts),
        "ciphertext_bytes": sum(len(c) for c in cts),
        "proof_bytes": proof.size(),
        "proof_json_bytes": len(json.dumps(proof.to_json(), separators=(",", ":"))),
        "per_report": {name: timing.to_json() for name, timing in ops.items()},
        "ratios": {
            "prove_over_encrypt": ratio(ops["prove"].median, encrypt),
            "verify_over_encrypt": ratio(ops["verify"].median, encrypt),
            "verify_over_verify_each": ratio(ops["verify"].median, ops["verify_each"].median),
            "batch_verify_over_verify": ratio(per_report.median, ops["verify"].median),
            "proof_bytes_over_ciphertext_bytes": ratio(proof.size(),
                                                       sum(len(c) for c in cts)),
        },
    }


def run(config: ValidityConfig) -> dict[str, Any]:
    """Every figure named in the module docstring, per kind."""
    public = generate_paillier(config.key_bits).public
    public.precompute()
    return {
        "key_bits": config.key_bits,
        "batch": config.batch,
        "kinds": {name: _case(public, kind, spec, slots, config)
                  for name, (kind, spec, slots) in CASES.items()},
    }


if __name__ == "__main__":  # pragma: no cover - a quick look without the whole bench
    import sys

    bits = int(sys.argv[1]) if len(sys.argv) > 1 else 3072
    print(json.dumps(run(ValidityConfig(key_bits=bits, repeat=3, batch=10)), indent=1))
