"""Over TLS, clients talk only to a server whose certificate they can verify.

Both services serve HTTPS with a certificate from a fresh loopback CA, and the server
verifies the key-holder against that CA. An SDK given the CA bundle works; one relying on
the system CAs refuses the server before sending anything; plain HTTP to an HTTPS port
gets nowhere; a server not given the CA refuses the key-holder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from security_kit import (
    NO_RATE_LIMITS,
    batch_body,
    keyholder_manifest,
    paillier_report,
    record_error,
    running,
    service_env,
    snapshot,
    wait_until,
)

from blindsum.client import Client
from blindsum.server.processes import Deployment, deployment, free_port
from blindsum.shared import codec
from blindsum.shared.errors import UpstreamError

POLICIES = Path(__file__).parent.parent / "policies"
METRIC = "opened"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("tls"), [POLICIES / "paillier.toml"],
                    server_env=NO_RATE_LIMITS, tls=True) as running_tls:
        assert running_tls.server.url.startswith("https://")
        assert running_tls.keyholder.url.startswith("https://")
        yield running_tls


def test_sdk_with_the_ca_bundle_delivers_over_tls(dep: Deployment) -> None:
    assert dep.ca_bundle
    with Client(dep.server.url, dep.ingest_token, dep.identity, verify=dep.ca_bundle,
                enforce_contribution_limit=False) as sdk:
        sdk.record(METRIC, 1)
        sent = sdk.flush()
    assert (sent.accepted, sent.duplicates) == (1, 0)


def test_sdk_without_the_ca_bundle_refuses_the_server_and_sends_nothing(
    dep: Deployment,
) -> None:
    before = snapshot(dep)
    sdk = Client(dep.server.url, dep.ingest_token, dep.identity, verify=True, max_retries=0,
                 enforce_contribution_limit=False)
    try:
        with pytest.raises(UpstreamError) as refusal:
            sdk.record(METRIC, 1)
        record_error("sdk", 0, refusal.value.detail)
        detail = refusal.value.detail
        assert "TLS" in detail and "certificate" in detail.lower(), detail
        assert sdk.pending == 0
    finally:
        sdk.close()
    assert snapshot(dep) == before


@pytest.mark.parametrize("service", ["server", "keyholder"])
def test_plain_http_to_an_https_port_gets_nowhere(dep: Deployment, service: str) -> None:
    url = (dep.server.url if service == "server" else dep.keyholder.url).replace(
        "https://", "http://")
    report = paillier_report(keyholder_manifest(dep), METRIC, 1)
    path, token = (("/v1/reports", dep.ingest_token) if service == "server"
                   else ("/v1/budget", dep.release_token))
    before = snapshot(dep)
    answer: requests.Response | None = None
    with contextlib.suppress(requests.ConnectionError):
        answer = requests.post(f"{url}{path}", data=batch_body([report]), timeout=10,
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": codec.JSON})
    if answer is not None:  # some TLS servers answer plain HTTP with an error page
        record_error(f"plain http {service}", answer.status_code, answer.text)
        assert 400 <= answer.status_code < 500, answer.text[:200]
    assert snapshot(dep) == before


def test_server_without_the_ca_bundle_refuses_the_keyholders_certificate(
    dep: Deployment, tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in service_env(dep, passphrase=False).items()
           if k != "BLINDSUM_CA_BUNDLE"}
    args = ["server", "serve", "--data-dir", str(tmp_path / "server"), "--port", str(port),
            "--keyholder-url", dep.keyholder.url, "--keyholder-identity", dep.identity]
    with running("server-without-ca", args, port, tmp_path, env, wait=False) as server:
        health: list[requests.Response] = []

        def answered() -> bool:
            with contextlib.suppress(requests.ConnectionError):
                health.append(requests.get(f"{server.url}/healthz", timeout=10))
                return True
            return False

        assert wait_until(answered, 30), server.log_tail()
        assert health[-1].status_code == 503, health[-1].text
        assert "SSLError" in health[-1].json()["detail"], health[-1].text
