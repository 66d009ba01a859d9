"""The key-holder's settings: the release rate limit from the environment."""

from __future__ import annotations

import pytest

from blindsum.server.keyholder.config import DEFAULT_RELEASE_RATE, load_config
from blindsum.shared.errors import InvalidConfig


@pytest.mark.parametrize(("given", "expected"), [
    (None, DEFAULT_RELEASE_RATE),
    ("", DEFAULT_RELEASE_RATE),  # an empty variable is unset, never "no limit"
    ("  ", DEFAULT_RELEASE_RATE),
    ("5/minute", "5/minute"),
    ("off", None),
    ("None", None),
])
def test_release_rate_limit_from_the_environment(tmp_path, given, expected) -> None:
    env = {"BLINDSUM_KEYHOLDER_DATA_DIR": str(tmp_path)}
    if given is not None:
        env["BLINDSUM_RATE_LIMIT_RELEASES"] = given
    assert load_config(env=env).rate_limit_releases == expected


def test_a_malformed_release_rate_limit_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(InvalidConfig, match="BLINDSUM_RATE_LIMIT_RELEASES"):
        load_config(env={"BLINDSUM_KEYHOLDER_DATA_DIR": str(tmp_path),
                         "BLINDSUM_RATE_LIMIT_RELEASES": "fast"})
