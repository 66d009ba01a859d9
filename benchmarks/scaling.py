"""Question 4: how each cost grows with values per report and with the number of clients.

Most series come from the points the other questions measured: per pipeline, client time
and bytes per report against values per report; per batch size, ingest rate; per client
count, the end-to-end phases. One series is measured here: the server's ingest rate against
values per report, for both schemes (a Paillier report grows by one ciphertext per
``usable_bits // slot_width`` slots, 118 here; a CKKS report holds 2,048 slots in one
ciphertext). Each series gets a log-log slope ``b`` (cost ~ x**b): about 0 means flat, 1
means linear.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from blindsum.benchmarks.client_cost import PIPELINES
from blindsum.benchmarks.ingest import timed_upload
from blindsum.benchmarks.servers import Servers
from blindsum.benchmarks.timing import median
from blindsum.benchmarks.workload import cbor_batches, client_values
from blindsum.shared import codec
from blindsum.shared.codec import Report
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import slot_spec

SCHEMES = ("paillier", "ckks")


@dataclass(frozen=True)
class ServerValuesConfig:
    values_per_report: tuple[int, ...]
    reports: dict[str, int]  # reports per run, by scheme
    batch: dict[str, int]  # reports per HTTP batch, by scheme (CKKS reports are ~66 KB)
    repeats: int
    pool: int  # distinct honest encryptions per point

    def metrics(self) -> list[tuple[str, str, int]]:
        return [(values_metric(scheme, k), scheme, k) for scheme in SCHEMES
                for k in self.values_per_report]

    def total_reports(self) -> int:
        return self.repeats * len(self.values_per_report) * sum(self.reports.values())


def values_metric(scheme: str, values: int) -> str:
    return f"values-{scheme}-{values}"


def _point(servers: Servers, scheme: str, count: int, config: ServerValuesConfig,
           concurrency: int, warm_up: bool,
           on_reports: Callable[[int], None] | None) -> dict[str, Any]:
    metric = values_metric(scheme, count)
    policy, public = servers.policy(metric), servers.scheme(metric)
    window = policy.window_start(time.time())
    pool = []
    for seed in range(config.pool):
        values = client_values(count, seed)
        value: Any = values[0] if count == 1 else values
        pool.append(tuple(public.encrypt(encode(policy, value), slot_spec(policy))))
    pid = servers.deployed.server.process.pid

    def reports_of(n: int) -> list[Report]:
        return [Report(secrets.token_bytes(codec.REPORT_ID_BYTES), metric, policy.version,
                       public.key_id, window, pool[i % len(pool)]) for i in range(n)]

    if warm_up:  # each server worker builds the scheme (a CKKS context) once
        timed_upload(servers.encrypted_target(), cbor_batches(reports_of(20 * concurrency), 10),
                     concurrency, pid, None)
    runs = [timed_upload(servers.encrypted_target(),
                         cbor_batches(reports_of(config.reports[scheme]), config.batch[scheme]),
                         concurrency, pid, on_reports)
            for _ in range(config.repeats)]
    sample = Report(b"\0" * codec.REPORT_ID_BYTES, metric, policy.version, public.key_id, window,
                    pool[0])
    return {
        "values": count,
        "ciphertexts_per_report": len(pool[0]),
        "bytes_per_report": len(codec.dumps(sample.to_wire(), codec.CBOR)),
        "batch": config.batch[scheme],
        "reports_per_s": median([r["reports_per_s"] for r in runs]),
        "runs": runs,
    }


def server_values(servers: Servers, config: ServerValuesConfig, concurrency: int,
                  on_reports: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Ingest reports/s (HTTP, durable) against values per report, per scheme."""
    return {
        scheme: [_point(servers, scheme, count, config, concurrency, index == 0, on_reports)
                 for index, count in enumerate(config.values_per_report)]
        for scheme in SCHEMES
    }


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than two usable points."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pairs) < 2:
        return None
    mean_x = sum(p[0] for p in pairs) / len(pairs)
    mean_y = sum(p[1] for p in pairs) / len(pairs)
    spread = sum((p[0] - mean_x) ** 2 for p in pairs)
    if spread == 0:
        return None
    return sum((p[0] - mean_x) * (p[1] - mean_y) for p in pairs) / spread


def values_series(client_cost: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in PIPELINES:
        points = client_cost["points"][name]
        counts = sorted(points, key=int)
        xs = [int(c) for c in counts]
        times = [points[c]["median_s"] for c in counts]
        sizes = [points[c]["bytes"] for c in counts]
        out[name] = {"values": xs, "median_s": times, "bytes": sizes,
                     "time_slope": loglog_slope(xs, times),
                     "bytes_slope": loglog_slope(xs, sizes)}
    return out


def batch_series(ingest: dict[str, Any]) -> dict[str, Any]:
    sizes = sorted(ingest["encrypted"], key=int)
    return {
        "batch_size": [int(b) for b in sizes],
        "encrypted_reports_per_s": [ingest["encrypted"][b]["reports_per_s"] for b in sizes],
        "plaintext_reports_per_s": [ingest["plaintext"][b]["reports_per_s"] for b in sizes],
    }


def clients_series(end_to_end: dict[str, Any]) -> dict[str, Any]:
    runs = sorted(end_to_end["runs"], key=lambda r: r["clients"])
    xs = [r["clients"] for r in runs]
    series: dict[str, Any] = {"clients": xs}
    for key in ("upload_s", "release_s", "publish_s", "total_s", "client_encrypt_cpu_s"):
        series[key] = [r[key] for r in runs]
    series["total_slope"] = loglog_slope(xs, series["total_s"])
    if len(xs) >= 2 and xs[-1] != xs[0]:
        series["marginal_ms_per_client"] = (
            1000 * (series["total_s"][-1] - series["total_s"][0]) / (xs[-1] - xs[0]))
    return series


def server_values_series(measured: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scheme, points in measured.items():
        xs = [p["values"] for p in points]
        rates = [p["reports_per_s"] for p in points]
        out[scheme] = {"values": xs, "reports_per_s": rates,
                       "ciphertexts_per_report": [p["ciphertexts_per_report"] for p in points],
                       "bytes_per_report": [p["bytes_per_report"] for p in points],
                       "rate_slope": loglog_slope(xs, rates)}
    return out


def build(client_cost: dict[str, Any], ingest: dict[str, Any], end_to_end: dict[str, Any],
          server_values: dict[str, Any]) -> dict[str, Any]:
    return {
        "values_per_report": values_series(client_cost),
        "server_values_per_report": server_values_series(server_values),
        "batch_size": batch_series(ingest),
        "clients": clients_series(end_to_end),
    }
