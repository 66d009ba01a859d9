"""What a policy's releases will look like, before it goes live: noise, intervals, lifetime.

Everything is computed from the parts a release uses: the noise plan comes from
``release.noise_plan`` (the key-holder's own calibration) and the interval is turned into the
metric's units by ``encoding.decode``, the function that decodes published values. So the
half-width shown here is the half-width the key-holder then publishes for a window of the
same report count (tested).

Nothing here sees data: the accuracy of a DP release depends on the policy and the public
report count only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from blindsum.server.keyholder import accounting
from blindsum.server.keyholder.cost import noise_plan, release_cost
from blindsum.server.noise import NoisePlan
from blindsum.shared.encoding import decode
from blindsum.shared.errors import InvalidInput
from blindsum.shared.policy import MetricPolicy

DEFAULT_EPSILONS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SECONDS_PER_DAY = 86_400

# The settings an explorer may vary besides epsilon; each is re-validated as a policy.
SETTINGS = ("lower", "upper", "precision", "window_seconds", "contributions_per_window")


def with_settings(policy: MetricPolicy, **changes: Any) -> MetricPolicy:
    """The policy with ``changes`` applied, validated like a registered policy.

    Raises:
        InvalidPolicy: a change makes the policy invalid (the message names the field).
        InvalidInput: a name that is not one of ``SETTINGS``.
    """
    unknown = set(changes) - set(SETTINGS)
    if unknown:
        raise InvalidInput(f"cannot vary {sorted(unknown)}; use one of {list(SETTINGS)}")
    data = policy.to_json()
    data.update({key: value for key, value in changes.items() if value is not None})
    if "window_seconds" in changes and changes["window_seconds"] is not None:
        data["late_seconds"] = min(policy.late_seconds, int(changes["window_seconds"]))
    return MetricPolicy.from_mapping(policy.name, data)


def with_epsilon(policy: MetricPolicy, epsilon: float) -> MetricPolicy:
    """The policy with a per-release ``epsilon`` (the lifetime budget is left as it is)."""
    return dataclasses.replace(policy, privacy=dataclasses.replace(policy.privacy,
                                                                    epsilon=float(epsilon)))


def value_range(policy: MetricPolicy, contributors: int) -> float:
    """Span of the values one published coordinate can take for ``contributors`` reports."""
    if policy.kind == "histogram":
        return float(contributors)  # a bucket holds 0..n reports
    span = policy.upper - policy.lower
    return span if policy.kind == "mean" else span * contributors


def unit_half_width(policy: MetricPolicy, plan: NoisePlan, contributors: int,
                    alpha: float = 0.05) -> float:
    """The published ``1 - alpha`` interval's half-width in the metric's units."""
    slot_half_width = plan.half_width(alpha, len(policy.noise_parties))  # both: wider
    decoded = decode(policy, [0] * policy.slot_count, contributors, slot_half_width)
    low, high = decoded.ci[0] if isinstance(decoded.ci, list) else decoded.ci
    return (high - low) / 2


@dataclass(frozen=True)
class Accuracy:
    """One release's accuracy at ``epsilon`` with ``contributors`` reports in the window.

    ``half_width`` is the 95% interval half-width of each published coordinate, in the
    metric's units; ``relative`` is it as a share of ``value_range`` (the span a coordinate
    can take), a data-free stand-in for the relative error of the published value.
    """

    epsilon: float
    contributors: int
    mechanism: str
    scale: float
    half_width: float
    value_range: float

    @property
    def relative(self) -> float:
        return self.half_width / self.value_range


def accuracy(policy: MetricPolicy, contributors: int, epsilon: float | None = None
             ) -> Accuracy:
    """The accuracy of one release of ``policy`` (at ``epsilon`` if given)."""
    if isinstance(contributors, bool) or not isinstance(contributors, int) or contributors < 1:
        raise InvalidInput(f"contributors must be a positive integer, got {contributors!r}")
    if epsilon is not None:
        policy = with_epsilon(policy, epsilon)
    plan = noise_plan(policy)
    return Accuracy(plan.epsilon, contributors, plan.mechanism, plan.scale,
                    unit_half_width(policy, plan, contributors),
                    value_range(policy, contributors))


@dataclass(frozen=True)
class Lifetime:
    """How long a policy's budget lasts: releases it allows and what each period spends.

    ``basic_releases`` is what basic composition alone allows (epsilons add: the ledger
    before zCDP accounting). ``zcdp_releases`` is how many fit the budget when zCDP costs
    are added and converted once at ``budget_delta`` (``zcdp_delta``; None when the budget
    has no delta, as a pure laplace budget by default). ``ledger_releases`` is what the
    key-holder's ledger admits: a release is paid while either composition fits, in each
    budget period (``budget_period`` seconds; 0 for a lifetime budget).
    """

    releases_per_day: float
    epsilon_per_day: float
    basic_releases: int
    zcdp_releases: int | None
    zcdp_delta: float | None
    ledger_releases: int = 0
    budget_period: int = 0

    def days(self, releases: int | None) -> float | None:
        return None if releases is None else releases / self.releases_per_day


def lifetime(policy: MetricPolicy, epsilon: float | None = None) -> Lifetime:
    """The budget's lifetime for ``policy`` (with a per-release ``epsilon`` if given)."""
    if epsilon is not None:
        policy = with_epsilon(policy, epsilon)
    privacy = policy.privacy
    per_day = SECONDS_PER_DAY / policy.window_seconds
    basic = accounting.basic_releases(privacy.epsilon, privacy.budget_epsilon)
    ledger = basic
    if privacy.delta > 0:  # basic composition also adds deltas, against budget_delta
        ledger = min(basic, math.floor(privacy.budget_delta / privacy.delta * (1 + 1e-9)))
    zcdp = total_delta = None
    if privacy.budget_delta > 0:
        total_delta = privacy.budget_delta
        cost = release_cost(policy)
        # An enormous budget (epsilon beyond ~700) is past what OpenDP can convert.
        with contextlib.suppress(InvalidInput):
            zcdp = accounting.releases_within(cost.rho, privacy.budget_epsilon, total_delta)
    ledger = max(ledger, zcdp or 0)
    return Lifetime(per_day, per_day * privacy.epsilon, basic, zcdp, total_delta, ledger,
                    privacy.budget_period)


@dataclass(frozen=True)
class Exploration:
    """A metric's accuracy over a grid of epsilons and contributor counts."""

    policy: MetricPolicy
    epsilons: tuple[float, ...]
    contributors: tuple[int, ...]
    rows: tuple[Accuracy, ...]
    lifetimes: Mapping[float, Lifetime]

    def at(self, epsilon: float, contributors: int) -> Accuracy:
        for row in self.rows:
            if row.epsilon == epsilon and row.contributors == contributors:
                return row
        raise InvalidInput(f"no row for epsilon={epsilon}, contributors={contributors}")

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.policy.name,
            "kind": self.policy.kind,
            "mechanism": self.policy.privacy.mechanism,
            "policy_epsilon": self.policy.privacy.epsilon,
            "delta": self.policy.privacy.delta,
            "rows": [{**dataclasses.asdict(row), "relative": row.relative} for row in self.rows],
            "lifetimes": [{"epsilon": eps, **dataclasses.asdict(life)}
                          for eps, life in self.lifetimes.items()],
        }


def default_contributors(policy: MetricPolicy) -> tuple[int, ...]:
    """k, 10k, 100k and 1000k reports per window, at most the policy's maximum."""
    counts = {min(policy.min_contributors * 10**i, policy.max_contributors) for i in range(4)}
    return tuple(sorted(counts))


def explore(policy: MetricPolicy, epsilons: Iterable[float] | None = None,
            contributors: Iterable[int] | None = None,
            progress: Callable[[int], None] | None = None) -> Exploration:
    """Accuracy and lifetime of ``policy`` for each epsilon and contributor count.

    The policy's own epsilon is always part of the grid; ``progress(1)`` is called after each
    epsilon (a calibration and a lifetime search each, ~0.5 s).
    """
    requested = [*(DEFAULT_EPSILONS if epsilons is None else epsilons), policy.privacy.epsilon]
    for eps in requested:
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps <= 100:
            raise InvalidInput(f"epsilon must be in (0, 100], got {eps!r}")
    grid = sorted({float(eps) for eps in requested})
    wanted = list(default_contributors(policy) if contributors is None else contributors)
    for n in wanted:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput(f"contributors must be positive integers, got {n!r}")
    counts = sorted(set(wanted))
    if not counts:
        raise InvalidInput("at least one contributor count is needed")
    rows: list[Accuracy] = []
    lifetimes: dict[float, Lifetime] = {}
    for eps in grid:
        rows.extend(accuracy(policy, n, eps) for n in counts)
        lifetimes[float(eps)] = lifetime(policy, eps)
        if progress is not None:
            progress(1)
    return Exploration(policy, tuple(float(e) for e in grid), tuple(counts), tuple(rows),
                       lifetimes)
