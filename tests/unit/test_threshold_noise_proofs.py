"""Noise proofs in a two-party release, in process (a real ceremony, key-holder, aggregator
store, release driver and finisher): each party's encrypted noise verifies at the
aggregate's layout, and a cheating party is refused — a key-holder cancelling the server's
noise, noise outside ``[0, 2B]``, a proof replayed from another window, party or request, a
tampered or stripped proof — with nothing published and the budget paid once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmpy2
import pytest
from threshold_kit import proven_reports
from validity_kit import forge_slots

from blindsum.server.aggregator.keyholder_client import VerifiedResult, check_result
from blindsum.server.aggregator.release import RETRY_SECONDS, ReleaseDriver
from blindsum.server.aggregator.store import Store, WindowKey, pack_blobs
from blindsum.server.aggregator.threshold import ThresholdFinisher
from blindsum.server.keyholder import ledger
from blindsum.server.keyholder.app import create_app as create_keyholder_app
from blindsum.server.keyholder.config import KeyholderConfig
from blindsum.server.keyholder.service import Keyholder
from blindsum.server.keystore import KeyStore
from blindsum.shared.codec import (
    CBOR,
    JSON,
    IntakeReceipt,
    ReleaseRequest,
    WindowReports,
    b64decode,
    dumps,
    loads,
    report_ids_digest,
)
from blindsum.shared.codec import (
    JSON as codec_json,
)
from blindsum.shared.encoding import encode
from blindsum.shared.errors import InvalidProof, ReleaseRefused, UpstreamError
from blindsum.shared.headroom import noise_bound
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.packing import pack
from blindsum.shared.policy import load_policies_toml
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.signing import sign_document
from blindsum.shared.threshold import combine, partial_decrypt
from blindsum.shared.threshold.noise_proof import (
    KEYHOLDER,
    SERVER,
    noise_context,
    noise_layout,
    prove_noise,
)
from blindsum.shared.threshold.release import (
    PartialRelease,
    decode_noised,
    dump_ciphertexts,
    verify_published,
)
from blindsum.shared.threshold.server_noise import fold_all
from blindsum.shared.validity import parse_slots_proof

POLICIES = """
[metrics.minutes]
kind = "vector"
scheme = "paillier"
dimension = 4
lower = 0
upper = 60
min_contributors = 2
window_seconds = 60
noise = "both"
privacy = { mechanism = "gaussian", epsilon = 1.0, delta = 1e-7, budget_epsilon = 1000.0 }

[metrics.pages]
kind = "histogram"
scheme = "paillier"
buckets = [0, 1, 2, 3]
min_contributors = 2
window_seconds = 60
noise = "both"
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 1000.0 }

[metrics.seconds]
kind = "sum"
scheme = "paillier"
lower = 0
upper = 3600
min_contributors = 2
window_seconds = 60
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 1000.0 }
"""
VALUES: dict[str, list[Any]] = {"minutes": [[10, 20, 30, 40], [5, 0, 60, 1], [59, 58, 0, 0]],
                                "pages": [0.5, 1.5, 2.5], "seconds": [100, 3600, 7]}
Tamper = Callable[[VerifiedResult], VerifiedResult]


class CheatingKeyholder:
    """The real in-process key-holder, whose answer a malicious key-holder rewrites and signs
    with its own identity (``tamper``; None answers honestly)."""

    def __init__(self, holder: Keyholder, pinned: Any) -> None:
        self.holder = holder
        self.releaser = holder.releaser()
        self.pinned = pinned
        self.tamper: Tamper | None = None

    def release(self, request: ReleaseRequest) -> VerifiedResult:
        result = check_result(self.releaser.release(request).document, self.pinned, request)
        return result if self.tamper is None else self.tamper(result)

    def forward_reports(self, batch: WindowReports) -> IntakeReceipt:
        return self.holder.intake().accept(batch)

    def audit_head(self) -> tuple[dict[str, str], dict[str, Any]]:
        raise UpstreamError("no audit heads in this test")  # best effort: only logged


class Deployment:
    def __init__(self, root: Path, bits: int = 2048) -> None:
        self.root = root
        self.holder, init = Keyholder.init(root / "kh", None, bits, clock=lambda: 0.0,
                                           server_dir=root / "srv")
        self.release_token = init.release_token
        self.holder.add_policies(load_policies_toml(POLICIES))
        self.holder.db.clock = time.time
        self.pinned = self.holder.identity.public_key()
        self.manifest = Manifest.verify(self.holder.db.latest_manifest(), self.pinned)
        self.store = Store(root / "srv")
        self.finisher = ThresholdFinisher(
            KeyStore.open(root / "srv", None),
            lambda name, version: self.manifest.policy(name))
        self.kid = self.manifest.active_key("paillier").key_id
        self.keyholder = CheatingKeyholder(self.holder, self.pinned)
        self.skew = 0.0  # moved past the driver's retry delay to retry a failed window
        self.driver = ReleaseDriver(self.store, self.keyholder,  # type: ignore[arg-type]
                                    clock=lambda: time.time() + self.skew,
                                    finisher=self.finisher)
        self.share = self.holder.secret_for("paillier", self.kid)

    def collect(self, metric: str, window: int) -> tuple[WindowKey, list[int]]:
        """A closed window in the server's store, as ingest leaves it."""
        policy = self.manifest.policy(metric)
        public = PaillierPublic.from_json(self.manifest.key(self.kid).public)
        spec = slot_spec(policy)
        slots = [encode(policy, v) for v in VALUES[metric]]
        reports = proven_reports(public, policy, self.kid, window, slots)
        key = WindowKey(metric, policy.version, window, self.kid)
        aggregate = public.dump(public.add_many(
            [public.load(list(r.ciphertexts), spec) for r in reports]))
        with self.store.transaction() as tx:
            tx.insert_reports([(r.report_id, metric, policy.version, self.kid, window,
                                pack_blobs(r.ciphertexts), 0.0, json.dumps(r.proof))
                               for r in reports])
            tx.create_window(key, aggregate, len(reports), 0.0, 0.0)
        return key, [sum(column) for column in zip(*slots, strict=True)]

    def request(self, key: WindowKey) -> ReleaseRequest:
        """The request the release driver sends for ``key`` (same fields, same noise),
        after forwarding the window's reports as the driver does."""
        row = self.store.window(key)
        assert row is not None
        self.holder.intake().accept(WindowReports(key.metric, key.version, key.window,
                                                  key.key_id,
                                                  tuple(self.store.window_reports(key))))
        noise = self.finisher.committed_noise(self.store, key, time.time())
        return ReleaseRequest(key.metric, key.version, key.window, key.key_id,
                              row.report_count, report_ids_digest(self.store.report_ids(key)),
                              row.aggregate, server_noise=noise.ciphertexts,
                              server_noise_proof=noise.proof)

    def release(self, key: WindowKey, tamper: Tamper | None = None) -> Any:
        self.keyholder.tamper = tamper
        try:
            return self.driver.release_window(key.metric, key.version, key.window,
                                              key.key_id, early=False)
        finally:
            self.keyholder.tamper = None

    def spent(self, metric: str) -> float:
        policy = self.manifest.policy(metric)
        return ledger.budget(self.holder.db.conn, policy).spent_epsilon

    def published(self, key: WindowKey) -> list[Any]:
        return [r for r in self.store.results(key.metric) if r.window == key.window]

    def resign(self, result: VerifiedResult, **changes: Any) -> VerifiedResult:
        payload = {**result.payload, **changes}
        return VerifiedResult(sign_document(self.holder.identity, payload), payload)

    def with_noise(self, result: VerifiedResult, noise: list[Any], proof: Any
                   ) -> VerifiedResult:
        """K's statement re-signed with other noise ciphertexts ``E_K`` folded in, its own
        partials of the new ``C`` (it holds its share) and ``proof`` as its noise proof."""
        statement = PartialRelease.from_payload(result.payload)
        public = self.share.public
        layers = [statement.aggregate, statement.server_noise] \
            if statement.policy.noise == "both" else [_aggregate_of(self, result)]
        noised = fold_all(public, *layers, noise)
        partials = [partial_decrypt(self.share, c, statement.context).to_json()
                    for c in noised]
        return self.resign(result, noise=dump_ciphertexts(public, noise),
                           noised=dump_ciphertexts(public, noised), partials=partials,
                           noise_proof=proof)


def _aggregate_of(deployment: Deployment, result: VerifiedResult) -> list[Any]:
    key = WindowKey(result.payload["metric"], result.payload["version"],
                    result.payload["window"], result.payload["kid"])
    row = deployment.store.window(key)
    assert row is not None
    return deployment.share.public.paillier.load(
        list(row.aggregate), slot_spec(deployment.manifest.policy(key.metric)))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return Deployment(tmp_path_factory.mktemp("noiseproofs"))


def _refused_and_retried(deployment: Deployment, key: WindowKey, tamper: Tamper,
                         match: str, before: float | None = None) -> None:
    """A cheating answer publishes nothing, and the honest retry of the same request is
    answered from the stored statement: one debit in all (``before``: the budget spent
    before the window was first paid)."""
    before = deployment.spent(key.metric) if before is None else before
    outcome = deployment.release(key, tamper)
    assert outcome.status == "failed" and outcome.code == "invalid-proof", outcome
    assert match in (outcome.detail or ""), outcome.detail
    assert deployment.published(key) == []
    row = deployment.store.window(key)
    assert row is not None and row.state != "released"
    paid = deployment.manifest.policy(key.metric).privacy.epsilon
    assert deployment.spent(key.metric) == before + paid
    deployment.skew += RETRY_SECONDS + 1
    retried = deployment.release(key)
    assert retried.status == "released", retried
    assert deployment.spent(key.metric) == before + paid  # the stored statement, no redraw


@pytest.mark.parametrize(("metric", "window"), [("minutes", 60), ("pages", 120),
                                                ("seconds", 180)])
def test_honest_noise_proofs_verify_at_the_aggregates_layout(
        deployment: Deployment, metric: str, window: int) -> None:
    key, truth = deployment.collect(metric, window)
    outcome = deployment.release(key)
    assert outcome.status == "released", outcome
    (stored,) = deployment.published(key)
    payload = verify_published(stored.document, deployment.pinned)
    statement = json.loads(stored.document["statement"]["payload"])
    policy = deployment.manifest.policy(metric)
    public = deployment.share.public
    layout = noise_layout(public, policy)
    # the noise is laid out exactly like the aggregate, each slot of it in [0, 2B]
    assert (layout.width, layout.per) == public.paillier.layout(slot_spec(policy))
    assert layout.max_value == 2 * noise_bound(policy) and layout.count == policy.slot_count
    parse_slots_proof(statement["noise_proof"], public.paillier, layout)
    assert ("server_noise_proof" in statement) == (policy.noise == "both")
    if policy.noise == "both":
        parse_slots_proof(statement["server_noise_proof"], public.paillier, layout)
    offset = 2 * noise_bound(policy) if policy.noise == "both" else noise_bound(policy)
    assert all(abs(s - t) <= offset for s, t in zip(stored.document["noisy_slots"], truth,
                                                    strict=True))
    assert payload["report_count"] == len(VALUES[metric])


def test_a_key_holder_cancelling_the_server_noise_is_refused(deployment: Deployment) -> None:
    key, truth = deployment.collect("minutes", 240)
    request = deployment.request(key)
    policy = deployment.manifest.policy("minutes")
    public = deployment.share.public
    layout = noise_layout(public, policy)
    before = deployment.spent("minutes")
    honest = deployment.keyholder.release(request)  # K pays and keeps its statement
    statement = PartialRelease.from_payload(honest.payload)
    # E_K = E_S^-1·Enc(2B·1): its plaintext B - z_S is in [0, 2B], and folded in it cancels
    # the server's noise (and K's own offset) exactly
    two_b = pack([layout.max_value] * layout.count, layout.width)
    nsq = public.nsquare
    cancel = [public.paillier.encrypt_plaintext(two_b) * gmpy2.invert(e, nsq) % nsq
              for e in statement.server_noise]
    cancelled = deployment.with_noise(honest, cancel, honest.payload["noise_proof"])
    c = PartialRelease.from_payload(cancelled.payload)
    server_share = deployment.finisher.share(deployment.kid)
    plain = [combine(public, ci, [mine, partial_decrypt(server_share, ci, c.context)],
                     c.context) for ci, mine in zip(c.noised, c.partials, strict=True)]
    # without the proofs this would publish the exact aggregate (the attack works)
    assert decode_noised(public, policy, plain) == truth
    bound = noise_bound(policy)
    ctx = noise_context(policy, key.window, key.key_id, KEYHOLDER,
                        honest.payload["request_digest"])
    # every proof K can build: its own honest one, the server's, and the real prover run
    # on a guess of z_S (here z_S = 0: bits of B in each slot)
    guessed = forge_slots(public.paillier, layout, [bound] * layout.count, context=ctx)[1]
    for proof in (honest.payload["noise_proof"], honest.payload["server_noise_proof"],
                  guessed.to_json()):
        forged = deployment.with_noise(honest, cancel, proof)
        with pytest.raises(InvalidProof, match="the key-holder's noise proof"):
            deployment.finisher.finish(request, forged)
        with pytest.raises(InvalidProof, match="the key-holder's noise proof"):
            verify_published({"format": "blindsum-threshold-release-1",
                              "statement": forged.document}, deployment.pinned)
    _refused_and_retried(deployment, key,
                         lambda r: deployment.with_noise(r, cancel, guessed.to_json()),
                         "the key-holder's noise proof", before)


@pytest.mark.parametrize("bad", [2, -1])  # 2B + 1 and -1 (wraps mod n) in one slot
def test_key_holder_noise_outside_its_range_in_one_slot_is_refused(
        deployment: Deployment, bad: int) -> None:
    key, _ = deployment.collect("minutes", 300 + 60 * (bad + 1))
    policy = deployment.manifest.policy("minutes")
    public = deployment.share.public
    layout = noise_layout(public, policy)
    slots = [noise_bound(policy)] * layout.count
    slots[2] = layout.max_value + 1 if bad == 2 else -1

    def shifted(result: VerifiedResult) -> VerifiedResult:
        ctx = noise_context(policy, key.window, key.key_id, KEYHOLDER,
                            result.payload["request_digest"])
        cts, proof = forge_slots(public.paillier, layout, slots, context=ctx)
        return deployment.with_noise(result, cts, proof.to_json())

    _refused_and_retried(deployment, key, shifted, "the key-holder's noise proof")


def test_a_key_holder_proof_from_another_window_party_or_request_is_refused(
        deployment: Deployment) -> None:
    old_key, _ = deployment.collect("seconds", 600)
    assert deployment.release(old_key).status == "released"
    old = json.loads(deployment.published(old_key)[0].document["statement"]["payload"])
    key, _ = deployment.collect("seconds", 660)
    policy = deployment.manifest.policy("seconds")
    public = deployment.share.public
    loaded = public.paillier.load

    def old_window(result: VerifiedResult) -> VerifiedResult:
        noise = loaded([_b(c) for c in old["noise"]], slot_spec(policy))
        return deployment.with_noise(result, noise, old["noise_proof"])

    def as_party(party: str, digest: str) -> Tamper:
        def tamper(result: VerifiedResult) -> VerifiedResult:
            ctx = noise_context(policy, key.window, key.key_id, party, digest)
            noise, proof = prove_noise(public, policy, [0] * policy.slot_count, ctx)
            return deployment.with_noise(result, noise, proof)
        return tamper

    _refused_and_retried(deployment, key, old_window, "the key-holder's noise proof")
    key, _ = deployment.collect("seconds", 720)
    _refused_and_retried(deployment, key, as_party(SERVER, ""), "the key-holder's noise proof")
    key, _ = deployment.collect("seconds", 780)
    _refused_and_retried(deployment, key, as_party(KEYHOLDER, "ab" * 32),
                         "the key-holder's noise proof")


def test_a_tampered_key_holder_proof_field_is_refused(deployment: Deployment) -> None:
    key, _ = deployment.collect("pages", 840)

    def tampered(result: VerifiedResult) -> VerifiedResult:
        proof = json.loads(json.dumps(result.payload["noise_proof"]))
        proof["clauses"][0]["e"][0] = proof["clauses"][0]["e"][0][::-1]
        return deployment.resign(result, noise_proof=proof)

    _refused_and_retried(deployment, key, tampered, "the key-holder's noise proof")


def _b(text: str) -> bytes:
    return b64decode(text, "ciphertext")


def test_a_bad_server_noise_proof_is_refused_before_paying(deployment: Deployment) -> None:
    key, _ = deployment.collect("minutes", 900)
    request = deployment.request(key)
    policy = deployment.manifest.policy("minutes")
    public = deployment.share.public
    before = deployment.spent("minutes")
    other_key, _ = deployment.collect("minutes", 960)
    other = deployment.request(other_key)
    tampered = json.loads(json.dumps(request.server_noise_proof))
    tampered["aux"][0] = tampered["aux"][1]
    as_keyholder = prove_noise(public, policy, [0] * policy.slot_count, noise_context(
        policy, key.window, key.key_id, KEYHOLDER, "ab" * 32))
    cases = [
        ({"server_noise_proof": None}, "carries no proof"),
        ({"server_noise_proof": other.server_noise_proof}, "noise proof"),  # another window
        ({"server_noise_proof": tampered}, "noise proof"),
        ({"server_noise": tuple(public.paillier.dump(as_keyholder[0])),
          "server_noise_proof": as_keyholder[1]}, "noise proof"),  # the other party's
    ]
    for changes, message in cases:
        bad = ReleaseRequest(**{**request.__dict__, **changes})
        with pytest.raises(ReleaseRefused, match=message) as refused:
            deployment.keyholder.releaser.release(bad)
        assert "the server's noise" in refused.value.detail
    assert deployment.spent("minutes") == before  # refused before paying
    # the honest request still releases: nothing was consumed
    assert deployment.release(key).status == "released"


def test_offline_verification_fails_on_a_stripped_or_swapped_proof(
        deployment: Deployment) -> None:
    key, _ = deployment.collect("pages", 1020)
    assert deployment.release(key).status == "released"
    (stored,) = deployment.published(key)
    document = stored.document
    verify_published(document, deployment.pinned)
    payload = json.loads(document["statement"]["payload"])
    result = VerifiedResult(document["statement"], payload)
    stripped = {k: v for k, v in payload.items() if k != "noise_proof"}
    swapped = {"noise_proof": payload["server_noise_proof"],
               "server_noise_proof": payload["noise_proof"]}
    for statement, message in [
        (VerifiedResult(sign_document(deployment.holder.identity, stripped), stripped),
         "carries no proof"),
        (deployment.resign(result, server_noise_proof={}), "the server's noise proof"),
        (deployment.resign(result, **swapped), "noise proof"),
    ]:
        with pytest.raises(InvalidProof, match=message):
            verify_published({**document, "statement": statement.document}, deployment.pinned)


def test_a_retried_request_carries_the_same_stored_proofs(deployment: Deployment) -> None:
    key, _ = deployment.collect("minutes", 1080)
    first = deployment.request(key)
    again = deployment.request(key)
    assert first == again and first.server_noise_proof is not None
    before = deployment.spent("minutes")
    one = deployment.keyholder.releaser.release(first)
    two = deployment.keyholder.releaser.release(again)
    assert one.document == two.document and not two.created
    assert deployment.spent("minutes") == before + 1.0
    # the proof survives the wire in both media
    for media in (JSON, CBOR):
        assert ReleaseRequest.from_wire(loads(dumps(first.to_wire(), media), media)) == first


@pytest.mark.parametrize("media", [JSON, CBOR])
def test_the_server_noise_proof_crosses_the_key_holders_http_route(
        deployment: Deployment, media: str) -> None:
    app = create_keyholder_app(KeyholderConfig(deployment.root / "kh", None), deployment.holder)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {deployment.release_token}", "Content-Type": media,
               "Accept": codec_json}
    window = 1140 if media == JSON else 1200
    key, _ = deployment.collect("minutes", window)
    request = deployment.request(key)
    bare = {k: v for k, v in request.to_wire().items() if k != "server_noise_proof"}
    refused = client.post("/v1/releases", data=dumps(bare, media), headers=headers)
    assert refused.status_code >= 400 and "carries no proof" in refused.get_json()["detail"]
    answer = client.post("/v1/releases", data=dumps(request.to_wire(), media), headers=headers)
    assert answer.status_code in (200, 201), answer.get_data(as_text=True)[:300]
    statement = json.loads(answer.get_json()["payload"])
    assert statement["server_noise_proof"] == request.server_noise_proof


@pytest.mark.slow
def test_a_3072_bit_two_noise_release_with_noise_proofs(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    big = Deployment(tmp_path_factory.mktemp("noiseproofs3072"), bits=3072)
    key, truth = big.collect("minutes", 60)
    outcome = big.release(key)
    assert outcome.status == "released", outcome
    (stored,) = big.published(key)
    verify_published(stored.document, big.pinned)
    bound = noise_bound(big.manifest.policy("minutes"))
    assert all(abs(s - t) <= 2 * bound
               for s, t in zip(stored.document["noisy_slots"], truth, strict=True))
