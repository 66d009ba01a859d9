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

- ``report_cbor_bytes`` / ``report_json_bytes``: the whole report as the SDK sends it (CBOR,
  proofs as raw byte strings) and in the JSON form, beside Prio3's published per-report
  sizes (libprio-rs PR 127: 208 B count, 432 B 10-bucket histogram, 960 B 32-bit sum);
- ``compact_prove`` / ``compact_verify`` / ``compact_report_cbor_bytes``: the same for the
  compact form (``proof_form = "compact"``: challenges instead of commitments, verified one
  report at a time);
- ``throughput``: ``verify_reports`` over ``throughput_batch`` reports per kind, in one
  process and in ``processes`` forked processes at once (each verifying its own copy: the
  server's and the key-holder's gunicorn workers do the same), as reports per second of
  wall time, beside the unproven path's per-report check (loading the ciphertexts: range
  and gcd) in the same process.

Every timed proof is first checked to verify (and the batch to accept), so the figures are
for a working path.

What bounds the rest (3072-bit ``n``, ``n^2`` of 768 bytes): in the batched form every
OR-branch carries one 768-byte commitment ``u``, and a range slot one 768-byte auxiliary
ciphertext per digit of three weights, so a count is at least 768 (ciphertext) + 2·768
(commitments) bytes and a 12-bit sum 5·768 + 33·768; the compact form replaces each
commitment by a 16-byte challenge (a count: 768 + 2·(16 + ~97) bytes). Verifying a batched
proof costs, per equation in a batch, a 64-bit and a share of a 192-bit
multi-exponentiation modulo ``n^2`` (about 40 6144-bit multiplications for a count); a
compact one cannot be batched and costs a table power and a 128-bit power per equation.
Proving costs one fixed-base table power per ciphertext, per true branch and per simulated
branch (``sigma._simulate_opened``).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

from blindsum.benchmarks.timing import Timing, measure, ratio
from blindsum.shared import codec
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
    "histogram_7": ("histogram", SlotSpec(7, 1, MAX_CONTRIBUTORS), [0, 0, 0, 0, 1, 0, 0]),
    "sum_12bit": ("sum", SlotSpec(1, 4095, MAX_CONTRIBUTORS), [2718]),
    "histogram_40": ("histogram", SlotSpec(40, 1, MAX_CONTRIBUTORS), [0] * 17 + [1] + [0] * 22),
    "sum_0_3600": ("sum", SlotSpec(1, 3600, MAX_CONTRIBUTORS), [2718]),
    "vector_8x1000": ("vector", SlotSpec(8, 1000, MAX_CONTRIBUTORS),
                      [0, 1000, 31, 415, 926, 535, 897, 932]),
}


# Prio3's per-report upload sizes (libprio-rs PR 127), for the nearest case of ours
PRIO3_BYTES = {"count": (208, "Prio3Count"),
               "histogram_7": (432, "Prio3Histogram, 10 buckets"),
               "sum_12bit": (960, "Prio3Sum, 32 bits")}
THROUGHPUT_KINDS = ("count", "histogram_7")


@dataclass(frozen=True)
class ValidityConfig:
    key_bits: int = 3072
    repeat: int = 5
    batch: int = 20
    throughput_batch: int = 500
    processes: int = 2


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
    compact_cts, compact = prove_report(public, kind, spec, slots, CONTEXT, "compact")
    verify_report(public, kind, spec, compact_cts, compact, CONTEXT)
    ops["compact_prove"] = measure(
        lambda: prove_report(public, kind, spec, slots, CONTEXT, "compact"), repeat=repeat)
    ops["compact_verify"] = measure(
        lambda: verify_report(public, kind, spec, compact_cts, compact, CONTEXT), repeat=repeat)
    encrypt = ops["encrypt"].median
    sizes = {**_wire_sizes("report", cts, proof),
             **_wire_sizes("compact_report", compact_cts, compact)}
    return {**sizes,
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


def _wire_sizes(name: str, cts: list[bytes], proof: Any) -> dict[str, int]:
    wire = codec.Report(CONTEXT.report_id, CONTEXT.metric, CONTEXT.version, CONTEXT.key_id,
                        CONTEXT.window_start, tuple(cts), proof.to_wire()).to_wire()
    return {f"{name}_cbor_bytes": len(codec.dumps(wire, codec.CBOR)),
            f"{name}_json_bytes": len(codec.dumps(wire, codec.JSON))}


_SHARED: tuple[Any, ...] = ()  # what forked workers verify (set before the pool forks)


def _verify_shared(_: int) -> int:
    public, kind, spec, items = _SHARED
    return len(verify_reports(public, kind, spec, items))


def _throughput(public: PaillierPublic, kind: str, spec: SlotSpec, slots: list[int],
                config: ValidityConfig) -> dict[str, Any]:
    global _SHARED
    items = []
    for i in range(config.throughput_batch):
        context = ProofContext(CONTEXT.metric, CONTEXT.version, CONTEXT.window_start,
                               CONTEXT.key_id, i.to_bytes(16, "big"))
        cts, proof = prove_report(public, kind, spec, slots, context)
        items.append((cts, proof, context))
    n = len(items)
    started = time.perf_counter()
    for cts, _, _ in items:
        public.load(cts, spec)  # the unproven path's check of a report
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    if verify_reports(public, kind, spec, items):
        raise RuntimeError(f"batch verification of honest {kind} reports failed")
    one_s = time.perf_counter() - started
    _SHARED = (public, kind, spec, items)
    with multiprocessing.get_context("fork").Pool(config.processes) as pool:
        pool.map(abs, range(config.processes))  # every worker forked and idle
        started = time.perf_counter()
        failures = pool.map(_verify_shared, range(config.processes))
        many_s = time.perf_counter() - started
    _SHARED = ()
    if any(failures):
        raise RuntimeError(f"parallel batch verification of honest {kind} reports failed")
    return {"batch": n, "processes": config.processes,
            "one_process_reports_per_s": n / one_s,
            "all_processes_reports_per_s": config.processes * n / many_s,
            "unproven_load_reports_per_s": n / load_s}


def run(config: ValidityConfig) -> dict[str, Any]:
    """Every figure named in the module docstring, per kind."""
    public = generate_paillier(config.key_bits).public
    public.precompute()
    kinds = {name: _case(public, kind, spec, slots, config)
             for name, (kind, spec, slots) in CASES.items()}
    for name, (size, what) in PRIO3_BYTES.items():
        kinds[name]["prio3"] = {
            "bytes": size, "case": what,
            "ours_over_prio3": kinds[name]["report_cbor_bytes"] / size,
            "compact_over_prio3": kinds[name]["compact_report_cbor_bytes"] / size}
    return {
        "key_bits": config.key_bits,
        "batch": config.batch,
        "kinds": kinds,
        "throughput": {name: _throughput(public, *CASES[name], config)
                       for name in THROUGHPUT_KINDS},
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m blindsum.benchmarks.validity [--quick]``: this section alone, with its
    targets, written to benchmarks/results/validity.json (the whole bench also runs it)."""
    import argparse
    from pathlib import Path

    from rich.console import Console

    from blindsum.benchmarks import machine, report, targets

    parser = argparse.ArgumentParser(prog="python -m blindsum.benchmarks.validity")
    parser.add_argument("--quick", action="store_true", help="2048-bit key, small batches")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    config = (ValidityConfig(key_bits=2048, repeat=1, batch=2, throughput_batch=10)
              if args.quick else ValidityConfig())
    results: dict[str, Any] = {"machine": machine.describe(),
                               "load_average_before": machine.load_average(),
                               "validity": run(config)}
    results["load_average_after"] = machine.load_average()
    results["targets"] = [t.evaluate(results) for t in targets.TARGETS
                          if t.name.startswith("validity_")]
    console = Console()
    console.print(report._table(f"Client validity proofs (Paillier {config.key_bits}-bit)",
                                report.VALIDITY_HEADERS, report.validity_rows(results)))
    console.print(report._table("Verification throughput", report.THROUGHPUT_HEADERS,
                                report.throughput_rows(results)))
    console.print(report._table("Targets", report.TARGET_HEADERS, report.target_rows(results)))
    if not args.quick:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "validity.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
