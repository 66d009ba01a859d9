"""A retired key takes no more reports once the server has the new manifest, on every
worker; the new key works; an SDK created before the rotation moves to the new key by
itself; windows collected under the retired key can still be released.

The rotation and the retirement are the operator's CLI commands, run while both services
serve. The server refreshes its manifest on demand (at most every 5 s per process) when a
report names a key id it does not know, and every 60 s otherwise; it runs two gunicorn
workers, and each holds its own manifest. A report under the retired key that reaches a
worker which has not refreshed yet is still accepted (documented in SECURITY.md: "on their
refresh interval or when a report is refused"), so these tests first make *every* worker
refresh, by sending a report under the new key over a connection pinned to that worker
(the worker owning a connection is read from /proc), and only then attack each worker.

Observed with the SDK: a ``Client`` created before the rotation keeps encrypting under the
key of the manifest it holds (its manifest TTL is an hour). Its next flush is refused by
the server; the Client then refreshes the manifest itself and raises ``ReportsDropped``
naming the retired key for the reports it had queued (they are not re-encrypted behind
the app's back). The next ``record`` uses the new key and is accepted: no restart and no
explicit ``refresh_manifest()`` call is needed.
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from security_kit import (
    NO_RATE_LIMITS,
    batch_body,
    call,
    keyholder_manifest,
    paillier_report,
    per_worker,
    receipt,
    record_error,
    snapshot,
)

from blindsum.client import Client, ReportsDropped
from blindsum.server.processes import Deployment, cli, deployment
from blindsum.shared import codec
from blindsum.shared.codec import Report
from blindsum.shared.manifest import Manifest
from blindsum.shared.signing import parse_identity, verify_document

POLICIES = Path(__file__).parent.parent / "policies"
# Reports from before the rotation go to METRIC, those after it to LATER: a window holding
# reports under both keys is two aggregates of one (metric, window), and only the first of
# them the key-holder releases can ever be published.
METRIC, LATER = "opened", "tiny"
REFRESH_WAIT = 10.0  # seconds: twice the server's on-demand refresh interval


@dataclass
class Rotation:
    old_kid: str
    new_kid: str
    old_manifest: Manifest
    new_manifest: Manifest
    sdk: Client  # created, and used, before the rotation


def _post(connection: http.client.HTTPConnection, dep: Deployment,
          reports: list[Report]) -> tuple[int, bytes]:
    connection.request("POST", "/v1/reports", body=batch_body(reports),
                       headers={"Authorization": f"Bearer {dep.ingest_token}",
                                "Content-Type": codec.JSON})
    response = connection.getresponse()
    body = response.read()
    if response.status >= 400:
        record_error("POST /v1/reports (pinned)", response.status, body.decode("utf-8", "replace"))
    return response.status, body


# -- the rotation --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("rotation"), [POLICIES / "paillier.toml"],
                    server_env=NO_RATE_LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def rotation(dep: Deployment) -> Iterator[Rotation]:
    old_manifest = keyholder_manifest(dep)
    old_kid = old_manifest.active_key("paillier").key_id
    sdk = Client(dep.server.url, dep.ingest_token, dep.identity,
                 enforce_contribution_limit=False)
    for _ in range(3):  # a window under the old key that can be released later
        sdk.record(METRIC, 1)
    assert sdk.flush().accepted == 3
    env = {"BLINDSUM_KEYSTORE_PASSPHRASE": dep.env["BLINDSUM_KEYSTORE_PASSPHRASE"]}
    data_dir = str(dep.keyholder_dir)
    out = cli("keyholder", "key", "rotate", "--scheme", "paillier", "--data-dir", data_dir,
              env=env)
    match = re.search(r"new active paillier key: (\S+)", out)
    assert match, out
    new_kid = match.group(1)
    cli("keyholder", "key", "retire", old_kid, "--data-dir", data_dir, env=env)
    new_manifest = keyholder_manifest(dep)
    assert new_manifest.active_key("paillier").key_id == new_kid
    assert all(entry.key_id != old_kid for entry in new_manifest.keys)
    # Every worker meets the new key id, refreshes on demand, and accepts the report.
    for _pid, connection in per_worker(dep):
        deadline = time.monotonic() + REFRESH_WAIT
        while True:
            status, body = _post(connection, dep, [paillier_report(new_manifest, LATER, 1)])
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, body
    try:
        yield Rotation(old_kid, new_kid, old_manifest, new_manifest, sdk)
    finally:
        sdk.close()


def test_report_under_the_retired_key_is_refused_by_every_worker_and_changes_nothing(
    dep: Deployment, rotation: Rotation,
) -> None:
    stale = paillier_report(rotation.old_manifest, LATER, 1)
    assert stale.key_id == rotation.old_kid
    before = snapshot(dep)
    refused = 0
    for _pid, connection in per_worker(dep):
        status, body = _post(connection, dep, [stale])
        assert status == 400, body
        assert rotation.old_kid in body.decode(), body
        refused += 1
    assert refused >= 2
    assert snapshot(dep) == before


def test_report_under_the_new_key_is_accepted(dep: Deployment, rotation: Rotation) -> None:
    fresh = paillier_report(rotation.new_manifest, LATER, 1)
    response = call("POST", f"{dep.server.url}/v1/reports", token=dep.ingest_token,
                    data=batch_body([fresh]), media=codec.JSON)
    assert receipt(response) == (1, 0)


def test_server_relays_a_manifest_without_the_retired_key(
    dep: Deployment, rotation: Rotation,
) -> None:
    for _pid, connection in per_worker(dep):
        connection.request("GET", "/v1/manifest", headers={"Accept": codec.JSON})
        document = codec.loads(connection.getresponse().read())
        relayed = Manifest.verify(document, parse_identity(dep.identity))
        assert relayed.serial == rotation.new_manifest.serial
        assert rotation.old_kid not in {entry.key_id for entry in relayed.keys}


def test_sdk_created_before_the_rotation_moves_to_the_new_key_by_itself(
    dep: Deployment, rotation: Rotation,
) -> None:
    sdk = rotation.sdk
    assert sdk.manifest().active_key("paillier").key_id == rotation.old_kid  # still cached
    before = snapshot(dep)
    sdk.record(LATER, 1)  # encrypted under the retired key
    with pytest.raises(ReportsDropped) as dropped:
        sdk.flush()
    record_error("sdk", 409, dropped.value.detail)
    assert [d.report.key_id for d in dropped.value.dropped] == [rotation.old_kid]
    assert rotation.old_kid in dropped.value.detail and "retired" in dropped.value.detail
    assert sdk.pending == 0
    assert snapshot(dep) == before
    # the refusal made the SDK refresh: the next value goes under the new key
    assert sdk.manifest().active_key("paillier").key_id == rotation.new_kid
    sdk.record(LATER, 1)
    sent = sdk.flush()
    assert (sent.accepted, sent.duplicates) == (1, 0)


def test_window_collected_under_the_retired_key_can_still_be_released(
    dep: Deployment, rotation: Rotation,
) -> None:
    answer = call("POST", f"{dep.server.url}/v1/windows/release", token=dep.admin_token,
                  data=codec.dumps({"metric": METRIC}), media=codec.JSON, timeout=120)
    assert answer.status_code == 200, answer.text
    (released,) = answer.json()["released"]
    assert (released["kid"], released["report_count"]) == (rotation.old_kid, 3)
    (result,) = [r for r in call("GET", f"{dep.server.url}/v1/published/{METRIC}").json()[
        "results"] if r["report_count"] == 3]
    verify_document(result["document"], parse_identity(dep.identity), "result")
