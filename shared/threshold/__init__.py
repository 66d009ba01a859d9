"""Threshold decryption for Paillier: a split key, partial decryptions with proofs, and a
combination anyone can check.

Modules: ``primes`` (safe primes), ``keys`` (``ThresholdPublicKey``, ``KeyShare``),
``ceremony`` (trusted-dealer key generation; additive n-of-n or Shamir t-of-n sharing),
``proof`` (Chaum-Pedersen equality of discrete logs, Fiat-Shamir), ``decryption``
(partials, combination, offline verification). Each module's docstring carries its
argument; ``docs/THRESHOLD.md`` the protocol and the trust model.

Papers followed: V. Shoup, "Practical Threshold Signatures" (EUROCRYPT 2000); I. Damgård and
M. Jurik, "A Generalisation, a Simplification and Some Applications of Paillier's
Probabilistic Public-Key System" (PKC 2001), §4; I. Damgård, M. Jurik and J. B. Nielsen,
"A generalization of Paillier's public-key system with applications to electronic voting"
(IJIS 2010). Parameters: safe primes of ``|n|/2`` bits, ``Δ = parties!``, statistical
hiding and zero-knowledge slack of 128 bits, 128-bit challenges from SHA-256.
"""

from .ceremony import Ceremony, run_ceremony
from .decryption import (
    PartialDecryption,
    combine,
    partial_decrypt,
    verify_partial,
    verify_plaintext,
)
from .keys import KeyShare, ThresholdPublicKey

__all__ = [
    "Ceremony",
    "KeyShare",
    "PartialDecryption",
    "ThresholdPublicKey",
    "combine",
    "partial_decrypt",
    "run_ceremony",
    "verify_partial",
    "verify_plaintext",
]
