"""Fixtures shared by the whole suite: keys are slow to make, so each is made once."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.shared.manifest import KeyEntry, Manifest
from blindsum.shared.policy import MetricPolicy, load_policies_toml

POLICY_DIR = Path(__file__).parent / "policies"


@pytest.fixture(autouse=True, scope="session")
def sdk_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SDK state (default queues, contribution counts) goes to a directory of this run, not
    the user's state dir."""
    path = tmp_path_factory.mktemp("sdk-state")
    previous = os.environ.get("BLINDSUM_STATE_DIR")
    os.environ["BLINDSUM_STATE_DIR"] = str(path)  # inherited by SDK subprocesses too
    yield path
    if previous is None:
        os.environ.pop("BLINDSUM_STATE_DIR", None)
    else:
        os.environ["BLINDSUM_STATE_DIR"] = previous


_TEST_STATE = itertools.count()


@pytest.fixture(autouse=True)
def sdk_state_per_test(sdk_state_dir: Path) -> Iterator[Path]:
    """Each test's SDK Clients start from their own state directory: a default queue left
    unsent by one test (an install's restart state) must not be delivered by the next."""
    path = sdk_state_dir / f"test-{next(_TEST_STATE):05d}"
    os.environ["BLINDSUM_STATE_DIR"] = str(path)
    yield path
    os.environ["BLINDSUM_STATE_DIR"] = str(sdk_state_dir)


@pytest.fixture(scope="session")
def paillier_secret():  # type: ignore[no-untyped-def]
    from blindsum.shared.schemes.paillier import generate_paillier

    return generate_paillier(2048, key_id="pai-test")


@pytest.fixture(scope="session")
def ckks_secret():  # type: ignore[no-untyped-def]
    from blindsum.shared.schemes.ckks import generate_ckks

    return generate_ckks(key_id="ckks-test")


@pytest.fixture(scope="session")
def identity() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def test_policies() -> list[MetricPolicy]:
    return [p for path in sorted(POLICY_DIR.glob("*.toml"))
            for p in load_policies_toml(path.read_text())]


@pytest.fixture(scope="session")
def manifest(identity, paillier_secret, ckks_secret, test_policies) -> Manifest:  # type: ignore[no-untyped-def]
    keys = [
        KeyEntry("paillier", paillier_secret.key_id, "active",
                 paillier_secret.public.public_json()),
        KeyEntry("ckks", ckks_secret.key_id, "active", ckks_secret.public.public_json()),
    ]
    return Manifest.issue(identity, 1, keys, test_policies)
