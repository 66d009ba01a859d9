"""Hostile path segments (huge integers, odd names, traversal attempts) get a 4xx problem,
never a 5xx, and change nothing.

Found by the OpenAPI fuzzing: the key-holder's ``GET /v1/releases/{metric}/{version}/{window}``
took any integer its route matched and handed it to SQLite, which cannot bind one above
2**63 - 1 (OverflowError): a 500 instead of a 404. ``Releaser.stored`` now answers "never
released" for a version or window beyond what any release can carry.
"""

from __future__ import annotations

import pytest
from security_kit import call, problem, snapshot

from blindsum.server.processes import Deployment

HUGE = {"2**63": str(2**63), "20 digits": "9" * 20, "401 digits": "1" + "0" * 400}


@pytest.mark.parametrize("huge", HUGE.values(), ids=HUGE.keys())
@pytest.mark.parametrize("where", ["version", "window"])
def test_stored_release_lookup_with_a_huge_integer_is_not_found(
    deployed: Deployment, where: str, huge: str,
) -> None:
    version, window = (huge, "0") if where == "version" else ("1", huge)
    before = snapshot(deployed)
    response = call("GET", f"{deployed.keyholder.url}/v1/releases/opened/{version}/{window}",
                    token=deployed.release_token)
    assert response.status_code == 404, response.text
    assert problem(response)["code"] == "not-found"
    assert snapshot(deployed) == before


ODD_SEGMENTS = ["%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%2F..%2Fkeyholder.db", "a" * 3000,
                "%00", "%F0%9F%92%A5", "pai-" + "9" * 400, "%25s%25s%25n", "'%20OR%201=1--"]


@pytest.mark.parametrize("segment", ODD_SEGMENTS)
@pytest.mark.parametrize("template", [
    "server:/v1/published/{}", "server:/v1/keys/{}/context", "keyholder:/v1/keys/{}/context",
    "keyholder:/v1/releases/{}/1/0", "server:/v1/published/{}/export.csv", "server:/metrics/{}",
])
def test_odd_path_segments_get_a_4xx_problem(
    deployed: Deployment, template: str, segment: str,
) -> None:
    service, path = template.split(":", 1)
    base = deployed.server.url if service == "server" else deployed.keyholder.url
    token = deployed.release_token if "/v1/releases/" in path else None
    before = snapshot(deployed)
    response = call("GET", base + path.format(segment), token=token)
    assert 400 <= response.status_code < 500, response.text[:300]
    problem(response)
    assert snapshot(deployed) == before


@pytest.mark.parametrize("service", ["server", "keyholder"])
def test_request_line_beyond_the_http_layers_limit_is_refused_before_the_app(
    deployed: Deployment, service: str,
) -> None:
    """gunicorn refuses a request line over 4094 bytes itself (414, an HTML page): the one
    error answer that is not a problem document, and it carries nothing internal."""
    base = deployed.server.url if service == "server" else deployed.keyholder.url
    response = call("GET", f"{base}/v1/published/{'a' * 5000}")
    assert response.status_code == 414, response.text[:300]
