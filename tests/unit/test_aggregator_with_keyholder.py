"""The release driver against the real key-holder app, served over HTTP on localhost.

The reports are encrypted under the key-holder's own keys, read from the manifest the
aggregator relays (as an SDK would), so every byte crosses the real wire path.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aggregator_kit import ADMIN, INGEST, post_reports
from flask import Flask
from werkzeug.serving import make_server

from blindsum.server.aggregator.app import close_app, create_app
from blindsum.server.aggregator.config import AggregatorConfig
from blindsum.server.aggregator.keyholder_client import KeyholderClient
from blindsum.server.aggregator.release import GRACE_SECONDS
from blindsum.server.aggregator.services import Aggregator
from blindsum.server.aggregator.store import WindowKey
from blindsum.server.aggregator.windows import window_start
from blindsum.server.http import token_digest
from blindsum.server.keyholder.app import create_app as create_keyholder_app
from blindsum.server.keyholder.config import KeyholderConfig
from blindsum.server.keyholder.service import Keyholder
from blindsum.shared.codec import ReleaseRequest, Report, report_ids_digest
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import Keyring, Manifest, slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.signing import parse_identity, verify_document

PASS = "aggregator tests"
_PRIVACY = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 100.0}
# These tests are about release logic, not client validity: the Paillier metrics skip proofs.
_SUM = {"kind": "sum", "scheme": "paillier", "lower": 0, "upper": 100, "window_seconds": 3600,
        "min_contributors": 2, "allow_early_release": True, "privacy": _PRIVACY,
        "validity": "none"}
_VECTOR = {"kind": "vector", "scheme": "ckks", "lower": 0, "upper": 10, "dimension": 4,
           "window_seconds": 3600, "min_contributors": 2, "allow_early_release": True,
           "privacy": _PRIVACY}
# One metric per test: the key-holder is shared by the module and releases a window once.
POLICIES = [
    MetricPolicy.from_mapping("latency", _SUM),
    MetricPolicy.from_mapping("latency.few", _SUM),
    MetricPolicy.from_mapping("tick", {
        "kind": "count", "scheme": "paillier", "window_seconds": 2, "late_seconds": 0,
        "min_contributors": 2, "privacy": _PRIVACY, "validity": "none"}),
    MetricPolicy.from_mapping("embed", _VECTOR),
    MetricPolicy.from_mapping("embed.crash", _VECTOR),
]


@dataclass(frozen=True)
class RunningKeyholder:
    url: str
    identity: str
    release_token: str


@pytest.fixture(scope="module")
def keyholder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningKeyholder]:
    data_dir = tmp_path_factory.mktemp("keyholder") / "data"
    holder, init = Keyholder.init(data_dir, PASS, paillier_bits=2048)
    holder.add_policies(POLICIES)
    app = create_keyholder_app(KeyholderConfig(data_dir, PASS), holder)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield RunningKeyholder(f"http://127.0.0.1:{server.server_port}", init.identity,
                           init.release_token)
    server.shutdown()
    thread.join(5)


@pytest.fixture
def app(tmp_path: Path, keyholder: RunningKeyholder) -> Iterator[Flask]:
    config = AggregatorConfig(
        data_dir=tmp_path, keyholder_url=keyholder.url, keyholder_identity=keyholder.identity,
        ingest_token_digests=(token_digest(INGEST),), admin_token_digests=(token_digest(ADMIN),),
        release_token=keyholder.release_token,
        auto_release=False, manifest_refresh_seconds=0,
    )
    app = create_app(config)
    yield app
    close_app(app)


def _service(app: Flask) -> Aggregator:
    return app.extensions["blindsum.aggregator"]


def _reports(client: Any, keyholder: RunningKeyholder, metric: str,
             values: list[Any]) -> list[Report]:
    """Encrypt like an SDK: from the relayed manifest, checked against the pinned identity."""
    manifest = Manifest.verify(client.get("/v1/manifest").get_json(),
                               parse_identity(keyholder.identity))
    keyring = Keyring(manifest, lambda kid: client.get(f"/v1/keys/{kid}/context").get_data())
    policy = manifest.policy(metric)
    scheme = keyring.scheme_for(policy)
    encrypted = [tuple(scheme.encrypt(encode(policy, v), slot_spec(policy))) for v in values]
    # The window is read after encrypting: on a loaded machine the first encryption (which
    # builds the randomiser table) can outlast a 2-second window.
    window = window_start(time.time(), policy.window_seconds)
    return [Report(secrets.token_bytes(16), metric, policy.version, scheme.key_id, window,
                   blobs) for blobs in encrypted]


def _send(client: Any, reports: list[Report]) -> None:
    response = post_reports(client, reports)
    assert response.status_code == 200, response.get_data(as_text=True)


def _release(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/windows/release", json=body,
                           headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_early_release_is_signed_by_the_keyholder_and_published(
    app: Flask, keyholder: RunningKeyholder
) -> None:
    client = app.test_client()
    reports = _reports(client, keyholder, "latency", [10, 20, 30, 40])
    _send(client, reports)
    body = _release(client, {"metric": "latency"})
    assert body["refused"] == [] and body["failed"] == []
    [released] = body["released"]
    assert released["report_count"] == 4
    [published] = client.get("/v1/published/latency").get_json()["results"]
    payload = verify_document(published["document"], parse_identity(keyholder.identity), "r")
    assert payload["report_ids_digest"] == report_ids_digest(
        [r.report_id for r in reports]).hex()
    low, high = payload["ci"]
    assert low <= payload["value"] <= high


def test_ckks_window_releases_through_the_keyholder(app: Flask,
                                                   keyholder: RunningKeyholder) -> None:
    client = app.test_client()
    _send(client, _reports(client, keyholder, "embed", [[1, 2, 3, 4]] * 3))
    [released] = _release(client, {"metric": "embed"})["released"]
    assert len(released["value"]) == 4


def test_due_window_is_released_without_early_once_its_time_has_passed(
    app: Flask, keyholder: RunningKeyholder
) -> None:
    client = app.test_client()
    reports = _reports(client, keyholder, "tick", [1, 1, 1])
    _send(client, reports)
    due = reports[0].window + 2
    time.sleep(max(0.0, due + GRACE_SECONDS - time.time()) + 0.05)
    outcomes = _service(app).releases.release_due()
    assert [(o.key.metric, o.status) for o in outcomes] == [("tick", "released")]


def test_too_few_contributors_is_refused_and_an_early_window_stays_open(
    app: Flask, keyholder: RunningKeyholder
) -> None:
    client = app.test_client()
    [report] = _reports(client, keyholder, "latency.few", [5])
    _send(client, [report])
    body = _release(client, {"metric": "latency.few"})
    assert [r["code"] for r in body["refused"]] == ["release-refused"]
    assert "needs at least 2" in body["refused"][0]["detail"]
    row = _service(app).store.window(
        WindowKey("latency.few", 1, report.window, report.key_id))
    assert row is not None and row.state == "open"


def test_release_done_before_a_crash_is_recovered_from_the_keyholder(
    app: Flask, keyholder: RunningKeyholder
) -> None:
    client = app.test_client()
    reports = _reports(client, keyholder, "embed.crash", [[0, 1, 0, 1]] * 2)
    _send(client, reports)
    service = _service(app)
    key = WindowKey("embed.crash", 1, reports[0].window, reports[0].key_id)
    row = service.store.window(key)
    assert row is not None
    # The key-holder releases the window, then the server "crashes" before storing it.
    direct = KeyholderClient(keyholder.url, keyholder.identity, keyholder.release_token)
    digest = report_ids_digest(service.store.report_ids(key))
    first = direct.release(ReleaseRequest("embed.crash", 1, key.window, key.key_id, 2, digest,
                                          row.aggregate, early=True))
    direct.close()
    [again] = _release(client, {"metric": "embed.crash", "window": key.window})["released"]
    assert again["value"] == first.payload["value"]  # the stored result, not a new one
