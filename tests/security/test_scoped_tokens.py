"""Tokens created with ``blindsum server token create``: scoped to metrics, stored hashed,
revocable at once.

A token scoped to metric A may report A and nothing else (a batch naming B is refused as a
whole); a revoked token is 401 from the next request on, on every worker; the token is
never stored or listed in the clear. Skipped on a server without the ``token`` command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from security_kit import (
    batch_body,
    call,
    keyholder_manifest,
    paillier_report,
    per_worker,
    post_reports,
    problem,
    receipt,
    record_error,
    run_cli,
    snapshot,
)

from blindsum.server import cli as blindsum_cli
from blindsum.server.processes import Deployment
from blindsum.shared import codec
from blindsum.shared.manifest import Manifest

pytestmark = pytest.mark.skipif(
    not hasattr(blindsum_cli, "cmd_server_token_create"),
    reason="this server has no `blindsum server token create` (metric-scoped tokens)",
)

A, B = "sec_scoped_a", "sec_scoped_b"


@dataclass(frozen=True)
class Created:
    token: str
    label: str


def _create(dep: Deployment, label: str, *metrics: str, role: str = "ingest") -> Created:
    scope = [arg for metric in metrics for arg in ("--metric", metric)]
    code, out, err, _ = run_cli(["server", "token", "create", "--data-dir",
                                 str(dep.server_dir), "--role", role, "--label", label,
                                 *scope, "--json"], {})
    assert code == 0, err
    created = json.loads(out)
    assert created["metrics"] == (sorted(metrics) or None), created
    return Created(created["token"], created["label"])


@pytest.fixture(scope="module")
def manifest(deployed: Deployment) -> Manifest:
    return keyholder_manifest(deployed)


@pytest.fixture(scope="module")
def scoped(deployed: Deployment) -> Created:
    return _create(deployed, "scoped-to-a", A)


def test_token_scoped_to_a_metric_may_report_that_metric(
    deployed: Deployment, manifest: Manifest, scoped: Created,
) -> None:
    response = post_reports(deployed, [paillier_report(manifest, A, 1)], token=scoped.token)
    assert receipt(response) == (1, 0)


@pytest.mark.parametrize("media", [codec.JSON, codec.CBOR])
def test_token_scoped_to_metric_a_cannot_report_metric_b(
    deployed: Deployment, manifest: Manifest, scoped: Created, media: str,
) -> None:
    before = snapshot(deployed)
    for batch in ([paillier_report(manifest, B, 1)],
                  [paillier_report(manifest, A, 1), paillier_report(manifest, B, 1)]):
        response = post_reports(deployed, batch, token=scoped.token, media=media)
        assert response.status_code == 403, response.text
        body = problem(response)
        assert body["code"] == "forbidden" and B in body["detail"], body
    assert snapshot(deployed) == before


def test_scoped_ingest_token_is_no_admin_token(deployed: Deployment, scoped: Created) -> None:
    before = snapshot(deployed)
    for method, path in (("GET", "/v1/windows"), ("POST", "/v1/windows/release")):
        response = call(method, f"{deployed.server.url}{path}", token=scoped.token,
                        data=b"{}", media=codec.JSON)
        assert response.status_code == 403, response.text
    assert snapshot(deployed) == before


@pytest.fixture
def revocable(deployed: Deployment) -> Created:
    return _create(deployed, "to-be-revoked")


def test_revoked_token_is_refused_at_once_by_every_worker(
    deployed: Deployment, manifest: Manifest, revocable: Created,
) -> None:
    assert receipt(post_reports(deployed, [paillier_report(manifest, A, 1)],
                                token=revocable.token)) == (1, 0)
    code, out, err, _ = run_cli(["server", "token", "revoke", "--data-dir",
                                 str(deployed.server_dir), revocable.label], {})
    assert code == 0, err
    assert revocable.token not in out + err
    before = snapshot(deployed)
    report = paillier_report(manifest, A, 1)
    for _pid, connection in per_worker(deployed):
        connection.request("POST", "/v1/reports", body=batch_body([report]),
                           headers={"Authorization": f"Bearer {revocable.token}",
                                    "Content-Type": codec.JSON})
        answer = connection.getresponse()
        text = answer.read().decode("utf-8", "replace")
        record_error("POST /v1/reports (revoked, pinned)", answer.status, text)
        assert answer.status == 401, text
        assert json.loads(text)["code"] == "unauthorized"
    assert snapshot(deployed) == before


def test_tokens_are_neither_stored_nor_listed_in_the_clear(
    deployed: Deployment, scoped: Created,
) -> None:
    code, out, err, _ = run_cli(["server", "token", "list", "--data-dir",
                                 str(deployed.server_dir), "--json"], {})
    assert code == 0, err
    assert scoped.token not in out
    assert any(row["label"] == scoped.label for row in json.loads(out))
    secret = scoped.token.encode()
    for path in deployed.server_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
