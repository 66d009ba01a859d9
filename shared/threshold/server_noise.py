"""The server's own noise in a two-party release (``noise = "both"`` policies).

Why: with the key-holder K the only party adding noise, DP of what is published rests on K
being honest about its noise, and K, knowing its noise, learns the exact aggregate from the
published value. With ``noise = "both"`` the aggregator server S adds an independent draw
too, each calibrated to the release's full ``(epsilon, delta)`` on its own.

Order (one round, the existing retry semantics unchanged):

1. S draws its noise ``z_S`` once per window (the plan's exact OpenDP sampler, each slot
   within ``[-B, B]``), encrypts ``z_S + B`` packed like a report (``E_S``), stores ``E_S``
   durably (never ``z_S``, which it forgets) and only then sends ``E_S`` in the release
   request. The request digest covers ``E_S``: a retry after a crash or a lost answer
   reads the stored ``E_S`` and resends the very same request, so K answers it with its
   stored statement — no second draw on either side, no second debit.
2. K, after its public checks and the debit, draws ``z_K``, encrypts it (``E_K``), and
   partially decrypts ``C = A·E_S·E_K``. Its signed statement carries ``A``, ``E_S``,
   ``E_K``, ``C`` and ``"noise_parties": ["keyholder", "server"]``.
3. S checks the statement's ``A`` and ``E_S`` are the ones it sent, ``C = A·E_S·E_K``, K's
   proofs; adds its partial; decoding subtracts ``2B`` (``headroom.noise_offset``).
4. Anyone can recompute, offline, the request digest from the statement's fields, ``A`` and
   ``E_S``, and ``C = A·E_S·E_K`` (``check_folded``): the server's noise is provably part of
   what was decrypted, and the value is the combination of the two proven partials.

What this gives, for each requirement:

(a) Nobody sees the exact aggregate: the only plaintext ever formed is ``A + z_S + z_K``.
    S knows ``z_S`` at most while encrypting it, so it learns ``A + z_K``; K learns
    ``A + z_S``. Each is the aggregate plus one full-budget DP draw.
(b) Either honest party's noise suffices against the public: the published slot sums are
    ``A + z_honest + z_other`` with ``z_honest`` drawn independently of everything the other
    party chose. S commits ``E_S`` before K draws, and K's partials are for one fixed ``C``,
    so S cannot adapt ``z_S`` to ``z_K``. Adding an independent ``z_other`` is
    post-processing of the ``(epsilon, delta)``-DP mechanism ``A + z_honest``; truncation at
    ``B`` is per draw, so the certified cost is ``headroom.truncation_cost`` either way.
    Each party also proves its noise ciphertext encrypts a value in ``[0, 2B]`` per slot
    that it knows (``noise_proof.py``): K verifies S's before paying, S verifies K's before
    its partials. So K cannot cancel S's noise homomorphically (``E_K = E_S^-1·Enc(2B)``
    encrypts ``B - z_S``, which K does not know) nor substitute any other ciphertext.
(c) Offline verification: step 4, plus every check ``release.verify_published`` did before.
(d) No second draw: step 1; the key-holder's side is the existing stored statement.

Headroom: a slot carries ``sum + z_K + z_S + 2B`` in ``[0, max_slot_sum + 4B]``; a threshold
key lays out slots for ``4B`` of headroom when the policy says ``both`` (``headroom.py``).
The interval half-width comes from the law of ``z_K + z_S`` (``server/accuracy.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..codec import request_fields_digest
from ..errors import InvalidProof
from .keys import ThresholdPublicKey

Mpz = Any  # gmpy2.mpz; gmpy2 ships no stubs.



def fold_all(public: ThresholdPublicKey, *layers: Sequence[Mpz]) -> list[Mpz]:
    """The ciphertext-wise product of ``layers`` (``A·E_S·E_K``): their plaintexts added."""
    nsq = public.nsquare
    first, *rest = layers
    out = list(first)
    for layer in rest:
        out = [a * b % nsq for a, b in zip(out, layer, strict=True)]
    return out


def check_folded(public: ThresholdPublicKey, payload: Mapping[str, Any],
                 aggregate: Sequence[Mpz], server_noise: Sequence[Mpz],
                 aggregate_blobs: Sequence[bytes], server_noise_blobs: Sequence[bytes],
                 noise: Sequence[Mpz], noised: Sequence[Mpz]) -> None:
    """What anyone can check about a two-noise statement without any secret: it answers the
    request made of ``A`` and ``E_S`` (the digest), and ``C = A·E_S·E_K``.

    Raises:
        InvalidProof: either fails.
    """
    digest = request_fields_digest(
        payload["metric"], payload["version"], payload["window"], payload["kid"],
        payload["report_count"], payload["report_ids_digest"], aggregate_blobs,
        server_noise_blobs)
    if digest != payload.get("request_digest"):
        raise InvalidProof("the statement's aggregate and server noise are not those of its "
                           "request digest")
    if fold_all(public, aggregate, server_noise, noise) != list(noised):
        raise InvalidProof("the noised ciphertexts are not the aggregate times the server's "
                           "and the key-holder's noise ciphertexts")
