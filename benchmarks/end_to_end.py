"""Question 3: from the first report to the published result, for N simulated clients.

All runs share one fresh deployment, smallest first (``stored_before`` says how many
reports the server already held); each has its own metric, so its own window. The N reports
are encrypted first, one fresh encryption per simulated client through the SDK's encode +
encrypt path; that client time is reported separately (summed CPU over the encrypting
processes, and wall time) and is not part of the end-to-end figure. Then the clock runs over:

1. upload: CBOR batches of ``batch_size``, ``concurrency`` in flight, each on its own
   connection and acknowledged only once durable;
2. release: the operator's ``POST /v1/windows/release`` (the server seals the window, sends
   the aggregate to the key-holder, which checks the policy, decrypts, adds discrete
   Gaussian noise, debits the budget, signs; the server verifies and stores the result);
3. publish: ``GET /v1/published/{metric}`` returns the signed result.

The published value is checked against the exact sum of the clipped values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from blindsum.benchmarks.http_load import upload
from blindsum.benchmarks.servers import Servers
from blindsum.benchmarks.workload import cbor_batches, encrypt_reports, exact_sum, session_seconds

WARMUP_METRIC = "e2e-warmup"
WARMUP_CLIENTS = 100


def metric_for(clients: int) -> str:
    return f"e2e-{clients}"


def metrics(sizes: tuple[int, ...]) -> list[str]:
    return [WARMUP_METRIC, *(metric_for(n) for n in sizes)]


def warm_up(servers: Servers, batch_size: int, concurrency: int) -> None:
    """One small untimed run: the key-holder's first release loads OpenDP and its keys."""
    policy = servers.policy(WARMUP_METRIC)
    public = servers.paillier(WARMUP_METRIC)
    window = policy.window_start(time.time())
    encrypted = encrypt_reports(public, policy, session_seconds(WARMUP_CLIENTS, 1), window)
    upload(servers.encrypted_target(), cbor_batches(encrypted.reports, batch_size), concurrency)
    servers.admin_post("/v1/windows/release", {"metric": WARMUP_METRIC})
    servers.get(f"/v1/published/{WARMUP_METRIC}")


def run_one(
    servers: Servers,
    clients: int,
    batch_size: int,
    concurrency: int,
    on_encrypted: Callable[[int], None] | None = None,
    on_uploaded: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    metric = metric_for(clients)
    policy = servers.policy(metric)
    public = servers.paillier(metric)
    values = session_seconds(clients, seed=clients)
    window = policy.window_start(time.time())
    encrypted = encrypt_reports(public, policy, values, window, on_encrypted)
    started = time.perf_counter()
    batches = cbor_batches(encrypted.reports, batch_size)
    serialise_s = time.perf_counter() - started

    started = time.perf_counter()
    uploaded = upload(servers.encrypted_target(), batches, concurrency, on_uploaded)
    upload_s = time.perf_counter() - started
    outcome = servers.admin_post("/v1/windows/release", {"metric": metric})
    release_s = time.perf_counter() - started - upload_s
    results = servers.get(f"/v1/published/{metric}")["results"]
    total_s = time.perf_counter() - started
    publish_s = total_s - upload_s - release_s

    released = outcome.get("released") or []
    if len(released) != 1 or released[0]["report_count"] != clients:  # type: ignore[index]
        raise RuntimeError(f"release of {metric} did not publish {clients} reports: {outcome}")
    if not isinstance(results, list) or len(results) != 1:
        raise RuntimeError(f"expected one published result for {metric}, got {results!r}")
    result = results[0]
    truth = exact_sum(policy, values)
    low, high = result["ci"]
    half_width = (high - low) / 2
    return {
        "clients": clients,
        "metric": metric,
        "client_encrypt_cpu_s": encrypted.cpu_seconds,
        "client_encrypt_wall_s": encrypted.wall_seconds,
        "client_encrypt_processes": encrypted.workers,
        "client_fixed_base_tables_s": encrypted.table_seconds,
        "client_encrypt_ms_per_report": 1000 * encrypted.cpu_seconds / clients,
        "client_serialise_s": serialise_s,
        "upload_s": upload_s,
        "upload_reports_per_s": uploaded.reports_per_second,
        "release_s": release_s,
        "publish_s": publish_s,
        "total_s": total_s,
        "report_count": result["report_count"],
        "published_value": result["value"],
        "exact_value": truth,
        "ci": [low, high],
        "within_ci": low <= truth <= high,
        "error_in_half_widths": abs(result["value"] - truth) / half_width if half_width else None,
    }


def run(
    servers: Servers,
    sizes: tuple[int, ...],
    batch_size: int,
    concurrency: int,
    on_encrypted: Callable[[int], None] | None = None,
    on_uploaded: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    warm_up(servers, batch_size, concurrency)
    runs, stored = [], WARMUP_CLIENTS
    for clients in sizes:
        runs.append({**run_one(servers, clients, batch_size, concurrency, on_encrypted,
                               on_uploaded), "stored_before": stored})
        stored += clients
    return {"batch_size": batch_size, "concurrency": concurrency, "runs": runs}
