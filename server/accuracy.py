"""Accuracy of the release noise: what both services need to state an interval.

The key-holder signs each result's per-slot 95% interval; the server shows it and derives
simultaneous bands from the same helper, so both compute half-widths here, from OpenDP's
accuracy helpers and nothing else. The noise itself is sampled only at the key-holder
(``keyholder/noise.py``).
"""

from __future__ import annotations

import math

import opendp.prelude as dp

from blindsum.shared.errors import InvalidInput, InvalidPolicy

dp.enable_features("contrib")

MECHANISMS = ("laplace", "gaussian")

# OpenDP's discrete Gaussian accuracy helper sums the pmf: ~25 ms at this scale, linear in it.
EXACT_GAUSSIAN_ACCURACY_MAX_SCALE = 1e5


def half_width(mechanism: str, scale: float, alpha: float = 0.05) -> float:
    """Half-width ``a`` (slot units) of the per-slot ``1 - alpha`` interval ``[x - a, x + a]``.

    ``a`` is the smallest integer with P(|noise| <= a) >= 1 - alpha for one slot's discrete
    Laplace (scale ``b``) or discrete Gaussian (``sigma``) noise (for Gaussian scales above
    1e5, where the exact helper is slow, at most one more), so the interval around a
    released value covers the true slot sum with probability at least ``1 - alpha``.

    Raises:
        InvalidInput: ``alpha`` outside (0, 1).
        InvalidPolicy: an unknown mechanism or a non-positive scale.
    """
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise InvalidInput(f"alpha must be in (0, 1), got {alpha!r}")
    if mechanism not in MECHANISMS:
        raise InvalidPolicy(f"unknown noise mechanism {mechanism!r}")
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise InvalidPolicy(f"noise scale must be a positive number, got {scale!r}")
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
