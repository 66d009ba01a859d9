"""Differentially private noise for a window's exact integer slot sums.

The key-holder decrypts an aggregate into exact integer slot sums, then releases
``sum + noise`` per slot. Neighbouring datasets differ by substituting one report (the
number of reports is public), so the caller states the L1 and L2 sensitivity of the whole
slot vector under substitution. Two mechanisms:

* ``"laplace"``: pure ``epsilon``-DP, discrete Laplace noise calibrated on L1 sensitivity.
* ``"gaussian"``: ``(epsilon, delta)``-DP through zero-concentrated DP: discrete Gaussian noise
  calibrated on L2 sensitivity to ``rho``-zCDP, where ``rho`` is the largest value whose
  standard conversion gives ``(epsilon, delta)``.

All noise comes from OpenDP's exact discrete samplers, and every scale is found with
OpenDP's own privacy map, so OpenDP certifies the stated budget at the stated sensitivity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import opendp.prelude as dp

from blindsum.shared.errors import InvalidInput, InvalidPolicy

dp.enable_features("contrib")

MECHANISMS = ("laplace", "gaussian")

# Noise is sampled as i64 (see ``NoisePlan.apply``). Below this scale a sample beyond 2**63
# is 2**23 scales out, probability < exp(-8e6): OpenDP's saturation can never be reached.
MAX_SCALE = 2.0**40

# OpenDP's discrete Gaussian accuracy helper sums the pmf: ~25 ms at this scale, linear in it.
EXACT_GAUSSIAN_ACCURACY_MAX_SCALE = 1e5


def _is_real(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _measurement(mechanism: str, scale: float) -> Any:
    """OpenDP's vector measurement: i.i.d. discrete noise of ``scale`` on each i64 coordinate.

    The Gaussian's input metric is a float-typed L2 distance (OpenDP supports it on integer
    vectors and rounds its privacy map upwards), so an irrational L2 sensitivity such as a
    histogram's sqrt(2) is used as is rather than rounded up to an integer.
    """
    if mechanism == "laplace":
        space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
        return space >> dp.m.then_laplace(scale=scale)
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T=float)
    return space >> dp.m.then_gaussian(scale=scale)


def zcdp_rho(epsilon: float, delta: float) -> float:
    """The largest ``rho`` such that ``rho``-zCDP implies ``(epsilon, delta)``-DP.

    Uses the standard conversion (Bun & Steinke 2016, Prop. 1.3): rho-zCDP implies
    (rho + 2*sqrt(rho*L), delta)-DP with L = ln(1/delta).
    """
    # Inverse check: rho + 2*sqrt(rho*L) = (sqrt(rho) + sqrt(L))**2 - L, strictly increasing in
    # rho >= 0, so eps = that  <=>  sqrt(rho) = sqrt(eps + L) - sqrt(L) (the non-negative
    # root), i.e. rho = (sqrt(eps + L) - sqrt(L))**2 as specified. Written as
    # eps / (sqrt(eps + L) + sqrt(L)) to avoid cancellation when L >> eps.
    big_l = -math.log(delta)
    return (epsilon / (math.sqrt(epsilon + big_l) + math.sqrt(big_l))) ** 2


@dataclass(frozen=True)
class NoisePlan:
    """A calibrated noise mechanism for one release of a ``dimension``-slot vector.

    Attributes:
        mechanism: ``"laplace"`` or ``"gaussian"``.
        scale: the discrete Laplace scale ``b`` (pmf ~ exp(-|k|/b)) or discrete Gaussian
            ``sigma`` (pmf ~ exp(-k**2 / (2 sigma**2))), identical on every slot.
        epsilon: the target epsilon.
        delta: the target delta (0 for laplace).
        rho: the zCDP budget the Gaussian was calibrated to (None for laplace).
        dimension: number of slots a release holds.
    """

    mechanism: str
    scale: float
    epsilon: float
    delta: float
    rho: float | None
    dimension: int

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise InvalidPolicy(f"unknown noise mechanism {self.mechanism!r}")
        if not _is_real(self.scale) or not 0 < self.scale <= MAX_SCALE:
            raise InvalidPolicy(f"noise scale must be in (0, {MAX_SCALE:g}], got {self.scale!r}")
        if not isinstance(self.dimension, int) or isinstance(self.dimension, bool):
            raise InvalidPolicy(f"dimension must be an integer, got {self.dimension!r}")
        if self.dimension <= 0:
            raise InvalidPolicy(f"dimension must be positive, got {self.dimension}")

    @cached_property
    def _sampler(self) -> Callable[[list[int]], list[int]]:
        # Built once per plan, on first use (cached_property writes the instance __dict__
        # directly, which a frozen dataclass allows).
        return _measurement(self.mechanism, self.scale)

    def apply(self, values: Sequence[int]) -> list[int]:
        """Return ``values`` with independent exact discrete noise added to each slot.

        The noise is OpenDP's measurement evaluated on a zero vector, added here in Python
        ints. ``x + N`` has exactly the distribution of the measurement applied to ``x``
        (the noise is additive and does not depend on the input), so privacy is unchanged,
        but OpenDP's integer types are bounded (``T=int`` is i32): values beyond the type
        raise and values near its bound silently saturate, which would bias the release.
        Slot sums may exceed 64 bits; Python ints never overflow.
        """
        if len(values) != self.dimension:
            raise InvalidInput(f"expected {self.dimension} slot sums, got {len(values)}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise InvalidInput("slot sums must be Python ints")
        noise = self._sampler([0] * self.dimension)
        return [int(v) + int(n) for v, n in zip(values, noise, strict=True)]

    def half_width(self, alpha: float = 0.05) -> float:
        """Half-width ``a`` (slot units) of the per-slot ``1 - alpha`` interval ``[x - a, x + a]``.

        ``a`` is the smallest integer with P(|noise| <= a) >= 1 - alpha (for Gaussian scales
        above 1e5, where the exact helper is slow, at most one more), so the interval around
        a released value covers the true slot sum with probability at least ``1 - alpha``.
        """
        if not _is_real(alpha) or not 0 < alpha < 1:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha!r}")
        if self.mechanism == "laplace":
            accuracy = dp.discrete_laplacian_scale_to_accuracy(self.scale, alpha)
            if accuracy == -math.inf:
                # The helper underflows once e^(-1/scale) does (scale < ~0.0014); then
                # P(noise != 0) < 1e-300 and the interval is the released value itself.
                return 0.0
        elif self.scale > EXACT_GAUSSIAN_ACCURACY_MAX_SCALE:
            # For integer a >= 0: sum_{k>a} e^{-k^2/2s^2} <= integral_a^inf e^{-x^2/2s^2} dx
            # and Z >= s*sqrt(2 pi) (Poisson summation), so P(|noise| > a) <= P(|Y| > a) for
            # a continuous Gaussian Y of the same scale: a = ceil(its accuracy) is sound and at
            # most one slot unit wider than the exact answer.
            return float(math.ceil(dp.gaussian_scale_to_accuracy(self.scale, alpha)))
        else:
            accuracy = dp.discrete_gaussian_scale_to_accuracy(self.scale, alpha)
        # Both helpers return `accuracy` with P(|noise| >= accuracy) <= alpha (checked against
        # the exact pmf). Noise is an integer, so |noise| >= accuracy <=> |noise| > a with
        # a = ceil(accuracy) - 1, whatever the rounding of `accuracy`. In every case checked
        # this a is also the smallest such integer (a - 1 would cover less than 1 - alpha).
        return float(max(math.ceil(accuracy) - 1, 0))

    def pmf(self, k: int) -> float:
        """Probability that one slot's noise equals ``k`` under the claimed distribution."""
        s = self.scale
        if self.mechanism == "laplace":
            # (e^{1/b} - 1) / (e^{1/b} + 1) = tanh(1/2b), stable for large b.
            return math.tanh(0.5 / s) * math.exp(-abs(k) / s)
        if s >= 1:
            # Poisson summation: sum_k exp(-k^2/2s^2) = s*sqrt(2pi) * sum_n exp(-2 pi^2 s^2 n^2).
            z = (
                s
                * math.sqrt(2 * math.pi)
                * (1 + 2 * sum(math.exp(-2 * (math.pi * s * n) ** 2) for n in (1, 2, 3)))
            )
        else:
            z = math.fsum(math.exp(-(j * j) / (2 * s * s)) for j in range(-40, 41))
        return math.exp(-(k * k) / (2 * s * s)) / z

    def describe(self) -> dict[str, Any]:
        """The plan's parameters for the release record."""
        return {
            "mechanism": self.mechanism,
            "scale": self.scale,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho": self.rho,
            "half_width_95": self.half_width(0.05),
        }


def plan_noise(
    mechanism: str,
    epsilon: float,
    delta: float,
    l1_sensitivity: int,
    l2_sensitivity: float,
    dimension: int,
) -> NoisePlan:
    """Calibrate a noise plan; raise ``InvalidPolicy`` for any invalid parameter.

    ``"laplace"`` needs ``delta == 0`` and calibrates on ``l1_sensitivity`` to ``epsilon``;
    ``"gaussian"`` needs ``0 < delta < 1`` and calibrates on ``l2_sensitivity`` to
    ``rho = zcdp_rho(epsilon, delta)``. The scale is the smallest one OpenDP's privacy map
    certifies at the sensitivity (binary search to the float).
    """
    if mechanism not in MECHANISMS:
        raise InvalidPolicy(f"unknown noise mechanism {mechanism!r}; use one of {MECHANISMS}")
    if not _is_real(epsilon) or epsilon <= 0:
        raise InvalidPolicy(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if not _is_real(delta):
        raise InvalidPolicy(f"delta must be a finite number, got {delta!r}")
    if mechanism == "laplace" and delta != 0:
        raise InvalidPolicy(
            f"the laplace mechanism is pure epsilon-DP: delta must be 0, got {delta}"
        )
    if mechanism == "gaussian" and not 0 < delta < 1:
        raise InvalidPolicy(f"the gaussian mechanism needs 0 < delta < 1, got {delta}")
    if not isinstance(l1_sensitivity, int) or isinstance(l1_sensitivity, bool):
        raise InvalidPolicy(f"l1_sensitivity must be an integer, got {l1_sensitivity!r}")
    if l1_sensitivity <= 0:
        raise InvalidPolicy(f"l1_sensitivity must be positive, got {l1_sensitivity}")
    if not _is_real(l2_sensitivity) or l2_sensitivity <= 0:
        raise InvalidPolicy(f"l2_sensitivity must be a finite number > 0, got {l2_sensitivity!r}")
    if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension <= 0:
        raise InvalidPolicy(f"dimension must be a positive integer, got {dimension!r}")

    if mechanism == "laplace":
        rho = None
        d_in: float = l1_sensitivity
        d_out = float(epsilon)
    else:
        rho = zcdp_rho(epsilon, delta)
        # An irrational L2 sensitivity reaches us rounded to the nearest float, possibly
        # down (math.sqrt(3) < sqrt(3)); one ulp up makes it an upper bound again.
        d_in = math.nextafter(float(l2_sensitivity), math.inf)
        d_out = rho
    try:
        scale = dp.binary_search_param(
            lambda s: _measurement(mechanism, s), d_in=d_in, d_out=d_out, T=float
        )
        certified = _measurement(mechanism, scale).check(d_in, d_out)
    except (ValueError, dp.OpenDPException) as exc:
        raise InvalidPolicy(f"cannot calibrate {mechanism} noise: {exc}") from exc
    if not certified or not 0 < scale <= MAX_SCALE:
        raise InvalidPolicy(
            f"cannot calibrate {mechanism} noise for epsilon={epsilon}, delta={delta} at this "
            f"sensitivity (scale {scale:g}; at most {MAX_SCALE:g} is supported)"
        )
    return NoisePlan(mechanism, float(scale), float(epsilon), float(delta), rho, dimension)
