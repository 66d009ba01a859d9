"""A threshold deployment whose key-holder's answer is lost on the way (real processes):
the retry publishes once, from the one stored partial release: one noise draw, one debit.

The server runs behind a relay that drops the key-holder's answer to the release after the
key-holder committed it (``LossyProxy``); the server keeps its own share, copied into the
relay-side server's data directory, and retries the same request.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from security_kit import (
    NO_RATE_LIMITS,
    LossyProxy,
    batch_body,
    call,
    keyholder_manifest,
    paillier_report,
    port_of,
    receipt,
    running,
    service_env,
    snapshot,
    wait_until,
)

from blindsum.server.processes import Deployment, deployment, free_port
from blindsum.shared import codec
from blindsum.shared.signing import parse_identity
from blindsum.shared.threshold.release import verify_published

HERE = Path(__file__).parent
LOST = "sec_lost"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("threshold-lost"),
                    [HERE / "security_policies.toml"], server_env=NO_RATE_LIMITS,
                    threshold=True) as running_deployment:
        yield running_deployment


@contextlib.contextmanager
def _server_behind(proxy: LossyProxy, dep: Deployment, root: Path) -> Iterator[str]:
    data_dir = root / "server"
    shutil.copytree(dep.server_dir / "keys", data_dir / "keys")  # our share of the key
    port = free_port()
    args = ["server", "serve", "--data-dir", str(data_dir), "--port", str(port),
            "--keyholder-url", proxy.url, "--keyholder-identity", dep.identity]
    with running("lossy-server", args, port, root, service_env(dep, passphrase=True)) as srv:
        yield srv.url


def _release(dep: Deployment, server: str) -> dict:  # type: ignore[type-arg]
    answer = call("POST", f"{server}/v1/windows/release", token=dep.admin_token,
                  data=codec.dumps({"metric": LOST}), media=codec.JSON, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_lost_partial_release_is_published_once_and_paid_once(
        deployed: Deployment, tmp_path: Path) -> None:
    manifest = keyholder_manifest(deployed)
    proxy = LossyProxy(port_of(deployed.keyholder))
    try:
        with _server_behind(proxy, deployed, tmp_path) as server:
            sent = call("POST", f"{server}/v1/reports", token=deployed.ingest_token,
                        data=batch_body([paillier_report(manifest, LOST, 1)
                                         for _ in range(3)]), media=codec.JSON)
            assert receipt(sent) == (3, 0)
            proxy.lose_next("POST /v1/releases")
            outcome = _release(deployed, server)
            assert proxy.lost == 1 and len(outcome["failed"]) == 1, outcome
            (budget,) = [m for m in snapshot(deployed).budget if m["metric"] == LOST]
            assert (budget["releases"], budget["spent_epsilon"]) == (1, 1.0)

            outcomes: list[dict] = []  # type: ignore[type-arg]

            def published() -> bool:
                outcomes.append(_release(deployed, server))
                return len(outcomes[-1]["released"]) == 1

            assert wait_until(published, 90, interval=2.0), outcomes[-3:]
            results = call("GET", f"{server}/v1/published/{LOST}").json()["results"]
            assert len(results) == 1
            document = results[0]["document"]
            payload = verify_published(document, parse_identity(deployed.identity))
            assert payload["report_count"] == 3 and payload["threshold"] is True
            # the statement published is the one the key-holder stored before the lost answer
            statement = json.loads(document["statement"]["payload"])
            stored = call("GET", f"{deployed.keyholder.url}/v1/releases/{LOST}/1/"
                          f"{statement['window']}?kid={statement['kid']}",
                          token=deployed.release_token).json()
            assert stored == document["statement"]
            (budget,) = [m for m in snapshot(deployed).budget if m["metric"] == LOST]
            assert (budget["releases"], budget["spent_epsilon"]) == (1, 1.0)
    finally:
        proxy.close()
