"""The key-holder's half of a threshold release: noise under encryption, then its partial.

With a threshold key the key-holder holds one share of the decryption exponent and never
decrypts: after paying it draws the release's noise with the plan's OpenDP sampler,
encrypts it with its offset (``shared/headroom.py``), folds it into the aggregate and
answers its partial decryption of that noised aggregate with a proof
(``shared/threshold/release.py`` has the protocol). What it signs holds no plaintext: the
noise stays known only to this process, for as long as the call lasts.
"""

from __future__ import annotations

from typing import Any

from blindsum.server.noise import NoisePlan, bounded_noise
from blindsum.shared.codec import ReleaseRequest
from blindsum.shared.errors import ReleaseRefused
from blindsum.shared.headroom import bound_scale, noise_bound, truncation_cost
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.threshold.decryption import partial_decrypt
from blindsum.shared.threshold.keys import KeyShare
from blindsum.shared.threshold.release import (
    decryption_context,
    dump_ciphertexts,
    encrypt_noise,
    fold,
)


def check_plan_fits(policy: MetricPolicy, plan: NoisePlan) -> None:
    """Refuse (a public fact, before paying) a plan noisier than the layout's headroom."""
    if plan.scale > bound_scale(policy):
        raise ReleaseRefused(
            f"metric {policy.name!r}: its noise scale {plan.scale:g} exceeds the bound "
            f"{bound_scale(policy):g} its threshold-key layout reserves room for")


def partial_release_fields(share: KeyShare, policy: MetricPolicy, request: ReleaseRequest,
                           request_digest: str, plan: NoisePlan) -> dict[str, Any]:
    """The statement's threshold members: ``noise`` (E), ``noised`` (A·E), ``partials``,
    and what a verifier needs to redo the post-processing."""
    public = share.public
    aggregate = public.paillier.load(list(request.aggregate), slot_spec(policy))
    noise = encrypt_noise(public, policy, bounded_noise(plan, policy))
    noised = fold(public, aggregate, noise)
    context = decryption_context(policy.name, policy.version, request.window, request.key_id,
                                 request_digest)
    partials = [partial_decrypt(share, c, context).to_json() for c in noised]
    epsilon, delta = truncation_cost(policy)
    return {
        "noise": dump_ciphertexts(public, noise),
        "noised": dump_ciphertexts(public, noised),
        "partials": partials,
        "noise_bound": noise_bound(policy),
        "certified_epsilon": epsilon,
        "certified_delta": delta,
        "public": public.to_json(),
        "policy": policy.to_json(),
    }
