"""Releases are rate-limited per caller at the key-holder, with the production setting.

Every release is paid for, so the budget is the real bound on what a token holder learns;
the limit keeps a flood of requests (refused or not) from burning budgets and CPU quickly.
A request over the limit is answered 429 with Retry-After before anything is parsed,
checked, paid or audited.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from security_kit import (
    NO_RATE_LIMITS,
    closed_window,
    keyholder_manifest,
    post_release,
    problem,
    snapshot,
    valid_release,
)

from blindsum.server.processes import Deployment, deployment

POLICIES = [Path(__file__).parent / "security_policies.toml"]
LIMIT = 5


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("rate"), POLICIES, server_env=NO_RATE_LIMITS,
                    keyholder_env={"BLINDSUM_RATE_LIMIT_RELEASES": f"{LIMIT}/minute"}) as dep:
        yield dep


def test_releases_beyond_the_limit_are_429_and_change_nothing(limited: Deployment) -> None:
    manifest = keyholder_manifest(limited)
    policy = manifest.policy("sec_race")
    # windows before registration: each refused on public grounds, but each counts
    bodies = [valid_release(manifest, "sec_race", closed_window(policy, 10 + i), [1])
              for i in range(LIMIT)]
    for body in bodies:
        answer = post_release(limited, body)
        assert answer.status_code == 422, answer.text
    before = snapshot(limited)
    over = post_release(limited, bodies[0])
    assert over.status_code == 429, over.text
    assert problem(over)["code"] == "rate-limited"
    assert int(over.headers["Retry-After"]) >= 1
    assert snapshot(limited) == before
