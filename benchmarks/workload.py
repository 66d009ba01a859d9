"""What the benchmarks send: metric policies, simulated values and pre-encrypted reports.

Server-side runs each get their own metric, so their windows never mix: a window that was
released takes no more reports, and an ingest run must not inflate an end-to-end window.
Every metric is a one-slot ``sum`` (session seconds, 0..3600): one Paillier ciphertext per
report, which is also what a packed 16-value report costs the server (see ``client_cost``).
"""

from __future__ import annotations

import os
import random
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from blindsum.shared import codec
from blindsum.shared.codec import Report, ReportBatch
from blindsum.shared.encoding import clipped_value, encode
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.paillier import PaillierPublic

SUM_UPPER = 3600
MAX_CONTRIBUTORS = 1_000_000
# Below this many reports one process encrypts faster than starting a pool of workers.
PARALLEL_FROM = 4000


_COMMON = (
    "window_seconds = 3600\nlate_seconds = 3600\n"
    f"min_contributors = 20\nmax_contributors = {MAX_CONTRIBUTORS}\n"
    "allow_early_release = true\n"
    'privacy = { mechanism = "gaussian", epsilon = 1.0, delta = 1e-7, budget_epsilon = 48.0 }\n'
)


def policy_toml(names: Sequence[str], vectors: Sequence[tuple[str, str, int]] = (),
                proven: Collection[str] = (), counts: Collection[str] = ()) -> str:
    """A policy file: a Paillier ``sum`` metric (session seconds) per name (a ``count`` for
    the names in ``counts``), and a ``vector`` metric of minutes (0..60) per ``(name,
    scheme, dimension)``. Only the names in ``proven`` take validity proofs: the other
    benchmarks measure the unproven path (``ingest_proofs.py`` compares the two)."""
    def validity(name: str) -> str:
        return "" if name in proven else 'validity = "none"\n'

    tables = [
        f'[metrics.{name}]\nkind = "count"\nscheme = "paillier"\n{validity(name)}{_COMMON}'
        if name in counts else
        f'[metrics.{name}]\nkind = "sum"\nscheme = "paillier"\n{validity(name)}'
        f"lower = 0\nupper = {SUM_UPPER}\nprecision = 1\n{_COMMON}"
        for name in names
    ]
    tables += [
        f'[metrics.{name}]\nkind = "{"sum" if dimension == 1 else "vector"}"\n'
        f'scheme = "{scheme}"\n'
        + (f"dimension = {dimension}\n" if dimension > 1 else "")
        + (validity(name) if scheme == "paillier" else "")
        + f"lower = 0\nupper = 60\nprecision = 1\n{_COMMON}"
        for name, scheme, dimension in vectors
    ]
    return "\n".join(tables)


def client_policy(values_per_report: int, scheme: str) -> MetricPolicy:
    """The in-process policy of a ``values_per_report``-value report (minutes, 0..60).

    One value is a ``sum``; more are a ``vector``. Bounds fit both schemes: the window
    maximum 60 * 10**6 stays below CKKS's exact range (2**31).
    """
    raw: dict[str, Any] = {
        "kind": "sum" if values_per_report == 1 else "vector",
        "scheme": scheme,
        "lower": 0,
        "upper": 60,
        "precision": 1,
        "min_contributors": 20,
        "max_contributors": MAX_CONTRIBUTORS,
        "privacy": {"mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-7,
                    "budget_epsilon": 48.0},
    }
    if values_per_report > 1:
        raw["dimension"] = values_per_report
    return MetricPolicy.from_mapping(f"bench-{scheme}-{values_per_report}", raw)


def client_values(count: int, seed: int) -> list[int]:
    """``count`` whole minutes in 0..60, the same for every pipeline measured side by side."""
    rng = random.Random(seed)
    return [rng.randint(0, 60) for _ in range(count)]


def session_seconds(count: int, seed: int) -> list[int]:
    """Simulated per-install session lengths: skewed, some clipped at the bound."""
    rng = random.Random(seed)
    return [min(SUM_UPPER, round(rng.expovariate(1 / 900))) for _ in range(count)]


def exact_sum(policy: MetricPolicy, values: Sequence[int]) -> float:
    """The window total the key-holder should publish before noise."""
    return float(sum(clipped_value(policy, v) for v in values))  # type: ignore[misc]


@dataclass(frozen=True)
class Encrypted:
    """Reports encrypted as simulated clients would, and what that cost the clients.

    ``cpu_seconds`` is the encode + encrypt time summed over the encrypting processes;
    ``table_seconds`` the one-off fixed-base tables they built first (a device builds one
    per key, then reuses it for every report).
    """

    reports: list[Report]
    cpu_seconds: float
    table_seconds: float
    wall_seconds: float
    workers: int


def _encrypt_chunk(
    n: int, key_id: str, policy_json: dict[str, Any], values: Sequence[int]
) -> tuple[list[bytes], float, float]:
    policy = MetricPolicy.from_mapping(policy_json["name"], policy_json)
    public = PaillierPublic(n, key_id)
    spec = slot_spec(policy)
    started = time.perf_counter()
    public.precompute()
    table = time.perf_counter() - started
    started = time.perf_counter()
    out = [public.encrypt(encode(policy, value), spec)[0] for value in values]
    return out, time.perf_counter() - started, table


def encrypt_reports(
    public: PaillierPublic,
    policy: MetricPolicy,
    values: Sequence[int],
    window: int,
    on_progress: Callable[[int], None] | None = None,
) -> Encrypted:
    """One fresh encryption per value through the SDK's encode + encrypt path.

    Large sets are split over one process per core; ``cpu_seconds`` sums the workers'
    encryption time, which is what the clients would spend between them.
    """
    workers = min(os.cpu_count() or 1, 8) if len(values) >= PARALLEL_FROM else 1
    chunk = 2000
    pieces = [values[i:i + chunk] for i in range(0, len(values), chunk)]
    started = time.perf_counter()
    results: list[tuple[list[bytes], float, float]] = []
    if workers == 1:
        for piece in pieces:
            results.append(_encrypt_chunk(int(public.n), public.key_id, policy.to_json(), piece))
            if on_progress:
                on_progress(len(piece))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_encrypt_chunk, int(public.n), public.key_id,
                                   policy.to_json(), piece) for piece in pieces]
            for future, piece in zip(futures, pieces, strict=True):
                results.append(future.result())
                if on_progress:
                    on_progress(len(piece))
    wall = time.perf_counter() - started
    blobs = [blob for chunk_blobs, _, _ in results for blob in chunk_blobs]
    reports = [Report(secrets.token_bytes(codec.REPORT_ID_BYTES), policy.name, policy.version,
                      public.key_id, window, (blob,)) for blob in blobs]
    return Encrypted(reports, sum(r[1] for r in results), sum(r[2] for r in results), wall,
                     workers)


def recycled_reports(
    pool: Sequence[bytes], policy: MetricPolicy, key_id: str, window: int, count: int
) -> list[Report]:
    """``count`` reports with fresh ids whose ciphertexts cycle through ``pool``.

    The server validates and adds each one exactly as a fresh encryption (it cannot tell,
    and never deduplicates by ciphertext), so ingest runs need not spend minutes encrypting.
    """
    return [Report(secrets.token_bytes(codec.REPORT_ID_BYTES), policy.name, policy.version,
                   key_id, window, (pool[i % len(pool)],)) for i in range(count)]


def cbor_batches(reports: Sequence[Report], batch_size: int) -> list[tuple[bytes, int]]:
    """(CBOR body, report count) per batch, as the SDK sends them."""
    return [
        (codec.dumps(ReportBatch(tuple(reports[i:i + batch_size])).to_wire(), codec.CBOR),
         len(reports[i:i + batch_size]))
        for i in range(0, len(reports), batch_size)
    ]
