"""A two-party deployment whose policies have the server add its own noise too
(``noise = "both"``), with real processes on loopback: what is published verifies offline
with the server's noise inside it, a request that leaves the server's noise out is refused
before anything is paid, and a lost answer is retried with the same server noise — one
draw per party, one debit.

Every test stops what it starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from security_kit import (
    NO_RATE_LIMITS,
    LossyProxy,
    batch_body,
    call,
    keyholder_manifest,
    paillier_report,
    port_of,
    post_release,
    problem,
    receipt,
    running,
    service_env,
    snapshot,
    valid_release,
    wait_until,
)

from blindsum.client import Client
from blindsum.server.aggregator.store import unpack_blobs
from blindsum.server.processes import Deployment, deployment, free_port
from blindsum.shared import codec
from blindsum.shared.encoding import clipped_value
from blindsum.shared.signing import parse_identity
from blindsum.shared.threshold.release import verify_published

HERE = Path(__file__).parent
INSTALLS = 8


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("two-noise"), [HERE / "server_noise_policies.toml"],
                    server_env=NO_RATE_LIMITS, threshold=True) as running_deployment:
        yield running_deployment


def _verify_cli(dep: Deployment, path: Path) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "blindsum.server.cli", "verify", str(path),
                           "--identity", dep.identity], capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ))
    return done.returncode, done.stdout, done.stderr


def _release(dep: Deployment, server: str, metric: str) -> dict[str, Any]:
    answer = call("POST", f"{server}/v1/windows/release", token=dep.admin_token,
                  data=codec.dumps({"metric": metric}), media=codec.JSON, timeout=300)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _spent(dep: Deployment, metric: str) -> tuple[int, float]:
    (budget,) = [m for m in snapshot(dep).budget if m["metric"] == metric]
    return budget["releases"], budget["spent_epsilon"]


def test_a_two_noise_release_publishes_a_value_that_verifies_offline(
        deployed: Deployment, tmp_path: Path) -> None:
    rng = random.Random(11)
    values = [rng.uniform(0, 600) for _ in range(INSTALLS)]
    with Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                enforce_contribution_limit=False) as sdk:
        policy = sdk.manifest().policy("both_seconds")
        assert policy.noise == "both"  # the signed manifest says who adds noise
        for value in values:
            sdk.record("both_seconds", value)
    outcome = _release(deployed, deployed.server.url, "both_seconds")
    assert outcome["refused"] == [] and len(outcome["released"]) == 1, outcome
    (result,) = requests.get(f"{deployed.server.url}/v1/published/both_seconds",
                             timeout=30).json()["results"]
    assert result["noise_parties"] == ["keyholder", "server"]
    truth = sum(clipped_value(policy, v) for v in values)
    # four 95% half-widths of the raw noisy value (the signed interval is clipped to the
    # domain, so its width is no measure of the noise): misses far less than once in 10^9
    assert abs(result["noisy_value"] - truth) <= 4 * result["derived"]["half_width_95"]
    document = result["document"]
    statement = json.loads(document["statement"]["payload"])
    assert statement["noise_parties"] == ["keyholder", "server"] and statement["server_noise"]
    payload = verify_published(document, parse_identity(deployed.identity))
    assert payload["value"] == result["value"]

    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    code, out, err = _verify_cli(deployed, path)
    assert code == 0 and "noise by keyholder + server" in out, err
    slots = list(document["noisy_slots"])
    slots[0] += 1
    path.write_text(json.dumps({**document, "noisy_slots": slots}))
    code, _, err = _verify_cli(deployed, path)
    assert code == 2 and "noisy slot sums" in err
    # other server noise swapped into the signed statement breaks its signature
    swapped = {**statement, "server_noise": statement["noise"]}
    forged = {**document, "statement": {**document["statement"],
                                        "payload": json.dumps(swapped)}}
    path.write_text(json.dumps(forged))
    code, _, err = _verify_cli(deployed, path)
    assert code == 2, err


def test_a_request_without_the_server_noise_is_refused_before_paying(
        deployed: Deployment) -> None:
    """A server that skips its noise cannot get a release it did not commit noise to: the
    key-holder refuses on the public policy, before paying."""
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy("both_opened")
    before = _spent(deployed, "both_opened")
    request = valid_release(manifest, "both_opened", policy.window_start(time.time()),
                            [1, 0, 1, 1], early=True)
    assert request.server_noise == ()
    answer = post_release(deployed, request)
    assert answer.status_code == 422, answer.text
    assert problem(answer)["code"] == "release-refused"
    assert "carries no server noise" in problem(answer)["detail"]
    assert _spent(deployed, "both_opened") == before


@contextlib.contextmanager
def _server_behind(proxy: LossyProxy, dep: Deployment, root: Path) -> Iterator[tuple[str, Path]]:
    data_dir = root / "server"
    shutil.copytree(dep.server_dir / "keys", data_dir / "keys")  # our share of the key
    port = free_port()
    args = ["server", "serve", "--data-dir", str(data_dir), "--port", str(port),
            "--keyholder-url", proxy.url, "--keyholder-identity", dep.identity]
    with running("lossy-server", args, port, root, service_env(dep, passphrase=True)) as srv:
        yield srv.url, data_dir


def _stored_server_noise(data_dir: Path) -> list[bytes]:
    with contextlib.closing(sqlite3.connect(data_dir / "aggregator.db")) as conn:
        return [bytes(row[0]) for row in conn.execute("SELECT ciphertexts FROM server_noise")]


def test_a_lost_two_noise_answer_is_retried_with_the_same_server_noise(
        deployed: Deployment, tmp_path: Path) -> None:
    manifest = keyholder_manifest(deployed)
    proxy = LossyProxy(port_of(deployed.keyholder))
    try:
        with _server_behind(proxy, deployed, tmp_path) as (server, data_dir):
            sent = call("POST", f"{server}/v1/reports", token=deployed.ingest_token,
                        data=batch_body([paillier_report(manifest, "both_lost", 1)
                                         for _ in range(3)]), media=codec.JSON)
            assert receipt(sent) == (3, 0)
            proxy.lose_next("POST /v1/releases")
            outcome = _release(deployed, server, "both_lost")
            assert proxy.lost == 1 and len(outcome["failed"]) == 1, outcome
            assert _spent(deployed, "both_lost") == (1, 1.0)
            committed = _stored_server_noise(data_dir)
            assert len(committed) == 1  # drawn once, stored before it was sent

            outcomes: list[dict[str, Any]] = []

            def published() -> bool:
                outcomes.append(_release(deployed, server, "both_lost"))
                return len(outcomes[-1]["released"]) == 1

            assert wait_until(published, 90, interval=2.0), outcomes[-3:]
            assert _stored_server_noise(data_dir) == committed  # never drawn again
            (result,) = call("GET", f"{server}/v1/published/both_lost").json()["results"]
            document = result["document"]
            verify_published(document, parse_identity(deployed.identity))
            statement = json.loads(document["statement"]["payload"])
            # the key-holder's stored statement (from before the lost answer) folded it in
            stored = call("GET", f"{deployed.keyholder.url}/v1/releases/both_lost/1/"
                          f"{statement['window']}?kid={statement['kid']}",
                          token=deployed.release_token).json()
            assert stored == document["statement"]
            assert tuple(codec.b64decode(c, "c") for c in statement["server_noise"]) == \
                unpack_blobs(committed[0])
            assert _spent(deployed, "both_lost") == (1, 1.0)
    finally:
        proxy.close()
