"""zCDP accounting: k releases composed and converted once, against OpenDP's own answer."""

from __future__ import annotations

import math

import opendp.prelude as dp
import pytest

from blindsum.server.keyholder.accounting import (
    basic_releases,
    bun_steinke_rho,
    composed_epsilon,
    pure_dp_rho,
    releases_within,
    total_rho,
    zcdp_capacity,
    zcdp_epsilon,
)
from blindsum.server.noise import plan_noise
from blindsum.shared.errors import InvalidInput

dp.enable_features("contrib")

SESSION_L2 = 3600.0  # the demo's session_seconds: one report moves the sum by up to 3600


def vector_gaussian(scale: float):
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T=float)
    return space >> dp.m.then_gaussian(scale=scale)


def opendp_composed_epsilon(measurements: list, d_in: float, delta: float) -> float:
    """OpenDP end to end: compose the measurements, convert the composition, read epsilon."""
    composed = dp.c.make_composition(measurements)
    return dp.c.make_zCDP_to_approxDP(composed).map(d_in).epsilon(delta)


@pytest.mark.parametrize("releases", [1, 2, 7, 48])
def test_composed_epsilon_equals_opendp_composition_and_conversion(releases: int) -> None:
    plan = plan_noise("gaussian", 1.0, 1e-7, 3600, SESSION_L2, 1)
    delta = releases * 1e-7
    ours = composed_epsilon(plan.rho, releases, delta)
    theirs = opendp_composed_epsilon([vector_gaussian(plan.scale)] * releases,
                                     math.nextafter(SESSION_L2, math.inf), delta)
    assert ours >= theirs  # an upper bound...
    assert ours == pytest.approx(theirs, rel=1e-9)  # ...and the same number


def test_different_releases_compose_by_adding_rho() -> None:
    plans = [plan_noise("gaussian", eps, 1e-7, 1, 1.0, 1) for eps in (0.5, 1.0, 2.0)]
    rho = total_rho([p.rho for p in plans])
    assert rho >= math.fsum(p.rho for p in plans)
    theirs = opendp_composed_epsilon([vector_gaussian(p.scale) for p in plans],
                                     math.nextafter(1.0, math.inf), 1e-6)
    assert zcdp_epsilon(rho, 1e-6) == pytest.approx(theirs, rel=1e-9)


def test_one_conversion_books_far_less_than_basic_composition() -> None:
    # The figure: 48 releases at (1, 1e-7) calibrated by the closed form are booked
    # as epsilon = 48 when epsilons add, about 6 once their rho is added and converted.
    rho = bun_steinke_rho(1.0, 1e-7)
    assert basic_releases(1.0, 48.0) == 48
    assert composed_epsilon(rho, 48, 48e-7) == pytest.approx(6.04, abs=0.01)


def test_capacity_is_the_largest_rho_within_the_target() -> None:
    for epsilon, delta in [(1.0, 1e-7), (48.0, 4.8e-6), (0.1, 1e-9), (0.01, 0.5)]:
        rho = zcdp_capacity(epsilon, delta)
        assert zcdp_epsilon(rho, delta) <= epsilon
        assert zcdp_epsilon(rho * (1 + 1e-9), delta) > epsilon
        assert rho >= bun_steinke_rho(epsilon, delta)


@pytest.mark.parametrize(("epsilon", "delta"), [(48.0, 4.8e-6), (10.0, 1e-6), (1.0, 1e-7)])
def test_releases_within_inverts_composed_epsilon(epsilon: float, delta: float) -> None:
    rho = plan_noise("gaussian", 1.0, 1e-7, 1, 1.0, 1).rho
    count = releases_within(rho, epsilon, delta)
    assert count >= 1
    assert composed_epsilon(rho, count, delta) <= epsilon < composed_epsilon(rho, count + 1,
                                                                              delta)


def test_releases_within_is_zero_when_one_release_does_not_fit() -> None:
    assert releases_within(1.0, 0.5, 1e-9) == 0


def test_pure_dp_rho_is_opendps_conversion() -> None:
    laplace = (dp.atom_domain(T=int), dp.absolute_distance(T=int)) >> dp.m.then_laplace(1.0)
    assert pure_dp_rho(1.0) == dp.c.make_pureDP_to_zCDP(laplace).map(1)
    assert pure_dp_rho(2.0) == pytest.approx(2.0, rel=1e-12)  # eps**2 / 2


def test_zero_releases_cost_nothing() -> None:
    assert composed_epsilon(0.1, 0, 1e-7) == 0.0
    assert total_rho([]) == 0.0


def test_basic_releases_tolerates_float_sums() -> None:
    assert basic_releases(0.1, 1.0) == 10
    assert basic_releases(1.0, 48.0) == 48
    assert basic_releases(3.0, 2.0) == 0


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (zcdp_epsilon, (-0.1, 1e-7)),
        (zcdp_epsilon, (math.nan, 1e-7)),
        (zcdp_epsilon, (0.1, 0.0)),
        (zcdp_epsilon, (0.1, 1.0)),
        (zcdp_epsilon, (True, 1e-7)),
        (zcdp_capacity, (0.0, 1e-7)),
        (zcdp_capacity, (math.inf, 1e-7)),
        (composed_epsilon, (0.1, -1, 1e-7)),
        (composed_epsilon, (0.1, 2.0, 1e-7)),
        (composed_epsilon, (0.0, 2, 1e-7)),
        (releases_within, (0.1, 1.0, 2.0)),
        (releases_within, ("0.1", 1.0, 1e-7)),
        (total_rho, ([0.1, -0.2],)),
        (pure_dp_rho, (0.0,)),
        (basic_releases, (0.0, 1.0)),
    ],
)
def test_bad_arguments_are_refused(call, args) -> None:
    with pytest.raises(InvalidInput):
        call(*args)


@pytest.mark.parametrize(("epsilon", "delta", "l2"),
                         [(1.0, 1e-7, 3600.0), (0.3, 1e-9, math.sqrt(2)), (4.0, 1e-5, 30.0)])
def test_a_calibrated_release_fits_its_own_target(epsilon: float, delta: float, l2: float) -> None:
    # The ledger books plan.rho; converted back it must never exceed what the policy states.
    plan = plan_noise("gaussian", epsilon, delta, 1, l2, 1)
    assert zcdp_epsilon(plan.rho, delta) <= epsilon
    assert plan.rho <= zcdp_capacity(epsilon, delta)
    assert releases_within(plan.rho, epsilon, delta) == 1


def test_budgets_beyond_what_opendp_converts_are_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="above 500"):
        zcdp_capacity(1e6, 1e-7)
    rho = zcdp_capacity(500.0, 1e-7)  # the largest budget handled still converts back
    assert zcdp_epsilon(rho, 1e-7) <= 500
    with pytest.raises(InvalidInput, match="cannot convert"):
        zcdp_epsilon(1e6, 1e-7)
