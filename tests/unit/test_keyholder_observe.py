"""The key-holder's operator endpoints, added around its app by ``instrument``."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from blindsum.server.keyholder.app import create_app
from blindsum.server.keyholder.config import KeyholderConfig
from blindsum.server.keyholder.observe import instrument
from blindsum.server.keyholder.service import InitResult, Keyholder
from blindsum.shared import codec
from blindsum.shared.codec import ReleaseRequest
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.schemes.paillier import PaillierPublic

Served = tuple[Any, Keyholder, InitResult]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, test_policies) -> Served:  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("khobs") / "kh"
    holder, init = Keyholder.init(data_dir, "pass", paillier_bits=2048)
    holder.add_policies(test_policies)
    app = instrument(create_app(KeyholderConfig(data_dir, "pass"), holder))
    return app.test_client(), holder, init


@pytest.fixture(scope="module")
def client(deployed: Served) -> Any:
    return deployed[0]


def test_readiness_checks_the_data_directory(client: Any) -> None:
    answer = client.get("/readyz")
    assert answer.status_code == 200 and answer.get_json() == {"status": "ready"}


def test_metrics_show_the_budget_of_every_metric_and_count_refused_releases(
    client: Any, test_policies,  # type: ignore[no-untyped-def]
) -> None:
    refused = client.post("/v1/releases", data=b"{}", content_type="application/json",
                          headers={"Authorization": "Bearer not-the-token"})
    assert refused.status_code == 401
    families = {f.name: f for f in text_string_to_metric_families(
        client.get("/metrics").get_data(as_text=True))}
    remaining = {s.labels["metric"]: s.value
                 for s in families["blindsum_budget_remaining_epsilon"].samples}
    assert set(remaining) == {p.name for p in test_policies}
    assert all(value > 0 for value in remaining.values())
    releases = [s for s in families["blindsum_releases"].samples
                if s.name == "blindsum_releases_total"]
    assert [(s.labels["outcome"], s.labels["reason"], s.value) for s in releases] == [
        ("refused", "unauthorized", 1.0)]


def test_request_id_is_echoed(client: Any) -> None:
    answer = client.get("/v1/manifest", headers={"X-Request-Id": "abc-123"})
    assert answer.headers["X-Request-Id"] == "abc-123"


def _early_release(client: Any, holder: Keyholder, metric: str) -> ReleaseRequest:
    """A valid early release of the current window of ``metric`` over three reports."""
    manifest = Manifest.verify(client.get("/v1/manifest").get_json(),
                               holder.identity.public_key())
    policy, key = manifest.policy(metric), manifest.active_key("paillier")
    public = PaillierPublic.from_json(key.public)
    spec = slot_spec(policy)
    reports = [public.load(public.encrypt(encode(policy, 1), spec), spec) for _ in range(3)]
    return ReleaseRequest(metric, policy.version, policy.window_start(time.time()), key.key_id,
                          3, secrets.token_bytes(32), tuple(public.dump(public.add_many(reports))),
                          early=True)


def test_each_release_logs_its_window_and_a_lost_answer_retry_counts_as_repeated(
    deployed: Served, caplog: pytest.LogCaptureFixture,
) -> None:
    client, holder, init = deployed
    body = codec.dumps(_early_release(client, holder, "opened").to_wire())
    headers = {"Authorization": f"Bearer {init.release_token}"}
    with caplog.at_level(logging.INFO, logger="blindsum.keyholder.releases"):
        first = client.post("/v1/releases", data=body, content_type=codec.JSON, headers=headers)
        again = client.post("/v1/releases", data=body, content_type=codec.JSON, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    lines = [r for r in caplog.records if r.name == "blindsum.keyholder.releases"]
    assert [r.fields["outcome"] for r in lines] == ["released", "repeated"]  # type: ignore[attr-defined]
    window = ReleaseRequest.from_wire(codec.loads(body)).window
    for record in lines:
        assert record.fields["metric"] == "opened"  # type: ignore[attr-defined]
        assert record.fields["window"] == window  # type: ignore[attr-defined]
        assert f"window {window}" in record.getMessage()
    scraped = client.get("/metrics").get_data(as_text=True)
    samples = {(s.labels["outcome"], s.labels["reason"]): s.value
               for f in text_string_to_metric_families(scraped)
               if f.name == "blindsum_releases" for s in f.samples
               if s.name == "blindsum_releases_total"}
    assert samples[("released", "")] >= 1 and samples[("repeated", "")] >= 1
