"""Every protected endpoint of both services refuses callers without the right credential.

Each request carries a body that *would* work with the right token (a valid report batch,
a release filter naming an open window of three reports, a release request with a real
aggregate), so a check that let it through would change the state compared afterwards.

What "another role" means differs per service. The server knows ingest and admin tokens: one
of them on the other's endpoint is 403. The key-holder knows only the release token, so the
server's ingest and admin tokens are *unknown* there (401), and the release token is unknown
at the server (401): a service never learns another service's credentials.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import requests
from security_kit import (
    batch_body,
    call,
    closed_window,
    keyholder_manifest,
    paillier_report,
    post_reports,
    problem,
    receipt,
    snapshot,
    valid_release,
)

from blindsum.server.processes import Deployment
from blindsum.shared import codec

VICTIM = "sec_victim"


@dataclass(frozen=True)
class Endpoint:
    service: str  # "server" | "keyholder"
    method: str
    path: str
    role: str
    body: bytes | None = None


@pytest.fixture(scope="module")
def endpoints(deployed: Deployment) -> dict[str, Endpoint]:
    """The protected endpoints, each with a body its rightful caller could use."""
    manifest = keyholder_manifest(deployed)
    # an open window of three reports an intruder would like to release early
    victims = [paillier_report(manifest, VICTIM, 1) for _ in range(3)]
    assert receipt(post_reports(deployed, victims)) == (3, 0)
    window = closed_window(manifest.policy(VICTIM), 2)
    release = valid_release(manifest, VICTIM, window, [1, 1, 1])
    fresh_batch = batch_body([paillier_report(manifest, VICTIM, 1)])
    return {
        "reports": Endpoint("server", "POST", "/v1/reports", "ingest", fresh_batch),
        "windows": Endpoint("server", "GET", "/v1/windows", "admin"),
        "release-windows": Endpoint("server", "POST", "/v1/windows/release", "admin",
                                    codec.dumps({"metric": VICTIM})),
        "releases": Endpoint("keyholder", "POST", "/v1/releases", "release",
                             codec.dumps(release.to_wire())),
        "stored-release": Endpoint("keyholder", "GET", f"/v1/releases/{VICTIM}/1/{window}",
                                   "release"),
        "budget": Endpoint("keyholder", "GET", "/v1/budget", "release"),
    }


def _send(dep: Deployment, endpoint: Endpoint, headers: dict[str, str]) -> requests.Response:
    base = dep.server.url if endpoint.service == "server" else dep.keyholder.url
    media = codec.JSON if endpoint.body is not None else None
    return call(endpoint.method, base + endpoint.path, headers=headers, data=endpoint.body,
                media=media)


def _token_of(dep: Deployment, role: str) -> str:
    return {"ingest": dep.ingest_token, "admin": dep.admin_token,
            "release": dep.release_token}[role]


def _other_role_here(dep: Deployment, role: str) -> dict[str, str]:
    other = {"ingest": "admin", "admin": "ingest"}[role]
    return {"Authorization": f"Bearer {_token_of(dep, other)}"}


# Authorization headers that identify no one: each maker gets the deployment and the role
# the endpoint wants (so a header can be the right token, mangled).
Credential = Callable[[Deployment, str], dict[str, str]]
NOBODY: dict[str, Credential] = {
    "no header": lambda dep, role: {},
    "unknown token": lambda dep, role: {"Authorization": "Bearer " + secrets.token_urlsafe(24)},
    "empty bearer": lambda dep, role: {"Authorization": "Bearer "},
    "basic scheme": lambda dep, role: {"Authorization": "Basic " + _token_of(dep, role)},
    "token without scheme": lambda dep, role: {"Authorization": _token_of(dep, role)},
    "token with a suffix": lambda dep, role: {"Authorization":
                                              f"Bearer {_token_of(dep, role)}x"},
    "token truncated": lambda dep, role: {"Authorization":
                                          f"Bearer {_token_of(dep, role)[:-1]}"},
    "long token": lambda dep, role: {"Authorization": "Bearer " + "A" * 4000},
}


@pytest.mark.parametrize("credential", sorted(NOBODY))
@pytest.mark.parametrize("name", ["reports", "windows", "release-windows", "releases",
                                  "stored-release", "budget"])
def test_protected_endpoint_refuses_a_missing_or_unknown_token(
    deployed: Deployment, endpoints: dict[str, Endpoint], name: str, credential: str,
) -> None:
    endpoint = endpoints[name]
    before = snapshot(deployed)
    response = _send(deployed, endpoint, NOBODY[credential](deployed, endpoint.role))
    assert response.status_code == 401, response.text
    assert problem(response)["code"] == "unauthorized"
    assert snapshot(deployed) == before


@pytest.mark.parametrize("name", ["reports", "windows", "release-windows"])
def test_server_refuses_a_token_of_the_other_role_with_403(
    deployed: Deployment, endpoints: dict[str, Endpoint], name: str,
) -> None:
    endpoint = endpoints[name]
    before = snapshot(deployed)
    response = _send(deployed, endpoint, _other_role_here(deployed, endpoint.role))
    assert response.status_code == 403, response.text
    assert problem(response)["code"] == "forbidden"
    assert "windows" not in response.json()
    assert snapshot(deployed) == before


@pytest.mark.parametrize("name", ["reports", "windows", "release-windows"])
def test_server_does_not_know_the_keyholders_release_token(
    deployed: Deployment, endpoints: dict[str, Endpoint], name: str,
) -> None:
    before = snapshot(deployed)
    response = _send(deployed, endpoints[name],
                     {"Authorization": f"Bearer {deployed.release_token}"})
    assert response.status_code == 401, response.text
    assert problem(response)["code"] == "unauthorized"
    assert snapshot(deployed) == before


@pytest.mark.parametrize("role", ["ingest", "admin"])
@pytest.mark.parametrize("name", ["releases", "stored-release", "budget"])
def test_keyholder_refuses_the_servers_app_and_operator_tokens(
    deployed: Deployment, endpoints: dict[str, Endpoint], name: str, role: str,
) -> None:
    before = snapshot(deployed)
    response = _send(deployed, endpoints[name],
                     {"Authorization": f"Bearer {_token_of(deployed, role)}"})
    assert response.status_code == 401, response.text
    body = problem(response)
    assert body["code"] == "unauthorized"
    assert "payload" not in body and "metrics" not in body
    assert snapshot(deployed) == before


def test_the_rightful_token_is_what_makes_the_same_requests_work(
    deployed: Deployment, endpoints: dict[str, Endpoint],
) -> None:
    """The control: with the right token the very same requests do act, so the refusals
    above are the credential checks at work, not bodies that would fail anyway."""
    reports = endpoints["reports"]
    accepted = _send(deployed, reports, {"Authorization": f"Bearer {deployed.ingest_token}"})
    assert receipt(accepted) == (1, 0)
    budget = _send(deployed, endpoints["budget"],
                   {"Authorization": f"Bearer {deployed.release_token}"})
    assert budget.status_code == 200 and budget.json()["metrics"]
    # The release request is granted by the key-holder (a real aggregate of 3 reports).
    before = {m["metric"]: m["spent_epsilon"] for m in budget.json()["metrics"]}
    granted = _send(deployed, endpoints["releases"],
                    {"Authorization": f"Bearer {deployed.release_token}"})
    assert granted.status_code == 201, granted.text
    after = snapshot(deployed).budget
    assert {m["metric"]: m["spent_epsilon"] for m in after}[VICTIM] == before[VICTIM] + 1.0


def test_victim_window_stays_open_after_the_refused_attempts(deployed: Deployment) -> None:
    rows = [w for w in snapshot(deployed).windows if w["metric"] == VICTIM]
    assert rows and all(row["state"] == "open" for row in rows), rows
    published = call("GET", f"{deployed.server.url}/v1/published/{VICTIM}")
    assert published.status_code == 200 and published.json()["results"] == []
