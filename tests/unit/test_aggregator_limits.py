"""Rate limits: per token for valid tokens, per address for everyone else, 429 as a problem."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aggregator_kit import (
    ADMIN,
    INGEST,
    RunningKeyholder,
    make_app,
    make_report,
    post_reports,
    snapshot,
)
from flask import Flask

from blindsum.server.aggregator.app import close_app
from blindsum.server.aggregator.services import Aggregator

LIMITS = {"rate_limit_ingest": "3/minute", "rate_limit_admin": "2/minute",
          "rate_limit_public": "4/minute", "rate_limit_auth_failures": "3/minute"}


@pytest.fixture
def app(tmp_path: Path, keyholder: RunningKeyholder) -> Iterator[Flask]:
    app = make_app(tmp_path, keyholder, **LIMITS)
    yield app
    close_app(app)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_429(response: Any) -> dict[str, Any]:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    problem: dict[str, Any] = response.get_json()
    assert problem["code"] == "rate-limited" and problem["status"] == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    return problem


def test_ingest_over_the_limit_is_429_with_retry_after_and_stores_nothing(
    client: Any, tmp_path: Path
) -> None:
    for _ in range(3):
        assert post_reports(client, [make_report("latency", 1)]).status_code == 200
    before = snapshot(tmp_path)
    problem = _assert_429(post_reports(client, [make_report("latency", 1)]))
    assert "3 per 1 minute" in problem["detail"]
    assert snapshot(tmp_path) == before


def test_each_token_has_its_own_budget(app: Flask, client: Any) -> None:
    service: Aggregator = app.extensions["blindsum.aggregator"]
    other, _ = service.auth._book.create("ingest", "second app")
    for _ in range(3):
        assert post_reports(client, [make_report("visits", 1)]).status_code == 200
    _assert_429(post_reports(client, [make_report("visits", 1)]))
    assert post_reports(client, [make_report("visits", 1)], token=other).status_code == 200
    # the operator's budget is separate from the apps'
    assert client.get("/v1/windows", headers=_bearer(ADMIN)).status_code == 200


def test_admin_budget_is_shared_by_the_admin_routes(client: Any) -> None:
    assert client.get("/v1/windows", headers=_bearer(ADMIN)).status_code == 200
    assert client.post("/v1/windows/release", headers=_bearer(ADMIN)).status_code == 200
    _assert_429(client.get("/v1/windows", headers=_bearer(ADMIN)))


def test_failed_authentication_is_limited_per_address(client: Any, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    for _ in range(3):  # invented tokens: each would be a fresh key if tokens were keys
        invented = secrets.token_urlsafe(32)
        assert post_reports(client, [], body=b"{}", token=invented).status_code == 401
    _assert_429(client.get("/v1/windows"))  # no token at all: the same address's budget
    _assert_429(post_reports(client, [make_report("visits", 1)], token="another-bogus"))
    # a caller with a valid token is not locked out by strangers on its address
    assert post_reports(client, [make_report("visits", 1)], token=INGEST).status_code == 200
    assert client.get("/v1/windows", headers=_bearer(ADMIN)).status_code == 200
    assert snapshot(tmp_path)[0] != before[0]


def test_addresses_have_separate_budgets(client: Any) -> None:
    for _ in range(2):  # strangers share their address's admin budget (2/minute)
        assert client.get("/v1/windows").status_code == 401
    _assert_429(client.get("/v1/windows"))
    elsewhere = client.get("/v1/windows", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert elsewhere.status_code == 401


def test_public_endpoints_are_limited_per_address(client: Any) -> None:
    paths = ["/v1/published", "/v1/manifest", "/healthz", "/"]
    assert [client.get(path).status_code for path in paths] == [200] * 4
    _assert_429(client.get("/openapi.json"))
    assert client.get("/v1/published", environ_base={"REMOTE_ADDR": "192.0.2.8"}
                      ).status_code == 200


def test_limits_can_be_turned_off(tmp_path: Path, keyholder: RunningKeyholder) -> None:
    app = make_app(tmp_path, keyholder, rate_limit_ingest=None, rate_limit_public=None)
    try:
        client = app.test_client()
        assert all(client.get("/v1/published").status_code == 200 for _ in range(20))
        assert all(post_reports(client, [make_report("latency", 1)]).status_code == 200
                   for _ in range(20))
    finally:
        close_app(app)
