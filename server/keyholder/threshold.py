"""The key-holder's half of a threshold release: noise under encryption, then its partial.

With a threshold key the key-holder holds one share of the decryption exponent and never
decrypts: after paying it draws the release's noise with the plan's OpenDP sampler,
encrypts it with its offset (``shared/headroom.py``), folds it into the aggregate and
answers its partial decryption of that noised aggregate with a proof
(``shared/threshold/release.py`` has the protocol). What it signs holds no plaintext: the
noise stays known only to this process, for as long as the call lasts.

With a ``noise = "both"`` policy the request also carries the server's noise ciphertexts
``E_S``; the key-holder folds them in too (``C = A·E_S·E_K``) and signs ``A`` and ``E_S``
with its statement, so anyone can check offline that the server's noise was decrypted with
the rest (``shared/threshold/server_noise.py``).

Both noises carry proofs that they encrypt, per slot, a value in ``[0, 2B]`` their party
knows (``shared/threshold/noise_proof.py``): the key-holder verifies the server's before it
pays (a refusal names only public facts: the proof's field or failing equation) and signs it
with its statement; it proves its own in the same statement.
"""

from __future__ import annotations

from typing import Any

from blindsum.server.noise import NoisePlan, bounded_noise
from blindsum.shared.codec import ReleaseRequest, b64encode
from blindsum.shared.errors import InvalidProof, ReleaseRefused
from blindsum.shared.headroom import bound_scale, noise_bound, truncation_cost
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.threshold.decryption import partial_decrypt
from blindsum.shared.threshold.keys import KeyShare, ThresholdPublicKey
from blindsum.shared.threshold.noise_proof import (
    KEYHOLDER,
    SERVER,
    noise_context,
    prove_noise,
    verify_noise,
)
from blindsum.shared.threshold.release import decryption_context, dump_ciphertexts
from blindsum.shared.threshold.server_noise import fold_all


def check_plan_fits(policy: MetricPolicy, plan: NoisePlan) -> None:
    """Refuse (a public fact, before paying) a plan noisier than the layout's headroom."""
    if plan.scale > bound_scale(policy):
        raise ReleaseRefused(
            f"metric {policy.name!r}: its noise scale {plan.scale:g} exceeds the bound "
            f"{bound_scale(policy):g} its threshold-key layout reserves room for")


def check_server_noise(public: ThresholdPublicKey, policy: MetricPolicy,
                       request: ReleaseRequest) -> None:
    """Refuse (a public fact, before paying) a request whose server noise does not match the
    policy: with ``noise = "both"`` well-formed ciphertexts whose proof (range and knowledge,
    bound to this window and the server) verifies; absent otherwise."""
    if policy.noise != "both":
        if request.server_noise or request.server_noise_proof is not None:
            raise ReleaseRefused(f"metric {policy.name!r} v{policy.version}: its policy has "
                                 "the key-holder alone add noise; the request carries server "
                                 "noise")
        return
    if not request.server_noise:
        raise ReleaseRefused(f"metric {policy.name!r} v{policy.version}: its policy has both "
                             "parties add noise; the request carries no server noise")
    noise = public.paillier.load(list(request.server_noise), slot_spec(policy))
    try:
        verify_noise(public, policy, noise, request.server_noise_proof,
                     noise_context(policy, request.window, request.key_id, SERVER),
                     "the server")
    except InvalidProof as exc:
        raise ReleaseRefused(f"metric {policy.name!r} v{policy.version} window "
                             f"{request.window}: {exc.detail}") from None


def _server_noise_fields(policy: MetricPolicy, request: ReleaseRequest) -> dict[str, Any]:
    """What the statement says about who added noise; the request's own bytes of ``A`` and
    ``E_S`` with two noises, so a verifier recomputes the request digest from them."""
    if policy.noise != "both":
        return {"noise_parties": list(policy.noise_parties)}
    return {
        "noise_parties": list(policy.noise_parties),
        "aggregate": [b64encode(c) for c in request.aggregate],
        "server_noise": [b64encode(c) for c in request.server_noise],
        "server_noise_proof": dict(request.server_noise_proof or {}),
    }


def partial_release_fields(share: KeyShare, policy: MetricPolicy, request: ReleaseRequest,
                           request_digest: str, plan: NoisePlan) -> dict[str, Any]:
    """The statement's threshold members: ``noise`` (E) and ``noise_proof``, ``noised``
    (A·E), ``partials``, and what a verifier needs to redo the post-processing."""
    public = share.public
    spec = slot_spec(policy)
    aggregate = public.paillier.load(list(request.aggregate), spec)
    server_noise = public.paillier.load(list(request.server_noise), spec) \
        if request.server_noise else []
    noise, noise_proof = prove_noise(
        public, policy, bounded_noise(plan, policy),
        noise_context(policy, request.window, request.key_id, KEYHOLDER, request_digest))
    noised = fold_all(public, aggregate, *([server_noise] if server_noise else []), noise)
    context = decryption_context(policy.name, policy.version, request.window, request.key_id,
                                 request_digest)
    partials = [partial_decrypt(share, c, context).to_json() for c in noised]
    epsilon, delta = truncation_cost(policy)
    return {
        **_server_noise_fields(policy, request),
        "noise": dump_ciphertexts(public, noise),
        "noise_proof": noise_proof,
        "noised": dump_ciphertexts(public, noised),
        "partials": partials,
        "noise_bound": noise_bound(policy),
        "certified_epsilon": epsilon,
        "certified_delta": delta,
        "public": public.to_json(),
        "policy": policy.to_json(),
    }
