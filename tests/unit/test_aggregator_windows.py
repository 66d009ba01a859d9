"""Window arithmetic: alignment, which windows take reports, when a window is due."""

from __future__ import annotations

import pytest

from blindsum.server.aggregator.windows import (
    CLOCK_SKEW_SECONDS,
    accepting_windows,
    check_report_window,
    due_at,
    is_due,
    window_end,
    window_start,
)
from blindsum.shared.errors import InvalidInput
from blindsum.shared.policy import MetricPolicy

HOUR = 3600
START = 1_700_002_800  # a multiple of 3600


def _policy(window_seconds: int = HOUR, late_seconds: int = 600) -> MetricPolicy:
    return MetricPolicy.from_mapping("visits", {
        "kind": "count", "scheme": "paillier", "window_seconds": window_seconds,
        "late_seconds": late_seconds,
        "privacy": {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 10.0},
    })


def test_window_start_is_time_minus_time_modulo_window_seconds() -> None:
    assert START % HOUR == 0
    assert window_start(START, HOUR) == START
    assert window_start(START + 0.5, HOUR) == START
    assert window_start(START + HOUR - 1, HOUR) == START
    assert window_start(START + HOUR, HOUR) == START + HOUR
    assert window_start(86_399.9, 86_400) == 0
    assert window_end(START, HOUR) == START + HOUR


def test_window_is_due_late_seconds_after_its_end() -> None:
    policy = _policy(late_seconds=600)
    assert due_at(policy, START) == START + HOUR + 600
    assert not is_due(policy, START, START + HOUR + 599.9)
    assert is_due(policy, START, START + HOUR + 600)


def test_current_window_accepts_reports_from_its_first_to_its_last_second() -> None:
    policy = _policy(late_seconds=0)
    assert START in accepting_windows(policy, START)
    assert START in accepting_windows(policy, START + HOUR - 0.001)
    assert START not in accepting_windows(policy, START + HOUR)


def test_previous_window_accepts_reports_until_late_seconds_after_its_end() -> None:
    policy = _policy(late_seconds=600)
    assert accepting_windows(policy, START + HOUR + 599) == (START + HOUR, START)
    assert accepting_windows(policy, START + HOUR + 600) == (START + HOUR,)


def test_next_window_accepts_reports_only_within_clock_skew_of_its_start() -> None:
    policy = _policy(late_seconds=0)
    just_before = START + HOUR - CLOCK_SKEW_SECONDS
    assert accepting_windows(policy, just_before) == (START + HOUR, START)
    assert accepting_windows(policy, just_before - 1) == (START,)


def test_window_without_late_seconds_never_accepts_the_previous_one() -> None:
    policy = _policy(late_seconds=0)
    assert accepting_windows(policy, START + HOUR) == (START + HOUR,)


def test_check_report_window_refuses_a_misaligned_start() -> None:
    with pytest.raises(InvalidInput, match="not a window start"):
        check_report_window(_policy(), START + 1, START + 10)


@pytest.mark.parametrize("window, when", [
    (START - HOUR, "has closed"),
    (START - 30 * HOUR, "has closed"),
    (START + HOUR, "has not started yet"),
    (START + 100 * HOUR, "has not started yet"),
])
def test_check_report_window_refuses_closed_and_future_windows(window: int, when: str) -> None:
    policy = _policy(late_seconds=600)
    with pytest.raises(InvalidInput, match=when) as caught:
        check_report_window(policy, window, START + 1200)
    assert f"[{START}]" in caught.value.detail  # says which window is accepted now


def test_check_report_window_accepts_current_and_late_previous() -> None:
    policy = _policy(late_seconds=600)
    check_report_window(policy, START, START + 5)
    check_report_window(policy, START - HOUR, START + 5)


def test_one_second_windows() -> None:
    policy = _policy(window_seconds=1, late_seconds=1)
    assert window_start(START + 0.7, 1) == START
    assert START - 1 in accepting_windows(policy, START + 0.5)
    assert START - 1 not in accepting_windows(policy, START + 1)
