"""The SDK's Client: manifest trust, validation before the network, limits, batching, retries.

Runs against a real HTTP peer on 127.0.0.1 (``client_support.FakeServer``) that validates
batches with the shared codec and counts report ids once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from client_support import TOKEN, FakeServer, issue, policy, standard_policies
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.client import (
    Client,
    ContributionLimit,
    InvalidCiphertext,
    InvalidConfig,
    InvalidInput,
    ManifestError,
    NotFound,
    ReportsDropped,
    Unauthorized,
    UpstreamError,
)
from blindsum.shared.codec import BatchReceipt, Report
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import KeyEntry, Manifest, slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import SecretScheme
from blindsum.shared.signing import identity_string

HOUR = 3600
NOW = float(time.time() // HOUR * HOUR + 60)  # a minute into the current window

MakeClient = Callable[..., Client]


@pytest.fixture
def manifest1(identity, paillier_secret, ckks_secret) -> Manifest:  # type: ignore[no-untyped-def]
    return issue(identity, 1, paillier_secret, ckks_secret)


@pytest.fixture
def server(manifest1: Manifest, ckks_secret) -> Iterator[FakeServer]:  # type: ignore[no-untyped-def]
    fake = FakeServer(manifest1, {ckks_secret.key_id: ckks_secret.public.context_bytes})
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def make_client(server: FakeServer, identity: Ed25519PrivateKey) -> Iterator[MakeClient]:
    clients: list[Client] = []

    def make(**kwargs: object) -> Client:
        kwargs.setdefault("backoff", 0.001)
        kwargs.setdefault("max_retries", 3)
        client = Client(server.url, TOKEN, identity_string(identity.public_key()), **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def calls(server: FakeServer) -> list[tuple[str, str]]:
    return [(s.method, s.path) for s in server.seen]


def decrypt_sum(secret: SecretScheme, policy: MetricPolicy, reports: Sequence[Report]) -> list[int]:
    """What the key-holder would see: the slot sums of the reports' aggregate."""
    public, spec = secret.public, slot_spec(policy)
    aggregate = public.add_many([public.load(r.ciphertexts, spec) for r in reports])
    return secret.decrypt(public.dump(aggregate), spec)


# -- packaging -----------------------------------------------------------------------------


def test_importing_the_sdk_loads_neither_flask_nor_the_server() -> None:
    code = (
        "import sys, blindsum.client, blindsum.shared.schemes.paillier\n"
        "assert blindsum.client.Client\n"
        "assert 'flask' not in sys.modules, 'flask imported'\n"
        "assert 'werkzeug' not in sys.modules, 'werkzeug imported'\n"
        "bad = [m for m in sys.modules if m.startswith('blindsum.server')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr


# -- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"batch_size": 5001}, {"batch_size": 2.5}, {"wire": "xml"},
     {"max_retries": -1}, {"timeout": 0}, {"manifest_ttl": 0}],
)
def test_bad_arguments_are_refused_at_construction(
    server: FakeServer, identity: Ed25519PrivateKey, kwargs: dict[str, object]
) -> None:
    with pytest.raises(InvalidConfig):
        Client(server.url, TOKEN, identity_string(identity.public_key()), **kwargs)  # type: ignore[arg-type]
    assert server.seen == []


def test_a_malformed_pinned_identity_is_refused(server: FakeServer) -> None:
    with pytest.raises(InvalidInput, match="ed25519"):
        Client(server.url, TOKEN, "rsa:AAAA")


# -- the manifest --------------------------------------------------------------------------


def test_the_manifest_is_verified_against_the_pinned_identity_and_cached(
    make_client: MakeClient, server: FakeServer, manifest1: Manifest
) -> None:
    client = make_client()
    assert client.manifest().serial == 1
    assert client.manifest().policies == manifest1.policies
    assert calls(server) == [("GET", "/v1/manifest")]


def test_a_manifest_signed_by_another_key_is_rejected(
    make_client: MakeClient, server: FakeServer, paillier_secret
) -> None:  # type: ignore[no-untyped-def]
    server.manifest = issue(Ed25519PrivateKey.generate(), 1, paillier_secret)
    client = make_client()
    with pytest.raises(ManifestError, match="not signed by the pinned"):
        client.manifest()
    with pytest.raises(ManifestError):
        client.record("clicks", 1)
    assert client.pending == 0
    assert server.requests_to("POST", "/v1/reports") == []


def test_a_tampered_manifest_is_rejected(
    make_client: MakeClient, server: FakeServer, manifest1: Manifest
) -> None:
    document = dict(manifest1.document)
    document["payload"] = document["payload"].replace('"upper":1000.0', '"upper":10.0')
    assert document["payload"] != manifest1.document["payload"]
    server.manifest = Manifest(1, 0, (), {}, document)
    with pytest.raises(ManifestError):
        make_client().manifest()


def test_an_older_manifest_is_refused_as_a_rollback(
    make_client: MakeClient, server: FakeServer, identity, paillier_secret
) -> None:  # type: ignore[no-untyped-def]
    server.manifest = issue(identity, 5, paillier_secret)
    client = make_client()
    assert client.manifest().serial == 5
    server.manifest = issue(identity, 4, paillier_secret)
    with pytest.raises(ManifestError, match="roll back"):
        client.refresh_manifest()
    assert client.manifest().serial == 5


def test_the_manifest_is_refreshed_after_its_ttl_and_kept_if_that_fails(
    make_client: MakeClient, server: FakeServer, identity, paillier_secret
) -> None:  # type: ignore[no-untyped-def]
    client = make_client(manifest_ttl=0.05, enforce_contribution_limit=False)
    client.record("clicks", 1, at=NOW)
    server.manifest = issue(identity, 2, paillier_secret)
    time.sleep(0.06)
    client.record("clicks", 1, at=NOW)
    assert client.manifest().serial == 2
    time.sleep(0.06)
    server.fail_next(1, status=503, method="GET", path="/v1/manifest")
    client.record("clicks", 1, at=NOW)  # the refresh fails: the verified manifest stays
    assert client.manifest().serial == 2
    assert calls(server).count(("GET", "/v1/manifest")) == 3
    assert client.pending == 3


# -- validation before the network ---------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "value"),
    [("clicks", "3"), ("clicks", 1.5), ("clicks", True), ("latency", None),
     ("latency", float("nan")), ("latency", [1.0]), ("pages", "a"),
     ("embedding", [0.1, 0.2]), ("embedding", "abc"), ("embedding", [0.1, "x", 0.3])],
)
def test_a_value_of_the_wrong_type_or_shape_is_refused_before_anything_is_sent(
    make_client: MakeClient, server: FakeServer, metric: str, value: object
) -> None:
    client = make_client(batch_size=1)
    client.manifest()
    with pytest.raises(InvalidInput, match=metric):
        client.record(metric, value)  # type: ignore[arg-type]
    assert calls(server) == [("GET", "/v1/manifest")]
    assert client.pending == 0


def test_a_refused_value_does_not_use_up_the_contribution_allowance(
    make_client: MakeClient,
) -> None:
    client = make_client()
    for _ in range(3):
        with pytest.raises(InvalidInput):
            client.record("clicks", "one", at=NOW)  # type: ignore[arg-type]
    client.record("clicks", 1, at=NOW)
    client.record("clicks", 1, at=NOW)
    assert client.pending == 2


def test_an_unknown_metric_is_not_found_naming_it(make_client: MakeClient) -> None:
    with pytest.raises(NotFound, match="'no_such_metric'"):
        make_client().record("no_such_metric", 1)


def test_a_metric_that_is_not_a_name_is_refused_before_fetching_anything(
    make_client: MakeClient, server: FakeServer
) -> None:
    with pytest.raises(InvalidInput, match="metric must be"):
        make_client().record(42, 1)  # type: ignore[arg-type]
    assert server.seen == []


@pytest.mark.parametrize("at", [-1.0, float("nan"), float("inf"), "now", True])
def test_a_bad_time_is_invalid_input(make_client: MakeClient, at: object) -> None:
    client = make_client()
    with pytest.raises(InvalidInput, match="time"):
        client.record("clicks", 1, at=at)  # type: ignore[arg-type]
    assert client.pending == 0


def test_a_window_starts_at_a_multiple_of_window_seconds_since_the_epoch() -> None:
    ten_minutes = policy("x", upper=1, window_seconds=600)
    assert ten_minutes.window_start(0) == 0
    assert ten_minutes.window_start(599.99) == 0
    assert ten_minutes.window_start(600) == 600
    assert ten_minutes.window_start(1_800_000_123.7) == 1_800_000_000 - 1_800_000_000 % 600


# -- contribution limit --------------------------------------------------------------------


def test_the_contribution_limit_refuses_a_report_beyond_the_policy_in_one_window(
    make_client: MakeClient,
) -> None:
    client = make_client()
    client.record("clicks", 1, at=NOW)
    client.record("clicks", 2, at=NOW + 100)
    with pytest.raises(ContributionLimit, match="'clicks' allows 2"):
        client.record("clicks", 3, at=NOW + 200)
    client.record("clicks", 3, at=NOW + HOUR)  # the next window has its own allowance
    client.record("temp", 20.0, at=NOW)  # other metrics are counted apart
    assert client.pending == 4


def test_the_contribution_limit_can_be_turned_off_to_simulate_many_installs(
    make_client: MakeClient,
) -> None:
    client = make_client(enforce_contribution_limit=False)
    for _ in range(5):
        client.record("clicks", 1, at=NOW)
    assert client.pending == 5


# -- encryption ----------------------------------------------------------------------------


def test_reports_are_encrypted_under_the_manifest_key_and_sum_to_the_clipped_values(
    make_client: MakeClient, server: FakeServer, manifest1: Manifest, paillier_secret
) -> None:  # type: ignore[no-untyped-def]
    client = make_client()
    values = [10.0, 20.5, 999.0, 2000.0, -3.0]  # the last two are clipped to 1000 and 0
    for value in values:
        client.record("latency", value, at=NOW)
    assert client.flush() == BatchReceipt(accepted=5, duplicates=0)
    reports = list(server.stored.values())
    latency = manifest1.policy("latency")
    assert {r.key_id for r in reports} == {paillier_secret.key_id}
    assert {(r.metric, r.version, r.window) for r in reports} == {
        ("latency", 1, int(NOW // HOUR * HOUR))
    }
    assert len({r.report_id for r in reports}) == 5
    assert all(len(r.report_id) == 16 for r in reports)
    expected = sum(encode(latency, v)[0] for v in values)
    assert decrypt_sum(paillier_secret, latency, reports) == [expected]
    assert expected == (10 + 20.5 + 999 + 1000 + 0) / 0.5


def test_a_histogram_is_sent_one_hot(
    make_client: MakeClient, server: FakeServer, manifest1: Manifest, paillier_secret
) -> None:  # type: ignore[no-untyped-def]
    client = make_client(enforce_contribution_limit=False)
    for value in (0.5, 3, 3, 50, 1e9):
        client.record("pages", value, at=NOW)
    client.flush()
    pages = manifest1.policy("pages")
    assert decrypt_sum(paillier_secret, pages, list(server.stored.values())) == [1, 2, 0, 2]


def test_a_ckks_vector_uses_the_fetched_context_once_and_decrypts_to_the_sum(
    make_client: MakeClient, server: FakeServer, manifest1: Manifest, ckks_secret
) -> None:  # type: ignore[no-untyped-def]
    client = make_client(enforce_contribution_limit=False)
    vectors = [[0.5, -0.25, 1.0], [0.1, 0.2, -1.0], [2.0, -2.0, 0.0]]
    for vector in vectors:
        client.record("embedding", vector, at=NOW)
    client.flush()
    context_path = f"/v1/keys/{ckks_secret.key_id}/context"
    assert calls(server).count(("GET", context_path)) == 1
    embedding = manifest1.policy("embedding")
    expected = [sum(col) for col in zip(*(encode(embedding, v) for v in vectors), strict=True)]
    assert decrypt_sum(ckks_secret, embedding, list(server.stored.values())) == expected


def test_a_ckks_context_that_does_not_match_the_manifest_is_refused(
    make_client: MakeClient, server: FakeServer, ckks_secret
) -> None:  # type: ignore[no-untyped-def]
    from blindsum.shared.schemes.ckks import generate_ckks

    server.contexts[ckks_secret.key_id] = generate_ckks().public.context_bytes
    client = make_client()
    with pytest.raises(ManifestError, match="does not match the signed manifest"):
        client.record("embedding", [0.0, 0.0, 0.0], at=NOW)
    assert client.pending == 0


def test_scheme_objects_are_built_once_and_reused_across_records_and_refreshes(
    make_client: MakeClient, server: FakeServer, identity, paillier_secret, manifest1
) -> None:  # type: ignore[no-untyped-def]
    client = make_client(enforce_contribution_limit=False)
    client.record("latency", 1.0, at=NOW)
    latency = manifest1.policy("latency")
    scheme = client._scheme(client._current(), latency)
    table = scheme._table  # type: ignore[attr-defined]
    assert table is not None
    server.manifest = issue(identity, 2, paillier_secret)  # same key, new serial
    client.refresh_manifest()
    client.record("latency", 2.0, at=NOW)
    assert client._scheme(client._current(), latency) is scheme
    assert scheme._table is table  # type: ignore[attr-defined]


# -- batching and delivery -----------------------------------------------------------------


def test_record_flushes_at_batch_size_and_flush_sends_the_rest(
    make_client: MakeClient, server: FakeServer
) -> None:
    client = make_client(batch_size=4, enforce_contribution_limit=False)
    for i in range(10):
        client.record("latency", float(i), at=NOW)
    assert client.pending == 2
    assert client.flush() == BatchReceipt(2, 0)
    assert [len(b.reports) for b in server.posted_batches()] == [4, 4, 2]
    assert len(server.stored) == 10 and client.pending == 0


def test_a_failed_automatic_flush_keeps_reports_queued_without_failing_record(
    make_client: MakeClient, server: FakeServer
) -> None:
    client = make_client(batch_size=4, max_retries=0, enforce_contribution_limit=False)
    server.fail_next(1, status=503)
    for i in range(10):
        client.record("latency", float(i), at=NOW)  # never raises a delivery error
    assert client.pending == 10 and server.stored == {}
    assert client.flush() == BatchReceipt(10, 0)
    sizes = [len(b.reports) for b in server.posted_batches()]
    assert sizes == [4, 4, 4, 2]  # the refused batch, then batches of at most batch_size


def test_retries_resend_the_same_report_ids_and_the_server_counts_them_once(
    make_client: MakeClient, server: FakeServer
) -> None:
    client = make_client(enforce_contribution_limit=False)
    for i in range(6):
        client.record("latency", float(i), at=NOW)
    server.fail_next(2, status=503)
    assert client.flush() == BatchReceipt(6, 0)
    attempts = server.posted_batches()
    assert len(attempts) == 3
    ids = [[r.report_id for r in batch.reports] for batch in attempts]
    assert ids[0] == ids[1] == ids[2]
    assert set(server.stored) == set(ids[0])


def test_a_lost_acknowledgement_is_resent_and_counted_once(
    make_client: MakeClient, server: FakeServer
) -> None:
    client = make_client(enforce_contribution_limit=False)
    for i in range(3):
        client.record("latency", float(i), at=NOW)
    server.fail_next(1, kind="store_then_respond", status=503)
    assert client.flush() == BatchReceipt(accepted=0, duplicates=3)
    server.fail_next(1, kind="drop")
    client.record("latency", 9.0, at=NOW)
    assert client.flush() == BatchReceipt(accepted=0, duplicates=1)
    assert len(server.stored) == 4 and client.pending == 0


def test_the_queue_is_kept_after_a_failed_flush_and_emptied_after_success(
    make_client: MakeClient, server: FakeServer
) -> None:
    client = make_client(max_retries=2, enforce_contribution_limit=False)
    for i in range(5):
        client.record("latency", float(i), at=NOW)
    server.fail_next(3, status=503)
    with pytest.raises(UpstreamError, match="503"):
        client.flush()
    assert client.pending == 5 and server.stored == {}
    assert client.flush() == BatchReceipt(5, 0)
    assert client.pending == 0
    attempts = server.posted_batches()
    assert {r.report_id for r in attempts[0].reports} == set(server.stored)


def test_an_unreachable_server_keeps_the_queue(
    server: FakeServer, identity: Ed25519PrivateKey
) -> None:
    client = Client(server.url, TOKEN, identity_string(identity.public_key()), backoff=0.001,
                    max_retries=1)
    client.record("latency", 1.0, at=NOW)
    server.stop()
    with pytest.raises(UpstreamError, match="failed after 2 attempt"):
        client.flush()
    assert client.pending == 1
    client.close()


def test_a_bad_token_is_unauthorized_and_keeps_the_queue(
    server: FakeServer, identity: Ed25519PrivateKey
) -> None:
    client = Client(server.url, "stolen", identity_string(identity.public_key()))
    client.record("latency", 1.0, at=NOW)
    with pytest.raises(Unauthorized):
        client.flush()
    assert client.pending == 1
    client.close()


def test_json_wire_works_end_to_end(make_client: MakeClient, server: FakeServer) -> None:
    client = make_client(wire="json")
    client.record("temp", -12.3, at=NOW)
    assert client.flush() == BatchReceipt(1, 0)
    (seen,) = server.requests_to("POST", "/v1/reports")
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body)["reports"][0]["metric"] == "temp"


def test_a_payload_too_large_answer_halves_the_batch(
    make_client: MakeClient, server: FakeServer
) -> None:
    client = make_client(batch_size=10, enforce_contribution_limit=False)
    for i in range(8):
        client.record("latency", float(i), at=NOW)
    server.respond_problem(413, "payload-too-large", "request body exceeds 1024 bytes")
    assert client.flush() == BatchReceipt(8, 0)
    assert [len(b.reports) for b in server.posted_batches()] == [8, 4, 4]


# -- refusals and manifest changes ---------------------------------------------------------


def test_a_manifest_change_refreshes_once_drops_stale_reports_and_sends_the_rest(
    make_client: MakeClient, server: FakeServer, identity, paillier_secret
) -> None:  # type: ignore[no-untyped-def]
    client = make_client()
    client.record("clicks", 1, at=NOW)
    client.record("latency", 5.0, at=NOW)
    client.record("latency", 6.0, at=NOW)
    server.manifest = issue(identity, 2, paillier_secret, policies=standard_policies(version=2))
    with pytest.raises(ReportsDropped, match="'clicks' changed from version 1 to 2") as caught:
        client.flush()
    assert caught.value.metrics == ["clicks"]
    assert caught.value.receipt == BatchReceipt(2, 0)
    assert [d.report.metric for d in caught.value.dropped] == ["clicks"]
    assert "Record those values again" in caught.value.detail
    assert client.pending == 0
    assert client.manifest().serial == 2
    assert calls(server).count(("GET", "/v1/manifest")) == 2
    # The dropped report's contribution was given back: two more fit in this window.
    client.record("clicks", 1, at=NOW)
    client.record("clicks", 1, at=NOW)
    with pytest.raises(ContributionLimit):
        client.record("clicks", 1, at=NOW)
    client.flush()
    assert {r.version for r in server.stored.values() if r.metric == "clicks"} == {2}


def test_a_retired_key_drops_its_reports_and_new_ones_use_the_new_key(
    make_client: MakeClient, server: FakeServer, identity, paillier_secret
) -> None:  # type: ignore[no-untyped-def]
    from blindsum.shared.schemes.paillier import generate_paillier

    client = make_client()
    client.record("temp", 1.0, at=NOW)
    rotated = generate_paillier(2048, key_id="pai-rotated")
    server.manifest = issue(identity, 2, rotated)
    with pytest.raises(ReportsDropped, match="key 'pai-test' was retired"):
        client.flush()
    client.record("temp", 1.0, at=NOW)
    client.flush()
    assert [r.key_id for r in server.stored.values()] == ["pai-rotated"]


def test_a_key_still_accepted_after_rotation_delivers_without_drops(
    make_client: MakeClient, server: FakeServer, identity, paillier_secret
) -> None:  # type: ignore[no-untyped-def]
    from blindsum.shared.schemes.paillier import generate_paillier

    client = make_client(enforce_contribution_limit=False)
    client.record("temp", 1.0, at=NOW)
    rotated = generate_paillier(2048, key_id="pai-next")
    keys = [KeyEntry("paillier", "pai-next", "active", rotated.public.public_json()),
            KeyEntry("paillier", paillier_secret.key_id, "accepted",
                     paillier_secret.public.public_json())]
    server.manifest = Manifest.issue(identity, 2, keys,
                                     [p for p in standard_policies() if p.scheme == "paillier"])
    client.refresh_manifest()
    client.record("temp", 2.0, at=NOW)
    assert client.flush() == BatchReceipt(2, 0)
    assert sorted(r.key_id for r in server.stored.values()) == ["pai-next", "pai-test"]


def test_a_refusal_that_is_not_a_manifest_change_keeps_the_queue_and_names_the_fault(
    make_client: MakeClient, server: FakeServer
) -> None:
    client = make_client()
    client.record("latency", 1.0, at=NOW)
    detail = "batch.reports[0].ct[0] shares a factor with n"
    server.respond_problem(400, "invalid-ciphertext", detail)
    with pytest.raises(InvalidCiphertext) as caught:
        client.flush()
    assert caught.value.detail == detail
    assert client.pending == 1
    assert calls(server).count(("GET", "/v1/manifest")) == 2  # refreshed once, not more


def test_reports_of_a_closed_window_are_dropped_once_the_server_refuses_them(
    make_client: MakeClient, server: FakeServer
) -> None:
    client = make_client()
    client.record("latency", 1.0, at=NOW - 5 * HOUR)
    client.record("latency", 2.0, at=NOW)
    server.respond_problem(400, "invalid-input", "batch.reports[0]: window closed")
    with pytest.raises(ReportsDropped, match="closed") as caught:
        client.flush()
    assert caught.value.receipt == BatchReceipt(1, 0)
    assert [r.window for r in server.stored.values()] == [int(NOW // HOUR * HOUR)]


# -- lifecycle and threads -----------------------------------------------------------------


def test_the_context_manager_flushes_on_exit(
    server: FakeServer, identity: Ed25519PrivateKey
) -> None:
    with Client(server.url, TOKEN, identity_string(identity.public_key())) as client:
        client.record("temp", 3.0, at=NOW)
        assert server.stored == {}
    assert len(server.stored) == 1
    with pytest.raises(InvalidInput, match="closed"):
        client.record("temp", 3.0, at=NOW)


def test_close_does_not_flush(make_client: MakeClient, server: FakeServer) -> None:
    client = make_client()
    client.record("temp", 3.0, at=NOW)
    client.close()
    client.close()  # idempotent
    assert server.requests_to("POST", "/v1/reports") == []


def test_concurrent_records_are_all_delivered_exactly_once(
    make_client: MakeClient, server: FakeServer
) -> None:
    client = make_client(batch_size=7, enforce_contribution_limit=False)
    client.manifest()

    def work(offset: int) -> None:
        for i in range(25):
            client.record("latency", float(offset + i), at=NOW)

    threads = [threading.Thread(target=work, args=(100 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.flush()
    assert client.pending == 0
    assert len(server.stored) == 100
    sent = [r.report_id for b in server.posted_batches() for r in b.reports]
    assert len(sent) == len(set(sent)) == 100
    assert all(len(b.reports) <= 7 for b in server.posted_batches())


def test_the_contribution_limit_holds_under_concurrent_records(
    make_client: MakeClient,
) -> None:
    client = make_client()
    client.manifest()
    refused: list[BaseException] = []

    def work() -> None:
        try:
            client.record("clicks", 1, at=NOW)
        except ContributionLimit as exc:
            refused.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.pending == 2 and len(refused) == 4



def test_precomputed_randomness_is_used_and_reports_still_decrypt(
    make_client: MakeClient, server: FakeServer, manifest1: Manifest, paillier_secret
) -> None:  # type: ignore[no-untyped-def]
    client = make_client()
    assert client.precompute(4) >= 0
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):
        client.record("latency", value, at=NOW)
    client.flush()
    latency = manifest1.policy("latency")
    reports = list(server.stored.values())
    assert decrypt_sum(paillier_secret, latency, reports) == [
        sum(encode(latency, v)[0] for v in (1.0, 2.0, 3.0, 4.0, 5.0))]
    with pytest.raises(InvalidInput):
        client.precompute(-1)
