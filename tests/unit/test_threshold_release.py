"""Two-party threshold releases, in process: the key-holder's partial release, the server's
checks and combination, and offline verification of what is published."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gmpy2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from threshold_kit import forward, proven_reports

from blindsum.server.aggregator.keyholder_client import VerifiedResult, check_result
from blindsum.server.aggregator.threshold import ThresholdFinisher
from blindsum.server.keyholder import ledger
from blindsum.server.keyholder import threshold as kh_threshold
from blindsum.server.keyholder.release import noise_plan
from blindsum.server.keyholder.service import Keyholder
from blindsum.server.keystore import KeyStore
from blindsum.shared.codec import (
    ReleaseRequest,
    b64decode,
    b64encode,
)
from blindsum.shared.encoding import encode
from blindsum.shared.errors import InvalidInput, InvalidProof, ManifestError, ReleaseInterrupted
from blindsum.shared.headroom import noise_bound
from blindsum.shared.manifest import Manifest
from blindsum.shared.policy import load_policies_toml
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.signing import sign_document
from blindsum.shared.threshold import PartialDecryption, combine, partial_decrypt
from blindsum.shared.threshold.release import PartialRelease, verify_published

POLICIES = """
[metrics.minutes]
kind = "vector"
scheme = "paillier"
dimension = 4
lower = 0
upper = 60
min_contributors = 2
window_seconds = 60
privacy = { mechanism = "gaussian", epsilon = 1.0, delta = 1e-7, budget_epsilon = 1000.0 }

[metrics.pages]
kind = "histogram"
scheme = "paillier"
buckets = [0, 1, 2, 3]
min_contributors = 2
window_seconds = 60
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 1000.0 }
"""
VALUES = {"minutes": [[10, 20, 30, 40], [5, 0, 60, 1], [59, 58, 0, 0]],
          "pages": [0.5, 1.5, 2.5]}


class Deployment:
    def __init__(self, root: Path) -> None:
        self.holder, _ = Keyholder.init(root / "kh", None, 2048, clock=lambda: 0.0,
                                        server_dir=root / "srv")
        self.holder.add_policies(load_policies_toml(POLICIES))
        self.holder.db.clock = time.time
        self.pinned = self.holder.identity.public_key()
        self.manifest = Manifest.verify(self.holder.db.latest_manifest(), self.pinned)
        self.finisher = ThresholdFinisher(KeyStore.open(root / "srv", None))
        self.kid = self.manifest.active_key("paillier").key_id
        self.releaser = self.holder.releaser()

    def request(self, metric: str, window: int, values: list[Any] | None = None
                ) -> tuple[ReleaseRequest, list[int]]:
        """A window's request, built the way the SDK and the server build theirs."""
        policy = self.manifest.policy(metric)
        public = PaillierPublic.from_json(self.manifest.key(self.kid).public)  # SDK's view
        values = VALUES[metric] if values is None else values
        slots = [encode(policy, v) for v in values]
        # proven like the SDK's, forwarded like the server's: the key-holder sums them itself
        held = forward(self.holder, public, policy,
                       proven_reports(public, policy, self.kid, window, slots))
        truth = [sum(column) for column in zip(*slots, strict=True)]
        return ReleaseRequest(metric, policy.version, window, self.kid, len(values),
                              held.report_ids_digest, held.aggregate), truth

    def partial(self, request: ReleaseRequest) -> VerifiedResult:
        return check_result(self.releaser.release(request).document, self.pinned, request)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return Deployment(tmp_path_factory.mktemp("twoparty"))


def _resigned(deployment: Deployment, result: VerifiedResult, **changes: Any) -> VerifiedResult:
    """The statement as a malicious key-holder could sign it (its own identity)."""
    payload = {**result.payload, **changes}
    return VerifiedResult(sign_document(deployment.holder.identity, payload), payload)


def _bump(text: str) -> str:
    value = int.from_bytes(b64decode(text, "x"), "big") + 1
    return b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@pytest.mark.parametrize("metric", ["minutes", "pages"])
def test_a_threshold_release_publishes_a_value_anyone_can_verify(deployment: Deployment,
                                                                 metric: str) -> None:
    window = 60 * (1 if metric == "minutes" else 2)
    request, truth = deployment.request(metric, window)
    result = deployment.partial(request)
    assert result.payload["type"] == "blindsum.partial-release"
    assert "value" not in result.payload and "noisy_value" not in result.payload
    document, payload_text = deployment.finisher.finish(request, result)
    payload = verify_published(json.loads(json.dumps(document)), deployment.pinned)
    assert payload == json.loads(payload_text)
    assert payload["type"] == "blindsum.release" and payload["threshold"] is True
    assert payload["window"] == window and payload["report_count"] == len(VALUES[metric])
    # the noisy slot sums are the truth plus noise within the plan's bound
    bound = noise_bound(deployment.manifest.policy(metric))
    assert all(abs(s - t) <= bound for s, t in zip(document["noisy_slots"], truth,
                                                    strict=True))


def test_a_value_changed_by_one_unit_does_not_verify(deployment: Deployment) -> None:
    request, _ = deployment.request("minutes", 180)
    document, _ = deployment.finisher.finish(request, deployment.partial(request))
    verify_published(document, deployment.pinned)
    slots = list(document["noisy_slots"])
    slots[0] += 1
    with pytest.raises(InvalidProof, match="noisy slot sums"):
        verify_published({**document, "noisy_slots": slots}, deployment.pinned)
    payload = json.loads(document["payload"])
    payload["noisy_value"][1] += 1
    with pytest.raises(InvalidProof, match="noisy_value"):
        verify_published({**document, "payload": json.dumps(payload)}, deployment.pinned)
    partials = [dict(p) for p in document["server_partials"]]
    partials[0]["c"] = _bump(partials[0]["c"])
    with pytest.raises(InvalidProof):
        verify_published({**document, "server_partials": partials}, deployment.pinned)
    # a statement checked against an identity that did not sign it
    with pytest.raises(ManifestError):
        verify_published(document, Ed25519PrivateKey.generate().public_key())


def test_the_key_holders_share_alone_cannot_decrypt_a_report(deployment: Deployment) -> None:
    share = deployment.holder.secret_for("paillier", deployment.kid)
    public = share.public
    m = 123_456_789
    c = public.paillier.encrypt_plaintext(m)
    mine = partial_decrypt(share, c, b"ctx")
    with pytest.raises(InvalidInput, match="exactly one partial from each"):
        combine(public, c, [mine], b"ctx")
    # treating its own partial as the whole decryption gives an unrelated residue
    alone = (gmpy2.powmod(mine.value, 2, public.nsquare) - 1) // public.n \
        * gmpy2.invert(4 * public.delta, public.n) % public.n
    assert alone != m


def test_a_corrupted_key_holder_partial_is_detected_and_nothing_published(
        deployment: Deployment) -> None:
    request, _ = deployment.request("minutes", 240)
    result = deployment.partial(request)
    partials = [dict(p) for p in result.payload["partials"]]
    partials[0]["c"] = _bump(partials[0]["c"])
    with pytest.raises(InvalidProof, match="party 1"):
        deployment.finisher.finish(request, _resigned(deployment, result, partials=partials))


def test_a_corrupted_server_partial_is_detected(deployment: Deployment) -> None:
    request, _ = deployment.request("minutes", 300)
    result = deployment.partial(request)
    statement = PartialRelease.from_payload(result.payload)
    share = deployment.finisher.share(deployment.kid)
    own = [partial_decrypt(share, c, statement.context)
           for c in statement.noised]
    forged = [PartialDecryption(p.key_id, p.index, p.value * 4 % share.public.nsquare,
                                p.proof) for p in own]
    with pytest.raises(InvalidProof, match="party 2"):
        statement.finish(forged)


def test_noise_that_is_not_folded_into_our_aggregate_is_refused(
        deployment: Deployment) -> None:
    request, _ = deployment.request("minutes", 360)
    result = deployment.partial(request)
    other, _ = deployment.request("minutes", 3600, [[1, 2, 3, 4], [4, 3, 2, 1]])
    # a statement about another aggregate: C != A·E for ours
    forged = deployment.partial(other)
    with pytest.raises(InvalidProof, match="not our aggregate"):
        deployment.finisher.finish(request, _resigned(
            deployment, result, noised=forged.payload["noised"],
            partials=forged.payload["partials"]))


def test_a_partial_replayed_from_another_window_is_refused(deployment: Deployment) -> None:
    first, _ = deployment.request("minutes", 420)
    second, _ = deployment.request("minutes", 480)
    old = deployment.partial(first)
    new = deployment.partial(second)
    # the old window's statement as the answer to the new request
    with pytest.raises(ManifestError, match="window"):
        check_result(old.document, deployment.pinned, second)
    # the old window's ciphertexts and partials re-signed for the new window
    replay = _resigned(deployment, new, noise=old.payload["noise"],
                       noised=old.payload["noised"], partials=old.payload["partials"])
    with pytest.raises(InvalidProof):
        deployment.finisher.finish(second, replay)
    # only the partials replayed: bound to the old window's context
    replay = _resigned(deployment, new, partials=old.payload["partials"])
    with pytest.raises(InvalidProof, match="party 1"):
        deployment.finisher.finish(second, replay)


def test_a_lost_answer_is_answered_again_without_a_second_draw_or_debit(
        deployment: Deployment) -> None:
    request, _ = deployment.request("pages", 540)
    policy = deployment.manifest.policy("pages")
    before = ledger.budget(deployment.holder.db.conn, policy).spent_epsilon
    first = deployment.releaser.release(request)
    again = deployment.releaser.release(request)
    assert first.created and not again.created
    assert again.document == first.document  # same noise ciphertexts, same partials
    assert ledger.budget(deployment.holder.db.conn, policy).spent_epsilon == \
        before + policy.privacy.epsilon
    # and the server finishes the stored statement to the same published document
    one = deployment.finisher.finish(request, check_result(first.document,
                                                           deployment.pinned, request))
    two = deployment.finisher.finish(request, check_result(again.document,
                                                           deployment.pinned, request))
    assert one[0]["noisy_slots"] == two[0]["noisy_slots"]


def test_a_crash_after_payment_never_draws_noise_again(deployment: Deployment,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    request, _ = deployment.request("pages", 600)
    policy = deployment.manifest.policy("pages")
    before = ledger.budget(deployment.holder.db.conn, policy).spent_epsilon
    draws: list[int] = []
    real = kh_threshold.bounded_noise

    def crashing(plan: Any, p: Any) -> list[int]:
        draws.append(1)
        real(plan, p)
        raise OSError("the process died mid-release")

    monkeypatch.setattr(kh_threshold, "bounded_noise", crashing)
    with pytest.raises(ReleaseInterrupted):
        deployment.releaser.release(request)
    monkeypatch.setattr(kh_threshold, "bounded_noise", real)
    with pytest.raises(ReleaseInterrupted):
        deployment.releaser.release(request)
    assert draws == [1]
    assert ledger.budget(deployment.holder.db.conn, policy).spent_epsilon == \
        before + policy.privacy.epsilon


def test_noise_stays_within_its_bound_and_keeps_the_plans_distribution(
        deployment: Deployment) -> None:
    policy = deployment.manifest.policy("pages")
    plan = noise_plan(policy)
    bound = noise_bound(policy)
    draws = [z for _ in range(200) for z in kh_threshold.bounded_noise(plan, policy)]
    assert max(abs(z) for z in draws) <= bound
    assert len(set(draws)) > 3  # not a constant
