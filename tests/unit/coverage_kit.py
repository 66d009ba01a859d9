"""How often a published 95% interval should cover the truth, exactly, and the check of it.

A published interval is ``noisy ± half_width`` clipped to the domain ``[0, ceiling]``. With
integer noise ``N`` of a known law, it covers a slot's truth ``t`` with probability
``P(|N| <= half_width)`` inside the domain, but ``P(N >= -half_width)`` at ``t = ceiling``
and ``P(N <= half_width)`` at ``t = 0`` (clipping cannot move an interval off the edge the
truth sits on). The rates are therefore above 95% (discreteness, and the edges: ~96% for the
statistics tests' reports). Checking the observed rate against a nominal 95% +- 2% then
failed a correct key-holder in ~1% of runs per metric; this checks it against the exact
rate instead, and that the exact rate keeps the 95% promise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from blindsum.server.noise import NoisePlan

# standard errors of the covered count: a correct release fails with probability ~7e-6
Z = 4.5


def noise_law(plan: NoisePlan, parties: int) -> tuple[int, np.ndarray]:
    """``(k_max, pmf on -k_max..k_max)`` of the sum of ``parties`` draws of the plan."""
    reach = int(60 * plan.scale) + 60
    one = np.array([plan.pmf(k) for k in range(-reach, reach + 1)])
    law = one
    for _ in range(parties - 1):
        law = np.convolve(law, one)
    return reach * parties, law


def coverage_rates(law: tuple[int, np.ndarray], half_width: float,
                   truths: Sequence[float], ceiling: float) -> list[float]:
    """Per slot, the exact probability that the clipped interval covers its truth."""
    k_max, pmf = law
    noise = np.arange(-k_max, k_max + 1)
    inside = float(pmf[np.abs(noise) <= half_width].sum())
    at_top = float(pmf[noise >= -half_width].sum())
    at_zero = float(pmf[noise <= half_width].sum())
    return [at_top if t == ceiling else at_zero if t == 0 else inside for t in truths]


def check_coverage(covered: Sequence[bool], rates: Sequence[float]) -> None:
    """``covered[i]`` is a draw with success rate ``rates[i % len(rates)]`` (one per slot)."""
    assert min(rates) >= 0.95, rates  # the interval keeps its promise
    expected = [rates[i % len(rates)] for i in range(len(covered))]
    mean = math.fsum(expected)
    spread = Z * math.sqrt(math.fsum(p * (1 - p) for p in expected))
    hits = sum(covered)
    assert abs(hits - mean) <= spread, (hits / len(covered), mean / len(covered))
