"""Budget caps checked when policies are registered, so a period's budget never runs out.

Three rules, each a refusal that names the metric and by how much it misses:

- **A renewing metric budget covers its period.** A metric whose budget renews every
  period must afford a release of every window in it (``period / window_seconds`` releases
  composed), so it never goes dark mid-period.
- **The privacy unit's budget covers all metrics.** With a ``[budget]`` (epsilon and delta
  per device per period) every registered metric's releases in one such period, composed
  together, must fit it: a device that reports in every metric is protected by it.
- **Caps only go down.** A new version may not raise ``budget_epsilon`` or
  ``budget_delta`` or renew its budget more often, and a new ``[budget]`` may not allow
  more, unless the operator says ``--raise-cap`` (the raise is audited).

Composition is ``accounting.Spend``'s: the tighter of basic composition and zCDP converted
once. Each window of a metric is counted as one release: a key rotated mid-window leaves
that window with one aggregate per key epoch, and so one release more, which the metric's
own ledger still refuses beyond its budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from blindsum.server.keyholder.accounting import Spend
from blindsum.server.keyholder.cost import release_cost
from blindsum.shared.errors import InvalidPolicy
from blindsum.shared.policy import MetricPolicy, Privacy, UnitBudget, describe_period


def windows_per(period: int, policy: MetricPolicy) -> int:
    """Windows of ``policy`` that start in one ``period`` (both aligned to the epoch)."""
    return math.ceil(period / policy.window_seconds)


def period_spend(policy: MetricPolicy, period: int) -> Spend:
    """What releasing every window of ``policy`` in one ``period`` costs."""
    return release_cost(policy).times(windows_per(period, policy))


def _overrun(spend: Spend, epsilon: float, delta: float) -> str:
    """How far ``spend`` is from fitting ``(epsilon, delta)``, in words."""
    if delta == 0 and spend.delta > 0:
        return f"they spend delta {spend.delta:.3g} and the budget allows none"
    accounting, spent, at_delta = spend.guarantee(delta)
    return (f"they cost epsilon {spent:.4g} at delta {at_delta:.3g} ({accounting}), "
            f"{spent - epsilon:.4g} ({(spent - epsilon) / epsilon:.0%}) over {epsilon:g}")


def check_metric_budget(policy: MetricPolicy) -> None:
    """Refuse a renewing budget too small for its period's windows."""
    privacy = policy.privacy
    if not privacy.renews:
        return
    spend = period_spend(policy, privacy.budget_period)
    if not spend.fits(privacy.budget_epsilon, privacy.budget_delta):
        overrun = _overrun(spend, privacy.budget_epsilon, privacy.budget_delta)
        raise InvalidPolicy(
            f"metric {policy.name!r}: its budget renews every "
            f"{describe_period(privacy.budget_period)} but cannot pay for the "
            f"{spend.releases} windows in one: {overrun}; "
            "lower epsilon, lengthen the windows or raise budget_epsilon")


def check_unit_budget(policies: Iterable[MetricPolicy], unit: UnitBudget) -> Spend:
    """The composed spend of every metric's windows in one unit period; refused if over."""
    policies = list(policies)
    total = Spend()
    for policy in policies:
        total = total.plus(period_spend(policy, unit.period))
    if not total.fits(unit.epsilon, unit.delta):
        shares = ", ".join(
            f"{p.name} {windows_per(unit.period, p)} x epsilon {p.privacy.epsilon:g}"
            for p in policies)
        raise InvalidPolicy(
            f"the registered metrics would exceed the per-device budget ({unit.epsilon:g}, "
            f"{unit.delta:.3g}) per {describe_period(unit.period)}: in one period "
            f"{_overrun(total, unit.epsilon, unit.delta)} [{shares}]; lower the metrics' "
            "epsilons, lengthen their windows, or raise the budget with --raise-cap")
    return total


def raised_caps(before: Privacy, after: Privacy) -> list[str]:
    """What ``after`` allows beyond ``before`` (empty if it allows nothing more)."""
    raised = []
    if after.budget_epsilon > before.budget_epsilon:
        raised.append(f"budget_epsilon {before.budget_epsilon:g} -> {after.budget_epsilon:g}")
    if after.budget_delta > before.budget_delta:
        raised.append(f"budget_delta {before.budget_delta:.3g} -> {after.budget_delta:.3g}")
    # a renewing budget spends more than a lifetime one; a shorter period more than a longer
    if after.renews and (not before.renews or after.budget_period < before.budget_period):
        raised.append(f"budget_period {describe_period(before.budget_period)} -> "
                      f"{describe_period(after.budget_period)}")
    return raised
