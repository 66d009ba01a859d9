"""Calibration, validation and interval semantics of the key-holder's DP noise."""

from __future__ import annotations

import math

import opendp.prelude as dp
import pytest

from blindsum.server.keyholder.accounting import bun_steinke_rho
from blindsum.server.noise import NoisePlan, plan_noise
from blindsum.shared.errors import InvalidInput, InvalidPolicy

dp.enable_features("contrib")

SQRT2 = math.sqrt(2)


def gaussian_on_vectors(scale: float):
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T=float)
    return space >> dp.m.then_gaussian(scale=scale)


def laplace_on_vectors(scale: float):
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
    return space >> dp.m.then_laplace(scale=scale)


def tail(plan: NoisePlan, a: int) -> float:
    """P(|noise| > a) from the claimed pmf."""
    return 1.0 - math.fsum(plan.pmf(k) for k in range(-a, a + 1))


@pytest.mark.parametrize(
    ("epsilon", "l1"),
    [(1.0, 1), (1.0, 2), (0.1, 2), (0.25, 7), (3.0, 1)],
)
def test_laplace_calibration_is_tight_under_opendp_map(epsilon: float, l1: int) -> None:
    plan = plan_noise("laplace", epsilon, 0.0, l1, 1.0, 3)
    assert plan.rho is None and plan.delta == 0.0
    assert laplace_on_vectors(plan.scale).map(l1) <= epsilon
    assert laplace_on_vectors(plan.scale * (1 - 1e-9)).map(l1) > epsilon
    assert plan.scale == pytest.approx(l1 / epsilon, rel=1e-12)
    # The scalar integer measurement of the brief agrees.
    scalar = (dp.atom_domain(T=int), dp.absolute_distance(T=int)) >> dp.m.then_laplace(plan.scale)
    assert scalar.map(l1) <= epsilon


def approx_dp_epsilon(scale: float, l2: float, delta: float) -> float:
    """OpenDP's (epsilon at delta) for the vector Gaussian of ``scale`` at L2 distance ``l2``."""
    profile = dp.c.make_zCDP_to_approxDP(gaussian_on_vectors(scale)).map(l2)
    return profile.epsilon(delta)


@pytest.mark.parametrize(
    ("epsilon", "delta", "l2"),
    [(1.0, 1e-6, 1.0), (1.0, 1e-6, SQRT2), (0.5, 1e-9, math.sqrt(3)), (4.0, 1e-3, 5.0),
     (1.0, 1e-7, 3600.0)],
)
def test_gaussian_calibration_is_tight_under_opendp_conversion(
    epsilon: float, delta: float, l2: float
) -> None:
    plan = plan_noise("gaussian", epsilon, delta, 5, l2, 3)
    # OpenDP's zCDP -> approximate-DP conversion certifies (epsilon, delta) at the scale...
    assert approx_dp_epsilon(plan.scale, l2, delta) <= epsilon
    # ...and no noticeably smaller scale is certified: the calibration is tight.
    assert approx_dp_epsilon(plan.scale * (1 - 1e-6), l2, delta) > epsilon
    # rho is the Gaussian's own zCDP cost at the sensitivity (an ulp above it, as the
    # sensitivity is), what a zCDP ledger adds up.
    assert plan.rho == gaussian_on_vectors(plan.scale).map(math.nextafter(l2, math.inf))
    assert plan.rho >= gaussian_on_vectors(plan.scale).map(l2)
    assert plan.rho == pytest.approx(l2**2 / (2 * plan.scale**2), rel=1e-12)


@pytest.mark.parametrize(("epsilon", "delta"), [(1.0, 1e-7), (1.0, 1e-6), (0.1, 1e-9)])
def test_gaussian_calibration_beats_the_closed_form_conversion(
    epsilon: float, delta: float
) -> None:
    plan = plan_noise("gaussian", epsilon, delta, 3600, 3600.0, 1)
    closed_form_sigma = 3600 / math.sqrt(2 * bun_steinke_rho(epsilon, delta))
    assert plan.scale < 0.9 * closed_form_sigma
    assert plan.rho > bun_steinke_rho(epsilon, delta)


def test_session_seconds_sigma_is_the_one_opendp_certifies() -> None:
    # The demo's session_seconds: L2 sensitivity 3600 at (1, 1e-7). The closed form
    # (Bun-Steinke) needs sigma 20,752; OpenDP's conversion certifies 17,916.
    plan = plan_noise("gaussian", 1.0, 1e-7, 3600, 3600.0, 1)
    assert round(3600 / math.sqrt(2 * bun_steinke_rho(1.0, 1e-7))) == 20752
    assert round(plan.scale) == 17916
    assert approx_dp_epsilon(17917.0, 3600.0, 1e-7) <= 1.0 < approx_dp_epsilon(17915.0, 3600.0,
                                                                               1e-7)


@pytest.mark.parametrize(("epsilon", "delta"), [(1.0, 1e-6), (0.01, 1e-12), (10.0, 0.1)])
def test_closed_form_rho_inverts_the_bun_steinke_conversion(epsilon: float, delta: float) -> None:
    rho = bun_steinke_rho(epsilon, delta)
    log_inv = math.log(1 / delta)
    assert rho + 2 * math.sqrt(rho * log_inv) == pytest.approx(epsilon, rel=1e-12)
    assert rho == pytest.approx((math.sqrt(epsilon + log_inv) - math.sqrt(log_inv)) ** 2, rel=1e-9)


def test_integer_l2_sensitivity_matches_scalar_measurement() -> None:
    plan = plan_noise("gaussian", 1.0, 1e-6, 1, 1.0, 1)
    scalar = (dp.atom_domain(T=int), dp.absolute_distance(T=int)) >> dp.m.then_gaussian(plan.scale)
    assert scalar.map(1) <= plan.rho


GOOD = {
    "mechanism": "gaussian",
    "epsilon": 1.0,
    "delta": 1e-6,
    "l1_sensitivity": 2,
    "l2_sensitivity": SQRT2,
    "dimension": 4,
}


@pytest.mark.parametrize(
    "changes",
    [
        {"mechanism": "exponential"},
        {"mechanism": "Gaussian"},
        {"epsilon": 0.0},
        {"epsilon": -1.0},
        {"epsilon": math.inf},
        {"epsilon": math.nan},
        {"epsilon": "1"},
        {"epsilon": True},
        {"delta": 0.0},
        {"delta": 1.0},
        {"delta": -1e-9},
        {"delta": math.nan},
        {"mechanism": "laplace", "delta": 1e-6},
        {"mechanism": "laplace", "delta": math.nan},
        {"l1_sensitivity": 0},
        {"l1_sensitivity": -2},
        {"l1_sensitivity": 2.0},
        {"l2_sensitivity": 0.0},
        {"l2_sensitivity": -1.0},
        {"l2_sensitivity": math.inf},
        {"dimension": 0},
        {"dimension": -3},
        {"dimension": 2.0},
        {"mechanism": "laplace", "delta": 0.0, "epsilon": 1e-30},  # scale beyond MAX_SCALE
        {"epsilon": 1e-9, "l2_sensitivity": 1e8},  # gaussian scale beyond MAX_SCALE
        {"epsilon": 1e-300},  # no rho small enough
    ],
)
def test_bad_parameters_raise_invalid_policy(changes: dict) -> None:
    with pytest.raises(InvalidPolicy):
        plan_noise(**{**GOOD, **changes})


def test_good_parameters_are_accepted() -> None:
    assert plan_noise(**GOOD).mechanism == "gaussian"
    assert plan_noise(**{**GOOD, "mechanism": "laplace", "delta": 0}).mechanism == "laplace"


def test_direct_construction_is_checked() -> None:
    with pytest.raises(InvalidPolicy):
        NoisePlan("uniform", 1.0, 1.0, 0.0, None, 1)
    with pytest.raises(InvalidPolicy):
        NoisePlan("laplace", 0.0, 1.0, 0.0, None, 1)
    with pytest.raises(InvalidPolicy):
        NoisePlan("laplace", 1.0, 1.0, 0.0, None, 0)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
@pytest.mark.parametrize("scale", [0.3, 0.5, 1.0, 1.7, 3.0, 10.0, 33.3, 250.0])
@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.2])
def test_half_width_is_the_tightest_sound_integer(
    mechanism: str, scale: float, alpha: float
) -> None:
    plan = NoisePlan(mechanism, scale, 1.0, 0.0, None, 1)
    a = plan.half_width(alpha)
    assert a == int(a) and a >= 0
    assert tail(plan, int(a)) <= alpha  # [x - a, x + a] covers with probability >= 1 - alpha
    if a > 0:
        assert tail(plan, int(a) - 1) > alpha  # and no narrower interval does


def test_half_width_for_large_gaussian_scale_is_sound_and_near_exact() -> None:
    scale = 2.5e5  # above the cut-off: bounded by the continuous Gaussian
    plan = NoisePlan("gaussian", scale, 1.0, 1e-6, 1.0, 1)
    exact = math.ceil(dp.discrete_gaussian_scale_to_accuracy(scale, 0.05)) - 1
    assert exact <= plan.half_width() <= exact + 1


def test_half_width_for_tiny_laplace_scale() -> None:
    plan = plan_noise("laplace", 1e6, 0.0, 1, 1.0, 1)
    assert plan.half_width() == 0.0
    assert plan.apply([5]) == [5]


def test_half_width_rejects_bad_alpha() -> None:
    plan = plan_noise(**GOOD)
    for alpha in (0.0, 1.0, -0.1, math.nan):
        with pytest.raises(InvalidInput):
            plan.half_width(alpha)


@pytest.mark.parametrize(
    ("mechanism", "scale"),
    [("laplace", 0.2), ("laplace", 7.0), ("gaussian", 0.2), ("gaussian", 1.0), ("gaussian", 6.5)],
)
def test_pmf_is_a_symmetric_distribution(mechanism: str, scale: float) -> None:
    plan = NoisePlan(mechanism, scale, 1.0, 0.0, None, 1)
    k_max = int(80 * scale) + 80
    assert math.fsum(plan.pmf(k) for k in range(-k_max, k_max + 1)) == pytest.approx(1, abs=1e-12)
    assert plan.pmf(3) == plan.pmf(-3) < plan.pmf(0)


def test_laplace_pmf_formula() -> None:
    b = 2.5
    plan = NoisePlan("laplace", b, 1.0, 0.0, None, 1)
    for k in (-4, 0, 9):
        expected = (math.exp(1 / b) - 1) / (math.exp(1 / b) + 1) * math.exp(-abs(k) / b)
        assert plan.pmf(k) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_apply_handles_values_beyond_64_bits(mechanism: str) -> None:
    delta = 0.0 if mechanism == "laplace" else 1e-6
    plan = plan_noise(mechanism, 1.0, delta, 2, SQRT2, 5)
    values = [0, 2**31 - 1, 2**63 - 1, 2**64 + 3, 3**90]
    noisy = plan.apply(values)
    assert all(type(v) is int for v in noisy)
    # Near OpenDP's i32/i64 bounds the noise must not saturate: it goes both ways.
    bound = 40 * plan.scale
    assert all(abs(n - v) <= bound for n, v in zip(noisy, values, strict=True))
    ups = downs = 0
    for _ in range(200):
        n = plan.apply(values)
        ups += n[2] > values[2]
        downs += n[2] < values[2]
    assert ups > 0 and downs > 0


def test_apply_rejects_bad_vectors() -> None:
    plan = plan_noise(**GOOD)
    with pytest.raises(InvalidInput):
        plan.apply([1, 2, 3])
    with pytest.raises(InvalidInput):
        plan.apply([1, 2, 3, 4.0])
    with pytest.raises(InvalidInput):
        plan.apply([1, 2, 3, True])


def test_measurement_is_built_once() -> None:
    plan = plan_noise(**GOOD)
    plan.apply([0, 0, 0, 0])
    first = plan._sampler
    plan.apply([0, 0, 0, 0])
    assert plan._sampler is first


def test_describe() -> None:
    plan = plan_noise(**GOOD)
    record = plan.describe()
    assert record == {
        "mechanism": "gaussian",
        "scale": plan.scale,
        "epsilon": 1.0,
        "delta": 1e-6,
        "rho": plan.rho,
        "half_width_95": plan.half_width(0.05),
    }
    laplace = plan_noise("laplace", 1.0, 0, 2, SQRT2, 1).describe()
    assert laplace["rho"] is None and laplace["scale"] == 2.0 and laplace["half_width_95"] == 6.0
