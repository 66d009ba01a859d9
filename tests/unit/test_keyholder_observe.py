"""The key-holder's operator endpoints, added around its app by ``instrument``."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from blindsum.server.keyholder.app import create_app
from blindsum.server.keyholder.config import KeyholderConfig
from blindsum.server.keyholder.observe import instrument
from blindsum.server.keyholder.service import Keyholder


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, test_policies) -> Any:  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("khobs") / "kh"
    holder, _ = Keyholder.init(data_dir, "pass", paillier_bits=2048)
    holder.add_policies(test_policies)
    return instrument(create_app(KeyholderConfig(data_dir, "pass"), holder)).test_client()


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
