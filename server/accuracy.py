"""Accuracy of the release noise: what both services need to state an interval.

The key-holder signs each result's per-slot 95% interval; the server shows it and derives
simultaneous bands from the same helper, so both compute half-widths here, from OpenDP's
accuracy helpers and nothing else (``server/noise.py`` samples the noise).

With a ``noise = "both"`` policy two parties each add an independent draw of the same plan,
so a published slot carries ``X1 + X2`` and its interval comes from that sum's law:

* discrete Laplace (``q = e^(-1/b)``): summing ``q^(|k| + |s-k|)`` over ``k`` gives
  ``P(X1 + X2 = s) = c^2 q^|s| (|s| + (1 + q^2)/(1 - q^2))`` with ``c = (1-q)/(1+q)``, and
  for ``a >= 0`` the tail in closed form
  ``P(|X1 + X2| > a) = 2 q^(a+1) (1 + a(1-q) + (1+q^2)/(1+q)) / (1+q)^2``.
* discrete Gaussian (``sigma``): ``k^2 + (s-k)^2 = 2(k - s/2)^2 + s^2/2``, so
  ``P(X1 + X2 = s)`` is proportional to ``e^(-s^2/4 sigma^2)·theta(s)`` with
  ``theta(s) = sum_k e^(-(k - s/2)^2/sigma^2)``, which Poisson summation puts within a factor
  ``1 +- eta``, ``eta = 2.01 e^(-pi^2 sigma^2)``, of a constant: the sum is the discrete
  Gaussian of ``sigma·sqrt(2)`` up to a pmf ratio in ``[(1-eta)/(1+eta), (1+eta)/(1-eta)]``
  (``eta < 1e-4`` from ``sigma = 1``; ``3e-39`` from 3). Its half-width is taken at
  ``alpha·(1-eta)/(1+eta)``, so the interval still covers with ``1 - alpha``; below
  ``sigma = 1`` the two pmfs are convolved exactly instead.
"""

from __future__ import annotations

import math

import opendp.prelude as dp

from blindsum.shared.errors import InvalidInput, InvalidPolicy

dp.enable_features("contrib")

MECHANISMS = ("laplace", "gaussian")

# OpenDP's discrete Gaussian accuracy helper sums the pmf: ~25 ms at this scale, linear in it.
EXACT_GAUSSIAN_ACCURACY_MAX_SCALE = 1e5


def half_width(mechanism: str, scale: float, alpha: float = 0.05, parties: int = 1) -> float:
    """Half-width ``a`` (slot units) of the per-slot ``1 - alpha`` interval ``[x - a, x + a]``.

    ``a`` is the smallest integer with P(|noise| <= a) >= 1 - alpha for one slot's discrete
    Laplace (scale ``b``) or discrete Gaussian (``sigma``) noise (for Gaussian scales above
    1e5, where the exact helper is slow, at most one more), so the interval around a
    released value covers the true slot sum with probability at least ``1 - alpha``. With
    ``parties = 2`` the noise is the sum of two independent draws of that scale (the
    module docstring derives its law).

    Raises:
        InvalidInput: ``alpha`` outside (0, 1), or ``parties`` not 1 or 2.
        InvalidPolicy: an unknown mechanism or a non-positive scale.
    """
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise InvalidInput(f"alpha must be in (0, 1), got {alpha!r}")
    if mechanism not in MECHANISMS:
        raise InvalidPolicy(f"unknown noise mechanism {mechanism!r}")
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise InvalidPolicy(f"noise scale must be a positive number, got {scale!r}")
    if parties not in (1, 2) or isinstance(parties, bool):
        raise InvalidInput(f"parties must be 1 or 2, got {parties!r}")
    if parties == 2:
        return _two_draws_half_width(mechanism, float(scale), float(alpha))
    return _one_draw_half_width(mechanism, float(scale), float(alpha))


def _one_draw_half_width(mechanism: str, scale: float, alpha: float) -> float:
    if mechanism == "laplace":
        accuracy = dp.discrete_laplacian_scale_to_accuracy(scale, alpha)
        if accuracy == -math.inf:
            # The helper underflows once e^(-1/scale) does (scale < ~0.0014); then
            # P(noise != 0) < 1e-300 and the interval is the released value itself.
            return 0.0
    elif scale > EXACT_GAUSSIAN_ACCURACY_MAX_SCALE:
        # For integer a >= 0: sum_{k>a} e^{-k^2/2s^2} <= integral_a^inf e^{-x^2/2s^2} dx
        # and Z >= s*sqrt(2 pi) (Poisson summation), so P(|noise| > a) <= P(|Y| > a) for
        # a continuous Gaussian Y of the same scale: a = ceil(its accuracy) is sound and at
        # most one slot unit wider than the exact answer.
        return float(math.ceil(dp.gaussian_scale_to_accuracy(scale, alpha)))
    else:
        accuracy = dp.discrete_gaussian_scale_to_accuracy(scale, alpha)
    # Both helpers return `accuracy` with P(|noise| >= accuracy) <= alpha (checked against
    # the exact pmf). Noise is an integer, so |noise| >= accuracy <=> |noise| > a with
    # a = ceil(accuracy) - 1, whatever the rounding of `accuracy`. In every case checked
    # this a is also the smallest such integer (a - 1 would cover less than 1 - alpha).
    return float(max(math.ceil(accuracy) - 1, 0))


def laplace_sum_tail(scale: float, a: int) -> float:
    """``P(|X1 + X2| > a)`` for two independent discrete Laplace draws of ``scale``, ``a >= 0``."""
    q = math.exp(-1 / scale)
    one_minus_q = -math.expm1(-1 / scale)  # 1 - q without cancellation for large scales
    bracket = 1 + a * one_minus_q + (1 + q * q) / (1 + q)
    return 2 * math.exp(-(a + 1) / scale) * bracket / (1 + q) ** 2


def gaussian_sum_pmf(sigma: float, radius: int) -> list[float]:
    """The exact law of ``X1 + X2`` on ``-radius..radius`` (index ``s + radius``), for a small
    ``sigma`` (the convolution of two pmfs truncated where their mass is below 1e-300)."""
    reach = max(1, math.ceil(40 * sigma))
    weights = [math.exp(-(k * k) / (2 * sigma * sigma)) for k in range(-reach, reach + 1)]
    total = math.fsum(weights)
    pmf = [w / total for w in weights]
    law = [0.0] * (2 * radius + 1)
    for i, p in enumerate(pmf):
        for j, r in enumerate(pmf):
            s = i + j - 2 * reach
            if -radius <= s <= radius:
                law[s + radius] += p * r
    return law


def _two_draws_half_width(mechanism: str, scale: float, alpha: float) -> float:
    if mechanism == "laplace":
        if laplace_sum_tail(scale, 0) <= alpha:
            return 0.0
        high = 1
        while laplace_sum_tail(scale, high) > alpha:
            high *= 2
        low = high // 2  # tail(low) > alpha >= tail(high): bisect to the smallest a
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if laplace_sum_tail(scale, mid) > alpha else (low, mid)
        return float(high)
    if scale < 1:
        radius = max(1, math.ceil(80 * scale))
        law = gaussian_sum_pmf(scale, radius)
        for a in range(radius):
            if 1 - math.fsum(law[radius - a:radius + a + 1]) <= alpha:
                return float(a)
        return float(radius)
    eta = 2.01 * math.exp(-(math.pi * scale) ** 2)
    return _one_draw_half_width("gaussian", scale * math.sqrt(2), alpha * (1 - eta) / (1 + eta))
