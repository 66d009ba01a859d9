"""Question: what the noise proofs (``shared/threshold/noise_proof.py``) add to a release.

For one ``noise = "both"`` policy (a 4-slot vector, Gaussian, the demo's shape) under the
threshold key of ``benchmarks/threshold.py``, in one process (the parties run on different
machines in a deployment, but each step below waits for the one before it):

- ``release_without_proofs``: what a two-noise release computed before the proofs: both
  noises encrypted (``encrypt_noise``), folded, both parties' partials, ``combine``;
- ``release_with_proofs``: the same with each noise encrypted *and proven*
  (``prove_noise``) and each party verifying the other's proof (``verify_noise``);
- ``prove`` / ``verify``: one party's noise proof alone;
- ``offline_verify_added``: what ``verify_published`` adds (both proofs, verified again).

Sizes: the proof's binary content (``ReportProof.size``), its JSON text, aux ciphertexts.
Every timed release is first checked to decrypt to the aggregate plus both noises.
"""

from __future__ import annotations

import json
from typing import Any

from blindsum.benchmarks.timing import Timing, measure, ratio
from blindsum.server.noise import bounded_noise, noise_plan
from blindsum.shared.headroom import noise_bound
from blindsum.shared.policy import MetricPolicy, load_policies_toml
from blindsum.shared.threshold import Ceremony, combine, partial_decrypt
from blindsum.shared.threshold.noise_proof import (
    KEYHOLDER,
    SERVER,
    noise_context,
    noise_layout,
    prove_noise,
    verify_noise,
)
from blindsum.shared.threshold.release import decode_noised, encrypt_noise
from blindsum.shared.threshold.server_noise import fold_all
from blindsum.shared.validity import ReportProof

POLICY = """
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
"""
CONTEXT = b"bench;noise-proofs"
DIGEST = "ab" * 32


def _policy() -> MetricPolicy:
    (policy,) = load_policies_toml(POLICY)
    return policy


def run(ceremony: Ceremony, repeat: int) -> dict[str, Any]:
    """The figures named in the module docstring for ``ceremony``'s key."""
    public, (k_share, s_share) = ceremony.public, ceremony.shares
    policy = _policy()
    plan = noise_plan(policy)
    zeros = [public.paillier.encrypt_plaintext(0)]
    k_ctx = noise_context(policy, 60, public.key_id, KEYHOLDER, DIGEST)
    s_ctx = noise_context(policy, 60, public.key_id, SERVER)

    def decrypt(noised: list[Any]) -> list[int]:
        return [combine(public, c, [partial_decrypt(k_share, c, CONTEXT),
                                    partial_decrypt(s_share, c, CONTEXT)], CONTEXT)
                for c in noised]

    def without() -> list[int]:
        e_s = encrypt_noise(public, policy, bounded_noise(plan, policy))
        e_k = encrypt_noise(public, policy, bounded_noise(plan, policy))
        return decrypt(fold_all(public, zeros, e_s, e_k))

    def with_proofs() -> list[int]:
        e_s, p_s = prove_noise(public, policy, bounded_noise(plan, policy), s_ctx)
        verify_noise(public, policy, e_s, p_s, s_ctx, "the server")  # K, before paying
        e_k, p_k = prove_noise(public, policy, bounded_noise(plan, policy), k_ctx)
        verify_noise(public, policy, e_k, p_k, k_ctx, "the key-holder")  # S
        return decrypt(fold_all(public, zeros, e_s, e_k))

    bound = 2 * noise_bound(policy)  # an aggregate of 0 plus two draws within ±B each
    for release in (without, with_proofs):
        if any(abs(s) > bound for s in decode_noised(public, policy, release())):
            raise RuntimeError("a measured release does not decrypt to its noise")
    e_k, p_k = prove_noise(public, policy, [0] * policy.slot_count, k_ctx)
    ops: dict[str, Timing] = {
        "release_without_proofs": measure(without, repeat=repeat),
        "release_with_proofs": measure(with_proofs, repeat=repeat),
        "prove": measure(lambda: prove_noise(public, policy, bounded_noise(plan, policy),
                                             k_ctx), repeat=repeat),
        "verify": measure(lambda: verify_noise(public, policy, e_k, p_k, k_ctx, "K"),
                          repeat=repeat),
    }
    parsed = ReportProof.from_json_shape(p_k, public.paillier,
                                         noise_layout(public, policy).shape(public.paillier))
    added = ops["release_with_proofs"].median - ops["release_without_proofs"].median
    return {
        "policy": "vector, 4 slots, gaussian, noise = both",
        "key_bits": public.n.bit_length(),
        "timings": {name: timing.to_json() for name, timing in ops.items()},
        "added_release_s": added,
        "offline_verify_added_s": 2 * ops["verify"].median,
        "proof_bytes": parsed.size(),
        "proof_json_bytes": len(json.dumps(p_k, separators=(",", ":"))),
        "aux_ciphertexts": len(parsed.aux),
        "ratios": {"with_over_without": ratio(ops["release_with_proofs"].median,
                                              ops["release_without_proofs"].median)},
    }

