"""Budgets per period and per device: refused at registration when they cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_keyholder import PASS, aggregate_request

from blindsum.server.keyholder import audit, caps, ledger
from blindsum.server.keyholder.service import Keyholder
from blindsum.shared.errors import InvalidPolicy
from blindsum.shared.policy import MetricPolicy, UnitBudget, load_policies_toml

DAY = 86_400


def hourly(name: str, epsilon: float = 1.0, budget: float = 24.0, period: object = "day",
           version: int = 1, window: int = 3600, **privacy: object) -> MetricPolicy:
    return MetricPolicy.from_mapping(name, {
        "kind": "count", "scheme": "paillier", "upper": 1, "version": version,
        "window_seconds": window, "min_contributors": 1, "allow_early_release": True,
        "privacy": {"mechanism": "laplace", "epsilon": epsilon, "budget_epsilon": budget,
                    "budget_period": period, **privacy}})


@pytest.fixture
def holder(tmp_path: Path) -> Keyholder:
    """Registers at time 0, so every window below is inside the release horizon."""
    return Keyholder.init(tmp_path / "kh", PASS, paillier_bits=2048, clock=lambda: 0.0)[0]


def release(on_wall_clock: Keyholder, metric: str, window: int) -> None:
    on_wall_clock.releaser().release(aggregate_request(on_wall_clock, metric, [1, 0, 1],
                                                       window=window))


def wall_clock(holder: Keyholder) -> Keyholder:
    """The same key-holder releasing on the wall clock, long after the windows closed."""
    return Keyholder.open(holder.data_dir, PASS)


def written(holder: Keyholder) -> tuple[int, int]:
    """(audit entries, registered policy rows): both unchanged by a refusal."""
    conn = holder.db.conn
    return (len(audit.entries(conn)), conn.execute("SELECT COUNT(*) FROM policies").fetchone()[0])


def test_budget_period_names_and_seconds() -> None:
    assert hourly("a").privacy.budget_period == DAY
    assert hourly("a", period="week").privacy.budget_period == 7 * DAY
    assert hourly("a", period="lifetime").privacy.budget_period == 0
    policy = MetricPolicy.from_mapping("a", {**hourly("a").to_json()})
    assert policy == hourly("a")  # the manifest's JSON reads back the same period


@pytest.mark.parametrize(("period", "message"), [
    ("month", "must be one of"), (5400, "whole number of windows"), (-1, "whole seconds"),
    (True, "whole seconds"), (400 * DAY, "at most"),
])
def test_a_bad_budget_period_is_refused(period: object, message: str) -> None:
    with pytest.raises(InvalidPolicy, match=message):
        hourly("a", period=period)  # type: ignore[arg-type]


def test_a_renewing_budget_too_small_for_its_period_is_refused(holder: Keyholder) -> None:
    before = written(holder)
    with pytest.raises(InvalidPolicy) as refused:
        holder.add_policies([hourly("opened", budget=20.0)])
    message = str(refused.value)
    assert "'opened'" in message and "24 windows" in message
    assert "epsilon 24 at delta 0 (basic), 4 (20%) over 20" in message
    assert written(holder) == before and holder.db.latest_policy("opened") is None


def test_a_set_over_the_per_device_budget_is_refused_saying_by_how_much(
    holder: Keyholder,
) -> None:
    holder.add_policies([hourly("opened", epsilon=0.05, budget=1.2)])
    before = written(holder)
    unit = UnitBudget(epsilon=2.0, delta=0.0, period=DAY)
    with pytest.raises(InvalidPolicy) as refused:
        holder.add_policies([hourly("crashed", epsilon=0.05, budget=1.2)], unit)
    message = str(refused.value)
    assert "per-device budget (2, 0) per day" in message
    assert "epsilon 2.4 at delta 0 (basic), 0.4 (20%) over 2" in message
    assert "opened 24 x epsilon 0.05" in message and "crashed 24 x epsilon 0.05" in message
    assert written(holder) == before and holder.db.unit_budget() is None


def test_a_set_that_fits_is_registered_with_its_per_device_budget(holder: Keyholder) -> None:
    unit = UnitBudget(epsilon=2.4, delta=0.0, period=DAY)
    added = holder.add_policies([hourly("opened", epsilon=0.05, budget=1.2),
                                 hourly("crashed", epsilon=0.05, budget=1.2)], unit)
    assert added == ["opened", "crashed"] and holder.db.unit_budget() == unit
    # ...and a later metric must fit what is already registered
    with pytest.raises(InvalidPolicy, match="per-device budget"):
        holder.add_policies([hourly("third", epsilon=0.05, budget=1.2)])


def test_zcdp_lets_a_per_device_budget_with_delta_hold_more_metrics() -> None:
    policies = [hourly(f"m{i}", epsilon=0.05, budget=1.2, budget_delta=1e-6)
                for i in range(4)]
    spend = caps.check_unit_budget(policies, UnitBudget(epsilon=3.0, delta=1e-6, period=DAY))
    assert spend.releases == 96 and spend.epsilon == pytest.approx(4.8)  # basic: over 3
    assert spend.guarantee(1e-6)[0] == "zcdp" and spend.guarantee(1e-6)[1] < 3.0


def test_a_version_that_raises_a_cap_is_refused_unless_the_operator_raises_it(
    holder: Keyholder,
) -> None:
    holder.add_policies([hourly("opened")])
    before = written(holder)
    renews_twice_a_day = hourly("opened", epsilon=0.5, budget=12.0, period=43_200,
                                version=2, window=1800)
    for raised in (hourly("opened", budget=48.0, version=2), renews_twice_a_day):
        with pytest.raises(InvalidPolicy, match="caps only go down"):
            holder.add_policies([raised])
        assert written(holder) == before
    lowered = hourly("opened", epsilon=0.5, budget=12.0, version=2)
    assert holder.add_policies([lowered]) == ["opened"]
    assert holder.add_policies([hourly("opened", budget=48.0, version=3)],
                               raise_cap=True) == ["opened"]
    (entry,) = [e for e in audit.entries(holder.db.conn) if e.event == "budget-cap-raised"]
    assert entry.detail == {"what": "metric 'opened' v3: budget_epsilon 12 -> 48"}


def test_a_per_device_budget_only_goes_down_without_raise_cap(holder: Keyholder) -> None:
    opened = hourly("opened", epsilon=0.05, budget=1.2)
    holder.add_policies([opened], UnitBudget(2.0, 0.0, DAY))
    before = written(holder)
    for more in (UnitBudget(3.0, 0.0, DAY), UnitBudget(2.0, 1e-6, DAY),
                 UnitBudget(2.0, 0.0, 3600 * 12)):
        with pytest.raises(InvalidPolicy, match="per-device budget"):
            holder.add_policies([opened], more)
    assert written(holder) == before
    with pytest.raises(InvalidPolicy, match=r"0\.2 \(20%\) over 1"):  # lowered below the set
        holder.add_policies([opened], UnitBudget(1.0, 0.0, DAY))
    holder.add_policies([opened], UnitBudget(1.5, 0.0, DAY))
    holder.add_policies([opened], UnitBudget(3.0, 0.0, DAY), raise_cap=True)
    sets = [e.detail for e in audit.entries(holder.db.conn) if e.event == "unit-budget-set"]
    assert [(s["epsilon"], s["raised"]) for s in sets] == [(2.0, False), (1.5, False),
                                                           (3.0, True)]


def test_an_accepted_set_never_runs_out_inside_a_period(holder: Keyholder) -> None:
    policies = [hourly("opened", epsilon=0.5, budget=12.0),
                hourly("crashed", epsilon=0.5, budget=12.0)]
    holder.add_policies(policies, UnitBudget(24.0, 0.0, DAY))
    day, releasing = 10 * DAY, wall_clock(holder)
    for policy in policies:
        for hour in range(24):
            release(releasing, policy.name, day + 3600 * hour)
        state = ledger.budget(holder.db.conn, policy, at=day)
        assert state.releases == 24 and state.remaining_epsilon == 0
        # the next day's budget is whole again; the day before never saw a release
        assert ledger.budget(holder.db.conn, policy, at=day + DAY).releases == 0
        assert ledger.budget(holder.db.conn, policy, at=day - 1).releases == 0
    release(releasing, "opened", day + DAY)


def test_a_late_release_spends_the_budget_of_its_window_period(holder: Keyholder) -> None:
    opened = hourly("opened", budget=2.0, window=43_200)  # two windows a day, both paid
    holder.add_policies([opened])
    day, releasing = 20 * DAY, wall_clock(holder)
    for window in (day, day + 43_200, day - 43_200):  # the last: yesterday's, released late
        release(releasing, "opened", window)
    assert ledger.budget(holder.db.conn, opened, at=day).releases == 2
    assert ledger.budget(holder.db.conn, opened, at=day - 1).releases == 1
    state = ledger.budget(holder.db.conn, opened, at=day + 1)
    assert (state.period_start, state.period_end) == (day, day + DAY)
    assert state.to_json()["budget_period"] == DAY


def test_a_policy_file_carries_a_per_device_budget() -> None:
    text = """
[budget]
epsilon = 4
delta = 1e-6
period = "day"

[metrics.opened]
kind = "count"
scheme = "paillier"
privacy = { mechanism = "laplace", epsilon = 0.1, budget_epsilon = 2.4, budget_period = "day" }
"""
    from blindsum.shared.policy import load_unit_budget_toml

    assert load_unit_budget_toml(text) == UnitBudget(4.0, 1e-6, DAY)
    assert [p.name for p in load_policies_toml(text)] == ["opened"]
    with pytest.raises(InvalidPolicy, match=r"budget\.period must renew"):
        load_policies_toml(text.replace('period = "day"', 'period = "lifetime"', 1))
