"""Intervals for the sum of two independent noise draws (``noise = "both"``): checked
against the exact convolution of the two pmfs, computed by brute force."""

from __future__ import annotations

import math

import pytest

from blindsum.server.accuracy import half_width, laplace_sum_tail
from blindsum.server.noise import NoisePlan, plan_noise
from blindsum.shared.errors import InvalidInput


def _plan(mechanism: str, scale: float) -> NoisePlan:
    return NoisePlan(mechanism, scale, 1.0, 0.0 if mechanism == "laplace" else 1e-7, None, 1)


def _sum_law(plan: NoisePlan, radius: int) -> dict[int, float]:
    reach = radius + math.ceil(60 * plan.scale) + 60
    pmf = {k: plan.pmf(k) for k in range(-reach, reach + 1)}
    return {s: math.fsum(pmf[k] * pmf[s - k] for k in range(-reach, reach + 1)
                         if -reach <= s - k <= reach)
            for s in range(-radius, radius + 1)}


def _exact_half_width(plan: NoisePlan, alpha: float) -> int:
    """The smallest integer a with P(|X1 + X2| <= a) >= 1 - alpha, by brute force."""
    radius = math.ceil(12 * plan.scale) + 10
    law = _sum_law(plan, radius)
    for a in range(radius + 1):
        if math.fsum(law[s] for s in range(-a, a + 1)) >= 1 - alpha:
            return a
    raise AssertionError("radius too small")


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
@pytest.mark.parametrize("scale", [0.3, 0.8, 1.0, 2.5, 7.0, 31.0])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_the_two_draw_half_width_is_the_exact_quantile_of_the_sum(
        mechanism: str, scale: float, alpha: float) -> None:
    plan = _plan(mechanism, scale)
    assert plan.half_width(alpha, parties=2) == _exact_half_width(plan, alpha)


@pytest.mark.parametrize("scale", [0.5, 3.0, 40.0])
def test_the_laplace_sum_tail_has_the_closed_form(scale: float) -> None:
    plan = _plan("laplace", scale)
    law = _sum_law(plan, math.ceil(10 * scale) + 5)
    for a in (0, 1, math.ceil(scale), math.ceil(3 * scale)):
        inside = math.fsum(law[s] for s in range(-a, a + 1))
        assert laplace_sum_tail(scale, a) == pytest.approx(1 - inside, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("epsilon", [0.1, 1.0])
def test_two_draws_widen_the_interval_by_about_root_two_for_gaussian_noise(
        epsilon: float) -> None:
    plan = plan_noise("gaussian", epsilon, 1e-7, 3600, 3600.0, 1)
    one, two = plan.half_width(0.05), plan.half_width(0.05, 2)
    assert two / one == pytest.approx(math.sqrt(2), rel=1e-3)
    # the consistency tail widens too (what the key-holder signs as tail_width)
    assert plan.half_width(1e-9, 2) / plan.half_width(1e-9) == pytest.approx(math.sqrt(2),
                                                                             rel=1e-3)


def test_two_laplace_draws_widen_the_interval_by_less_than_twice() -> None:
    plan = plan_noise("laplace", 1.0, 0.0, 600, 600.0, 1)
    one, two = plan.half_width(0.05), plan.half_width(0.05, 2)
    # the sum's standard deviation is sqrt(2) times one draw's, its tails lighter than 2x
    assert math.sqrt(2) * 0.9 < two / one < 2


@pytest.mark.parametrize("parties", [0, 3, True])
def test_only_one_or_two_noise_parties_are_accepted(parties: int) -> None:
    with pytest.raises(InvalidInput, match="parties must be 1 or 2"):
        half_width("laplace", 2.0, 0.05, parties)
