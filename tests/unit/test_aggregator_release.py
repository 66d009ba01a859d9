"""The release driver against the real key-holder, served over HTTP (``aggregator_kit``).

Released values are noised by the key-holder, so a test checks what the server summed on
its stored aggregate (decrypted with the key-holder's key), what the key-holder did in its
audit log and ledger, and that the server stores and publishes exactly the signed result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aggregator_kit import (
    ADMIN,
    HOUR,
    INGEST,
    T0,
    RunningKeyholder,
    decrypt_window,
    make_app,
    make_report,
    paillier_kid,
    pinned,
    post_reports,
    snapshot,
)
from flask import Flask

from blindsum.server.aggregator.app import close_app
from blindsum.server.aggregator.keyholder_client import KeyholderClient
from blindsum.server.aggregator.release import GRACE_SECONDS, RETRY_SECONDS, ReleaseDriver
from blindsum.server.aggregator.services import Aggregator
from blindsum.server.aggregator.store import WindowKey
from blindsum.shared.codec import ReleaseRequest, report_ids_digest
from blindsum.shared.signing import verify_document

WINDOW = T0 - T0 % HOUR


def _latency() -> WindowKey:
    return WindowKey("latency", 1, WINDOW, paillier_kid())


def _visits() -> WindowKey:
    return WindowKey("visits", 1, WINDOW, paillier_kid())


@pytest.fixture
def service(app: Flask) -> Aggregator:
    return app.extensions["blindsum.aggregator"]


@pytest.fixture
def driver(service: Aggregator) -> ReleaseDriver:
    return service.releases


def _send(client: Any, metric: str, values: list[Any]) -> None:
    response = post_reports(client, [make_report(metric, v) for v in values])
    assert response.status_code == 200, response.get_data(as_text=True)


def _state(service: Aggregator, key: WindowKey) -> tuple[str, str | None]:
    row = service.store.window(key)
    assert row is not None
    return row.state, row.detail


def _admin(client: Any, method: str, path: str, body: Any = None,
           token: str = ADMIN) -> Any:
    return client.open(path, method=method, json=body,
                       headers={"Authorization": f"Bearer {token}"})


def _direct_release(keyholder: RunningKeyholder, request: ReleaseRequest) -> dict[str, Any]:
    """Release at the key-holder behind the server's back (as before a server crash)."""
    direct = KeyholderClient(keyholder.url, keyholder.identity, keyholder.release_token)
    try:
        return direct.release(request).payload
    finally:
        direct.close()


# -- releases when due ---------------------------------------------------------------------


def test_due_window_is_released_stored_and_published(
    client: Any, service: Aggregator, driver: ReleaseDriver, keyholder: RunningKeyholder
) -> None:
    _send(client, "latency", [10, 20, 30])
    assert decrypt_window(service.config.data_dir, "latency") == [60]
    keyholder.clock.now = WINDOW + HOUR + 600 + GRACE_SECONDS
    outcomes = driver.release_due()
    assert [(o.key, o.status) for o in outcomes] == [(_latency(), "released")]
    assert _state(service, _latency()) == ("released", None)

    [request] = keyholder.events("release-paid")
    assert request["report_count"] == 3 and request["early"] is False
    stored_ids = [row[0] for row in snapshot(service.config.data_dir)[0]]
    assert request["report_ids_digest"] == report_ids_digest(stored_ids).hex()

    published = client.get("/v1/published").get_json()["results"]
    assert len(published) == 1
    result = published[0]
    assert (result["metric"], result["window"]) == ("latency", WINDOW)
    assert result["document"] == keyholder.released("latency", WINDOW)  # as signed, unchanged
    payload = verify_document(result["document"], pinned(), "result")
    assert payload["report_count"] == 3 and result["value"] == payload["value"]
    assert client.get("/v1/published/latency").get_json()["results"] == published
    assert client.get("/v1/published/visits").get_json() == {"results": []}
    assert client.get("/v1/published/nosuch").status_code == 404


def test_dashboard_lists_published_results(app: Flask, client: Any, driver: ReleaseDriver,
                                           service: Aggregator,
                                           keyholder: RunningKeyholder) -> None:
    assert "No results have been published yet" in client.get("/").get_data(as_text=True)
    _send(client, "pages", [0.5, 1.5, 1.5])
    keyholder.clock.now = WINDOW + HOUR + GRACE_SECONDS
    assert [o.status for o in driver.release_due()] == ["released"]
    page = client.get("/")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    assert '<a href="/metrics/pages"><code>pages</code></a>' in html
    assert "http" not in html.split("<body>")[1]  # no external assets or links


def test_window_is_not_released_before_it_is_due(client: Any, driver: ReleaseDriver,
                                                 keyholder: RunningKeyholder) -> None:
    _send(client, "latency", [1, 2])
    keyholder.clock.now = WINDOW + HOUR + 599  # latency: late_seconds = 600
    assert driver.release_due() == []
    keyholder.clock.now = WINDOW + HOUR + 600  # due, but within the grace period
    assert driver.release_due() == []
    assert keyholder.events("release", "release-refused") == []


def test_release_refused_below_min_contributors_marks_the_window_refused(
    client: Any, service: Aggregator, driver: ReleaseDriver, keyholder: RunningKeyholder
) -> None:
    _send(client, "latency", [5])
    keyholder.clock.now = WINDOW + 2 * HOUR
    [outcome] = driver.release_due()
    assert (outcome.status, outcome.code) == ("refused", "release-refused")
    state, detail = _state(service, _latency())
    assert state == "refused" and "needs at least 2" in (detail or "")
    assert driver.release_due() == []  # refusals are final
    assert len(keyholder.events("release", "release-refused")) == 1
    assert client.get("/v1/published").get_json() == {"results": []}


def test_unreachable_keyholder_leaves_the_window_sealed_and_it_is_retried(
    client: Any, service: Aggregator, driver: ReleaseDriver, keyholder: RunningKeyholder
) -> None:
    _send(client, "latency", [1, 2])
    keyholder.clock.now = WINDOW + 2 * HOUR
    keyholder.stop()
    [outcome] = driver.release_due()
    assert (outcome.status, outcome.code) == ("failed", "upstream")
    assert _state(service, _latency())[0] == "sealed"
    keyholder.start()
    assert driver.release_due() == []  # not before the retry delay
    keyholder.clock.now += RETRY_SECONDS
    [outcome] = driver.release_due()
    assert outcome.status == "released" and outcome.payload is not None
    assert outcome.payload == json.loads(keyholder.released("latency", WINDOW)["payload"])


def test_window_sealed_by_a_crashed_worker_is_claimed_again_after_its_lease(
    client: Any, service: Aggregator, driver: ReleaseDriver, keyholder: RunningKeyholder
) -> None:
    _send(client, "latency", [1, 2])
    keyholder.clock.now = WINDOW + 2 * HOUR
    with service.store.transaction() as tx:
        assert tx.claim_window(_latency(), keyholder.clock.now, lease=300)
    assert driver.release_due() == []  # another worker holds it
    keyholder.clock.now += 301
    assert [o.status for o in driver.release_due()] == ["released"]


def test_result_stored_at_the_keyholder_before_a_crash_is_recovered(
    client: Any, service: Aggregator, driver: ReleaseDriver, keyholder: RunningKeyholder
) -> None:
    _send(client, "latency", [4, 5])
    keyholder.clock.now = WINDOW + 2 * HOUR
    row = service.store.window(_latency())
    assert row is not None
    # The key-holder released this exact window, then the server died before storing it.
    first = _direct_release(keyholder, ReleaseRequest(
        "latency", 1, WINDOW, paillier_kid(), 2,
        report_ids_digest(service.store.report_ids(_latency())), row.aggregate))
    [outcome] = driver.release_due()
    assert outcome.status == "released" and outcome.payload is not None
    assert outcome.payload == first  # the stored result, not a second release
    assert len(keyholder.events("release")) == 1


def test_window_released_before_with_other_reports_is_refused(
    client: Any, service: Aggregator, driver: ReleaseDriver, keyholder: RunningKeyholder
) -> None:
    _send(client, "latency", [4, 5])
    keyholder.clock.now = WINDOW + 2 * HOUR
    row = service.store.window(_latency())
    assert row is not None
    _direct_release(keyholder, ReleaseRequest("latency", 1, WINDOW, paillier_kid(), 2,
                                              b"\x00" * 32, row.aggregate))
    [outcome] = driver.release_due()
    assert (outcome.status, outcome.code) == ("refused", "already-released")
    assert _state(service, _latency())[0] == "refused"
    assert client.get("/v1/published").get_json() == {"results": []}


def test_two_claims_on_one_window_have_one_winner(client: Any, service: Aggregator) -> None:
    _send(client, "latency", [1])
    with service.store.transaction() as tx:
        assert tx.claim_window(_latency(), T0, lease=300)
    with service.store.transaction() as tx:
        assert not tx.claim_window(_latency(), T0, lease=300)


# -- operator releases ---------------------------------------------------------------------


def test_operator_releases_an_open_window_early_when_the_policy_allows(
    client: Any, service: Aggregator, keyholder: RunningKeyholder
) -> None:
    _send(client, "latency", [7, 8])
    assert decrypt_window(service.config.data_dir, "latency") == [15]
    response = _admin(client, "POST", "/v1/windows/release", {"metric": "latency"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["refused"] == [] and body["failed"] == []
    signed = json.loads(keyholder.released("latency", WINDOW)["payload"])
    assert [(r["metric"], r["window"], r["value"]) for r in body["released"]] == [
        ("latency", WINDOW, signed["value"])]
    assert keyholder.events("release-paid")[0]["early"] is True
    assert _state(service, _latency())[0] == "released"
    later = post_reports(client, [make_report("latency", 1)])
    assert later.status_code == 409 and "released" in later.get_json()["detail"]


def test_early_release_refused_by_policy_keeps_the_window_open(
    client: Any, service: Aggregator
) -> None:
    _send(client, "visits", [1, 1])
    body = _admin(client, "POST", "/v1/windows/release",
                  {"metric": "visits", "window": WINDOW}).get_json()
    assert body["released"] == []
    assert [r["code"] for r in body["refused"]] == ["release-refused"]
    assert "forbids early release" in body["refused"][0]["detail"]
    assert _state(service, _visits())[0] == "open"
    _send(client, "visits", [1])  # the window still takes reports


def test_operator_release_without_a_body_releases_every_open_window(
    client: Any, keyholder: RunningKeyholder
) -> None:
    _send(client, "latency", [1, 2])
    _send(client, "pages", [1, 2])
    keyholder.clock.now = WINDOW + 2 * HOUR
    body = _admin(client, "POST", "/v1/windows/release").get_json()
    assert sorted(r["metric"] for r in body["released"]) == ["latency", "pages"]


@pytest.mark.parametrize("body, status, fragment", [
    ({"metric": "latency", "colour": 1}, 400, "unknown fields ['colour']"),
    ({"metric": "Bad Name"}, 400, "release.metric"),
    ({"window": "soon"}, 400, "release.window"),
    ([1, 2], 400, "must be an object"),
    ({"metric": "latency", "window": WINDOW - HOUR}, 404, "no reports"),
])
def test_operator_release_request_is_validated(client: Any, body: Any, status: int,
                                               fragment: str) -> None:
    response = _admin(client, "POST", "/v1/windows/release", body)
    assert response.status_code == status
    assert fragment in response.get_json()["detail"]


def test_releasing_a_released_window_again_is_409(client: Any, keyholder: RunningKeyholder,
                                                  driver: ReleaseDriver) -> None:
    _send(client, "latency", [1, 2])
    keyholder.clock.now = WINDOW + 2 * HOUR
    driver.release_due()
    response = _admin(client, "POST", "/v1/windows/release",
                      {"metric": "latency", "window": WINDOW})
    assert response.status_code == 409
    assert response.get_json()["code"] == "already-released"


def test_windows_listing_is_for_operators_only(client: Any) -> None:
    _send(client, "latency", [1, 2])
    rows = _admin(client, "GET", "/v1/windows").get_json()["windows"]
    assert [(r["metric"], r["window"], r["kid"], r["report_count"], r["state"])
            for r in rows] == [("latency", WINDOW, paillier_kid(), 2, "open")]
    assert _admin(client, "GET", "/v1/windows?state=released").get_json() == {"windows": []}
    assert _admin(client, "GET", "/v1/windows?state=bogus").status_code == 400
    assert _admin(client, "GET", "/v1/windows", token=INGEST).status_code == 403
    assert _admin(client, "POST", "/v1/windows/release", {}, token=INGEST).status_code == 403
    assert client.get("/v1/windows").status_code == 401


# -- the background thread -----------------------------------------------------------------


def test_background_thread_releases_due_windows(tmp_path: Path,
                                               keyholder: RunningKeyholder) -> None:
    app = make_app(tmp_path, keyholder, auto_release=True, release_interval_seconds=0.05)
    try:
        client = app.test_client()
        _send(client, "latency", [3, 4])  # the first request starts the thread
        assert decrypt_window(tmp_path, "latency") == [7]
        keyholder.clock.now = WINDOW + 2 * HOUR
        deadline = time.monotonic() + 10
        service: Aggregator = app.extensions["blindsum.aggregator"]
        while time.monotonic() < deadline and _state(service, _latency())[0] != "released":
            time.sleep(0.05)
        assert _state(service, _latency())[0] == "released"
        assert service.store.results()[0].document == keyholder.released("latency", WINDOW)
    finally:
        close_app(app)
    assert not app.extensions["blindsum.aggregator"].ticker.running
