"""Question: what verifying validity proofs costs the server's ingest.

At 3072 bits, on one freshly started deployment, side by side: reports/s (CBOR batches over
HTTP, every report durable) for a count and for a sum in 0..3600 (12 aux bits), once for a
metric with ``validity = "proof"`` (the server verifies each batch's proofs together with
``verify_reports`` before storing) and once for the same kind with ``validity = "none"``
(the unproven path), with the server CPU per report and the ratio. Proven reports cannot
recycle ciphertexts under fresh ids (a proof is bound to its report id), so each one is
proven fresh, in one process per core, before the clock starts.

Measured here (2 cores, 3072 bits, batches of 50, 2 connections; ``python -m
blindsum.benchmarks.ingest_proofs``): a count 334 reports/s proven vs 4,407 unproven
(ratio 0.076; server CPU 5.6 ms vs 0.28 ms per report); a sum in 0..3600 43 vs 3,799
(ratio 0.011; 22 ms vs 0.33 ms per report). Verification, not HTTP or SQLite, is the cost.
"""

from __future__ import annotations

import os
import secrets
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import requests

from blindsum.benchmarks import servers
from blindsum.benchmarks.ingest import timed_upload
from blindsum.benchmarks.timing import ratio
from blindsum.benchmarks.workload import cbor_batches, session_seconds
from blindsum.shared import codec
from blindsum.shared.codec import Report
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.validity import ProofContext, proof_kind, prove_report

KINDS = ("count", "sum")


@dataclass(frozen=True)
class IngestProofsConfig:
    reports: dict[str, int]  # per kind, for each of the proven and unproven metrics
    batch: int
    concurrency: int
    key_bits: int = 3072


def metric(kind: str, proven: bool) -> str:
    return f"{'proven' if proven else 'unproven'}-{kind}"


def _values(kind: str, count: int) -> list[int]:
    return [i % 2 for i in range(count)] if kind == "count" else session_seconds(count, 11)


def _make(n: int, key_id: str, policy_json: dict[str, Any], window: int,
          values: list[int]) -> list[Report]:
    policy = MetricPolicy.from_mapping(policy_json["name"], policy_json)
    public = PaillierPublic(n, key_id)
    public.precompute()
    spec = slot_spec(policy)
    out = []
    for value in values:
        report_id = secrets.token_bytes(codec.REPORT_ID_BYTES)
        slots = encode(policy, value)
        proof = None
        if policy.proven:
            context = ProofContext(policy.name, policy.version, window, key_id, report_id)
            cts, proven = prove_report(public, proof_kind(policy), spec, slots, context)
            proof = proven.to_json()
        else:
            cts = public.encrypt(slots, spec)
        out.append(Report(report_id, policy.name, policy.version, key_id, window,
                          tuple(cts), proof))
    return out


def reports(public: PaillierPublic, policy: MetricPolicy, window: int,
            values: list[int]) -> tuple[list[Report], float]:
    """Fresh (proven, if the policy says so) reports of ``values``, one process per core;
    and the wall seconds that took."""
    workers = min(os.cpu_count() or 1, 8)
    pieces = [values[i::workers] for i in range(workers) if values[i::workers]]
    started = time.perf_counter()
    with ProcessPoolExecutor(len(pieces), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_make, int(public.n), public.key_id, policy.to_json(), window,
                               piece) for piece in pieces]
        made = [r for future in futures for r in future.result()]
    return made, time.perf_counter() - started


def _stored(running: servers.Servers, name: str) -> int:
    """Reports the server holds for ``name`` (its windows' counts, admin API)."""
    dep = running.deployed
    response = requests.get(f"{dep.server.url}/v1/windows", timeout=60, verify=dep.verify,
                            headers={"Authorization": f"Bearer {dep.admin_token}"})
    response.raise_for_status()
    return sum(w["report_count"] for w in response.json()["windows"] if w["metric"] == name)


def run(config: IngestProofsConfig, root: Path) -> dict[str, Any]:
    """Every figure named in the module docstring, per kind."""
    names = [metric(kind, proven) for kind in KINDS for proven in (True, False)]
    proven_names = [metric(kind, True) for kind in KINDS]
    counts = [metric("count", p) for p in (True, False)]
    out: dict[str, Any] = {"key_bits": config.key_bits, "batch": config.batch,
                           "concurrency": config.concurrency, "kinds": {}}
    with servers.running(root, names, paillier_bits=config.key_bits, proven=proven_names,
                         counts=counts) as running:
        target = running.encrypted_target()
        pid = running.deployed.server.process.pid
        for kind in KINDS:
            row: dict[str, Any] = {}
            for proven in (False, True):
                policy = running.policy(metric(kind, proven))
                window = policy.window_start(time.time())
                made, seconds = reports(running.paillier(policy.name), policy, window,
                                        _values(kind, config.reports[kind]))
                batches = cbor_batches(made, config.batch)
                result = timed_upload(target, batches, config.concurrency, pid, None)
                held = _stored(running, policy.name)
                if held != len(made):
                    raise RuntimeError(f"{policy.name}: {held} of {len(made)} reports stored")
                row["proven" if proven else "unproven"] = {
                    **result, "client_seconds_to_make": seconds,
                    "body_bytes": sum(len(body) for body, _ in batches)}
            row["ratio_reports_per_s_proven_over_unproven"] = ratio(
                row["proven"]["reports_per_s"], row["unproven"]["reports_per_s"])
            out["kinds"][kind] = row
    return out


if __name__ == "__main__":  # pragma: no cover - a quick look without the whole bench
    import json
    import sys
    import tempfile

    bits = int(sys.argv[1]) if len(sys.argv) > 1 else 3072
    with tempfile.TemporaryDirectory(prefix="blindsum-bench-proofs-") as tmp:
        print(json.dumps(run(IngestProofsConfig({"count": 400, "sum": 60}, batch=50,
                                                concurrency=2, key_bits=bits), Path(tmp)),
                         indent=1))
