"""Timing helpers: ``time.perf_counter``, warm-ups, medians over repetitions.

Every figure the benchmarks print is a median of repeated measurements after warm-up runs
(first calls build caches: the Paillier fixed-base table, TenSEAL's NTT tables, SQLite
connections). The raw samples are kept, so a reader can check the spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Repeated wall-clock measurements of one operation, in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    def to_json(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "p10_s": self.quantile(0.1),
            "p90_s": self.quantile(0.9),
            "repetitions": len(self.samples),
        }


def measure(operation: Callable[[], object], *, repeat: int, warmup: int = 1) -> Timing:
    """Run ``operation`` ``warmup`` times untimed, then ``repeat`` times timed."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    for _ in range(warmup):
        operation()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - started)
    return Timing(tuple(samples))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; infinite if the denominator is zero."""
    return numerator / denominator if denominator > 0 else float("inf")
