"""Safe primes ``p = 2p' + 1`` (``p'`` prime) for threshold Paillier moduli.

Why safe primes (and not ``phe``'s random primes): the partial-decryption proofs live in
``QR(n^2)``, the squares of ``Z*_{n^2}``. With ``p = 2p'+1`` and ``q = 2q'+1`` that group is
cyclic of order ``n * p' * q'``, every prime factor of which is about |n|/2 bits, and
squaring removes the only small-order elements of ``Z*_{n^2}`` (the four square roots of 1),
so the proofs are sound without any assumption (Shoup 2000, §2 and Lemma 2; Damgård-Jurik
2001, §4.1 both assume safe primes). With ordinary primes ``p - 1`` has small odd factors,
``Z*_{n^2}`` has elements of order 3, 5, ..., and a party that knows one can multiply its
partial by it and pass the proof after a few Fiat-Shamir retries (1/3 per try for order 3;
``tests/unit/test_threshold_decryption.py`` does it). Such elements are believed hard to
find without the factors (Fouque-Poupard-Stern 2000 rest on that); with safe primes
nothing rests on it, which also matters once a dealerless generation lets parties shape
the primes.

Method: a random ``p'`` of the right size with its top bits set, then a sieve over
``p', p' + 2, ...`` that drops every candidate where ``p'`` or ``2p' + 1`` has a prime factor
below ``SIEVE_BOUND`` (both conditions at once, so survivors are ~300x rarer than odd
numbers but ~150x likelier to be safe primes). A survivor is tested with one base-2 Fermat
test on ``p`` (cheap rejection), then ``p'`` with ``gmpy2.is_prime`` (GMP: trial division,
Baillie-PSW and Miller-Rabin rounds), and ``p`` is then *proven* prime by Pocklington's
criterion: ``p' > sqrt(p)`` is prime, ``2^(p-1) = 1 (mod p)`` and ``gcd(2^2 - 1, p) = 1``.
"""

from __future__ import annotations

import functools
import secrets
from typing import Any

import gmpy2

Mpz = Any  # gmpy2.mpz; gmpy2 ships no stubs.

SIEVE_BOUND = 1 << 16
_SIEVE_WIDTH = 1 << 16  # candidates per sieve window (one bytearray, one pass per prime)
_MILLER_RABIN_ROUNDS = 40


@functools.cache
def _small_primes(bound: int) -> tuple[int, ...]:
    flags = bytearray([1]) * bound
    flags[0:2] = b"\0\0"
    for i in range(2, int(bound**0.5) + 1):
        if flags[i]:
            flags[i * i :: i] = bytes(len(range(i * i, bound, i)))
    return tuple(i for i in range(3, bound) if flags[i])


def _window(start: int) -> bytearray:
    """Flags for ``p' = start + 2k``, ``k < _SIEVE_WIDTH``: 1 where neither ``p'`` nor
    ``2p' + 1`` has a factor below ``SIEVE_BOUND``."""
    alive = bytearray([1]) * _SIEVE_WIDTH
    for prime in _small_primes(SIEVE_BOUND):
        half = (prime + 1) // 2  # the inverse of 2 mod prime
        residue = start % prime
        # p' = 0 (mod prime) and 2p' + 1 = 0, i.e. p' = (prime - 1)/2 (mod prime).
        for target in (0, (prime - 1) // 2):
            k = (target - residue) * half % prime
            alive[k::prime] = bytes(len(range(k, _SIEVE_WIDTH, prime)))
    return alive


def _is_safe(p_half: Mpz) -> bool:
    p = 2 * p_half + 1
    if gmpy2.powmod(2, p - 1, p) != 1:
        return False
    if not gmpy2.is_prime(p_half, _MILLER_RABIN_ROUNDS):
        return False
    # Pocklington with the prime factor p' > sqrt(p) of p - 1 and witness 2: p is prime.
    return gmpy2.gcd(3, p) == 1


def safe_prime(bits: int) -> Mpz:
    """A uniformly placed safe prime of exactly ``bits`` bits whose top two bits are set
    (so the product of two has exactly ``2 * bits`` bits).

    Raises:
        ValueError: if ``bits`` is below 64 (the sieve bound would exceed the candidates).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 64:
        raise ValueError("safe primes need at least 64 bits")
    low = 3 << (bits - 3)  # p' >= 3 * 2^(bits-3)  <=>  p >= 3 * 2^(bits-2): top bits 11
    span = 1 << (bits - 3)
    while True:
        start = low + secrets.randbelow(span - 2 * _SIEVE_WIDTH) | 1
        for k, alive in enumerate(_window(start)):
            if alive and _is_safe(gmpy2.mpz(start + 2 * k)):
                return 2 * gmpy2.mpz(start + 2 * k) + 1
