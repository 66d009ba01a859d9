"""The SDK's Client before it talks to anyone: packaging, arguments, refusals that need no server.

Everything the Client does with our server (manifest trust, encryption, limits, delivery,
manifest changes) is specified against the real services in tests/integration/test_sdk.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from client_support import Tripwire
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.client import Client, InvalidConfig, InvalidInput
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.signing import identity_string

TOKEN = "ingest-token"
PRIVACY = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 10.0}


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.close()


@pytest.fixture
def pinned() -> str:
    return identity_string(Ed25519PrivateKey.generate().public_key())


# -- packaging -----------------------------------------------------------------------------


def test_importing_the_sdk_loads_neither_flask_nor_the_server() -> None:
    code = (
        "import sys, blindsum.client, blindsum.shared.schemes.paillier\n"
        "assert blindsum.client.Client\n"
        "assert 'flask' not in sys.modules, 'flask imported'\n"
        "assert 'werkzeug' not in sys.modules, 'werkzeug imported'\n"
        "bad = [m for m in sys.modules if m.startswith('blindsum.server')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr


# -- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"batch_size": 5001}, {"batch_size": 2.5}, {"wire": "xml"},
     {"max_retries": -1}, {"timeout": 0}, {"manifest_ttl": 0}],
)
def test_bad_arguments_are_refused_at_construction(
    tripwire: Tripwire, pinned: str, kwargs: dict[str, object]
) -> None:
    with pytest.raises(InvalidConfig):
        Client(tripwire.url, TOKEN, pinned, **kwargs)  # type: ignore[arg-type]
    assert not tripwire.touched()


def test_a_malformed_pinned_identity_is_refused(tripwire: Tripwire) -> None:
    with pytest.raises(InvalidInput, match="ed25519"):
        Client(tripwire.url, TOKEN, "rsa:AAAA")
    assert not tripwire.touched()


# -- validation before the network ---------------------------------------------------------


def test_a_metric_that_is_not_a_name_is_refused_before_fetching_anything(
    tripwire: Tripwire, pinned: str
) -> None:
    client = Client(tripwire.url, TOKEN, pinned)
    with pytest.raises(InvalidInput, match="metric must be"):
        client.record(42, 1)  # type: ignore[arg-type]
    client.close()
    assert not tripwire.touched()


def test_a_window_starts_at_a_multiple_of_window_seconds_since_the_epoch() -> None:
    ten_minutes = MetricPolicy.from_mapping("x", {
        "kind": "count", "scheme": "paillier", "upper": 1, "window_seconds": 600,
        "min_contributors": 1, "max_contributors": 10_000, "privacy": PRIVACY,
    })
    assert ten_minutes.window_start(0) == 0
    assert ten_minutes.window_start(599.99) == 0
    assert ten_minutes.window_start(600) == 600
    assert ten_minutes.window_start(1_800_000_123.7) == 1_800_000_000 - 1_800_000_000 % 600
