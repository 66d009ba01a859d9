"""A two-party threshold deployment with real processes on loopback: SDK -> server ->
key-holder's partial release -> server's combination -> a published value anyone verifies.

The key-holder and the server each run as their own gunicorn process; the ceremony runs in
``blindsum keyholder init --threshold``. Every test stops what it starts.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from blindsum.client import Client
from blindsum.server.processes import Deployment, deployment
from blindsum.shared.encoding import clipped_value
from blindsum.shared.signing import parse_identity
from blindsum.shared.threshold.release import verify_published

POLICIES = Path(__file__).parent.parent / "policies"
INSTALLS = 12


def _deploy(root: Path, bits: int) -> Any:
    return deployment(root, [POLICIES / "paillier.toml"], paillier_bits=bits, threshold=True)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with _deploy(tmp_path_factory.mktemp("twoparty"), 2048) as running:
        yield running


def _admin(deployed: Deployment) -> dict[str, str]:
    return {"Authorization": f"Bearer {deployed.admin_token}"}


def _record_and_release(deployed: Deployment, metric: str, values: list[Any]
                        ) -> tuple[dict[str, Any], Any]:
    with Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                enforce_contribution_limit=False) as sdk:
        policy = sdk.manifest().policy(metric)
        for value in values:
            sdk.record(metric, value)
    response = requests.post(f"{deployed.server.url}/v1/windows/release",
                             json={"metric": metric}, headers=_admin(deployed), timeout=300)
    response.raise_for_status()
    assert response.json()["refused"] == [], response.json()
    results = requests.get(f"{deployed.server.url}/v1/published/{metric}",
                           timeout=30).json()["results"]
    (result,) = results
    return result, policy


def _verify_cli(deployed: Deployment, path: Path) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "blindsum.server.cli", "verify", str(path),
                           "--identity", deployed.identity], capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ))
    return done.returncode, done.stdout, done.stderr


def test_a_threshold_deployment_releases_a_verifiable_value(deployed: Deployment,
                                                            tmp_path: Path) -> None:
    rng = random.Random(7)
    values = [rng.uniform(0, 600) for _ in range(INSTALLS)]
    result, policy = _record_and_release(deployed, "seconds", values)
    assert result["threshold"] is True and result["report_count"] == INSTALLS
    truth = sum(clipped_value(policy, v) for v in values)
    # four 95% half-widths of the raw noisy value (the signed interval is clipped to the
    # domain, so its width is no measure of the noise): misses far less than once in 10^9
    assert abs(result["noisy_value"] - truth) <= 4 * result["derived"]["half_width_95"]
    payload = verify_published(result["document"], parse_identity(deployed.identity))
    assert payload["value"] == result["value"]

    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    code, out, err = _verify_cli(deployed, path)
    assert code == 0, err
    assert "verified" in out
    # a published value changed by one unit fails
    document = result["document"]
    slots = list(document["noisy_slots"])
    slots[0] += 1
    path.write_text(json.dumps({**document, "noisy_slots": slots}))
    code, _, err = _verify_cli(deployed, path)
    assert code == 2 and "noisy slot sums" in err


def test_the_full_secret_is_written_nowhere(deployed: Deployment) -> None:
    manifest = requests.get(f"{deployed.server.url}/v1/manifest", timeout=30).json()
    payload = json.loads(manifest["payload"])
    (entry,) = [k for k in payload["keys"] if k["scheme"] == "paillier"]
    kid = entry["kid"]
    assert "threshold" in entry["public"]
    keyholder_keys = sorted(p.name for p in (deployed.keyholder_dir / "keys").iterdir())
    server_keys = sorted(p.name for p in (deployed.server_dir / "keys").iterdir())
    # one share each, sealed by its own party's store; no Paillier secret key anywhere
    assert f"{kid}.party1.share" in keyholder_keys and f"{kid}.key" not in keyholder_keys
    assert f"{kid}.party2.share" not in keyholder_keys
    assert server_keys == [f"{kid}.party2.share"]
    for folder in (deployed.keyholder_dir / "keys", deployed.server_dir / "keys"):
        for path in folder.iterdir():
            assert json.loads(path.read_text())["sealed"] is True


def test_a_retried_release_returns_the_same_published_value(deployed: Deployment) -> None:
    result, _ = _record_and_release(deployed, "opened", [1, 0, 1, 1])
    # a second release call finds nothing more to release and publishes nothing new
    response = requests.post(f"{deployed.server.url}/v1/windows/release",
                             json={"metric": "opened"}, headers=_admin(deployed), timeout=120)
    assert response.status_code in (200, 409)
    (again,) = requests.get(f"{deployed.server.url}/v1/published/opened",
                            timeout=30).json()["results"]
    assert again == result


@pytest.mark.slow
def test_a_3072_bit_threshold_deployment_releases_and_verifies(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with _deploy(tmp_path_factory.mktemp("twoparty3072"), 3072) as running:
        result, _ = _record_and_release(running, "load_ms", [50, 150, 700, 2000, 80])
        verify_published(result["document"], parse_identity(running.identity))
        assert result["threshold"] is True
