"""The key ceremony (trusted dealer): a Paillier key whose decryption exponent is split.

Following Damgård and Jurik ("A Generalisation, a Simplification and Some Applications of
Paillier's Probabilistic Public-Key System", PKC 2001, §4.1, with ``s = 1``) and Shoup
("Practical Threshold Signatures", EUROCRYPT 2000) for the verification keys:

1. ``n = p·q`` from two safe primes of ``bits/2`` bits each (``primes.py`` says why safe);
   ``λ = lcm(p-1, q-1) = 2·p'·q'``.
2. ``d`` with ``d = 0 (mod λ)`` and ``d = 1 (mod n)`` (CRT; ``gcd(n, λ) = 1`` for equal-size
   primes). For any ``c = (1+n)^m·r^n``: ``c^d = (1+n)^(m·d)·r^(n·d) = (1+n)^m`` because
   ``r^(n·λ) = 1`` and ``d = 1 (mod n)``. So ``c^(4Δd) = 1 + 4Δm·n (mod n^2)`` and
   ``m = L(c^(4Δd))·(4Δ)^-1 mod n`` with ``L(x) = (x-1)/n``.
3. n-of-n additive sharing over the integers: ``d_1..d_(k-1)`` uniform in ``[0, R)`` with
   ``R = 2^(2|n| + sigma)``, ``sigma = 128``, and ``d_k = d - Σ d_j`` (negative, as a rule).
   Hiding: take any ``k-1`` parties, missing party ``j``. If ``j < k`` their view is the
   ``k-2`` independent uniform shares plus ``d_k``, and given those, ``d_k`` is
   ``d - d_j - (known)`` with ``d_j`` uniform in ``[0, R)``: uniform on a window of width
   ``R`` whose position depends on ``d``. For two exponents ``d, d' < 2^(2|n|)`` these two
   windows differ in at most ``|d - d'|`` points, so the statistical distance between the
   views is at most ``2^(2|n|)/R = 2^-sigma``. If ``j = k`` the view is ``k-1`` uniform values,
   independent of ``d``. Either way the view is (statistically) computable from the public
   key alone, so a coalition of fewer than ``k`` parties decrypts nothing: Paillier's
   semantic security (DCR) holds against it unchanged.
   t-of-n (``threshold < parties``, ``sharing = "shamir"``), Damgård-Jurik §4.1: with
   ``N = n·p'q'`` (the order of ``QR(n^2)``; ``λ = 2p'q'``), a polynomial
   ``f(X) = d + a_1·X + ... + a_(t-1)·X^(t-1)`` with ``a_j`` uniform mod ``N`` and
   ``d_i = f(i) mod N``. Any ``t - 1`` shares are uniform and independent of ``d`` (perfect
   hiding, since the dealer knows ``N``; the additive form hides statistically because it
   must work over the integers, as a dealerless generation will). ``d`` is taken mod ``N``:
   still ``0 mod p'q'`` and ``1 mod n``, all that step 2 needs for the squares
   the combination uses.
4. ``v``: the square of a random unit mod ``n^2``. With safe primes ``QR(n^2)`` is cyclic of
   order ``n·p'·q'``, and ``v`` generates it except with probability below
   ``1/p + 1/q + 1/p' + 1/q'``; ``v_i = v^(Δ·d_i) mod n^2`` (Shoup's form with ``Δ = k!``).

Trust: the dealer sees ``p, q, λ, d`` and every share, so it must be honest and erase them;
everything secret lives only in this function's locals (Python cannot zero memory: run the
ceremony in a short-lived process, as ``blindsum`` will). It is also trusted to have picked
safe primes and a generator ``v`` (nobody can check either from the public key). A dealerless
generation (``ceremony`` other than ``"trusted-dealer"``) removes that trust later.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import gmpy2

from ..errors import InvalidConfig
from ..schemes.paillier import ALLOWED_KEY_BITS, PaillierPublic, _check_kid
from .keys import (
    MAX_PARTIES,
    MIN_PARTIES,
    STATISTICAL_BITS,
    KeyShare,
    ThresholdPublicKey,
    delta,
    secret_powmod,
)
from .primes import safe_prime

Mpz = Any  # gmpy2.mpz; gmpy2 ships no stubs.


@dataclass(frozen=True)
class Ceremony:
    """What a ceremony hands out: the public key and one share per party (in index order).

    Each share must go to its party (sealed by that party's key store) and nowhere else.
    """

    public: ThresholdPublicKey
    shares: tuple[KeyShare, ...]


def run_ceremony(bits: int = 3072, parties: int = 2, key_id: str | None = None, *,
                 threshold: int | None = None) -> Ceremony:
    """A fresh ``bits``-bit threshold Paillier key shared among ``parties``, of which
    ``threshold`` (default: all, additive n-of-n) are needed to decrypt.

    Raises:
        InvalidConfig: if ``bits`` is not 2048, 3072 or 4096, ``parties`` is not 2..16, or
            ``threshold`` is not 2..parties.
        InvalidInput: if ``key_id`` is malformed.
    """
    if isinstance(bits, bool) or bits not in ALLOWED_KEY_BITS:
        raise InvalidConfig(f"Paillier key size must be one of {ALLOWED_KEY_BITS} bits")
    if isinstance(parties, bool) or not isinstance(parties, int) \
            or not MIN_PARTIES <= parties <= MAX_PARTIES:
        raise InvalidConfig(f"a threshold key needs {MIN_PARTIES}..{MAX_PARTIES} parties")
    threshold = parties if threshold is None else threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int) \
            or not MIN_PARTIES <= threshold <= parties:
        raise InvalidConfig(f"the threshold must be {MIN_PARTIES}..{parties} parties")
    key_id = _check_kid(f"tpai-{secrets.token_hex(4)}" if key_id is None else key_id)
    while True:
        p, q = safe_prime(bits // 2), safe_prime(bits // 2)
        if p != q:
            return _deal(p, q, parties, key_id, threshold)


def _deal(p: Mpz, q: Mpz, parties: int, key_id: str, threshold: int | None = None
          ) -> Ceremony:
    """Split the key ``(p, q)``; separate from prime generation so tests can inspect it."""
    threshold = parties if threshold is None else threshold
    n = p * q
    nsquare = n * n
    lam = gmpy2.lcm(p - 1, q - 1)
    # d = 0 mod λ and d = 1 mod n: d = λ·(λ^-1 mod n).
    d = lam * gmpy2.invert(lam, n)
    if threshold == parties:
        sharing, shares = "additive", _additive(d, n, parties)
    else:
        # λ/2 = p'q' for safe primes: n·p'q' is the order of QR(n^2).
        sharing, shares = "shamir", _shamir(d, n * lam // 2, parties, threshold)
    v = gmpy2.powmod(_random_unit(n, nsquare), 2, nsquare)
    scale = delta(parties)
    verification = tuple(secret_powmod(v, scale * s, nsquare) for s in shares)
    public = ThresholdPublicKey(PaillierPublic(n, key_id), v, verification, threshold,
                                sharing)
    return Ceremony(public, tuple(KeyShare(i + 1, s, public) for i, s in enumerate(shares)))


def _additive(d: Mpz, n: Mpz, parties: int) -> list[Mpz]:
    spread = 1 << (2 * n.bit_length() + STATISTICAL_BITS)
    shares = [gmpy2.mpz(secrets.randbelow(spread)) for _ in range(parties - 1)]
    return [*shares, d - sum(shares)]


def _shamir(d: Mpz, modulus: Mpz, parties: int, threshold: int) -> list[Mpz]:
    coefficients = [d % modulus] + [gmpy2.mpz(secrets.randbelow(int(modulus)))
                                    for _ in range(threshold - 1)]
    shares = []
    for i in range(1, parties + 1):
        value = gmpy2.mpz(0)
        for a in reversed(coefficients):  # Horner
            value = (value * i + a) % modulus
        shares.append(value)
    return shares


def _random_unit(n: Mpz, nsquare: Mpz) -> Mpz:
    while True:
        x = gmpy2.mpz(secrets.randbelow(int(nsquare) - 1) + 1)
        if gmpy2.gcd(x, n) == 1:
            return x
