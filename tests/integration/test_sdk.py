"""The SDK against our real services: key-holder and aggregator as gunicorn processes on loopback.

What a test checks on the server's side it reads from the running server: the reports and
window aggregates in its database, aggregates decrypted with the key-holder's secret key, so
sums are exact and free of noise. Manifests change as an operator changes them: the
``blindsum keyholder`` CLI against the key-holder's data directory, then a server reload so
every worker adopts the new manifest now rather than at its next timed refresh.

Faults on the wire (a load balancer's 503, an acknowledgement lost after the server stored a
batch, a man in the middle) come from ``FaultInjectingPeer`` relaying to the real server.

One deployment serves the module (policies: tests/policies/sdk.toml). Tests that change the
manifest (a new policy version, rotated and retired keys) leave it changed, so every test
reads the key ids, versions and serials it needs from the current manifest.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sqlite3
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.client import (
    Client,
    ContributionLimit,
    InvalidCiphertext,
    InvalidInput,
    ManifestError,
    NotFound,
    ReportsDropped,
    Unauthorized,
    UpstreamError,
)
from blindsum.client.transport import Transport
from blindsum.server.aggregator.store import unpack_blobs
from blindsum.server.keyholder.service import Keyholder
from blindsum.server.processes import Deployment, cli, deployment
from blindsum.shared import codec
from blindsum.shared.codec import BatchReceipt, Report, ReportBatch
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.signing import identity_string, parse_identity
from blindsum.shared.validity import ProofContext, ReportProof, proof_kind, verify_report

# The fault-injecting peer lives with the SDK unit tests, which use it on its own.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from client_support import (
    MANIFEST,
    REPORTS,
    Answer,
    FaultInjectingPeer,
    HoldAnswer,
    LoseAnswer,
    Rewrite,
)

POLICY_FILE = Path(__file__).resolve().parents[1] / "policies" / "sdk.toml"
HOUR = 3600
# The server's body limit: a batch of eight CKKS reports (~66 KB each) exceeds it, four fit.
BODY_LIMIT = 300_000

MakeClient = Callable[..., Client]


# -- what the SDK sent ---------------------------------------------------------------------


class RecordingSession(requests.Session):
    """A real ``requests`` session that keeps every request the SDK sends, each attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        return super().send(request, **kwargs)

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method or "", urlsplit(r.url or "").path) for r in self.sent]

    def count(self, method: str, path: str) -> int:
        return self.calls().count((method, path))

    def posts(self) -> list[requests.PreparedRequest]:
        return [r for r, call in zip(self.sent, self.calls(), strict=True)
                if call == ("POST", REPORTS)]

    def batches(self) -> list[ReportBatch]:
        """Every report batch sent, decoded, in order (failed attempts too)."""
        out = []
        for post in self.posts():
            media = codec.media_type(post.headers.get("Content-Type"))
            body = post.body if isinstance(post.body, bytes) else str(post.body).encode()
            out.append(ReportBatch.from_wire(codec.loads(body, media)))
        return out

    def sent_ids(self) -> list[bytes]:
        """Ids of the reports sent, first sending order, each once."""
        return list(dict.fromkeys(r.report_id for b in self.batches() for r in b.reports))


# -- what the operator does and sees -------------------------------------------------------


class Operator:
    """The people running the deployment: the key-holder CLI, a server reload, the server's
    database, and the key-holder's secret keys (to check window sums without noise)."""

    def __init__(self, deployed: Deployment, workdir: Path) -> None:
        self.deployed = deployed
        self._workdir = workdir
        self._files = itertools.count(1)
        self._holder: Keyholder | None = None
        self._templates: dict[str, dict[str, Any]] = tomllib.loads(
            POLICY_FILE.read_text())["metrics"]

    # -- changes, with the real CLI ------------------------------------------------------

    def keyholder_cli(self, *args: str) -> str:
        return cli("keyholder", *args, "--data-dir", str(self.deployed.keyholder_dir),
                   env=self.deployed.env)

    def add_policy(self, name: str, like: str, **changes: Any) -> None:
        """Register metric ``name`` with the settings of sdk.toml's ``like`` and ``changes``."""
        path = self._workdir / f"policy-{next(self._files)}.toml"
        path.write_text(_toml_table(f"metrics.{name}", {**self._templates[like], **changes}))
        self.keyholder_cli("policy", "add", str(path))

    def rotate(self, scheme: str) -> str:
        """Start a new key epoch; returns the new active key id."""
        answer = self.keyholder_cli("key", "rotate", "--scheme", scheme)
        found = re.search(r"key: (\S+)", answer)
        assert found, answer
        return found[1]

    def retire(self, key_id: str) -> None:
        self.keyholder_cli("key", "retire", key_id)

    def reload_server(self) -> None:
        """SIGHUP the server's gunicorn master and wait until every worker was replaced.

        A worker verifies and adopts the key-holder's manifest as it starts; without a reload
        each worker adopts it on its own, at its next timed refresh or when a report names a
        metric version or key it does not know, so for a while workers would disagree.
        """
        master = self.deployed.server.process.pid
        old = _children(master)
        os.kill(master, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while (current := _children(master)) & old or len(current) < len(old):
            assert time.monotonic() < deadline, "server workers were not replaced"
            time.sleep(0.05)
        latest = self.keyholder_manifest().serial
        for _ in range(4):
            health = requests.get(f"{self.deployed.server.url}/healthz", timeout=30)
            assert health.json()["manifest_serial"] == latest, health.text

    # -- what it can see -----------------------------------------------------------------

    def keyholder_manifest(self) -> Manifest:
        answer = requests.get(f"{self.deployed.keyholder.url}/v1/manifest", timeout=30)
        answer.raise_for_status()
        return Manifest.verify(answer.json(), parse_identity(self.deployed.identity))

    def stored(self, ids: Iterable[bytes]) -> dict[bytes, Report]:
        """The reports with these ids in the server's database."""
        wanted = list(ids)
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = self._query(
            'SELECT report_id, metric, version, key_id, "window", ciphertexts FROM reports '
            f"WHERE report_id IN ({marks})", wanted)
        return {row[0]: Report(row[0], row[1], row[2], row[3], row[4], unpack_blobs(row[5]))
                for row in rows}

    def stored_proofs(self, ids: Iterable[bytes]) -> dict[bytes, str | None]:
        """The stored proof (JSON text, or None) of each report with one of these ids."""
        wanted = list(ids)
        marks = ",".join("?" * len(wanted))
        rows = self._query(f"SELECT report_id, proof FROM reports WHERE report_id IN ({marks})",
                           wanted)
        return {row[0]: row[1] for row in rows}

    def window_count(self, report: Report) -> int:
        """How many reports the server counted in ``report``'s window aggregate."""
        return int(self._window(report)[0])

    def window_sum(self, policy: MetricPolicy, report: Report) -> list[int]:
        """The slot sums of ``report``'s window aggregate, decrypted by the key-holder's key."""
        aggregate = unpack_blobs(self._window(report)[1])
        secret = self.holder.secret_for(policy.scheme, report.key_id)
        return secret.decrypt(aggregate, slot_spec(policy))

    @property
    def holder(self) -> Keyholder:
        if self._holder is None:
            self._holder = Keyholder.open(self.deployed.keyholder_dir,
                                          self.deployed.env["BLINDSUM_KEYSTORE_PASSPHRASE"])
        return self._holder

    def close(self) -> None:
        if self._holder is not None:
            self._holder.db.conn.close()

    def _window(self, report: Report) -> tuple[int, bytes]:
        (row,) = self._query(
            'SELECT report_count, aggregate FROM windows WHERE metric = ? AND version = ? '
            'AND "window" = ? AND key_id = ?',
            [report.metric, report.version, report.window, report.key_id])
        return row[0], row[1]

    def _query(self, sql: str, parameters: list[Any]) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.deployed.server_dir / "aggregator.db", timeout=10)
        try:
            return db.execute(sql, parameters).fetchall()
        finally:
            db.close()


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (the gunicorn workers of a master)."""
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid) and not fields["State"].startswith("Z"):
            found.add(int(status.parent.name))
    return found


def _toml_table(name: str, fields: Mapping[str, Any]) -> str:
    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, Mapping):
            return "{ " + ", ".join(f"{k} = {value(v)}" for k, v in item.items()) + " }"
        if isinstance(item, list):
            return "[" + ", ".join(value(v) for v in item) + "]"
        return json.dumps(item)

    return f"[{name}]\n" + "".join(f"{key} = {value(v)}\n" for key, v in fields.items())


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("sdk")
    with deployment(root, [POLICY_FILE],
                    server_env={"BLINDSUM_MAX_BODY_BYTES": str(BODY_LIMIT)}) as running:
        yield running


@pytest.fixture(scope="module")
def operator(deployed: Deployment, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Operator]:
    running = Operator(deployed, tmp_path_factory.mktemp("operator"))
    yield running
    running.close()


@pytest.fixture(scope="module")
def now(deployed: Deployment) -> float:
    """The moment every test records for; its window takes reports until 15 min after it."""
    return time.time()


@pytest.fixture
def wire() -> Iterator[RecordingSession]:
    session = RecordingSession()
    yield session
    session.close()


@pytest.fixture
def make_client(deployed: Deployment, wire: RecordingSession, tmp_path: Path
                ) -> Iterator[MakeClient]:
    """Clients of the real server (or of ``url``), sending through ``wire``.

    Each Client is its own install (its own contribution counts file) unless a test passes
    ``limits_path`` or ``queue_path``.
    """
    clients: list[Client] = []

    def make(url: str | None = None, *, token: str | None = None, pin: str | None = None,
             **options: Any) -> Client:
        options.setdefault("backoff", 0.001)
        options.setdefault("max_retries", 3)
        options.setdefault("session", wire)
        if "queue_path" not in options:
            options.setdefault("limits_path", tmp_path / f"install-{len(clients)}.sqlite3")
        client = Client(url or deployed.server.url, token or deployed.ingest_token,
                        pin or deployed.identity, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def peer(deployed: Deployment) -> Iterator[FaultInjectingPeer]:
    """A flaky, hostile network hop in front of the real server."""
    with FaultInjectingPeer(upstream=deployed.server.url) as running:
        yield running


# -- the manifest --------------------------------------------------------------------------


def test_the_manifest_is_verified_against_the_pinned_identity_and_cached(
    make_client: MakeClient, operator: Operator, wire: RecordingSession
) -> None:
    client = make_client()
    signed = operator.keyholder_manifest()
    assert client.manifest().serial == signed.serial
    assert client.manifest().policies == signed.policies
    assert wire.calls() == [("GET", MANIFEST)]


def test_a_manifest_signed_by_another_identity_is_rejected(
    make_client: MakeClient, wire: RecordingSession, now: float
) -> None:
    client = make_client(pin=identity_string(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(ManifestError, match="not signed by the pinned"):
        client.manifest()
    with pytest.raises(ManifestError):
        client.record("clicks", 1, at=now)
    assert client.pending == 0
    assert wire.count("POST", REPORTS) == 0


def test_a_manifest_tampered_with_in_flight_is_rejected(
    make_client: MakeClient, operator: Operator, peer: FaultInjectingPeer
) -> None:
    # A server shrinking wait_ms's bound a hundredfold would shrink its noise as much.
    bound, shrunk = '"upper":1000.0', '"upper":10.0'
    assert bound in operator.keyholder_manifest().document["payload"]

    def shrink_the_bound(body: bytes) -> bytes:
        document = json.loads(body)
        return json.dumps({**document,
                           "payload": document["payload"].replace(bound, shrunk)}).encode()

    peer.script("GET", MANIFEST, Rewrite(answer=shrink_the_bound))
    with pytest.raises(ManifestError):
        make_client(peer.url, wire="json").manifest()


def test_an_older_manifest_replayed_in_flight_is_refused_as_a_rollback(
    make_client: MakeClient, deployed: Deployment, operator: Operator, peer: FaultInjectingPeer
) -> None:
    older = requests.get(f"{deployed.server.url}{MANIFEST}", timeout=30,
                         headers={"Accept": codec.JSON}).content
    operator.add_policy("rollback_probe", like="taps")
    operator.reload_server()
    client = make_client(peer.url, wire="json")
    newer = client.manifest().serial
    assert json.loads(older) != dict(client.manifest().document)
    peer.script("GET", MANIFEST, Rewrite(answer=lambda _: older))
    with pytest.raises(ManifestError, match="roll back"):
        client.refresh_manifest()
    assert client.manifest().serial == newer


def test_the_manifest_is_refreshed_after_its_ttl_and_kept_if_that_fails(
    make_client: MakeClient, operator: Operator, peer: FaultInjectingPeer,
    wire: RecordingSession, now: float
) -> None:
    client = make_client(peer.url, manifest_ttl=1.0, enforce_contribution_limit=False)
    client.record("clicks", 1, at=now)
    first = client.manifest().serial
    operator.add_policy("ttl_probe", like="taps")
    operator.reload_server()
    time.sleep(1.05)
    client.record("clicks", 1, at=now)
    second = client.manifest().serial
    assert second > first
    time.sleep(1.05)
    peer.script("GET", MANIFEST, Answer(503))
    client.record("clicks", 1, at=now)  # the refresh fails: the verified manifest stays
    assert client.manifest().serial == second
    assert wire.count("GET", MANIFEST) == 3
    assert client.pending == 3


# -- validation before the network ---------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "value"),
    [("clicks", "3"), ("clicks", 1.5), ("clicks", True), ("wait_ms", None),
     ("wait_ms", float("nan")), ("wait_ms", [1.0]), ("pages", "a"),
     ("embedding", [0.1, 0.2]), ("embedding", "abc"), ("embedding", [0.1, "x", 0.3])],
)
def test_a_value_of_the_wrong_type_or_shape_is_refused_before_anything_is_sent(
    make_client: MakeClient, wire: RecordingSession, metric: str, value: object
) -> None:
    client = make_client(batch_size=1)
    client.manifest()
    with pytest.raises(InvalidInput, match=metric):
        client.record(metric, value)  # type: ignore[arg-type]
    assert wire.calls() == [("GET", MANIFEST)]
    assert client.pending == 0


def test_a_refused_value_does_not_use_up_the_contribution_allowance(
    make_client: MakeClient, now: float
) -> None:
    client = make_client()
    for _ in range(3):
        with pytest.raises(InvalidInput):
            client.record("clicks", "one", at=now)  # type: ignore[arg-type]
    client.record("clicks", 1, at=now)
    client.record("clicks", 1, at=now)
    assert client.pending == 2


def test_an_unknown_metric_is_not_found_naming_it(make_client: MakeClient) -> None:
    with pytest.raises(NotFound, match="'no_such_metric'"):
        make_client().record("no_such_metric", 1)


@pytest.mark.parametrize("at", [-1.0, float("nan"), float("inf"), "now", True])
def test_a_bad_time_is_invalid_input(make_client: MakeClient, at: object) -> None:
    client = make_client()
    with pytest.raises(InvalidInput, match="time"):
        client.record("clicks", 1, at=at)  # type: ignore[arg-type]
    assert client.pending == 0


# -- contribution limit --------------------------------------------------------------------


def test_the_contribution_limit_refuses_a_report_beyond_the_policy_in_one_window(
    make_client: MakeClient, now: float
) -> None:
    client = make_client()
    client.record("clicks", 1, at=now)
    client.record("clicks", 2, at=now + 1)
    with pytest.raises(ContributionLimit, match="'clicks' allows 2"):
        client.record("clicks", 3, at=now + 2)
    client.record("clicks", 3, at=now + HOUR)  # the next window has its own allowance
    client.record("celsius", 20.0, at=now)  # other metrics are counted apart
    assert client.pending == 4


def test_the_contribution_limit_can_be_turned_off_to_simulate_many_installs(
    make_client: MakeClient, now: float
) -> None:
    client = make_client(enforce_contribution_limit=False)
    for _ in range(5):
        client.record("clicks", 1, at=now)
    assert client.pending == 5


# -- encryption ----------------------------------------------------------------------------


def test_reports_are_encrypted_under_the_manifest_key_and_sum_to_the_clipped_values(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client()
    values = [10.0, 20.5, 999.0, 2000.0, -3.0]  # the last two are clipped to 1000 and 0
    for value in values:
        client.record("wait_ms", value, at=now)
    assert client.flush() == BatchReceipt(accepted=5, duplicates=0)
    manifest = client.manifest()
    wait_ms = manifest.policy("wait_ms")
    reports = list(operator.stored(wire.sent_ids()).values())
    assert len(reports) == 5
    assert {r.key_id for r in reports} == {manifest.active_key("paillier").key_id}
    assert {(r.metric, r.version, r.window) for r in reports} == {
        ("wait_ms", wait_ms.version, wait_ms.window_start(now))
    }
    assert all(len(r.report_id) == 16 for r in reports)
    expected = sum(encode(wait_ms, v)[0] for v in values)
    assert operator.window_sum(wait_ms, reports[0]) == [expected]
    assert expected == (10 + 20.5 + 999 + 1000 + 0) / 0.5


PROVEN = {"proven_count": [1, 0, 1], "proven_hist": [0.5, 3, 50], "proven_sum": [7, 99.0, 0],
          "proven_mean": [-2.5, 9.5, 0], "proven_vector": [[1, 20, 3], [0, 0, 0], [5, 5, 5]]}


@pytest.mark.parametrize("media", ["cbor", "json"])
def test_every_kind_is_proven_by_the_sdk_and_stored_with_its_proof(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float,
    media: str,
) -> None:
    client = make_client(wire=media)
    for metric, values in PROVEN.items():
        for value in values:
            client.record(metric, value, at=now)
    assert client.flush() == BatchReceipt(accepted=15, duplicates=0)
    manifest = client.manifest()
    public = PaillierPublic.from_json(manifest.active_key("paillier").public)
    ids = wire.sent_ids()
    rows = operator.stored_proofs(ids)
    assert len(rows) == 15 and all(proof is not None for proof in rows.values())
    for report_id, report in operator.stored(ids).items():
        policy = manifest.policy(report.metric)
        kind, spec = proof_kind(policy), slot_spec(policy)
        proof = ReportProof.from_json(json.loads(rows[report_id]), public, spec, kind)
        context = ProofContext(report.metric, report.version, report.window, report.key_id,
                               report_id)
        verify_report(public, kind, spec, report.ciphertexts, proof, context)


def test_a_histogram_is_sent_one_hot(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client(enforce_contribution_limit=False)
    for value in (0.5, 3, 3, 50, 1e9):
        client.record("pages", value, at=now)
    client.flush()
    (report, *_) = operator.stored(wire.sent_ids()).values()
    assert operator.window_sum(client.manifest().policy("pages"), report) == [1, 2, 0, 2]


def test_a_ckks_vector_uses_the_fetched_context_once_and_decrypts_to_the_sum(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client(enforce_contribution_limit=False)
    vectors = [[0.5, -0.25, 1.0], [0.1, 0.2, -1.0], [2.0, -2.0, 0.0]]
    for vector in vectors:
        client.record("embedding", vector, at=now)
    assert client.flush() == BatchReceipt(3, 0)
    kid = client.manifest().active_key("ckks").key_id
    assert wire.count("GET", f"/v1/keys/{kid}/context") == 1
    embedding = client.manifest().policy("embedding")
    expected = [sum(col) for col in zip(*(encode(embedding, v) for v in vectors), strict=True)]
    (report, *_) = operator.stored(wire.sent_ids()).values()
    assert operator.window_sum(embedding, report) == expected


def test_a_ckks_context_swapped_in_flight_is_refused(
    make_client: MakeClient, peer: FaultInjectingPeer, now: float
) -> None:
    from blindsum.shared.schemes.ckks import generate_ckks

    attackers = generate_ckks().public.context_bytes
    client = make_client(peer.url)
    kid = client.manifest().active_key("ckks").key_id
    peer.script("GET", f"/v1/keys/{kid}/context", Rewrite(answer=lambda _: attackers))
    with pytest.raises(ManifestError, match="does not match the signed manifest"):
        client.record("embedding", [0.0, 0.0, 0.0], at=now)
    assert client.pending == 0
    client.record("embedding", [0.0, 0.0, 0.0], at=now)  # the genuine context is accepted
    assert client.pending == 1


def test_scheme_objects_are_built_once_and_reused_across_records_and_refreshes(
    make_client: MakeClient, operator: Operator, now: float
) -> None:
    client = make_client(enforce_contribution_limit=False)
    client.record("taps", 1, at=now)
    taps = client.manifest().policy("taps")
    first = client.manifest().serial
    scheme = client._scheme(client._current(), taps)
    table = scheme._table  # type: ignore[attr-defined]
    assert table is not None
    operator.add_policy("reuse_probe", like="taps")  # same keys, new serial
    operator.reload_server()
    assert client.refresh_manifest().serial > first
    client.record("taps", 1, at=now)
    assert client._scheme(client._current(), taps) is scheme
    assert scheme._table is table  # type: ignore[attr-defined]


def test_precomputed_randomness_is_used_and_reports_still_decrypt(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client()
    assert client.precompute(4) >= 0
    values = (1.0, 2.0, 3.0, 4.0, 5.0)
    for value in values:
        client.record("warm_ms", value, at=now)
    client.flush()
    warm_ms = client.manifest().policy("warm_ms")
    (report, *_) = operator.stored(wire.sent_ids()).values()
    assert operator.window_sum(warm_ms, report) == [sum(encode(warm_ms, v)[0] for v in values)]
    with pytest.raises(InvalidInput):
        client.precompute(-1)


# -- batching and delivery -----------------------------------------------------------------


def test_record_flushes_at_batch_size_and_flush_sends_the_rest(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client(batch_size=4, enforce_contribution_limit=False)
    for i in range(10):
        client.record("taps", i % 2, at=now)
    assert client.pending == 2
    assert client.flush() == BatchReceipt(2, 0)
    assert [len(b.reports) for b in wire.batches()] == [4, 4, 2]
    assert len(operator.stored(wire.sent_ids())) == 10 and client.pending == 0


def test_a_failed_automatic_flush_keeps_reports_queued_without_failing_record(
    make_client: MakeClient, operator: Operator, peer: FaultInjectingPeer,
    wire: RecordingSession, now: float
) -> None:
    client = make_client(peer.url, batch_size=4, max_retries=0,
                         enforce_contribution_limit=False)
    peer.script("POST", REPORTS, Answer(503))
    for i in range(10):
        client.record("taps", i % 2, at=now)  # never raises a delivery error
    assert client.pending == 10 and operator.stored(wire.sent_ids()) == {}
    assert client.flush() == BatchReceipt(10, 0)
    sizes = [len(b.reports) for b in wire.batches()]
    assert sizes == [4, 4, 4, 2]  # the refused batch, then batches of at most batch_size
    assert len(operator.stored(wire.sent_ids())) == 10


def test_retries_resend_the_same_report_ids_and_the_server_counts_them_once(
    make_client: MakeClient, operator: Operator, peer: FaultInjectingPeer,
    wire: RecordingSession, now: float
) -> None:
    client = make_client(peer.url, enforce_contribution_limit=False)
    for i in range(6):
        client.record("taps", i % 2, at=now)
    peer.script("POST", REPORTS, Answer(503), Answer(503))
    assert client.flush() == BatchReceipt(6, 0)
    attempts = wire.batches()
    assert len(attempts) == 3
    ids = [[r.report_id for r in batch.reports] for batch in attempts]
    assert ids[0] == ids[1] == ids[2]
    assert set(operator.stored(ids[0])) == set(ids[0])


def test_a_lost_acknowledgement_is_resent_and_counted_once(
    make_client: MakeClient, operator: Operator, peer: FaultInjectingPeer,
    wire: RecordingSession, now: float
) -> None:
    client = make_client(peer.url, enforce_contribution_limit=False)
    for value in (0, 1, 2):
        client.record("resent", value, at=now)
    peer.script("POST", REPORTS, LoseAnswer(instead=Answer(503)))  # stored; the LB says 503
    assert client.flush() == BatchReceipt(accepted=0, duplicates=3)
    peer.script("POST", REPORTS, LoseAnswer())  # stored; then the connection drops
    client.record("resent", 9, at=now)
    assert client.flush() == BatchReceipt(accepted=0, duplicates=1)
    assert client.pending == 0
    reports = list(operator.stored(wire.sent_ids()).values())
    assert len(reports) == 4
    assert operator.window_count(reports[0]) == 4
    resent = client.manifest().policy("resent")
    assert operator.window_sum(resent, reports[0]) == [0 + 1 + 2 + 9]


def test_a_read_timeout_is_retried_and_the_attempt_stored_meanwhile_counts_once(
    make_client: MakeClient, operator: Operator, peer: FaultInjectingPeer,
    wire: RecordingSession, now: float
) -> None:
    client = make_client(peer.url, timeout=1.0)
    client.record("taps", 1, at=now)
    peer.script("POST", REPORTS, HoldAnswer(2.5))
    assert client.flush() == BatchReceipt(accepted=0, duplicates=1)
    assert wire.count("POST", REPORTS) == 2
    assert len(operator.stored(wire.sent_ids())) == 1


def test_the_queue_is_kept_after_a_failed_flush_and_emptied_after_success(
    make_client: MakeClient, operator: Operator, peer: FaultInjectingPeer,
    wire: RecordingSession, now: float
) -> None:
    client = make_client(peer.url, max_retries=2, enforce_contribution_limit=False)
    for i in range(5):
        client.record("taps", i % 2, at=now)
    peer.script("POST", REPORTS, *[Answer(503)] * 3)
    with pytest.raises(UpstreamError, match="503"):
        client.flush()
    assert client.pending == 5 and operator.stored(wire.sent_ids()) == {}
    assert client.flush() == BatchReceipt(5, 0)
    assert client.pending == 0
    first_attempt = [r.report_id for r in wire.batches()[0].reports]
    assert set(operator.stored(first_attempt)) == set(first_attempt)


def test_an_unreachable_server_keeps_the_queue(
    make_client: MakeClient, peer: FaultInjectingPeer, now: float
) -> None:
    client = make_client(peer.url, max_retries=1)
    client.record("taps", 1, at=now)
    peer.stop()
    with pytest.raises(UpstreamError, match="failed after 2 attempt"):
        client.flush()
    assert client.pending == 1


def test_a_bad_token_is_unauthorized_and_keeps_the_queue(
    make_client: MakeClient, now: float
) -> None:
    client = make_client(token="stolen")
    client.record("taps", 1, at=now)
    with pytest.raises(Unauthorized):
        client.flush()
    assert client.pending == 1


def test_our_servers_refusal_reaches_the_app_as_its_error_class(
    deployed: Deployment,
) -> None:
    report = Report(bytes(range(16)), "taps", 1, "pai-test", 0, (b"\x01" * 8,))
    transport = Transport(deployed.server.url, "wrong-token")
    with pytest.raises(Unauthorized, match="unknown token"):
        transport.post_data(REPORTS, ReportBatch((report,)).to_wire())
    transport.close()


def test_json_wire_works_end_to_end(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client(wire="json")
    client.record("celsius", -12.3, at=now)
    assert client.flush() == BatchReceipt(1, 0)
    (post,) = wire.posts()
    assert post.headers["Content-Type"] == codec.JSON
    assert json.loads(post.body or b"")["reports"][0]["metric"] == "celsius"
    assert len(operator.stored(wire.sent_ids())) == 1


def test_a_payload_too_large_answer_halves_the_batch(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client(batch_size=10, enforce_contribution_limit=False)
    for i in range(8):
        client.record("profile", [i / 10, 0.0, -i / 10], at=now)
    assert client.flush() == BatchReceipt(8, 0)
    sizes = [len(b.reports) for b in wire.batches()]
    # The whole batch is refused with 413, then its halves go through. A half may be sent
    # twice: the server closes the connection after a 413 it marked keep-alive, so the next
    # request can be lost on the reused connection and is retried.
    assert sizes[0] == 8 and set(sizes[1:]) == {4} and len(sizes) >= 3
    assert len(operator.stored(wire.sent_ids())) == 8


# -- refusals and manifest changes ---------------------------------------------------------


def test_a_manifest_change_refreshes_once_drops_stale_reports_and_sends_the_rest(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client()
    client.record("clicks", 1, at=now)
    client.record("taps", 1, at=now)
    client.record("taps", 0, at=now)
    old = client.manifest().policy("clicks").version
    operator.add_policy("clicks", like="clicks", version=old + 1)
    operator.reload_server()
    with pytest.raises(ReportsDropped,
                       match=f"'clicks' changed from version {old} to {old + 1}") as caught:
        client.flush()
    assert caught.value.metrics == ["clicks"]
    assert caught.value.receipt == BatchReceipt(2, 0)
    assert [d.report.metric for d in caught.value.dropped] == ["clicks"]
    assert "Record those values again" in caught.value.detail
    assert client.pending == 0
    assert client.manifest().serial == operator.keyholder_manifest().serial
    assert wire.count("GET", MANIFEST) == 2
    # The dropped report's contribution was given back: two more fit in this window.
    client.record("clicks", 1, at=now)
    client.record("clicks", 1, at=now)
    with pytest.raises(ContributionLimit):
        client.record("clicks", 1, at=now)
    client.flush()
    stored = operator.stored(wire.sent_ids()).values()
    assert {r.version for r in stored if r.metric == "clicks"} == {old + 1}


def test_a_retired_key_drops_its_reports_and_new_ones_use_the_new_key(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client()
    client.record("celsius", 1.0, at=now)
    old = client.manifest().active_key("paillier").key_id
    new = operator.rotate("paillier")
    operator.retire(old)
    operator.reload_server()
    with pytest.raises(ReportsDropped, match=f"key '{old}' was retired"):
        client.flush()
    client.record("celsius", 1.0, at=now)
    client.flush()
    assert [r.key_id for r in operator.stored(wire.sent_ids()).values()] == [new]


def test_a_key_still_accepted_after_rotation_delivers_without_drops(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client(enforce_contribution_limit=False)
    client.record("celsius", 1.0, at=now)
    old = client.manifest().active_key("paillier").key_id
    new = operator.rotate("paillier")
    operator.reload_server()
    client.refresh_manifest()
    client.record("celsius", 2.0, at=now)
    assert client.flush() == BatchReceipt(2, 0)
    stored = operator.stored(wire.sent_ids()).values()
    assert sorted(r.key_id for r in stored) == sorted([old, new])


def test_a_refusal_that_is_not_a_manifest_change_keeps_the_queue_and_names_the_fault(
    make_client: MakeClient, peer: FaultInjectingPeer, wire: RecordingSession, now: float
) -> None:
    def zero_the_ciphertexts(body: bytes) -> bytes:
        batch = codec.loads(body, codec.CBOR)
        for report in batch["reports"]:
            report["ct"] = [bytes(len(ct)) for ct in report["ct"]]
        return codec.dumps(batch, codec.CBOR)

    client = make_client(peer.url)
    client.record("taps", 1, at=now)
    peer.script("POST", REPORTS, Rewrite(request=zero_the_ciphertexts))
    with pytest.raises(InvalidCiphertext) as caught:
        client.flush()
    assert caught.value.detail.startswith("batch.reports[0]")
    assert client.pending == 1
    assert wire.count("GET", MANIFEST) == 2  # refreshed once, not more
    assert client.flush() == BatchReceipt(1, 0)  # unharmed in flight, it is accepted


def test_reports_of_a_closed_window_are_dropped_once_the_server_refuses_them(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client()
    client.record("taps", 1, at=now - 5 * HOUR)
    client.record("taps", 1, at=now)
    with pytest.raises(ReportsDropped, match="closed") as caught:
        client.flush()
    assert caught.value.receipt == BatchReceipt(1, 0)
    taps = client.manifest().policy("taps")
    stored = operator.stored(wire.sent_ids()).values()
    assert [r.window for r in stored] == [taps.window_start(now)]


def test_a_report_for_a_window_closed_early_is_dropped_and_unblocks_the_queue(
    make_client: MakeClient, deployed: Deployment, operator: Operator,
    wire: RecordingSession, now: float
) -> None:
    client = make_client()
    client.record("sealed", 1, at=now)
    client.flush()
    released = requests.post(f"{deployed.server.url}/v1/windows/release",
                             json={"metric": "sealed"}, timeout=60,
                             headers={"Authorization": f"Bearer {deployed.admin_token}"})
    assert released.status_code == 200 and released.json()["released"], released.text
    client.record("sealed", 1, at=now)  # the window is still current by the clock...
    client.record("taps", 1, at=now)
    with pytest.raises(ReportsDropped, match="refused it for good") as caught:
        client.flush()  # ...but the server has sealed it: that report can never be taken
    assert [d.report.metric for d in caught.value.dropped] == ["sealed"]
    assert caught.value.receipt == BatchReceipt(1, 0)  # the rest still went through
    assert client.pending == 0


# -- lifecycle and threads -----------------------------------------------------------------


def test_the_context_manager_flushes_on_exit(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    with make_client() as client:
        client.record("celsius", 3.0, at=now)
        assert wire.count("POST", REPORTS) == 0
    assert len(operator.stored(wire.sent_ids())) == 1
    with pytest.raises(InvalidInput, match="closed"):
        client.record("celsius", 3.0, at=now)


def test_close_does_not_flush(
    make_client: MakeClient, wire: RecordingSession, now: float
) -> None:
    client = make_client()
    client.record("celsius", 3.0, at=now)
    client.close()
    client.close()  # idempotent
    assert wire.count("POST", REPORTS) == 0


def test_concurrent_records_are_all_delivered_exactly_once(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float
) -> None:
    client = make_client(batch_size=7, enforce_contribution_limit=False)
    client.manifest()

    def work(offset: int) -> None:
        for i in range(25):
            client.record("taps", (offset + i) % 2, at=now)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.flush()
    assert client.pending == 0
    sent = [r.report_id for b in wire.batches() for r in b.reports]
    assert len(sent) == len(set(sent)) == 100
    assert len(operator.stored(sent)) == 100
    assert all(len(b.reports) <= 7 for b in wire.batches())


def test_the_contribution_limit_holds_under_concurrent_records(
    make_client: MakeClient, now: float
) -> None:
    client = make_client()
    client.manifest()
    refused: list[BaseException] = []

    def work() -> None:
        try:
            client.record("clicks", 1, at=now)
        except ContributionLimit as exc:
            refused.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.pending == 2 and len(refused) == 4


# -- the disk queue across app restarts ----------------------------------------------------


def test_unsent_reports_survive_an_app_restart_and_are_sent_with_their_ids(
    make_client: MakeClient, operator: Operator, wire: RecordingSession, now: float,
    tmp_path: Path
) -> None:
    path = tmp_path / "blindsum-queue.sqlite"
    first = make_client(queue_path=path)
    for value in (1, 0, 1):
        first.record("taps", value, at=now)
    queued = [r.report_id for r in first._queue.peek(10)]
    first.close()  # no flush: the app "crashes"
    second = make_client(queue_path=path)
    assert second.pending == 3
    assert second.flush() == BatchReceipt(3, 0)
    assert wire.sent_ids() == queued
    assert set(operator.stored(queued)) == set(queued)
    second.close()
    assert make_client(queue_path=path).pending == 0


def test_a_failed_flush_leaves_reports_on_disk(
    make_client: MakeClient, peer: FaultInjectingPeer, now: float, tmp_path: Path
) -> None:
    path = tmp_path / "q.sqlite"
    first = make_client(peer.url, queue_path=path, max_retries=0)
    first.record("taps", 1, at=now)
    peer.script("POST", REPORTS, Answer(503))
    with pytest.raises(UpstreamError, match="503"):
        first.flush()
    first.close()
    assert make_client(peer.url, queue_path=path).pending == 1


def test_the_contribution_limit_survives_an_app_restart(
    make_client: MakeClient, now: float, tmp_path: Path
) -> None:
    path = tmp_path / "q.sqlite"
    first = make_client(queue_path=path)
    first.record("clicks", 1, at=now)
    first.record("clicks", 1, at=now)
    assert first.flush() == BatchReceipt(2, 0)
    first.close()
    second = make_client(queue_path=path)
    with pytest.raises(ContributionLimit, match="clicks"):
        second.record("clicks", 1, at=now)


def test_a_restarted_app_without_a_queue_file_keeps_its_contribution_counts(
    make_client: MakeClient, now: float
) -> None:
    # the SDK's default state file, with reports queued in memory
    first = make_client(limits_path="default", queue_path=None)
    first.record("clicks", 1, at=now + 2 * HOUR)
    first.record("clicks", 1, at=now + 2 * HOUR)
    first.close()
    restarted = make_client(limits_path="default", queue_path=None)
    with pytest.raises(ContributionLimit, match="'clicks' allows 2"):
        restarted.record("clicks", 1, at=now + 2 * HOUR)
    # a second Client of the same install, open at the same time, shares the counts too
    alongside = make_client(limits_path="default", queue_path=None)
    restarted.record("clicks", 1, at=now + 3 * HOUR)
    alongside.record("clicks", 1, at=now + 3 * HOUR)
    with pytest.raises(ContributionLimit):
        alongside.record("clicks", 1, at=now + 3 * HOUR)
    assert restarted.pending + alongside.pending == 2


def test_a_restarted_app_with_no_arguments_delivers_what_it_left_unsent(
    make_client: MakeClient, peer: FaultInjectingPeer, now: float
) -> None:
    # No queue_path, no limits_path: the defaults must make a restart safe. The first run
    # records while the server is unreachable and exits; the restarted app finds its reports
    # in the default queue and delivers them, once.
    first = make_client(peer.url, limits_path="default", max_retries=0)
    first.record("clicks", 1, at=now)
    peer.script("POST", REPORTS, Answer(503))
    with pytest.raises(UpstreamError, match="503"):
        first.flush()
    assert first.pending == 1
    # a second Client alive at the same time claims a queue of its own, not the first's
    alongside = make_client(peer.url, limits_path="default", max_retries=0)
    assert alongside.pending == 0
    alongside.close()
    first.close()
    restarted = make_client(peer.url, limits_path="default")  # same server, same install
    assert restarted.pending == 1
    assert restarted.flush().accepted == 1
    assert restarted.pending == 0
