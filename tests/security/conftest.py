"""Deployments the security suite attacks: real key-holder and server processes on loopback.

Two deployments serve several modules (each costs ~2 s): ``deployed`` for the targeted
attacks and ``fuzz_deployed`` for the generated ones (hypothesis, schemathesis), so a
flood of fuzzed requests can never disturb another attack's state checks. Modules that
must stop, replace or reconfigure a service (impostor key-holder, key rotation, TLS) start
their own. Every process a fixture starts is stopped by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from security_kit import NO_RATE_LIMITS, backdate_registrations, call

from blindsum.client import Client
from blindsum.server.processes import Deployment, deployment

HERE = Path(__file__).parent
POLICIES = [HERE.parent / "policies" / "paillier.toml", HERE / "security_policies.toml"]
FUZZ_POLICIES = [*POLICIES, HERE.parent / "policies" / "ckks.toml"]
LAST_MODULE = "test_error_responses.py"
# Attacks on past windows need a deployment registered a while ago (the release horizon).
BACKDATE_SECONDS = 2 * 86400



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the leak check over every error body last, once the attacks have collected them."""
    items.sort(key=lambda item: item.path.name == LAST_MODULE)


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("security"), POLICIES,
                    server_env=NO_RATE_LIMITS) as running:
        backdate_registrations(running, BACKDATE_SECONDS)
        yield running


@pytest.fixture(scope="session")
def fuzz_deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment holding a published result, an open window no one may release early,
    and a spent budget: something for fuzzed requests to change, should they manage to."""
    with deployment(tmp_path_factory.mktemp("fuzz"), FUZZ_POLICIES,
                    server_env=NO_RATE_LIMITS) as running:
        with Client(running.server.url, running.ingest_token, running.identity,
                    enforce_contribution_limit=False) as sdk:
            for value in (10, 20, 30):
                sdk.record("seconds", value)
                sdk.record("sec_strict", 1)
        released = call("POST", f"{running.server.url}/v1/windows/release",
                         token=running.admin_token, data=b'{"metric": "seconds"}',
                         media="application/json")
        assert released.status_code == 200 and len(released.json()["released"]) == 1, (
            released.text)
        yield running
