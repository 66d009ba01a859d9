"""Each party's proof that its encrypted noise is a value in ``[0, 2B]`` per slot it knows.

**What is proven.** A party encrypts its packed noise ``z + B`` (each slot in ``[0, 2B]``,
``shared/headroom.py``) at the *aggregate's* layout (the threshold key's
``layout(slot_spec(policy))``, so it folds slot-aligned) and attaches a
``validity.slots`` proof: per slot ``i`` and digit ``j`` of ``range_digits(2B)`` (subset sums
of three consecutive ``range_weights(2B)``) an auxiliary ciphertext ``B_ij`` *the prover
creates*, an OR clause "``B_ij`` decrypts to ``v·2^(width·pos_i)`` for one of the digit's
values ``v``", and per chunk a linear clause "``E_k / Π B_ij`` decrypts to 0". The
Fiat-Shamir transcript binds metric, version, window, key id, the party, and for the
key-holder the request digest (which hashes ``A`` and ``E_S``), besides the key, the layout,
``E`` and every ``B_ij`` (``noise_context``).

**Range (membership soundness).** ``validity/sigma.py`` proves each clause's statement true
in ``G = Z*_{n^2}/R ≅ Z_n`` (the class of a ciphertext is its plaintext) with error
``2^-128`` per random-oracle query, using only that ``h`` is an ``n``-th residue by
construction: every ``B_ij`` decrypts to one of its digit's values (a 0/1 combination of
its weights) at the slot's place, and ``E_k`` to their sum. Since ``2B < 2^width`` and
``width·per <= usable_bits``, that sum is an integer below ``n`` and every slot of ``E`` is a
0/1 combination of ``range_weights(2B)``, so in ``[0, 2B]``: no out-of-range or negative
noise shifts the published value or breaks exact decoding.

**Knowledge (why cancellation is closed).** Membership soundness alone is not enough:
``E_S^-1·Enc(2B)`` encrypts ``B - z_S``, which *is* in ``[0, 2B]``. What excludes it is that
the prover knows ``E``'s plaintext. The membership Σ-protocol is *not* a proof of knowledge
of the randomiser ``a`` in ``D = h^a``: ``h`` has unknown order, and extracting ``a`` from two
transcripts needs ``(e - e')`` to divide ``(s - s')`` over the integers, which holds only
under the strong-RSA assumption with a base of unknown order that the prover cannot take
roots of (Fujisaki-Okamoto, CRYPTO 1997; Damgård-Fujisaki, ASIACRYPT 2002). We do not
need ``a``; we need the plaintext, and the OR clauses give it by special soundness:

- In a digit clause over ``B``, every branch whose value differs from ``B``'s plaintext
  is false (distinct values stay distinct mod ``n``: they are below ``2^width``): its
  ``[D] ≠ 0`` has order ``p``, ``q`` or ``n`` (all ``> 2^128``), so ``[u] + e_b·[D] = 0``
  pins its challenge ``e_b < 2^128`` given its commitment. Two accepting proofs with the
  same commitments and different Fiat-Shamir challenges ``e ≠ e'`` (all clauses share one
  ``e``) therefore differ in the challenge of a *true* branch of every clause (one whose
  value is the plaintext; the last digit's values may repeat, and any true branch names the
  same value): the extractor reads off every digit, hence every slot of ``E``'s plaintext,
  from one fork.
- The fork exists by the general forking lemma (Pointcheval-Stern, J. Cryptology 2000;
  Bellare-Neven, CCS 2006): a prover that outputs an accepting proof with probability
  ``ε`` after ``q`` hash queries is rewound at the query that gave ``e`` and succeeds again
  with probability about ``ε²/q``, so a polynomial-time extractor outputs the plaintext.
- The other party's proof (which the cheater sees) does not help it: its transcript names
  the other party (and another request digest), so it is a different random-oracle query
  and the cheater's proof is a fresh one; Fiat-Shamir with the statement in the hash is
  simulation-sound extractable when the Σ-protocol has special soundness and
  (computationally) unique responses (Bernhard-Pereira-Warinschi, ASIACRYPT 2012;
  Faust-Kohlweiss-Marson-Venturi, INDOCRYPT 2012). Responses are unique up to multiples of
  ``h``'s order, which is as hard to find as factoring ``n``.

So a party whose proof verifies has, with overwhelming probability, committed to a value it
knows, computed in polynomial time from its view. If K could pass with
``E_K = E_S^-1·Enc(x)`` (any ``x``), the extractor would output ``x - B - z_S`` and so
``z_S`` from ``E_S`` alone, breaking Paillier's semantic security (DCR); S's proof, as K sees
it, is simulatable (its aux ciphertexts are encryptions, its Σ-parts statistically HVZK,
``sigma.py``). The same argument excludes ``E_K = c_target·A^-1`` (the decryption-oracle
substitution of ``THRESHOLD.md``): its plaintext ``m_target - A`` is not known to K. Hence
``z_K`` is computationally independent of ``z_S`` and of every report, and the published
value carries the honest party's full draw.

Assumptions, stated: the random-oracle model for SHA-256 (Fiat-Shamir and forking), DCR
(Paillier), and factoring for unique responses; knowledge soundness is only as tight as the
forking lemma (a ``q``-factor loss). What this does *not* give: that the noise follows the
plan's distribution. An honest party's draw is what carries DP; the proof only stops the
other party from cancelling it, hiding it or moving the value outside the layout.

Freshness: the proof is bound to one release (window, party and, for K, the request digest
that hashes ``A`` and ``E_S``), so it is not replayable across windows, parties or requests.
S's proof cannot hash the request digest, which hashes ``E_S`` itself; it is bound to the
window (metric, version, window, key id) and S draws ``E_S`` once per window.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidInput, InvalidProof
from ..headroom import noise_bound
from ..manifest import slot_spec
from ..policy import MetricPolicy
from ..validity import ProofContext, ReportProof, SlotLayout
from ..validity.slots import parse_slots_proof, prove_slots, verify_slots
from .keys import ThresholdPublicKey

Mpz = Any  # gmpy2.mpz; gmpy2 ships no stubs.

KEYHOLDER, SERVER = "keyholder", "server"
NOISE_PROOF_TAG = "blindsum/threshold/noise-proof/v1"
# A proof has one aux ciphertext per slot and bit of 2B (60 for a 4-slot vector with
# 2B ~ 2^15, ~2.3 KB of JSON each at 3072 bits). A release body is bounded by its item count
# before it is parsed (``server/bodies.py``), so the count a proof may add is bounded too:
# at most MAX_AUX aux ciphertexts (~19 MB of JSON at 3072 bits), each at most
# WIRE_ITEMS_PER_AUX JSON values or CBOR items (its own clause: 8 and 18 measured).
MAX_AUX = 8192
WIRE_ITEMS_PER_AUX = 24
MAX_WIRE_ITEMS = WIRE_ITEMS_PER_AUX * (MAX_AUX + 64)  # + the linear clauses, <= 64 chunks


def noise_layout(public: ThresholdPublicKey, policy: MetricPolicy) -> SlotLayout:
    """The aggregate's layout, with each slot of the noise in ``[0, 2B]``."""
    width, per = public.paillier.layout(slot_spec(policy))
    return SlotLayout(policy.slot_count, width, per, 2 * noise_bound(policy))


def noise_context(policy: MetricPolicy, window: int, key_id: str, party: str,
                  request_digest: str = "") -> ProofContext:
    """What one party's noise proof is bound to: the release and the party.

    ``request_digest`` is the key-holder's (empty for the server, whose noise the digest
    hashes).
    """
    if party not in (KEYHOLDER, SERVER) or (party == KEYHOLDER) != bool(request_digest):
        raise InvalidInput("a noise proof is the key-holder's (with the request digest) or "
                           "the server's (without)")
    binding = json.dumps([NOISE_PROOF_TAG, party, request_digest], separators=(",", ":"))
    return ProofContext(policy.name, policy.version, window, key_id, binding.encode())


def prove_noise(public: ThresholdPublicKey, policy: MetricPolicy, noise: Sequence[int],
                context: ProofContext) -> tuple[list[Mpz], dict[str, Any]]:
    """``E`` (``noise + B`` per slot, the aggregate's layout) and its proof's JSON form.

    Raises:
        InvalidInput: not ``slot_count`` integers within ``±B``.
    """
    bound = noise_bound(policy)
    if len(noise) != policy.slot_count or any(abs(z) > bound for z in noise):
        raise InvalidInput(f"noise must be {policy.slot_count} integers within +-{bound}")
    layout = noise_layout(public, policy)
    if len(layout.aux_plan()) > MAX_AUX:
        raise InvalidInput(f"metric {policy.name!r}: its noise proof would need "
                           f"{len(layout.aux_plan())} aux ciphertexts, more than {MAX_AUX}")
    cts, proof = prove_slots(public.paillier, layout,
                             [int(z) + bound for z in noise], context)
    return cts, proof.to_json()


def verify_noise(public: ThresholdPublicKey, policy: MetricPolicy, noise: Sequence[Mpz],
                 proof: object, context: ProofContext, who: str) -> ReportProof:
    """Check ``who``'s noise ciphertexts against their proof; return the parsed proof.

    Raises:
        InvalidProof: missing, malformed or failing, naming ``who`` and the field.
    """
    if not isinstance(proof, Mapping):
        raise InvalidProof(f"{who}'s noise carries no proof of its range")
    paillier = public.paillier
    try:
        parsed = parse_slots_proof(proof, paillier, noise_layout(public, policy))
        verify_slots(paillier, noise_layout(public, policy), paillier.dump(list(noise)),
                     parsed, context)
    except InvalidProof as exc:
        raise InvalidProof(f"{who}'s noise proof: {exc.detail}") from None
    return parsed
