"""Non-interactive Chaum-Pedersen proof of equal discrete logs in ``Z*_{n^2}`` (unknown order).

Statement: ``h1 = g1^x`` and ``h2 = g2^x`` for one integer ``x`` with ``|x| < 2^x_bits``,
here ``g1 = v``, ``h1 = v_i``, ``g2 = c^4``, ``h2 = c_i^2``, ``x = Δ·d_i`` (Shoup 2000 §2;
Damgård-Jurik 2001 §4.1). The group order ``φ(n^2)`` is unknown to the prover, so the proof
works over the integers:

- prover: ``r`` uniform in ``[0, 2^(x_bits + t + s))``, ``a = g1^r``, ``b = g2^r``;
  ``e = H(transcript, a, b)`` truncated to ``t = CHALLENGE_BITS = 128`` bits;
  ``z = r + e·x`` over the integers (redrawn in the negligible case ``z < 0``). The
  proof is ``(e, z)``.
- verifier: ``0 <= z < 2^(x_bits + t + s + 1)``, ``a' = g1^z·h1^-e``, ``b' = g2^z·h2^-e``,
  accept iff ``e = H(transcript, a', b')``.

Soundness (special soundness, then Fiat-Shamir in the random-oracle model): from two
accepting answers ``(e, z)``, ``(e', z')`` to one commitment, ``g1^(z-z') = h1^(e-e')`` and
``g2^(z-z') = h2^(e-e')``. All four elements lie in ``QR(n^2)`` (``v`` is a square, ``v_i`` a
power of it, ``c^4`` and ``c_i^2`` squares), which for safe primes is cyclic of order
``n·p'·q'``; ``0 < |e - e'| < 2^128`` is coprime to that order (all its prime factors exceed
``2^1000``), so ``x* = (z - z')·(e - e')^-1`` modulo the order satisfies both equations and,
``v`` being a generator, ``c_i^2 = (c^4)^(Δ·d_i)``: a wrong partial passes with probability
about ``q·2^-128`` after ``q`` hash queries. Squaring is what makes this work: an adversarial
``c_i`` may carry a component of order 2 (``-1`` or the other square roots of 1, the only
small-order elements of ``Z*_{n^2}`` for safe primes), invisible to a proof about
``c_i^2``; it does not matter because the combination only ever uses ``c_i^2``. With
non-safe primes there would be elements of order 3, 5, ... inside ``QR(n^2)`` and the error
would be about 1/3 (see ``primes.py``).

Zero knowledge (honest verifier, statistical): ``z - e·x = r`` is uniform on a range
``2^s`` times wider than ``|e·x| < 2^(x_bits + t)``, so ``z`` is within statistical
distance ``2^-s`` (``s = ZK_SLACK_BITS = 128``) of ``z`` uniform in ``[0, 2^(x_bits+t+s))``,
which a simulator can produce with ``a, b`` computed from ``(e, z)`` as the verifier does.

Side channels: the prover's powers of ``r`` and the party's ``c^(2Δ·d_i)`` use GMP's
constant-time ``mpz_powm_sec`` (``keys.secret_powmod``); everything the verifier computes
is public.

The transcript (bound by the caller: key fingerprint, party, ciphertext, partial, context)
and ``a, b`` are hashed with SHA-256 under a domain tag, every item length-prefixed, so no
two different transcripts hash the same input.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2

from ..errors import InvalidProof
from .keys import secret_powmod

Mpz = Any  # gmpy2.mpz; gmpy2 ships no stubs.

CHALLENGE_BITS = 128
ZK_SLACK_BITS = 128
DOMAIN = b"blindsum/threshold-paillier/equal-dlog/v1"


@dataclass(frozen=True)
class EqualLogProof:
    """``(e, z)``: a Fiat-Shamir challenge of ``CHALLENGE_BITS`` and its integer response."""

    challenge: int
    response: int


def response_bits(x_bits: int) -> int:
    """Bit bound on ``|z|`` for a witness of at most ``x_bits`` bits."""
    return x_bits + CHALLENGE_BITS + ZK_SLACK_BITS + 1


def challenge(transcript: Sequence[bytes], a: Mpz, b: Mpz, width: int) -> int:
    """``H(DOMAIN, transcript..., a, b)`` truncated to ``CHALLENGE_BITS``."""
    digest = hashlib.sha256()
    for item in (DOMAIN, *transcript, _fixed(a, width), _fixed(b, width)):
        digest.update(len(item).to_bytes(8, "big"))
        digest.update(item)
    return int.from_bytes(digest.digest()[: CHALLENGE_BITS // 8], "big")


def prove(statement: tuple[Mpz, Mpz, Mpz, Mpz], x: Mpz, x_bits: int, modulus: Mpz,
          transcript: Sequence[bytes]) -> EqualLogProof:
    """Prove ``log_g1(h1) = log_g2(h2) = x`` for ``statement = (g1, h1, g2, h2)``."""
    g1, _, g2, _ = statement
    width = _width(modulus)
    while True:
        r = gmpy2.mpz(secrets.randbits(x_bits + CHALLENGE_BITS + ZK_SLACK_BITS))
        # r is as secret as x (z - e·x = r): constant-time powers.
        e = challenge(transcript, secret_powmod(g1, r, modulus), secret_powmod(g2, r, modulus),
                      width)
        z = r + e * x
        # z < 0 only if x < 0 and r < e·|x| (probability < 2^-s): redrawing keeps responses
        # unsigned on the wire and moves their distribution by less than that.
        if z >= 0:
            return EqualLogProof(e, int(z))


def verify(statement: tuple[Mpz, Mpz, Mpz, Mpz], proof: object, x_bits: int, modulus: Mpz,
           transcript: Sequence[bytes]) -> None:
    """Check a proof made by ``prove``; ``InvalidProof`` naming what failed.

    The statement's elements must already be checked units mod ``modulus`` (the caller does
    it, so it can name which element is wrong).
    """
    if not isinstance(proof, EqualLogProof):
        raise InvalidProof("proof must be an EqualLogProof")
    e, z = proof.challenge, proof.response
    for name, value in (("challenge", e), ("response", z)):
        if isinstance(value, bool) or not isinstance(value, int | gmpy2.mpz):
            raise InvalidProof(f"proof {name} must be an integer")
    if not 0 <= e < 1 << CHALLENGE_BITS:
        raise InvalidProof(f"proof challenge must be in 0..2^{CHALLENGE_BITS}-1")
    if not 0 <= z < 1 << response_bits(x_bits):
        raise InvalidProof(f"proof response must be in 0..2^{response_bits(x_bits)}-1")
    g1, h1, g2, h2 = statement
    a = gmpy2.powmod(g1, z, modulus) * gmpy2.powmod(h1, -e, modulus) % modulus
    b = gmpy2.powmod(g2, z, modulus) * gmpy2.powmod(h2, -e, modulus) % modulus
    if challenge(transcript, a, b, _width(modulus)) != e:
        raise InvalidProof("proof does not verify")


def _width(modulus: Mpz) -> int:
    return (int(modulus).bit_length() + 7) // 8


def _fixed(value: Mpz, width: int) -> bytes:
    return int(value).to_bytes(width, "big")
