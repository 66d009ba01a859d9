"""Partial decryptions with proofs, their combination, and offline checks of a plaintext.

Party ``i`` holding ``d_i`` answers a ciphertext ``c`` with ``c_i = c^(2Δ·d_i) mod n^2`` and a
proof (``proof.py``) that ``log_{c^4}(c_i^2) = log_v(v_i)``, i.e. that it used the share
behind its published verification key. The combiner verifies every proof, then

    ∏ c_i^2 = c^(4Δ·Σ d_i) = c^(4Δ·d) = 1 + 4Δ·m·n (mod n^2),  m = L(·)·(4Δ)^-1 mod n

(n-of-n needs no Lagrange coefficients). For Shamir sharing (t-of-n) any set ``S`` of at
least ``t`` parties combines with Shoup's integer coefficients
``μ_i = Δ·∏_(j in S, j != i) j/(j - i)`` (integers because ``Δ = parties!``):

    ∏ (c_i^2)^μ_i = c^(4Δ·Σ μ_i·d_i) = c^(4Δ²·d) = 1 + 4Δ²·m·n,  m = L(·)·(4Δ²)^-1 mod n

since ``Σ μ_i·f(i) = Δ·f(0) (mod n·p'q')`` and ``c^4`` has order dividing ``n·p'q'``. Only the
squares ``c_i^2`` enter, so the order-2 ambiguity a proof leaves in ``c_i`` (its sign, see
``proof.py``) never reaches ``m``.

Binding: each proof's Fiat-Shamir transcript holds the key's fingerprint (``n``, ``v``, all
``v_i``, key id, parties), the party index, ``c``, ``c_i`` and a caller-chosen ``context``
(the release: metric, version, window, release id), so a partial cannot be replayed for
another ciphertext, key, party or release.

Privacy of the partials: for a coalition holding every share but ``d_k``, party ``k``'s
``c_k = (1+n)^(2Δm)·∏_(j≠k) c_j^-1`` is computable from ``m`` and the coalition's own
partials, and the proof is simulatable (statistical ZK), so the partials reveal ``m`` and
nothing else; a coalition short of one party sees only the partials of one ciphertext,
whose decryption it was meant to learn anyway.

Public verifiability: ``verify_plaintext`` needs only the public key, the ciphertext, the
partials with proofs and the context, and recomputes ``m``: anyone can check a published
value offline, and a value off by one unit fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2

from ..errors import InvalidCiphertext, InvalidInput, InvalidProof
from ..schemes.paillier import _b64u_to_int, _int_to_b64u
from . import proof as eqlog
from .keys import KeyShare, ThresholdPublicKey, is_unit, secret_powmod

Mpz = Any  # gmpy2.mpz; gmpy2 ships no stubs.

MAX_CONTEXT_BYTES = 4096
_TAG = b"partial-decryption"


@dataclass(frozen=True)
class PartialDecryption:
    """Party ``index``'s ``c_i`` for one ciphertext under key ``key_id``, with its proof."""

    key_id: str
    index: int
    value: Mpz
    proof: eqlog.EqualLogProof

    def to_json(self) -> dict[str, Any]:
        return {"kid": self.key_id, "party": self.index, "c": _int_to_b64u(self.value),
                "e": _int_to_b64u(self.proof.challenge), "z": _int_to_b64u(self.proof.response)}

    @classmethod
    def from_json(cls, obj: object) -> PartialDecryption:
        """Parse ``to_json`` output (shape only; ``verify_partial`` checks the maths)."""
        where = "partial decryption"
        expected = {"kid", "party", "c", "e", "z"}
        if not isinstance(obj, Mapping) or set(obj) != expected:
            raise InvalidProof(f"{where} must be an object with {sorted(expected)}")
        if not isinstance(obj["kid"], str):
            raise InvalidProof(f'{where}: "kid" must be a string')
        if isinstance(obj["party"], bool) or not isinstance(obj["party"], int):
            raise InvalidProof(f'{where}: "party" must be an integer')
        value, e, z = (_b64u_to_int(obj[k], where, k, InvalidProof) for k in ("c", "e", "z"))
        return cls(obj["kid"], obj["party"], gmpy2.mpz(value), eqlog.EqualLogProof(e, z))


def partial_decrypt(share: KeyShare, ciphertext: Mpz, context: bytes) -> PartialDecryption:
    """This party's partial decryption of ``ciphertext`` with its proof, bound to ``context``.

    Raises:
        InvalidCiphertext: if ``ciphertext`` is not a unit mod ``n^2``.
        InvalidInput: if ``share`` or ``context`` is malformed.
    """
    if not isinstance(share, KeyShare):
        raise InvalidInput("partial decryption needs a KeyShare")
    public = share.public
    c = _ciphertext(public, ciphertext)
    _check_context(context)
    nsq = public.nsquare
    x = public.delta * share.share
    value = secret_powmod(c, 2 * x, nsq)
    statement = _statement(public, c, share.index, value)
    transcript = _transcript(public, share.index, c, value, context)
    made = eqlog.prove(statement, x, _witness_bits(public), nsq, transcript)
    return PartialDecryption(public.key_id, share.index, value, made)


def verify_partial(public: ThresholdPublicKey, ciphertext: Mpz, partial: object,
                   context: bytes) -> None:
    """Check one partial decryption against its party's verification key.

    Raises:
        InvalidProof: if the partial is malformed, for another key, party or context, or its
            proof fails.
        InvalidCiphertext: if ``ciphertext`` is not a unit mod ``n^2``.
    """
    c = _ciphertext(public, ciphertext)
    _check_context(context)
    if not isinstance(partial, PartialDecryption):
        raise InvalidProof("expected a PartialDecryption")
    if partial.key_id != public.key_id:
        raise InvalidProof(f"partial decryption is for key {partial.key_id!r}, "
                           f"not {public.key_id!r}")
    index = partial.index
    if isinstance(index, bool) or not isinstance(index, int) \
            or not 1 <= index <= public.parties:
        raise InvalidProof(f"partial decryption party must be 1..{public.parties}")
    value = partial.value
    if isinstance(value, bool) or not isinstance(value, int | gmpy2.mpz) \
            or not is_unit(value, public.n):
        raise InvalidProof(f"partial decryption of party {index} is not a unit mod n^2")
    try:
        eqlog.verify(_statement(public, c, index, value), partial.proof,
                     _witness_bits(public), public.nsquare,
                     _transcript(public, index, c, value, context))
    except InvalidProof as exc:
        raise InvalidProof(f"partial decryption of party {index}: {exc.detail}") from None


def combine(public: ThresholdPublicKey, ciphertext: Mpz,
            partials: Sequence[PartialDecryption], context: bytes) -> int:
    """The plaintext ``m`` (``0 <= m < n``) from verified partials: one of every party
    (additive sharing), or of at least ``threshold`` distinct parties (Shamir).

    Raises:
        InvalidInput: if a partial is missing or a party's is given twice.
        InvalidProof: if any partial fails ``verify_partial``.
    """
    if isinstance(partials, str | bytes) or not isinstance(partials, Sequence) \
            or not all(isinstance(p, PartialDecryption) for p in partials):
        raise InvalidInput("partials must be a sequence of PartialDecryption")
    indices = sorted(p.index for p in partials)
    if public.sharing == "additive" and indices != list(range(1, public.parties + 1)):
        raise InvalidInput(f"combining needs exactly one partial from each of parties "
                           f"1..{public.parties}, got parties {indices}")
    if len(set(indices)) != len(indices) or len(indices) < public.threshold:
        raise InvalidInput(f"combining needs partials from at least {public.threshold} "
                           f"distinct parties, got parties {indices}")
    for partial in partials:
        verify_partial(public, ciphertext, partial, context)
    nsq, n = public.nsquare, public.n
    if public.sharing == "additive":
        exponents, scale = dict.fromkeys(indices, 2), 4 * public.delta
    else:
        exponents = {i: 2 * mu for i, mu in lagrange_at_zero(indices, public.delta).items()}
        scale = 4 * public.delta**2
    product = gmpy2.mpz(1)
    for partial in partials:
        product = product * gmpy2.powmod(partial.value, exponents[partial.index], nsq) % nsq
    if product % n != 1:  # unreachable once every proof verified; checked, not assumed
        raise InvalidProof("the partials do not combine to a decryption")
    return int((product - 1) // n * gmpy2.invert(scale, n) % n)


def lagrange_at_zero(indices: Sequence[int], delta: int) -> dict[int, int]:
    """Shoup's ``μ_i = Δ·λ_(0,i)`` for the parties ``indices`` (exact integers)."""
    out = {}
    for i in indices:
        numerator, denominator = delta, 1
        for j in indices:
            if j != i:
                numerator *= j
                denominator *= j - i
        mu, remainder = divmod(numerator, denominator)
        if remainder:  # Δ = parties! clears every denominator (Shoup 2000, §3)
            raise InvalidInput("party indices beyond the key's parties")
        out[i] = mu
    return out


def verify_plaintext(public: ThresholdPublicKey, ciphertext: Mpz,
                     partials: Sequence[PartialDecryption], context: bytes,
                     plaintext: int) -> None:
    """Offline check that ``plaintext`` is the decryption of ``ciphertext`` proven by
    ``partials`` (public key and context are all a third party needs).

    Raises:
        InvalidProof: if a partial fails or ``plaintext`` differs from the decryption.
    """
    if isinstance(plaintext, bool) or not isinstance(plaintext, int | gmpy2.mpz):
        raise InvalidInput("plaintext must be an integer")
    if combine(public, ciphertext, partials, context) != plaintext:
        raise InvalidProof("the claimed plaintext is not the decryption of the ciphertext")


def _ciphertext(public: ThresholdPublicKey, ciphertext: object) -> Mpz:
    if not isinstance(public, ThresholdPublicKey):
        raise InvalidInput("expected a ThresholdPublicKey")
    if isinstance(ciphertext, bool) or not isinstance(ciphertext, int | gmpy2.mpz):
        raise InvalidCiphertext("ciphertext must be an integer (a loaded ciphertext)")
    if not is_unit(ciphertext, public.n):
        raise InvalidCiphertext("ciphertext is not a unit mod n^2")
    return gmpy2.mpz(ciphertext)


def _check_context(context: object) -> None:
    if not isinstance(context, bytes):
        raise InvalidInput("decryption context must be bytes")
    if len(context) > MAX_CONTEXT_BYTES:
        raise InvalidInput(f"decryption context must be at most {MAX_CONTEXT_BYTES} bytes")


def _witness_bits(public: ThresholdPublicKey) -> int:
    return public.share_bits + public.delta.bit_length()


def _statement(public: ThresholdPublicKey, c: Mpz, index: int,
               value: Mpz) -> tuple[Mpz, Mpz, Mpz, Mpz]:
    nsq = public.nsquare
    return (public.verification_base, public.verification_key(index),
            gmpy2.powmod(c, 4, nsq), gmpy2.powmod(value, 2, nsq))


def _transcript(public: ThresholdPublicKey, index: int, c: Mpz, value: Mpz,
                context: bytes) -> list[bytes]:
    width = public.paillier.byte_length
    return [_TAG, public.fingerprint, public.key_id.encode(), index.to_bytes(4, "big"),
            int(c).to_bytes(width, "big"), int(value).to_bytes(width, "big"), context]
