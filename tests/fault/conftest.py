"""Deployments the fault tests stress: real key-holder and server processes on loopback.

Every process a fixture starts is stopped by it; every hostile socket a test opens is closed
by the ``hostile_crowd`` block that opened it (tests/fault/hostile.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_kit import POLICIES

from blindsum.server.processes import Deployment, deployment


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("fault"), POLICIES) as running:
        yield running


@pytest.fixture(scope="module")
def tls_deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("fault-tls"), POLICIES, tls=True) as running:
        yield running
