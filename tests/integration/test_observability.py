"""What an operator sees of the running services: metrics that move, JSON logs with request
ids, and a readiness check that is honest about the key-holder and the release token.

Real processes on loopback (``deployment``); metrics are scraped and parsed as Prometheus
would, logs are read from the service log files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from blindsum.client import Client
from blindsum.server.processes import Deployment, deployment, free_port, start_service

POLICIES = [Path(__file__).parent.parent / "policies" / "paillier.toml"]
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("observe"), POLICIES) as running:
        yield running


def scrape(url: str) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    text = requests.get(f"{url}/metrics", timeout=TIMEOUT).text
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, found), v in samples.items()
               if n == name and set(labels.items()) <= found)


def test_metrics_move_as_reports_arrive_and_windows_are_released(deployed: Deployment) -> None:
    _, before = scrape(deployed.server.url)
    with Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                enforce_contribution_limit=False) as sdk:
        for flag in (1, 0, 1, 1):
            sdk.record("opened", flag)
        assert sdk.flush().accepted == 4
    stranger = requests.post(f"{deployed.server.url}/v1/reports", json={"v": 1, "reports": []},
                             headers={"Authorization": "Bearer ing_not-a-token"},
                             timeout=TIMEOUT)
    assert stranger.status_code == 401
    released = requests.post(f"{deployed.server.url}/v1/windows/release", json={
        "metric": "opened"}, headers={"Authorization": f"Bearer {deployed.admin_token}",
                                      "X-Request-Id": "trace-release-42"},
        timeout=TIMEOUT)
    assert released.status_code == 200 and len(released.json()["released"]) == 1
    server_text, after = scrape(deployed.server.url)
    keyholder_text, keyholder = scrape(deployed.keyholder.url)

    accepted = ("blindsum_reports_total", {"outcome": "accepted"})
    assert value(after, accepted[0], **accepted[1]) - value(before, accepted[0],
                                                            **accepted[1]) == 4
    unauthorized = ("blindsum_refused_batches_total", {"reason": "unauthorized"})
    assert value(after, unauthorized[0], **unauthorized[1]) - value(
        before, unauthorized[0], **unauthorized[1]) == 1
    assert value(after, "blindsum_releases_total", outcome="released") >= 1
    assert value(after, "blindsum_windows", state="released") >= 1
    assert value(after, "blindsum_http_requests_total", route="/v1/reports",
                 status="200") >= 1
    assert value(keyholder, "blindsum_releases_total", outcome="released") >= 1
    assert value(keyholder, "blindsum_budget_spent_epsilon", metric="opened") > 0
    for secret in (deployed.ingest_token, deployed.admin_token, deployed.release_token):
        assert secret not in server_text and secret not in keyholder_text


def _log_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_logs_are_json_with_the_request_id_the_client_sent(deployed: Deployment) -> None:
    given = requests.get(f"{deployed.server.url}/v1/manifest", timeout=TIMEOUT,
                         headers={"X-Request-Id": "trace-7f3a.1"})
    assert given.headers["X-Request-Id"] == "trace-7f3a.1"
    made = requests.get(f"{deployed.server.url}/v1/manifest", timeout=TIMEOUT,
                        headers={"X-Request-Id": "not a valid id\u00e9" * 10})
    assert made.headers["X-Request-Id"] != "" and " " not in made.headers["X-Request-Id"]
    deadline = time.monotonic() + 10  # a log line is written just after its answer
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        lines = _log_lines(deployed.server.log_path)  # every line parses as JSON
        if any(line.get("request_id") == "trace-7f3a.1" for line in lines):
            break
        time.sleep(0.1)
    access = [line for line in lines if line.get("request_id") == "trace-7f3a.1"]
    assert access and access[0]["route"] == "/v1/manifest" and access[0]["status"] == 200
    assert {"time", "level", "logger", "message"} <= set(access[0])
    keyholder_lines = _log_lines(deployed.keyholder.log_path)
    assert any(line.get("route") == "/v1/manifest" for line in keyholder_lines)
    # the release of the metrics test above has one line at each service, naming its window
    releases = [line for line in keyholder_lines
                if line.get("logger") == "blindsum.keyholder.releases"]
    assert releases and all(line.get("metric") and "window" in line for line in releases)
    # the server passes its request id on: one release, one id in both services' logs
    assert any(line.get("request_id") == "trace-release-42" for line in releases)
    for path in (deployed.server.log_path, deployed.keyholder.log_path):
        text = path.read_text()
        for secret in (deployed.ingest_token, deployed.admin_token, deployed.release_token):
            assert secret not in text


def test_readiness_is_false_when_the_key_holder_refuses_the_release_token(
    deployed: Deployment, tmp_path: Path,
) -> None:
    ready = requests.get(f"{deployed.server.url}/readyz", timeout=TIMEOUT)
    assert ready.status_code == 200, ready.text
    port = free_port()
    args = ["server", "serve", "--data-dir", str(tmp_path / "server"), "--port", str(port),
            "--keyholder-url", deployed.keyholder.url,
            "--keyholder-identity", deployed.identity]
    env = {"BLINDSUM_RELEASE_TOKEN": "rel_not-the-token", "BLINDSUM_AUTO_RELEASE": "0"}
    server = start_service("server-wrong-token", args, port, tmp_path, env)
    try:
        assert requests.get(f"{server.url}/healthz", timeout=TIMEOUT).status_code == 200
        answer = requests.get(f"{server.url}/readyz", timeout=TIMEOUT)
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        body = answer.json()
        assert body["code"] == "not-ready"
        assert "refuses this server's release token" in body["checks"]["keyholder"]
        assert body["checks"]["storage"] == "ok" and body["checks"]["manifest"] == "ok"
        assert "rel_not-the-token" not in answer.text
    finally:
        server.stop()
