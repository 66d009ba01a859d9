"""``noise = "both"``: the server's own noise in a two-party release, in process (a real
ceremony, key-holder, aggregator store and finisher): one draw per window, folded into what
is decrypted, checkable offline, and refused where it cannot hold."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from threshold_kit import forward, proven_reports

from blindsum.server.aggregator.keyholder_client import VerifiedResult, check_result
from blindsum.server.aggregator.methodology import methodology
from blindsum.server.aggregator.presentation import build_view
from blindsum.server.aggregator.store import Store, WindowKey
from blindsum.server.aggregator.threshold import ThresholdFinisher
from blindsum.server.keyholder import ledger
from blindsum.server.keyholder.service import Keyholder
from blindsum.server.keystore import KeyStore
from blindsum.server.noise import noise_plan
from blindsum.shared.codec import (
    ReleaseRequest,
    ReleaseResult,
    b64decode,
    b64encode,
    report_ids_digest,
    request_fields_digest,
)
from blindsum.shared.encoding import encode
from blindsum.shared.errors import InvalidPolicy, InvalidProof, ReleaseRefused, UpstreamError
from blindsum.shared.headroom import noise_bound
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.policy import load_policies_toml
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.signing import sign_document
from blindsum.shared.threshold import partial_decrypt
from blindsum.shared.threshold.release import PartialRelease, dump_ciphertexts, verify_published
from blindsum.shared.threshold.server_noise import fold_all

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

[metrics.solo]
kind = "count"
scheme = "paillier"
min_contributors = 2
window_seconds = 60
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 1000.0 }
"""
VALUES: dict[str, list[Any]] = {"minutes": [[10, 20, 30, 40], [5, 0, 60, 1], [59, 58, 0, 0]],
                                "pages": [0.5, 1.5, 2.5], "solo": [1, 0, 1]}


class Deployment:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.holder, _ = Keyholder.init(root / "kh", None, 2048, clock=lambda: 0.0,
                                        server_dir=root / "srv")
        self.holder.add_policies(load_policies_toml(POLICIES))
        self.holder.db.clock = time.time
        self.pinned = self.holder.identity.public_key()
        self.manifest = Manifest.verify(self.holder.db.latest_manifest(), self.pinned)
        self.store = Store(root / "srv")
        self.finisher = ThresholdFinisher(
            KeyStore.open(root / "srv", None),
            lambda name, version: self.manifest.policy(name))
        self.kid = self.manifest.active_key("paillier").key_id
        self.releaser = self.holder.releaser()

    def request(self, metric: str, window: int) -> tuple[ReleaseRequest, list[int]]:
        """A window's request as the server builds it, with its committed noise."""
        policy = self.manifest.policy(metric)
        public = PaillierPublic.from_json(self.manifest.key(self.kid).public)
        slots = [encode(policy, v) for v in VALUES[metric]]
        held = forward(self.holder, public, policy,
                       proven_reports(public, policy, self.kid, window, slots))
        key = WindowKey(metric, policy.version, window, self.kid)
        noise = self.finisher.committed_noise(self.store, key, time.time())
        request = ReleaseRequest(
            metric, policy.version, window, self.kid, len(slots), held.report_ids_digest,
            held.aggregate, server_noise=noise.ciphertexts, server_noise_proof=noise.proof)
        return request, [sum(column) for column in zip(*slots, strict=True)]

    def partial(self, request: ReleaseRequest) -> VerifiedResult:
        return check_result(self.releaser.release(request).document, self.pinned, request)

    def resigned(self, result: VerifiedResult, **changes: Any) -> VerifiedResult:
        """The statement as a malicious key-holder could sign it (its own identity)."""
        payload = {**result.payload, **changes}
        return VerifiedResult(sign_document(self.holder.identity, payload), payload)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return Deployment(tmp_path_factory.mktemp("twonoise"))


def _bump(text: str) -> str:
    value = int.from_bytes(b64decode(text, "x"), "big") + 1
    return b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@pytest.mark.parametrize("metric", ["minutes", "pages"])
def test_a_two_noise_release_publishes_a_value_anyone_can_verify(deployment: Deployment,
                                                                 metric: str) -> None:
    window = 60 * (1 if metric == "minutes" else 2)
    request, truth = deployment.request(metric, window)
    assert request.server_noise  # committed before the request is sent
    result = deployment.partial(request)
    document, payload_text = deployment.finisher.finish(request, result)
    payload = verify_published(json.loads(json.dumps(document)), deployment.pinned)
    assert payload == json.loads(payload_text)
    assert payload["noise_parties"] == ["keyholder", "server"]
    policy = deployment.manifest.policy(metric)
    plan = noise_plan(policy)
    # the signed interval is the sum's (wider than one draw's), and the noise is two draws
    statement = PartialRelease.from_payload(result.payload)
    assert statement.half_width == plan.half_width(0.05, 2) > plan.half_width(0.05)
    bound = noise_bound(policy)
    assert all(abs(s - t) <= 2 * bound
               for s, t in zip(document["noisy_slots"], truth, strict=True))
    # the statement binds the server's noise: C = A·E_S·E_K for the ciphertexts we sent
    assert [b64decode(c, "c") for c in result.payload["server_noise"]] == \
        list(request.server_noise)


def test_the_server_draws_its_noise_once_per_window(deployment: Deployment) -> None:
    first, _ = deployment.request("minutes", 600)
    again, _ = deployment.request("minutes", 600)
    assert again.server_noise == first.server_noise
    # a restarted server (a new finisher on the same store) resends the same noise
    restarted = ThresholdFinisher(KeyStore.open(deployment.root / "srv", None),
                                  lambda name, version: deployment.manifest.policy(name))
    key = WindowKey("minutes", first.version, 600, deployment.kid)
    again_noise = restarted.committed_noise(deployment.store, key, time.time())
    assert again_noise.ciphertexts == first.server_noise
    assert again_noise.proof == first.server_noise_proof  # the stored proof, not a new one
    # another window gets its own draw
    other, _ = deployment.request("minutes", 660)
    assert other.server_noise != first.server_noise


def test_a_retried_two_noise_release_is_answered_again_without_a_second_draw_or_debit(
        deployment: Deployment) -> None:
    request, _ = deployment.request("pages", 720)
    policy = deployment.manifest.policy("pages")
    before = ledger.budget(deployment.holder.db.conn, policy).spent_epsilon
    first = deployment.releaser.release(request)
    # rebuilt after a lost answer: the server's stored noise for the window, not a new draw
    retry = deployment.finisher.committed_noise(
        deployment.store, WindowKey("pages", policy.version, 720, deployment.kid), time.time())
    again = deployment.releaser.release(
        ReleaseRequest(**{**request.__dict__, "server_noise": retry.ciphertexts}))
    assert first.created and not again.created
    assert again.document == first.document
    assert ledger.budget(deployment.holder.db.conn, policy).spent_epsilon == \
        before + policy.privacy.epsilon


def test_a_key_holder_that_drops_the_server_noise_is_caught(deployment: Deployment) -> None:
    request, _ = deployment.request("minutes", 780)
    result = deployment.partial(request)
    statement = PartialRelease.from_payload(result.payload)
    share = deployment.holder.secret_for("paillier", deployment.kid)
    public = share.public
    # C' = A·E_K with valid proofs: the server's noise left out of what is decrypted
    dropped = fold_all(public, statement.aggregate, statement.noise)
    partials = [partial_decrypt(share, c, statement.context).to_json() for c in dropped]
    forged = deployment.resigned(result, noised=dump_ciphertexts(public, dropped),
                                 partials=partials)
    with pytest.raises(InvalidProof, match="server's and the key-holder's noise"):
        deployment.finisher.finish(request, forged)


def test_tampered_server_noise_or_a_value_changed_by_one_unit_does_not_verify(
        deployment: Deployment) -> None:
    request, _ = deployment.request("minutes", 840)
    result = deployment.partial(request)
    document, _ = deployment.finisher.finish(request, result)
    verify_published(document, deployment.pinned)
    # the statement re-signed with other server noise: its request digest no longer matches
    tampered = [_bump(c) for c in result.payload["server_noise"]]
    forged = deployment.resigned(result, server_noise=tampered)
    with pytest.raises(InvalidProof, match="request digest"):
        verify_published({**document, "statement": forged.document}, deployment.pinned)
    with pytest.raises(InvalidProof):
        deployment.finisher.finish(request, forged)
    # ... and with the request digest recomputed for it, C = A·E_S·E_K fails offline
    p = result.payload
    digest = request_fields_digest(p["metric"], p["version"], p["window"], p["kid"],
                                   p["report_count"], p["report_ids_digest"],
                                   request.aggregate, [b64decode(c, "c") for c in tampered])
    forged = deployment.resigned(result, server_noise=tampered, request_digest=digest)
    with pytest.raises(InvalidProof, match="server's and the key-holder's noise"):
        verify_published({**document, "statement": forged.document}, deployment.pinned)
    slots = list(document["noisy_slots"])
    slots[2] += 1
    with pytest.raises(InvalidProof, match="noisy slot sums"):
        verify_published({**document, "noisy_slots": slots}, deployment.pinned)
    payload = json.loads(document["payload"])
    payload["noisy_value"][0] += 1
    with pytest.raises(InvalidProof, match="noisy_value"):
        verify_published({**document, "payload": json.dumps(payload)}, deployment.pinned)
    payload = json.loads(document["payload"])
    payload["noise_parties"] = ["keyholder"]
    with pytest.raises(InvalidProof, match="noise_parties"):
        verify_published({**document, "payload": json.dumps(payload)}, deployment.pinned)


def test_a_request_without_the_policys_server_noise_is_refused_before_paying(
        deployment: Deployment) -> None:
    request, _ = deployment.request("minutes", 900)
    policy = deployment.manifest.policy("minutes")
    before = ledger.budget(deployment.holder.db.conn, policy).spent_epsilon
    bare = ReleaseRequest(**{**request.__dict__, "server_noise": ()})
    with pytest.raises(ReleaseRefused, match="carries no server noise"):
        deployment.releaser.release(bare)
    solo, _ = deployment.request("solo", 900)
    assert solo.server_noise == ()  # a key-holder-noise policy: the server draws nothing
    with pytest.raises(ReleaseRefused, match="key-holder alone"):
        deployment.releaser.release(
            ReleaseRequest(**{**solo.__dict__, "server_noise": request.server_noise}))
    assert ledger.budget(deployment.holder.db.conn, policy).spent_epsilon == before
    # the refused request changed nothing: the real one still releases
    deployment.finisher.finish(request, deployment.partial(request))


def test_a_single_key_holder_refuses_a_two_noise_policy(tmp_path: Path) -> None:
    holder, _ = Keyholder.init(tmp_path / "kh", None, 2048, clock=lambda: 0.0)
    policies = [p for p in load_policies_toml(POLICIES) if p.name == "minutes"]
    with pytest.raises(InvalidPolicy, match="needs a two-party threshold key"):
        holder.add_policies(policies)
    assert holder.db.current_policies(holder.db.conn) == []


@pytest.mark.parametrize(("fields", "message"), [
    ('noise = "server"', "noise must be one of"),
    ("noise = 2", "noise must be one of"),
    ('noise = "both"\nscheme = "ckks"', "needs a threshold Paillier key"),
])
def test_bad_noise_values_are_refused(fields: str, message: str) -> None:
    scheme = "" if "scheme" in fields else 'scheme = "paillier"\n'
    text = (f'[metrics.m]\nkind = "count"\n{scheme}{fields}\n'
            'privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 10.0 }\n')
    with pytest.raises(InvalidPolicy, match=message):
        load_policies_toml(text)


def test_the_noise_mode_is_part_of_the_signed_policy_only_when_it_is_both() -> None:
    both, _, solo = load_policies_toml(POLICIES)
    assert both.to_json()["noise"] == "both"
    assert "noise" not in solo.to_json()  # old policies keep their canonical form
    assert type(both).from_mapping(both.name, both.to_json()) == both


def test_the_dashboard_interval_and_methodology_say_two_draws(deployment: Deployment) -> None:
    request, _ = deployment.request("minutes", 960)
    _, payload_text = deployment.finisher.finish(request, deployment.partial(request))
    payload = json.loads(payload_text)
    policy = deployment.manifest.policy("minutes")
    result = ReleaseResult.from_json(payload)
    assert result.noise_parties == ("keyholder", "server")
    view = build_view(result, policy)
    # the dashboard's half-width is the signed statement's (the signed ci is clipped to the
    # domain): the sum of both draws, not one
    one_draw = build_view(dataclasses.replace(result, noise_parties=("keyholder",)), policy)
    assert view.half_width == noise_plan(policy).half_width(0.05, 2)
    assert one_draw.half_width == noise_plan(policy).half_width(0.05) < view.half_width
    noise = next(s for s in methodology(policy, "ed25519:x") if s.heading == "Noise")
    text = " ".join(noise.sentences)
    assert "one by the key-holder and one by the aggregator server" in text
    assert "wider" in text and "either party" in text
    solo = next(s for s in methodology(deployment.manifest.policy("solo"), "ed25519:x")
                if s.heading == "Noise")
    assert "aggregator server" not in " ".join(solo.sentences)


def test_no_server_noise_is_guessed_before_the_manifest_is_loaded(
        deployment: Deployment) -> None:
    waiting = ThresholdFinisher(KeyStore.open(deployment.root / "srv", None),
                                lambda name, version: None, lambda: False)
    key = WindowKey("minutes", 1, 1020, deployment.kid)
    with pytest.raises(UpstreamError, match="manifest is not loaded"):
        waiting.committed_noise(deployment.store, key, time.time())
    assert deployment.store.server_noise(key) is None


def test_a_statement_misstating_who_added_noise_is_refused(deployment: Deployment) -> None:
    request, _ = deployment.request("minutes", 1080)
    result = deployment.partial(request)
    with pytest.raises(InvalidProof, match="noise_parties"):
        deployment.finisher.finish(request, deployment.resigned(
            result, noise_parties=["keyholder"]))
    solo, _ = deployment.request("solo", 1080)
    claimed = deployment.resigned(deployment.partial(solo),
                                  noise_parties=["keyholder", "server"])
    with pytest.raises(InvalidProof, match="noise_parties"):
        deployment.finisher.finish(solo, claimed)


def test_a_two_noise_window_under_a_replaced_single_key_is_refused_before_paying(
        tmp_path: Path) -> None:
    """After a rotation to --threshold, a late window under the old single key cannot get
    the server's noise: the key-holder refuses it on public grounds instead of publishing
    it with its noise alone."""
    holder, _ = Keyholder.init(tmp_path / "kh", None, 2048, clock=lambda: 0.0)
    old_kid = next(k.key_id for k in holder.db.key_records() if k.scheme == "paillier")
    holder.rotate("paillier", tmp_path / "srv", None, threshold=True)
    holder.add_policies([p for p in load_policies_toml(POLICIES) if p.name == "minutes"])
    holder.db.clock = time.time
    manifest = Manifest.verify(holder.db.latest_manifest(), holder.identity.public_key())
    policy = manifest.policy("minutes")
    public = PaillierPublic.from_json(manifest.key(old_kid).public)
    spec = slot_spec(policy)
    reports = [public.load(public.encrypt(encode(policy, v), spec), spec)
               for v in VALUES["minutes"]]
    request = ReleaseRequest("minutes", policy.version, 60, old_kid, len(reports),
                             report_ids_digest([secrets.token_bytes(16) for _ in reports]),
                             tuple(public.dump(public.add_many(reports))))
    before = ledger.budget(holder.db.conn, policy).spent_epsilon
    with pytest.raises(ReleaseRefused, match="needs a threshold key"):
        holder.releaser().release(request)
    assert ledger.budget(holder.db.conn, policy).spent_epsilon == before
