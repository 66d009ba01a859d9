"""Privacy accounting in zero-concentrated DP, converted once to (epsilon, delta) by OpenDP.

zCDP composes by addition (Bun & Steinke 2016, Lemma 2.3): k releases of rho-zCDP are
k*rho-zCDP. Converting the *total* once to (epsilon, delta) is far tighter than adding each
release's (epsilon, delta) (basic composition): 48 releases calibrated to (1, 1e-7) cost
epsilon = 48 under basic composition but about 7 at delta = 4.8e-6 (the same total delta)
once their zCDP costs are added and converted.

Every conversion here is OpenDP's own: ``make_zCDP_to_approxDP`` (the Canonne-Kamath-Steinke
2020 bound) with ``make_fix_delta``, and ``make_pureDP_to_zCDP`` for pure-DP releases. OpenDP
converts measurements, not numbers, so a rho is carried by a *carrier*: a continuous
Gaussian of scale 1 whose map is d**2 / 2, evaluated at the smallest d whose map is at least
rho. OpenDP rounds its maps upwards, so every epsilon returned is an upper bound.

Pure functions of numbers: the ledger decides what to store, this module what it means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import opendp.prelude as dp

from blindsum.shared.errors import InvalidInput

dp.enable_features("contrib")

# OpenDP's conversion evaluates exp(epsilon) in floats (overflow beyond ~709); a budget this
# large protects nothing anyway.
MAX_EPSILON = 500.0

_REAL = (dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float))
_ZCDP_CARRIER = _REAL >> dp.m.then_gaussian(scale=1.0)
_PURE_CARRIER = _REAL >> dp.m.then_laplace(scale=1.0)


def _positive(name: str, value: object, *, zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value >= 0 if zero else value > 0):  # type: ignore[operator]
        bound = ">= 0" if zero else "> 0"
        raise InvalidInput(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _delta(delta: object) -> float:
    value = _positive("delta", delta)
    if not value < 1:
        raise InvalidInput(f"delta must be below 1, got {delta!r}")
    return value


def _carrier_distance(rho: float) -> float:
    """The smallest float d whose carrier map (zCDP) is at least ``rho``."""
    d = math.sqrt(2 * rho)
    while _ZCDP_CARRIER.map(d) < rho:
        d = math.nextafter(d, math.inf)
    return d


def _approx_carrier(delta: float) -> Any:
    return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(_ZCDP_CARRIER), delta)


def _within(approx: Any, d: float, target: tuple[float, float]) -> bool:
    try:
        return bool(approx.check(d, target))
    except dp.OpenDPException:
        # OpenDP refuses to evaluate exp(epsilon) beyond the float range (epsilon > ~700):
        # nothing is certified there.
        return False


def bun_steinke_rho(epsilon: float, delta: float) -> float:
    """The largest ``rho`` whose closed-form conversion gives ``(epsilon, delta)``-DP.

    Bun & Steinke 2016, Prop. 1.3: rho-zCDP implies (rho + 2*sqrt(rho*L), delta)-DP with
    L = ln(1/delta). Looser than OpenDP's conversion, so it brackets the searches below.
    """
    # rho + 2*sqrt(rho*L) = (sqrt(rho) + sqrt(L))**2 - L is increasing in rho >= 0, so its
    # inverse is rho = (sqrt(eps + L) - sqrt(L))**2, written without the cancellation.
    big_l = -math.log(delta)
    return (epsilon / (math.sqrt(epsilon + big_l) + math.sqrt(big_l))) ** 2


def pure_dp_rho(epsilon: float) -> float:
    """zCDP cost of an ``epsilon``-DP release: OpenDP's ``make_pureDP_to_zCDP`` (eps**2 / 2)."""
    epsilon = _positive("epsilon", epsilon)
    return float(dp.c.make_pureDP_to_zCDP(_PURE_CARRIER).map(epsilon))


def total_rho(rhos: list[float] | tuple[float, ...]) -> float:
    """zCDP cost of releasing all of ``rhos`` on the same data: their sum, rounded up."""
    total = 0.0
    for rho in rhos:
        total = _add_up(total, _positive("rho", rho, zero=True))
    return total


def _add_up(a: float, b: float) -> float:
    """``a + b`` rounded up rather than to nearest, as OpenDP's composition adds."""
    s = a + b
    # Knuth's TwoSum: the exact rounding error of s, so s is moved up only when it is low.
    b_virtual = s - a
    error = (a - (s - b_virtual)) + (b - b_virtual)
    return math.nextafter(s, math.inf) if error > 0 else s


def zcdp_epsilon(rho: float, delta: float) -> float:
    """The epsilon OpenDP certifies for ``rho``-zCDP at ``delta`` (0 for rho = 0)."""
    rho = _positive("rho", rho, zero=True)
    delta = _delta(delta)
    if rho == 0:
        return 0.0
    try:
        epsilon, _ = _approx_carrier(delta).map(_carrier_distance(rho))
    except dp.OpenDPException as exc:
        raise InvalidInput(f"OpenDP cannot convert rho={rho} at delta={delta}: {exc}") from None
    return float(epsilon)


@lru_cache(maxsize=1024)
def zcdp_capacity(epsilon: float, delta: float) -> float:
    """The largest ``rho`` (to float precision) whose OpenDP conversion is ``(epsilon, delta)``.

    A mechanism or a composition of zCDP cost at most this rho is ``(epsilon, delta)``-DP.

    Raises:
        InvalidInput: ``epsilon`` above ``MAX_EPSILON``, or bad arguments.
    """
    epsilon = _positive("epsilon", epsilon)
    if epsilon > MAX_EPSILON:
        raise InvalidInput(
            f"epsilon {epsilon:g} is above {MAX_EPSILON:g}: beyond what OpenDP's zCDP "
            "conversion evaluates (and a budget that protects nothing)")
    delta = _delta(delta)
    approx = _approx_carrier(delta)
    # OpenDP's conversion is tighter than the closed form, so the answer is at least
    # bun_steinke_rho; for delta << 1 it is below epsilon (widened for large deltas).
    low = math.sqrt(2 * bun_steinke_rho(epsilon, delta))
    while low > 0 and not _within(approx, low, (epsilon, delta)):
        low /= 2  # only if OpenDP's rounding ever made it looser at this point
    if low == 0:
        raise InvalidInput(f"no zCDP budget fits epsilon={epsilon}, delta={delta}")
    high = max(math.sqrt(2 * epsilon) * 1.01, low * 2)
    while _within(approx, high, (epsilon, delta)):
        low, high = high, high * 2
    d = dp.binary_search(lambda x: _within(approx, x, (epsilon, delta)), bounds=(low, high),
                         T=float)
    return float(_ZCDP_CARRIER.map(d))


def capacity(epsilon: float, delta: float) -> float:
    """``zcdp_capacity``, for any budget: one beyond ``MAX_EPSILON`` (which OpenDP cannot
    convert) is credited only what ``MAX_EPSILON`` certifies, a lower bound of its own."""
    return zcdp_capacity(min(epsilon, MAX_EPSILON), delta)


def composed_epsilon(rho_per_release: float, releases: int, delta: float) -> float:
    """Epsilon of ``releases`` releases of ``rho_per_release`` each, at total ``delta``."""
    if isinstance(releases, bool) or not isinstance(releases, int) or releases < 0:
        raise InvalidInput(f"releases must be a non-negative integer, got {releases!r}")
    rho = _positive("rho_per_release", rho_per_release)
    return zcdp_epsilon(total_rho([rho] * releases) if releases else 0.0, delta)


def releases_within(rho_per_release: float, epsilon: float, delta: float) -> int:
    """How many releases of ``rho_per_release`` fit an ``(epsilon, delta)`` budget (zCDP)."""
    rho = _positive("rho_per_release", rho_per_release)
    capacity = zcdp_capacity(_positive("epsilon", epsilon), _delta(delta))
    count = math.floor(capacity / rho)
    # Float division may land one either side of the boundary: settle it with OpenDP.
    while count > 0 and composed_epsilon(rho, count, delta) > epsilon:
        count -= 1
    while composed_epsilon(rho, count + 1, delta) <= epsilon:
        count += 1
    return count


def basic_releases(release_epsilon: float, budget_epsilon: float) -> int:
    """How many releases of ``release_epsilon`` fit ``budget_epsilon`` when epsilons add.

    The same float tolerance as the ledger, so ten releases of 0.1 fit a budget of 1.0.
    """
    release = _positive("release_epsilon", release_epsilon)
    budget = _positive("budget_epsilon", budget_epsilon)
    count = math.floor(budget / release)
    while count * release > budget * (1 + 1e-9):
        count -= 1
    while (count + 1) * release <= budget * (1 + 1e-9):
        count += 1
    return count


def release_rho(epsilon: float, rho: float | None) -> float:
    """The zCDP cost booked for one release.

    A Gaussian release books its plan's ``rho`` (OpenDP's map at the sensitivity). A
    Laplace release (``rho`` None) is pure ``epsilon``-DP, which OpenDP converts to
    ``epsilon**2 / 2``-zCDP: that is what it adds to a zCDP total. Its pure epsilon is booked
    as well, for basic composition (see ``Spend``).
    """
    return pure_dp_rho(epsilon) if rho is None else _positive("rho", rho)


@dataclass(frozen=True)
class Spend:
    """What a set of releases costs, under two compositions that both hold at once.

    ``epsilon`` and ``delta`` add (basic composition: the releases are ``(epsilon,
    delta)``-DP together); ``rho`` adds (zCDP: they are ``rho``-zCDP, so ``(zcdp_epsilon(rho,
    d), d)``-DP for every ``d``). Both are true of the same releases, so a budget ``(E, D)``
    holds while *either* fits it, and the reported guarantee is the tighter of the two.

    Why both and not one: for Gaussian releases zCDP is tighter from the second release on
    (48 at (1, 1e-7) are epsilon 48 basic, about 7 in zCDP at the same total delta). For
    Laplace releases basic composition keeps the guarantee *pure* (delta 0) and is tighter
    for few releases (k releases of 1 are (k, 0)-DP, while their zCDP total k/2 converts to
    more than k until k passes 2 ln(1/delta) / (1 - epsilon/2)**2, ~110 releases of epsilon
    1 at delta 1e-6); zCDP wins beyond that, but only if the budget grants a delta.
    Choosing per check, instead of once per mechanism, gives every metric the better of the
    two at every point of its life.
    """

    epsilon: float = 0.0
    delta: float = 0.0
    rho: float = 0.0
    releases: int = 0

    def plus(self, other: Spend, times: int = 1) -> Spend:
        """This spend and ``times`` copies of ``other`` (each sum rounded up)."""
        spend = self
        for _ in range(times):
            spend = Spend(_add_up(spend.epsilon, other.epsilon),
                          _add_up(spend.delta, other.delta),
                          _add_up(spend.rho, other.rho), spend.releases + other.releases)
        return spend

    def times(self, count: int) -> Spend:
        """``count`` releases of this spend (products rounded up, so an upper bound)."""
        def up(x: float) -> float:
            return math.nextafter(x * count, math.inf) if x and count > 1 else x * count
        return Spend(up(self.epsilon), up(self.delta), up(self.rho), self.releases * count)

    def basic_fits(self, epsilon: float, delta: float) -> bool:
        # the ledger's historic tolerance, so ten releases of 0.1 fit a budget of 1.0
        return (self.epsilon <= epsilon * (1 + 1e-9)
                and self.delta <= delta * (1 + 1e-9))

    def zcdp_fits(self, epsilon: float, delta: float) -> bool:
        return delta > 0 and math.isfinite(self.rho) and self.rho <= capacity(epsilon, delta)

    def fits(self, epsilon: float, delta: float) -> bool:
        """True if either composition keeps these releases ``(epsilon, delta)``-DP."""
        return self.basic_fits(epsilon, delta) or self.zcdp_fits(epsilon, delta)

    def guarantee(self, delta: float) -> tuple[str, float, float]:
        """The tightest ``(accounting, epsilon, delta)`` with a delta at most ``delta``.

        ``accounting`` is ``"basic"`` or ``"zcdp"``; zCDP is converted once, by OpenDP, at
        ``delta`` (a budget of delta 0, or a rho not booked, leaves basic composition).
        """
        basic = ("basic", self.epsilon, self.delta)
        if delta == 0 or not math.isfinite(self.rho):  # a row without rho: basic only
            return basic
        zcdp = ("zcdp", self.zcdp_epsilon(delta), delta)
        if self.delta > delta * (1 + 1e-9):
            return zcdp
        return min(basic, zcdp, key=lambda c: (c[1], c[2]))

    def zcdp_epsilon(self, delta: float) -> float:
        return zcdp_epsilon(self.rho, delta)


def release_spend(epsilon: float, delta: float, rho: float | None) -> Spend:
    """The spend of one release of ``(epsilon, delta)`` whose zCDP cost is ``rho``."""
    return Spend(_positive("epsilon", epsilon), _positive("delta", delta, zero=True),
                 release_rho(epsilon, rho), 1)
