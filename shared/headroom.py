"""Slot headroom for noise added under encryption (threshold Paillier keys).

With a threshold key nobody decrypts the exact aggregate: the key-holder encrypts its noise
and folds it into the aggregate before any partial decryption. Packed slots must then hold
``sum + noise + offset`` without a carry into the next slot, for noise of either sign. Each
slot's noise is kept within ``[-B, B]`` (a draw beyond ``B`` is drawn again) and encrypted as
``noise + B`` in ``[0, 2B]``, so a slot of the noised aggregate lies in
``[0, max_slot_sum + 2B]``: the layout reserves ``headroom = 2B`` (``SlotSpec.headroom``),
and decoding subtracts ``B``.

The SDK lays out its reports before any noise plan exists, so ``B`` comes from public
policy data only, with closed forms (no OpenDP search):

* ``laplace``: OpenDP's discrete Laplace scale is ``l1/epsilon``; the bound scale is twice
  that.
* ``gaussian``: the Bun-Steinke conversion ``epsilon = rho + 2 sqrt(rho ln(1/delta))`` gives a
  ``sigma = l2/sqrt(2 rho)`` at least OpenDP's (its Canonne-Kamath-Steinke conversion is
  tighter, see ``server/noise.py``); the bound scale is twice that too.

The key-holder refuses (before paying) a plan whose scale exceeds the bound scale, so the
factor of two is a margin, never a silent overflow. ``B`` is ``TAIL_BITS`` of tail: a slot's
noise exceeds it with probability at most ``2^-TAIL_BITS`` (discrete Laplace:
``P(|X| > B) <= 2 e^(-B/b)``; discrete Gaussian, sub-Gaussian with parameter ``sigma``
(Canonne, Kamath, Steinke 2020): ``P(|X| > B) <= 2 e^(-B^2/(2 sigma^2))``).

Privacy cost of redrawing beyond ``B`` (``truncation_cost``): the released noise is the
plan's noise conditioned on the event ``G`` = "every slot within B", of probability
``1 - p`` with ``p <= slots·2^-TAIL_BITS``. For any output set ``S`` and neighbours ``x, x'``:
``P'(S) <= P(S)/(1-p) <= (e^eps P(S | x') + delta)/(1-p)`` and ``P(S | x') <= P'(S | x') + p``,
so the truncated mechanism is ``(eps + ln(1/(1-p)), (delta + e^eps·p)/(1-p))``-DP: a change
below ``1e-15`` in both for every policy the key sizes admit.

With ``noise = "both"`` the server folds in a second, independent draw of the same plan,
also kept within ``[-B, B]`` and encrypted as ``noise + B``: a slot then holds
``sum + z_K + z_S + 2B`` in ``[0, max_slot_sum + 4B]``, so the layout reserves ``4B`` and
decoding subtracts ``2B`` (``parties·2B`` and ``parties·B``). Each draw is truncated on its
own, so either alone costs the ``truncation_cost`` above; the other draw is independent
post-processing and cannot weaken it.
"""

from __future__ import annotations

import math
from functools import lru_cache

from .policy import MetricPolicy

TAIL_BITS = 64
BOUND_MARGIN = 2.0  # bound scale / expected plan scale


def bound_scale(policy: MetricPolicy) -> float:
    """An upper bound on the noise scale a release of ``policy`` uses (public data only)."""
    privacy = policy.privacy
    if privacy.mechanism == "laplace":
        return BOUND_MARGIN * policy.l1_sensitivity / privacy.epsilon
    log_inv_delta = math.log(1 / privacy.delta)
    root_rho = math.sqrt(log_inv_delta + privacy.epsilon) - math.sqrt(log_inv_delta)
    return BOUND_MARGIN * policy.l2_sensitivity / (math.sqrt(2) * root_rho)


@lru_cache(maxsize=256)
def noise_bound(policy: MetricPolicy) -> int:
    """``B``: per-slot noise magnitude kept under encryption (redrawn beyond it), >= 1."""
    scale = bound_scale(policy)
    tail = (TAIL_BITS + 1) * math.log(2)  # the 2 in "2 e^(...)" is one more bit
    laplace = policy.privacy.mechanism == "laplace"
    bound = scale * tail if laplace else scale * math.sqrt(2 * tail)
    return max(1, math.ceil(bound))


def noise_offset(policy: MetricPolicy) -> int:
    """What decoding subtracts from each slot: ``B`` per party adding noise."""
    return len(policy.noise_parties) * noise_bound(policy)


def headroom(policy: MetricPolicy) -> int:
    """Extra per-slot range a threshold key's layout reserves: ``2B`` per noise party
    (its noise plus its offset)."""
    return 2 * noise_offset(policy)


def truncation_cost(policy: MetricPolicy) -> tuple[float, float]:
    """``(epsilon, delta)`` the release actually certifies once draws beyond ``B`` are redrawn."""
    p = min(1.0, policy.slot_count * 2.0**-TAIL_BITS)
    epsilon, delta = policy.privacy.epsilon, policy.privacy.delta
    return epsilon + -math.log1p(-p), (delta + math.exp(epsilon) * p) / (1 - p)
