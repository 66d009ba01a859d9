"""Neither service can be starved from one address (issue: 120 idle or slowloris connections
stalled the server, 12 the key-holder, 60 half-sent TLS handshakes the TLS server).

Each test holds hostile connections from 127.0.0.2 (tests/fault/hostile.py) while honest
clients on 127.0.0.1 check health and send authenticated reports through the SDK. An honest
call that has no answer within ``HONEST_TIMEOUT`` fails as starved. Against the plain server,
``HONEST_CLIENTS`` SDK installs ingest at once and their p99 must stay under ``P99_BOUND``
with no 5xx (the issue's bar); elsewhere the latencies are printed (run with ``-s``) for the
runbook, not asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests
from hostile import HostileCrowd, Timed, hostile_crowd, percentile, time_calls

from blindsum.client import Client
from blindsum.server.processes import Deployment

HONEST_TIMEOUT = 5.0
ROUNDS = 15
PER_ADDRESS_CAP = 64  # the serve commands' default
HONEST_CLIENTS = 4
# 120 calls of each kind, so the p99 is not just the slowest call (as with 15 or 60)
HONEST_ROUNDS = 30
P99_BOUND = 1.0  # seconds, the bar for honest ingest under the crowd


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _get(url: str, verify: bool | str, token: str | None = None) -> Callable[[], int]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return lambda: requests.get(url, headers=headers, timeout=HONEST_TIMEOUT,
                                verify=verify).status_code


def _ingest(sdk: Client) -> Callable[[], int]:
    def send() -> int:
        sdk.record("taps", 1)
        receipt = sdk.flush()
        return 200 if receipt.accepted == 1 else 0

    return send


def _assert_all_served(results: list[Timed], what: str) -> None:
    for name in sorted({r.name for r in results}):
        seconds = [r.seconds for r in results if r.name == name]
        print(f"{what}: {name} n={len(seconds)} p50={percentile(seconds, 0.5):.3f}s "
              f"p99={percentile(seconds, 0.99):.3f}s max={max(seconds):.3f}s")
    starved = [r for r in results if r.status != 200]
    assert not starved, f"{what}: honest calls failed: {starved[:5]}"


def _honest_install(deployed: Deployment) -> list[Timed]:
    with Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                verify=deployed.verify, timeout=HONEST_TIMEOUT, max_retries=0,
                enforce_contribution_limit=False) as client:
        client.manifest()  # verified before the crowd, as an app has it
        return time_calls({
            "healthz": _get(f"{deployed.server.url}/healthz", deployed.verify),
            "ingest": _ingest(client),
        }, HONEST_ROUNDS)


def test_server_serves_honest_clients_while_one_address_holds_240_connections(
    deployed: Deployment,
) -> None:
    with hostile_crowd(*_address(deployed.server.url)) as crowd:
        crowd.idle(120)
        crowd.slowloris(120)
        with ThreadPoolExecutor(HONEST_CLIENTS) as pool:
            runs = [pool.submit(_honest_install, deployed) for _ in range(HONEST_CLIENTS)]
            results = [timed for run in runs for timed in run.result()]
        held = crowd.still_open()
    print(f"server: hostile connections opened 240, refused at connect {crowd.refused}, "
          f"still held by the server at the end {held}")
    _assert_all_served(results, f"server, 120 idle + 120 slowloris, {HONEST_CLIENTS} installs")
    server_errors = [r for r in results if isinstance(r.status, int) and r.status >= 500]
    assert not server_errors
    for name in ("healthz", "ingest"):
        p99 = percentile([r.seconds for r in results if r.name == name], 0.99)
        assert p99 < P99_BOUND, f"{name} p99 {p99:.3f}s under the crowd"


def test_keyholder_serves_the_server_while_one_address_holds_240_connections(
    deployed: Deployment,
) -> None:
    with hostile_crowd(*_address(deployed.keyholder.url)) as crowd:
        crowd.idle(120)
        crowd.slowloris(120)
        results = time_calls({
            "healthz": _get(f"{deployed.keyholder.url}/healthz", deployed.verify),
            "budget (release token)": _get(f"{deployed.keyholder.url}/v1/budget",
                                           deployed.verify, deployed.release_token),
            "manifest": _get(f"{deployed.keyholder.url}/v1/manifest", deployed.verify),
        }, ROUNDS)
    _assert_all_served(results, "key-holder, 120 idle + 120 slowloris")


def test_tls_server_serves_while_60_handshakes_hang_half_sent(tls_deployed: Deployment) -> None:
    with Client(tls_deployed.server.url, tls_deployed.ingest_token, tls_deployed.identity,
                verify=tls_deployed.verify, timeout=HONEST_TIMEOUT, max_retries=0,
                enforce_contribution_limit=False) as client:
        assert client.manifest().serial >= 1
        with hostile_crowd(*_address(tls_deployed.server.url)) as crowd:
            crowd.half_handshakes(60)
            results = time_calls({
                "healthz": _get(f"{tls_deployed.server.url}/healthz", tls_deployed.verify),
                "ingest": _ingest(client),
            }, ROUNDS)
    _assert_all_served(results, "TLS server, 60 half-sent handshakes")


def _wait_until_at_most(crowd: HostileCrowd, count: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    open_now = crowd.still_open()
    while open_now > count and time.monotonic() < deadline:
        time.sleep(0.2)
        open_now = crowd.still_open()
    return open_now


def test_connections_beyond_the_per_address_cap_are_closed_at_once(
    deployed: Deployment,
) -> None:
    # the key-holder runs one worker, so its cap is the whole service's
    with hostile_crowd(*_address(deployed.keyholder.url)) as crowd:
        crowd.idle(PER_ADDRESS_CAP + 40)
        held = _wait_until_at_most(crowd, PER_ADDRESS_CAP, seconds=5)
        assert held <= PER_ADDRESS_CAP
        health = requests.get(f"{deployed.keyholder.url}/healthz", timeout=HONEST_TIMEOUT)
        assert health.status_code == 200


@pytest.mark.slow
def test_silent_and_trickling_connections_are_dropped_by_the_deadlines(
    deployed: Deployment, tls_deployed: Deployment,
) -> None:
    with hostile_crowd(*_address(deployed.server.url)) as plain, \
            hostile_crowd(*_address(tls_deployed.server.url)) as tls:
        plain.idle(20)
        plain.slowloris(20)
        tls.half_handshakes(20)
        # read deadline 10 s, request-head deadline 5 s (server/worker.py), plus slack
        assert _wait_until_at_most(plain, 0, seconds=30) == 0
        assert _wait_until_at_most(tls, 0, seconds=30) == 0
