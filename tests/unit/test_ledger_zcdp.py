"""The ledger books each release's zCDP cost and reports OpenDP's one conversion."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import opendp.prelude as dp
import pytest

from blindsum.server.keyholder import accounting, audit, ledger
from blindsum.server.keyholder.cost import noise_plan, release_cost
from blindsum.server.keyholder.service import Keyholder
from blindsum.shared.policy import MetricPolicy

dp.enable_features("contrib")

SESSION = MetricPolicy.from_mapping("session_seconds", {
    "kind": "sum", "scheme": "paillier", "lower": 0, "upper": 3600,
    "privacy": {"mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-7,
                "budget_epsilon": 48.0}})
OPENED = MetricPolicy.from_mapping("app_opened", {
    "kind": "count", "scheme": "paillier", "upper": 1,
    "privacy": {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 200.0,
                "budget_delta": 1e-6}})


def ledger_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(ledger.SCHEMA)
    return conn


def book(conn: sqlite3.Connection, policy: MetricPolicy, releases: int) -> None:
    cost = release_cost(policy)
    for window in range(releases):
        ledger.pay(conn, metric=policy.name, version=policy.version,
                   window=window * policy.window_seconds, key_id="k1", report_count=20,
                   report_ids_digest="00", request_digest=f"{window}", epsilon=cost.epsilon,
                   delta=cost.delta, rho=cost.rho, paid_seq=window + 1)


def opendp_gaussian_epsilon(policy: MetricPolicy, releases: int, delta: float) -> float:
    """OpenDP end to end: k Gaussian measurements composed, converted once."""
    scale = noise_plan(policy).scale
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T=float)
    composed = dp.c.make_composition([space >> dp.m.then_gaussian(scale=scale)] * releases)
    d_in = math.nextafter(policy.l2_sensitivity, math.inf)
    return dp.c.make_zCDP_to_approxDP(composed).map(d_in).epsilon(delta)


def test_default_budget_delta_is_what_basic_composition_spent() -> None:
    assert SESSION.privacy.budget_delta == pytest.approx(48 * 1e-7)
    assert OPENED.privacy.budget_delta == 1e-6  # stated by the policy
    laplace = MetricPolicy.from_mapping("app_opened", {**OPENED.to_json(), "privacy": {
        "mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 3.0}})
    assert laplace.privacy.budget_delta == 0  # pure unless the policy grants a delta


@pytest.mark.parametrize("releases", [1, 2, 7, 48])
def test_booked_epsilon_after_k_gaussian_releases_equals_opendp(releases: int) -> None:
    conn = ledger_db()
    book(conn, SESSION, releases)
    state = ledger.budget(conn, SESSION)
    theirs = opendp_gaussian_epsilon(SESSION, releases, SESSION.privacy.budget_delta)
    assert state.epsilon_zcdp == pytest.approx(theirs, rel=1e-9)
    assert state.epsilon_zcdp >= theirs * (1 - 1e-12)  # an upper bound, up to float printing
    assert state.spent_rho == pytest.approx(releases * noise_plan(SESSION).rho)
    assert state.spent_epsilon == pytest.approx(releases)  # basic, still reported
    assert state.accounting == "zcdp"  # even one: at the budget's delta its epsilon is < 1
    assert state.epsilon == min(state.spent_epsilon, state.epsilon_zcdp)


def test_the_demo_session_budget_lasts_about_fourteen_times_longer() -> None:
    conn = ledger_db()
    cost = release_cost(SESSION)
    allowed = accounting.releases_within(cost.rho, 48.0, SESSION.privacy.budget_delta)
    book(conn, SESSION, allowed)
    state = ledger.budget(conn, SESSION)
    assert allowed > 48 * 10
    assert state.epsilon <= 48.0 and not state.allows(cost)
    assert state.to_json()["accounting"] == "zcdp"


def test_laplace_releases_stay_pure_until_zcdp_is_tighter() -> None:
    conn = ledger_db()
    book(conn, OPENED, 100)
    state = ledger.budget(conn, OPENED)
    assert (state.accounting, state.epsilon, state.delta) == ("basic", 100.0, 0.0)
    book_more = release_cost(OPENED)
    for window in range(100, 150):
        ledger.pay(conn, metric=OPENED.name, version=1, window=window * 3600, key_id="k1",
                   report_count=20, report_ids_digest="00", request_digest=f"{window}",
                   epsilon=1.0, delta=0.0, rho=book_more.rho, paid_seq=window + 1)
    state = ledger.budget(conn, OPENED)
    pure = dp.c.make_pureDP_to_zCDP(
        (dp.atom_domain(T=int), dp.absolute_distance(T=int)) >> dp.m.then_laplace(scale=1.0))
    composed = dp.c.make_zCDP_to_approxDP(dp.c.make_composition([pure] * 150))
    theirs = composed.map(1).epsilon(1e-6)
    assert state.accounting == "zcdp" and state.epsilon < 150
    assert state.epsilon == pytest.approx(theirs, rel=1e-9)


def test_a_budget_without_delta_never_uses_zcdp() -> None:
    policy = MetricPolicy.from_mapping("app_opened", {**OPENED.to_json(), "privacy": {
        "mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 3.0}})
    conn = ledger_db()
    book(conn, policy, 3)
    state = ledger.budget(conn, policy)
    assert state.epsilon_zcdp is None and state.epsilon == 3.0
    assert not state.allows(release_cost(policy)) and state.remaining_epsilon == 0


def test_migrate_adds_rho_to_an_old_ledger() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    old = ledger.SCHEMA.replace("    rho REAL,\n", "")
    assert old != ledger.SCHEMA
    conn.executescript(old)
    ledger.migrate(conn)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(releases)")}
    assert "rho" in columns


def test_rows_without_rho_are_basic_until_backfilled(
    tmp_path: Path, test_policies: list[MetricPolicy]
) -> None:
    from test_keyholder import PASS, aggregate_request

    created, _ = Keyholder.init(tmp_path / "kh", PASS, paillier_bits=2048, clock=lambda: 0.0)
    created.add_policies(test_policies)
    holder = Keyholder.open(tmp_path / "kh", PASS)  # releases on the wall clock
    temp = holder.db.policy("temp", 1)
    assert temp is not None
    for i in range(2):
        holder.releaser().release(aggregate_request(holder, "temp", [1.0, 2.0, 3.0],
                                                    window=3600 * (100 + i)))
    holder.db.conn.execute("UPDATE releases SET rho = NULL")  # a ledger from before rho
    state = ledger.budget(holder.db.conn, temp)
    assert state.accounting == "basic" and state.epsilon_zcdp is None
    reopened = Keyholder.open(tmp_path / "kh", PASS)
    state = ledger.budget(reopened.db.conn, temp)
    assert state.spent_rho == pytest.approx(2 * release_cost(temp).rho)
    assert state.accounting == "zcdp"
    migrated = [e for e in audit.entries(reopened.db.conn) if e.event == "ledger-migrated"]
    assert len(migrated) == 1 and migrated[0].detail == {"rho_booked_rows": 2}
    assert audit.verify_chain(reopened.db.conn) is None


@pytest.mark.parametrize(("policy", "booked"), [(SESSION, 10), (OPENED, 120)])
def test_releases_left_is_what_the_ledger_will_still_pay(policy: MetricPolicy,
                                                         booked: int) -> None:
    conn = ledger_db()
    book(conn, policy, booked)
    state = ledger.budget(conn, policy)
    cost = release_cost(policy)
    left = state.releases_left
    assert state.to_json()["releases_left"] == left > 0
    assert state.spent.plus(cost.times(left)).fits(policy.privacy.budget_epsilon,
                                                   policy.privacy.budget_delta)
    assert not state.spent.plus(cost.times(left + 1)).fits(policy.privacy.budget_epsilon,
                                                           policy.privacy.budget_delta)


def test_a_huge_budget_is_credited_what_opendp_can_convert() -> None:
    # epsilon 1e9 is beyond OpenDP's conversion: zCDP is credited what epsilon 500 certifies,
    # and the delta budget bounds basic composition
    spent = accounting.Spend(1.0, 1e-6, 0.1, 1)
    state = ledger.BudgetState("m", 1e9, 1e-3, spent, next_release=spent)
    assert state.releases_left == math.floor(
        (accounting.zcdp_capacity(500.0, 1e-3) - 0.1) / 0.1)
    assert state.allows(spent) and not state.exhausted
