"""Racing release requests at the key-holder never overspend a budget or release twice.

The requests go straight to the key-holder with the release token, as a server (or anyone
who stole its token) would send them, all at once from threads. Every aggregate is real
(an honest encryption of one report), so each request alone would be granted.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

import requests
from security_kit import (
    closed_window,
    keyholder_manifest,
    post_release,
    problem,
    snapshot,
    valid_release,
)

from blindsum.server.processes import Deployment
from blindsum.shared.codec import ReleaseRequest


def _fire_together(dep: Deployment, bodies: Sequence[ReleaseRequest]) -> list[requests.Response]:
    barrier = threading.Barrier(len(bodies))
    answers: list[requests.Response | None] = [None] * len(bodies)
    failures: list[BaseException] = []

    def fire(index: int) -> None:
        try:
            with requests.Session() as session:
                barrier.wait()
                answers[index] = post_release(dep, bodies[index], session=session)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def _budget(dep: Deployment, metric: str) -> dict[str, float]:
    (row,) = [m for m in snapshot(dep).budget if m["metric"] == metric]
    return row


def test_racing_releases_of_many_windows_never_overspend_the_budget(
    deployed: Deployment,
) -> None:
    metric, windows = "sec_race", 7  # budget 3 epsilon, epsilon 1 per release
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(metric)
    assert _budget(deployed, metric)["spent_epsilon"] == 0
    bodies = [valid_release(manifest, metric, closed_window(policy, 2 + i), [1])
              for i in range(windows)]
    answers = _fire_together(deployed, bodies)
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {201: 3, 422: windows - 3}, [a.text[:200] for a in answers]
    for answer in answers:
        if answer.status_code == 422:
            assert problem(answer)["code"] == "budget-exhausted"
    ledger = _budget(deployed, metric)
    assert ledger["spent_epsilon"] == 3 * policy.privacy.epsilon
    assert ledger["releases"] == 3
    assert ledger["remaining_epsilon"] == 0


def test_one_window_fired_concurrently_is_released_exactly_once(deployed: Deployment) -> None:
    metric = "sec_race_twice"
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(metric)
    for attempt, copies in enumerate((2, 2, 5)):
        spent = _budget(deployed, metric)["spent_epsilon"]
        body = valid_release(manifest, metric, closed_window(policy, 2 + attempt), [1])
        answers = _fire_together(deployed, [body] * copies)
        statuses = Counter(answer.status_code for answer in answers)
        # one decryption; the same request again gets its stored result (200) or, while
        # the first is still under way, is told to retry (409 release-in-progress)
        assert statuses[201] == 1 and statuses[200] + statuses[409] == copies - 1, (
            [a.text[:200] for a in answers])
        created = next(a for a in answers if a.status_code == 201).json()
        for answer in answers:
            if answer.status_code == 200:
                assert answer.json() == created
            if answer.status_code == 409:
                assert problem(answer)["code"] == "release-in-progress"
        assert _budget(deployed, metric)["spent_epsilon"] == spent + policy.privacy.epsilon
