"""A policy's preview and warnings, shown by ``policy check`` and ``policy add``.

The preview states what one release costs and gives (noise scale, 95% interval half-width at
the expected report count), what a day of windows spends, and how many releases the budget
allows. The warnings flag settings that give little privacy or little utility; they are
advice for the reviewer, not refusals (``policy.py`` refuses what is invalid).
"""

from __future__ import annotations

from dataclasses import dataclass

from blindsum.server.planning.accuracy import Accuracy, Lifetime, accuracy, lifetime
from blindsum.shared.policy import MetricPolicy, describe_period

# Thresholds: an epsilon above ~2 per release lets one release change the odds of any
# statement about a report by more than e**2 ~ 7x; a budget above 10 by e**10 ~ 22,000x.
MAX_RELEASE_EPSILON = 2.0
MAX_BUDGET_EPSILON = 10.0


@dataclass(frozen=True)
class Advice:
    """One piece of advice: ``kind`` is ``"privacy"`` or ``"utility"``."""

    kind: str
    message: str


@dataclass(frozen=True)
class Preview:
    """What a policy's releases cost and give, at ``accuracy.contributors`` reports."""

    policy: MetricPolicy
    accuracy: Accuracy
    lifetime: Lifetime
    warnings: tuple[Advice, ...]

    def to_json(self) -> dict[str, object]:
        life = self.lifetime
        return {
            "metric": self.policy.name, "kind": self.policy.kind,
            "mechanism": self.accuracy.mechanism, "epsilon": self.policy.privacy.epsilon,
            "delta": self.policy.privacy.delta, "scale": self.accuracy.scale,
            "contributors": self.accuracy.contributors,
            "half_width_95": self.accuracy.half_width,
            "relative_half_width": self.accuracy.relative,
            "releases_per_day": life.releases_per_day, "epsilon_per_day": life.epsilon_per_day,
            "budget_epsilon": self.policy.privacy.budget_epsilon,
            "basic_releases": life.basic_releases, "basic_days": life.days(life.basic_releases),
            "zcdp_releases": life.zcdp_releases, "zcdp_days": life.days(life.zcdp_releases),
            "zcdp_delta": life.zcdp_delta, "budget_delta": self.policy.privacy.budget_delta,
            "ledger_releases": life.ledger_releases, "ledger_days": life.days(life.ledger_releases),
            "budget_period": life.budget_period,
            "warnings": [{"kind": w.kind, "message": w.message} for w in self.warnings],
        }


def _privacy_warnings(policy: MetricPolicy, contributors: int, life: Lifetime
                      ) -> list[Advice]:
    privacy = policy.privacy
    found = []
    if privacy.epsilon > MAX_RELEASE_EPSILON:
        found.append(Advice("privacy", (
            f"epsilon {privacy.epsilon:g} per release is above {MAX_RELEASE_EPSILON:g}: "
            "each window says a lot about each report")))
    if privacy.budget_epsilon > MAX_BUDGET_EPSILON:
        span = (f"every {describe_period(privacy.budget_period)}" if privacy.renews
                else "over the metric's life")
        found.append(Advice("privacy", (
            f"budget_epsilon {privacy.budget_epsilon:g} is above {MAX_BUDGET_EPSILON:g}: "
            f"little privacy is left {span}")))
    if privacy.delta > 0 and privacy.delta >= 1 / contributors:
        found.append(Advice("privacy", (
            f"delta {privacy.delta:g} is at least 1/{contributors} (the expected reports): "
            "a release may expose one report in full with that probability")))
    elif life.zcdp_delta is not None and life.zcdp_delta >= 1 / contributors:
        found.append(Advice("privacy", (
            f"the budget's total delta {life.zcdp_delta:g} is at least 1/{contributors} "
            "(the expected reports)")))
    if policy.min_contributors < 10:
        found.append(Advice("privacy", (
            f"min_contributors {policy.min_contributors} is below 10: the count of a window "
            "is public, and tiny windows rest on the noise alone")))
    return found


def _utility_warnings(policy: MetricPolicy, acc: Accuracy, life: Lifetime) -> list[Advice]:
    found = []
    if acc.half_width >= acc.value_range:
        found.append(Advice("utility", (
            f"the 95% interval (+/- {acc.half_width:.4g}) is wider than the whole value range "
            f"({acc.value_range:.4g}) at {acc.contributors} reports: releases carry almost "
            "no information; raise epsilon or the expected contributors, or narrow the bounds")))
    elif acc.relative > 0.25:
        found.append(Advice("utility", (
            f"the 95% interval (+/- {acc.half_width:.4g}) is {acc.relative:.0%} of the value "
            f"range at {acc.contributors} reports")))
    if not policy.privacy.renews and life.ledger_releases < life.releases_per_day:
        hours = life.ledger_releases * policy.window_seconds / 3600
        found.append(Advice("utility", (
            f"the budget allows {life.ledger_releases} releases ({hours:.3g} h of windows): "
            "the metric stops being published within a day")))
    return found


def preview(policy: MetricPolicy, contributors: int | None = None) -> Preview:
    """The preview of ``policy`` at ``contributors`` reports (default: min_contributors)."""
    n = policy.min_contributors if contributors is None else contributors
    acc = accuracy(policy, n)
    life = lifetime(policy)
    warnings = _privacy_warnings(policy, n, life) + _utility_warnings(policy, acc, life)
    return Preview(policy, acc, life, tuple(warnings))
