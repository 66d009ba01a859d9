"""Question 2: server ingest, reports/s over HTTP on loopback with every report durable.

Three figures side by side:

- the real aggregator (gunicorn, 2 workers x 8 threads, SQLite WAL with
  ``synchronous=FULL``) ingesting 3072-bit Paillier reports in CBOR batches of 1, 100 and
  1,000 (and more sizes in the full run): each batch is acknowledged only once durable;
- the plaintext pipeline: the same HTTP + SQLite path with encryption off
  (``plain_server``), values as JSON numbers;
- the compute bound: 6144-bit multiplications mod n**2 per second with gmpy2, i.e. the
  homomorphic additions one core can do, the floor of what folding a report costs.

Each batch size runs on freshly started servers with empty stores, and its repetitions run
back to back, so they show the rate sustained while the store fills (``stored_before``).
Ingest reports have fresh random ids and reuse a pool of honest encryptions (the server
validates and adds each one exactly like a fresh encryption and never deduplicates by
ciphertext), so the runs do not spend minutes encrypting. Bodies are built before the clock
starts; the uploader keeps ``concurrency`` keep-alive connections busy.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import gmpy2

from blindsum.benchmarks.http_load import Target, upload
from blindsum.benchmarks.proc_cpu import tree_cpu_seconds
from blindsum.benchmarks.servers import Servers
from blindsum.benchmarks.timing import median, ratio
from blindsum.benchmarks.workload import (
    cbor_batches,
    encrypt_reports,
    recycled_reports,
    session_seconds,
)
from blindsum.shared import codec

WARMUP_METRIC = "ingest-warmup"
WARMUP_BATCHES = 2  # per connection
Batches = list[tuple[bytes, int]]


def metric_for(batch_size: int) -> str:
    return f"ingest-b{batch_size}"


@dataclass(frozen=True)
class IngestConfig:
    batch_sizes: tuple[int, ...]
    reports: dict[int, int]  # reports per repetition, by batch size
    repeats: int
    concurrency: int
    pool: int  # distinct honest ciphertexts the ingest reports cycle through
    compute_ops: int
    compute_repeats: int


# -- the compute bound ---------------------------------------------------------------------


def _mulmod_rates(n: int, ops: int, repeats: int) -> list[float]:
    """Homomorphic adds (``acc * c % n**2``) per second, one warm-up then ``repeats`` runs."""
    nsquare = gmpy2.mpz(n) ** 2
    rng = random.Random(6144)
    items = [gmpy2.mpz(rng.getrandbits(nsquare.bit_length())) % nsquare for _ in range(1024)]
    rates = []
    for _ in range(repeats + 1):
        acc = gmpy2.mpz(1)
        started = time.perf_counter()
        for i in range(ops):
            acc = acc * items[i & 1023] % nsquare
        rates.append(ops / (time.perf_counter() - started))
    return rates[1:]


def _gcd_rate(n: int, count: int) -> float:
    nsquare = gmpy2.mpz(n) ** 2
    rng = random.Random(1)
    items = [gmpy2.mpz(rng.getrandbits(nsquare.bit_length())) % nsquare for _ in range(count)]
    started = time.perf_counter()
    for item in items:
        gmpy2.gcd(item, n)
    return count / (time.perf_counter() - started)


def compute_bound(n: int, ops: int, repeats: int) -> dict[str, Any]:
    """The homomorphic-add rate of one core and of every core at once, for modulus n**2."""
    one_core = _mulmod_rates(n, ops, repeats)
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores, mp_context=get_context("spawn")) as pool:
        pool.submit(int, 0).result()  # workers up before the clocks start
        futures = [pool.submit(_mulmod_rates, n, ops, repeats) for _ in range(cores)]
        per_worker = [median(f.result()) for f in futures]
    return {
        "modulus_bits": int((gmpy2.mpz(n) ** 2).bit_length()),
        "adds_per_s_one_core": median(one_core),
        "adds_per_s_one_core_runs": one_core,
        "adds_per_s_all_cores": sum(per_worker),
        "cores": cores,
        "validation_gcds_per_s_one_core": _gcd_rate(n, max(200, ops // 10)),
    }


# -- HTTP runs -----------------------------------------------------------------------------


def plaintext_batches(metric: str, window: int, count: int, batch_size: int) -> Batches:
    """JSON batches of plaintext reports (values as JSON numbers)."""
    values = session_seconds(count, seed=count)
    reports = [{"id": codec.b64encode(secrets.token_bytes(codec.REPORT_ID_BYTES)),
                "metric": metric, "version": 1, "window": window, "values": [v]}
               for v in values]
    return [(json.dumps({"v": 1, "reports": reports[i:i + batch_size]}).encode(),
             len(reports[i:i + batch_size])) for i in range(0, count, batch_size)]


def timed_upload(target: Target, batches: Batches, concurrency: int, server_pid: int,
                  on_reports: Callable[[int], None] | None) -> dict[str, Any]:
    """One upload, with the CPU the server's process tree and this process spent on it."""
    server_before, own_before = tree_cpu_seconds(server_pid), time.process_time()
    result = upload(target, batches, concurrency, on_reports)
    server_after, own_after = tree_cpu_seconds(server_pid), time.process_time()
    server_cpu = (server_after - server_before
                  if server_after is not None and server_before is not None else None)
    return {
        "reports": result.reports,
        "requests": result.requests,
        "seconds": result.seconds,
        "reports_per_s": result.reports_per_second,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_report":
            None if server_cpu is None else 1e6 * server_cpu / result.reports,
        "server_cores_busy": None if server_cpu is None else server_cpu / result.seconds,
        "uploader_cpu_s": own_after - own_before,
    }


def _median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return median(values) if values else None


def _runs(
    target: Target,
    server_pid: int,
    make: Callable[[str, int, int], Batches],
    batch_size: int,
    config: IngestConfig,
    on_reports: Callable[[int], None] | None,
) -> dict[str, Any]:
    # Warm-up: every server thread opens its SQLite connection and loads the keyring.
    warmup = WARMUP_BATCHES * config.concurrency * 100
    upload(target, make(WARMUP_METRIC, 100, warmup), config.concurrency)
    stored = warmup
    runs = []
    for _ in range(config.repeats):
        batches = make(metric_for(batch_size), batch_size, config.reports[batch_size])
        run = timed_upload(target, batches, config.concurrency, server_pid, on_reports)
        runs.append({**run, "stored_before": stored})
        stored += run["reports"]
    return {
        "reports_per_s": median([r["reports_per_s"] for r in runs]),
        "server_cpu_us_per_report": _median_of(runs, "server_cpu_us_per_report"),
        "server_cores_busy": _median_of(runs, "server_cores_busy"),
        "runs": runs,
    }


def _one_batch_size(servers: Servers, batch_size: int, config: IngestConfig,
                    on_reports: Callable[[int], None] | None) -> tuple[Any, Any]:
    public = servers.paillier(WARMUP_METRIC)
    warm_policy = servers.policy(WARMUP_METRIC)
    window = warm_policy.window_start(time.time())
    pool = [r.ciphertexts[0] for r in encrypt_reports(
        public, warm_policy, session_seconds(config.pool, seed=7), window).reports]

    def encrypted(metric: str, size: int, count: int) -> Batches:
        reports = recycled_reports(pool, servers.policy(metric), public.key_id, window, count)
        return cbor_batches(reports, size)

    def plaintext(metric: str, size: int, count: int) -> Batches:
        return plaintext_batches(metric, window, count, size)

    assert servers.plain is not None
    enc = _runs(servers.encrypted_target(), servers.deployed.server.process.pid, encrypted,
                batch_size, config, on_reports)
    plain = _runs(servers.plaintext_target(), servers.plain.pid, plaintext, batch_size, config,
                  on_reports)
    return enc, plain


def run(start: Callable[[list[str]], AbstractContextManager[Servers]], config: IngestConfig,
        bound: dict[str, Any], on_reports: Callable[[int], None] | None = None
        ) -> dict[str, Any]:
    """Encrypted and plaintext ingest at every batch size, each on servers ``start`` made
    fresh for it (with the plaintext baseline), and the ratios between them."""
    enc: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for batch_size in config.batch_sizes:
        with start([WARMUP_METRIC, metric_for(batch_size)]) as servers:
            enc[str(batch_size)], plain[str(batch_size)] = _one_batch_size(
                servers, batch_size, config, on_reports)
    one_core = bound["adds_per_s_one_core"]
    all_cores = bound["adds_per_s_all_cores"]
    return {
        "concurrency": config.concurrency,
        "connections": "a new TCP connection per batch (Connection: close), "
                       f"{config.concurrency} batches in flight",
        "server": "blindsum server serve: gunicorn gthread, 2 workers x 8 threads",
        "wire": {"encrypted": "CBOR, 3072-bit Paillier, 1 ciphertext per report",
                 "plaintext": "JSON numbers"},
        "pool_ciphertexts": config.pool,
        "encrypted": enc,
        "plaintext": plain,
        "plaintext_over_encrypted": {b: ratio(plain[b]["reports_per_s"],
                                              enc[b]["reports_per_s"]) for b in enc},
        "percent_of_compute_bound_one_core": {
            b: 100 * enc[b]["reports_per_s"] / one_core for b in enc},
        "percent_of_compute_bound_all_cores": {
            b: 100 * enc[b]["reports_per_s"] / all_cores for b in enc},
    }


def reports_total(config: IngestConfig) -> int:
    """Reports the measured HTTP runs send (both servers), for a progress bar."""
    return 2 * config.repeats * sum(config.reports[b] for b in config.batch_sizes)
