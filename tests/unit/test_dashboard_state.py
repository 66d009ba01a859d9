"""What the index says about a metric: state, budget, trend and latest value in words."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from blindsum.server.aggregator.budget import Budget, parse_budgets
from blindsum.server.aggregator.dashboard import MetricState, Window, slot_charts
from blindsum.server.aggregator.methodology import methodology
from blindsum.server.aggregator.presentation import build_view
from blindsum.server.aggregator.store import StoredResult
from blindsum.server.keyholder import ledger
from blindsum.server.keyholder.cost import release_cost
from blindsum.shared.manifest import Pause
from blindsum.shared.policy import MetricPolicy

HOUR = 3600
NOW = 1_700_000_000
POLICY = MetricPolicy.from_mapping("opens", {
    "kind": "count", "scheme": "paillier", "upper": 1, "min_contributors": 20,
    "description": "Installs that opened the app.",
    "privacy": {"mechanism": "laplace", "epsilon": 0.5, "budget_epsilon": 2.0}})
CKKS = MetricPolicy.from_mapping("feature", {
    "kind": "vector", "scheme": "ckks", "dimension": 4, "lower": 0, "upper": 30,
    "privacy": {"mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-7, "budget_epsilon": 5}})


def _window(value: float, window: int, half: float = 6.0, **extra: Any) -> Window:
    payload = {"type": "blindsum.release", "v": 1, "metric": "opens", "version": 1,
               "kind": "count", "scheme": "paillier", "window": window,
               "window_seconds": HOUR, "kid": "pai-1", "report_count": 1000,
               "report_ids_digest": "ab" * 32, "request_digest": "cd" * 32, "value": value,
               "ci": [value - half, value + half], "confidence": 0.95,
               "mechanism": "laplace", "scale": 2.0, "epsilon": 0.5, "delta": 0.0,
               "rho": None, "released_at": window + HOUR, "audit_seq": 1,
               "audit_head": "ef" * 32, **extra}
    result = StoredResult("opens", 1, window, "pai-1", {}, payload, window + HOUR)
    return Window(result, build_view(result.result, POLICY))


def _state(windows: list[Window], budget: Budget | None = None, known: bool = True,
           policy: MetricPolicy | None = POLICY) -> MetricState:
    return MetricState("opens", policy, budget, known, NOW, windows)


def test_a_spent_budget_pauses_the_metric_instead_of_hiding_it() -> None:
    spent = Budget("opens", 2.0, 2.0, 0.0, 4)
    state = _state([_window(800, NOW - 2 * HOUR)], spent)
    assert state.state == "paused: budget spent"
    assert state.budget_text == "ε 2 of 2 spent; 0 releases left"
    assert "releases nothing more" in state.state_detail
    assert state.latest_text.startswith("800 (95%: 794 to 806)")


def keyholder_budget_answer(policy: MetricPolicy, releases: int) -> object:
    """The key-holder's ``GET /v1/budget`` body after ``releases`` booked releases."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(ledger.SCHEMA)
    cost = release_cost(policy)
    for n in range(releases):
        ledger.pay(conn, metric=policy.name, version=policy.version, window=n * HOUR,
                   key_id="k1", report_count=20, report_ids_digest="00",
                   request_digest=str(n), epsilon=cost.epsilon, delta=cost.delta,
                   rho=cost.rho, paid_seq=n + 1)
    return json.loads(json.dumps({"metrics": [ledger.budget(conn, policy).to_json()]}))


def test_a_zcdp_budget_shows_the_certified_epsilon_not_the_sum_of_epsilons() -> None:
    session = MetricPolicy.from_mapping("session_seconds", {
        "kind": "sum", "scheme": "paillier", "lower": 0, "upper": 3600,
        "privacy": {"mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-7,
                    "budget_epsilon": 48.0}})
    answer = keyholder_budget_answer(session, 100)
    (row,) = answer["metrics"]  # type: ignore[index]
    assert row["spent_epsilon"] == 100 and row["accounting"] == "zcdp"
    budget = parse_budgets(answer)["session_seconds"]  # type: ignore[index]
    state = MetricState("session_seconds", session, budget, True, NOW)
    # 100 releases of epsilon 1 are certified at ~10.9 (zCDP at delta 4.8e-6), not 100
    assert state.state == "collecting"
    assert state.budget_text == (f"ε {row['epsilon']:.4g} of 48 spent (zCDP, converted "
                                 f"once); {row['releases_left']} releases left")
    assert 10 < row["epsilon"] < 12 and row["releases_left"] == 842


def test_an_older_keyholders_budget_is_read_as_basic_composition() -> None:
    old = {"metrics": [{"metric": "opens", "budget_epsilon": 2.0, "spent_epsilon": 0.5,
                        "remaining_epsilon": 1.5, "releases": 1}]}
    budget = parse_budgets(old)["opens"]  # type: ignore[index]
    assert (budget.spent_epsilon, budget.accounting) == (0.5, "basic")
    assert parse_budgets({"metrics": [7]}) is None


def test_a_paused_metric_states_the_manifests_reason_and_until_when() -> None:
    reason = ("its privacy budget (2, 0) per day is spent (4 releases, epsilon 2 by basic "
              "composition)")
    pause = Pause("opens", reason, NOW + HOUR)
    spent = Budget("opens", 2.0, 2.0, 0.0, 4)
    state = MetricState("opens", POLICY, spent, True, NOW, [], pause)
    assert state.state == "paused: budget spent"
    assert state.state_detail == "paused until 2023-11-14 23:13 UTC: " + reason
    for_good = MetricState("opens", POLICY, None, False, NOW, [], Pause("opens", reason, None))
    assert for_good.state == "paused: budget spent"  # even with the ledger unreachable
    assert for_good.state_detail == "paused for good: " + reason
    renewed = MetricState("opens", POLICY, Budget("opens", 2.0, 0.0, 2.0, 0), True,
                          NOW + HOUR, [], pause)
    assert renewed.state == "collecting"  # the period renewed: the pause has lapsed


def test_a_collecting_metric_states_its_current_window_and_releases_left() -> None:
    state = _state([], Budget("opens", 2.0, 0.5, 1.5, 1))
    assert state.state == "collecting"
    assert state.budget_text == "ε 0.5 of 2 spent; 3 releases left"
    assert state.state_detail.startswith("current window ")
    assert state.latest_text == "nothing published yet" and state.trend == "—"


def test_unknown_budget_and_retired_metrics_are_said_so() -> None:
    assert _state([], None, known=False).budget_text.startswith("budget unknown")
    retired = _state([_window(800, NOW - HOUR)], None, policy=None)
    assert retired.state == "retired" and "no longer in the manifest" in retired.state_detail


def test_trend_counts_only_changes_beyond_the_noise() -> None:
    steady = _state([_window(800, NOW - 2 * HOUR), _window(805, NOW - HOUR)])
    assert steady.trend == "steady (within noise)"
    rising = _state([_window(800, NOW - 2 * HOUR), _window(830, NOW - HOUR)])
    assert rising.trend == "up 30" and rising.spark is not None


def test_policy_summary_and_methodology_say_whether_reports_are_proven() -> None:
    unproven = MetricPolicy.from_mapping("opens", {**POLICY.to_json(), "validity": "none"})
    for policy, summary, sentence in (
            (POLICY, "paillier; every report proven valid", "Every report is proven valid"),
            (unproven, "paillier; trusts its clients (validity = none)",
             'This metric trusts its clients (validity = "none")')):
        assert _state([], None, policy=policy).policy_text.endswith(summary)
        trust = {s.heading: s for s in methodology(policy, "ed25519:x")}["Trust"]
        assert any(s.startswith(sentence) for s in trust.sentences)


def test_a_flagged_aggregate_is_marked_inconsistent() -> None:
    assert _window(800, NOW, consistent=False).view.consistent is False
    assert _window(800, NOW).view.consistent is True


def test_policy_summary_and_methodology_name_the_weaker_ckks_promise() -> None:
    state = _state([], None, policy=CKKS)
    assert state.policy_text.endswith("ckks; trusts its clients (validity = none)")
    trust = {s.heading: s for s in methodology(CKKS, "ed25519:x")}["Trust"]
    assert "no validity proofs" in trust.sentences[0]
    cost = {s.heading: s for s in methodology(POLICY, "ed25519:x")}["Privacy cost"]
    assert cost.sentences[2].endswith("at most 4 releases, after which the key-holder "
                                      "publishes nothing more for it.")


def test_a_budget_with_delta_is_described_as_the_zcdp_ledger_books_it() -> None:
    gaussian = MetricPolicy.from_mapping("opens", {**POLICY.to_json(), "privacy": {
        "mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-7, "budget_epsilon": 4.0,
        "budget_period": "day", "budget_delta": 1e-6}})
    cost = {s.heading: s for s in methodology(gaussian, "ed25519:x")}["Privacy cost"]
    assert "δ = 1e-06: the key-holder adds the releases' zCDP costs" in cost.sentences[2]
    assert cost.sentences[2].endswith("The budget renews every day.")
    # the key-holder's own count of releases left wins over epsilons adding up
    assert Budget("opens", 4.0, 4.0, 0.0, 4, left=30).releases_left(1.0) == 30


def test_methodology_states_the_privacy_unit_and_what_is_public() -> None:
    three = MetricPolicy.from_mapping("opens", {**POLICY.to_json(), "contributions_per_window": 3})
    unit = {s.heading: s for s in methodology(three, "ed25519:x")}["Privacy unit"]
    assert unit.sentences[0].startswith("One install's reports in one window: at most 3 "
                                        "reports, and the sensitivity above is that of 3")
    assert unit.sentences[0].endswith("the number of reports in a window is public.")
    assert "state file" in unit.sentences[1] and "report cap" in unit.sentences[1]
    one = {s.heading: s for s in methodology(POLICY, "ed25519:x")}["Privacy unit"]
    assert "at most 1 report, and the sensitivity above is that of 1 report," in (
        one.sentences[0])


PAGES = MetricPolicy.from_mapping("pages", {
    "kind": "histogram", "scheme": "paillier", "buckets": [0, 1, 2, 3, 4],
    "privacy": {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 10.0}})


def _histogram(counts: list[float], window: int) -> Window:
    n = int(sum(counts))
    payload = {"type": "blindsum.release", "v": 1, "metric": "pages", "version": 1,
               "kind": "histogram", "scheme": "paillier", "window": window,
               "window_seconds": HOUR, "kid": "pai-1", "report_count": n,
               "report_ids_digest": "ab" * 32, "request_digest": "cd" * 32, "value": counts,
               "ci": [[max(c - 6, 0), min(c + 6, n)] for c in counts], "confidence": 0.95,
               "mechanism": "laplace", "scale": 2.0, "epsilon": 1.0, "delta": 0.0,
               "rho": None, "released_at": window + HOUR, "audit_seq": 1,
               "audit_head": "ef" * 32}
    result = StoredResult("pages", 1, window, "pai-1", {}, payload, window + HOUR)
    return Window(result, build_view(result.result, PAGES))


def _y_axis(chart: str) -> list[tuple[str, str]]:
    """Each y tick's height and label (x labels are centred, y labels end-anchored)."""
    return re.findall(r'<text class="tick" x="\d+" y="([\d.]+)" text-anchor="end">([^<]+)<',
                      chart)


def test_histogram_windows_are_drawn_on_one_scale_whatever_their_sizes() -> None:
    small = _histogram([3.0, 4.0, 2.0, 1.0], NOW - 2 * HOUR)
    large = _histogram([300.0, 420.0, 180.0, 100.0], NOW - HOUR)
    charts = [str(chart) for _, chart in slot_charts("pages", [small, large])]
    assert len(charts) == 2 and _y_axis(charts[0]) == _y_axis(charts[1])
    assert float(_y_axis(charts[0])[-1][1]) >= 426  # the larger window's highest bound
    # on that shared scale, the small window's bars are short: heights compare
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([\d.]+)"',
                                            charts[1])]  # newest first: [1] is the small one
    assert max(heights) < 10


def test_methodology_states_the_report_retention_when_given() -> None:
    assert "What is kept, and for how long" not in {s.heading for s in methodology(
        POLICY, "ed25519:x")}
    kept = {s.heading: s for s in methodology(POLICY, "ed25519:x", None, 7200)}[
        "What is kept, and for how long"]
    assert "kept for 2 hours after its window is released or refused" in kept.sentences[0]
    assert any("never counted twice" in sentence for sentence in kept.sentences)
    at_once = {s.heading: s for s in methodology(POLICY, "ed25519:x", None, 0)}[
        "What is kept, and for how long"]
    assert "until the next sweep" in at_once.sentences[0]
