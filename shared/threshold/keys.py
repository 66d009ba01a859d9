"""Threshold Paillier value types: the public key with its verification keys, and one share.

``ThresholdPublicKey`` wraps an ordinary ``PaillierPublic`` (``g = n + 1``, the SDK's DJN
short-exponent encryption is unchanged) and adds what a verifier needs: the verification
base ``v`` (a random square mod ``n^2``), one verification key ``v_i = v^(Δ·d_i) mod n^2``
per party, ``parties``, ``threshold`` and how the key was made (``ceremony``). Its JSON form
is ``PaillierPublic.public_json`` plus a ``"threshold"`` member, so ``PaillierPublic.from_json``
(the SDK) reads the same document and encrypts as before.

Two sharings of the decryption exponent ``d`` (``sharing``, see ``ceremony.py``):
``"additive"`` (n-of-n, ``d = Σ d_i`` over the integers, the form a dealerless generation
produces) and ``"shamir"`` (t-of-n, ``d_i = f(i) mod n·p'q'`` for a random polynomial ``f`` of
degree ``t - 1`` with ``f(0) = d``, Damgård-Jurik 2001 §4.1, combined with Shoup's
integer Lagrange coefficients ``Δ·λ_(0,i)``).

``KeyShare`` is one party's secret: its index ``i`` (1-based), its integer share ``d_i`` of
the decryption exponent, and the public key. Its storage form is JSON bytes for
the key store (which seals them at rest); loading checks ``v^(Δ·d_i) = v_i``, so a share
cannot be paired with another ceremony's public key or silently corrupted.

Sizes (public, fixed by the format version ``FORMAT``): the exponent ``d < n·λ < n^2``, so
``|d| <= 2·|n|``. Additive: the first ``parties - 1`` shares are uniform in
``[0, 2^(2|n| + sigma))`` with ``sigma = STATISTICAL_BITS``; the last is ``d`` minus their
sum, so every share's magnitude is below ``2^share_bits`` with
``share_bits = 2|n| + sigma + bitlen(parties)``. Shamir shares lie in ``[0, n·p'q')``, below
``n^2``, within the same bound.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gmpy2

from ..errors import InvalidInput, KeyStoreError
from ..schemes.paillier import PaillierPublic, _b64u_to_int, _int_to_b64u

Mpz = Any  # gmpy2.mpz; gmpy2 ships no stubs.

FORMAT = "blindsum-threshold-paillier-1"
SHARE_FORMAT = "blindsum-threshold-share-1"
STATISTICAL_BITS = 128  # sigma: hiding of shares and zero-knowledge slack of the proofs
MIN_PARTIES, MAX_PARTIES = 2, 16
CEREMONIES = ("trusted-dealer",)  # a dealerless generation will add its own name
SHARINGS = ("additive", "shamir")


def delta(parties: int) -> int:
    """``Δ = parties!``: makes Shoup's Lagrange coefficients integers (t-of-n); kept for n-of-n
    so one share and proof format serves both."""
    return math.factorial(parties)


def share_bits(n_bits: int, parties: int) -> int:
    """Bound on the bit length of ``|d_i|`` for any share of an ``n_bits`` modulus."""
    return 2 * n_bits + STATISTICAL_BITS + parties.bit_length()


def share_storage_name(key_id: str, index: int) -> str:
    """Key store file name of party ``index``'s share of key ``key_id``."""
    return f"{key_id}.party{index}.share"


def is_unit(value: Mpz, n: Mpz) -> bool:
    """``value`` is an element of ``Z*_{n^2}`` given as its least residue."""
    return 0 < value < n * n and gmpy2.gcd(value, n) == 1


def secret_powmod(base: Mpz, exponent: Mpz, modulus: Mpz) -> Mpz:
    """``base^exponent mod modulus`` for a secret ``exponent`` (a share, a proof nonce):
    GMP's ``mpz_powm_sec``, whose time and memory accesses do not depend on the exponent's
    bits (plain ``powmod`` uses sliding windows that do). ``modulus`` must be odd and
    ``base`` invertible when ``exponent < 0``."""
    if exponent < 0:
        base, exponent = gmpy2.invert(base, modulus), -exponent
    if exponent == 0:
        return gmpy2.mpz(1)
    return gmpy2.powmod_sec(base, exponent, modulus)


@dataclass(frozen=True, eq=False)
class ThresholdPublicKey:
    """Paillier public key plus the verification keys of a sharing of ``d``.

    Attributes:
        paillier: the encryption key (``n``, key id) clients use unchanged.
        verification_base: ``v``, a random square in ``Z*_{n^2}`` chosen by the ceremony.
        verification_keys: ``v_i = v^(Δ·d_i) mod n^2`` for parties ``i = 1..parties``.
        threshold: how many partials decrypt (``parties`` for additive sharing).
        sharing: ``"additive"`` (n-of-n over the integers) or ``"shamir"`` (t-of-n).
        ceremony: how the key was generated (``"trusted-dealer"``).
    """

    paillier: PaillierPublic
    verification_base: Mpz
    verification_keys: tuple[Mpz, ...]
    threshold: int
    sharing: str = "additive"
    ceremony: str = "trusted-dealer"
    _fingerprint: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_shape()
        self._check_elements()
        # Values are mpz from here on; the fingerprint is what every proof transcript binds.
        object.__setattr__(self, "verification_base", gmpy2.mpz(self.verification_base))
        object.__setattr__(self, "verification_keys",
                           tuple(gmpy2.mpz(v) for v in self.verification_keys))
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "_fingerprint", hashlib.sha256(canonical.encode()).digest())

    def _check_shape(self) -> None:
        if not isinstance(self.paillier, PaillierPublic):
            raise InvalidInput("threshold public key: paillier must be a PaillierPublic")
        # Whoever holds this key lays out reports with room for noise under encryption.
        self.paillier.noise_headroom = True
        if not isinstance(self.verification_keys, tuple | list):
            raise InvalidInput("threshold public key: verification keys must be a sequence")
        parties = len(self.verification_keys)
        if not MIN_PARTIES <= parties <= MAX_PARTIES:
            raise InvalidInput(
                f"threshold public key: {MIN_PARTIES}..{MAX_PARTIES} parties, got {parties}"
            )
        if self.sharing not in SHARINGS:
            raise InvalidInput(f"threshold public key: sharing must be one of {SHARINGS}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) \
                or not MIN_PARTIES <= self.threshold <= parties:
            raise InvalidInput(f"threshold public key: threshold must be {MIN_PARTIES}.."
                               f"{parties} (the number of parties)")
        if self.sharing == "additive" and self.threshold != parties:
            raise InvalidInput("threshold public key: additive sharing is n-of-n "
                               "(threshold == parties)")
        if self.ceremony not in CEREMONIES:
            raise InvalidInput(f"threshold public key: ceremony must be one of {CEREMONIES}")

    def _check_elements(self) -> None:
        n = self.paillier.n
        for name, value in [("v", self.verification_base),
                            *((f"vk[{i}]", vk) for i, vk in enumerate(self.verification_keys))]:
            if isinstance(value, bool) or not isinstance(value, int | gmpy2.mpz):
                raise InvalidInput(f"threshold public key: {name} must be an integer")
            if not is_unit(value, n):
                raise InvalidInput(f"threshold public key: {name} is not a unit mod n^2")
        if self.verification_base == 1:
            # v = 1 would let any c_i pass: the first equation of every proof is then void.
            raise InvalidInput("threshold public key: v must not be 1")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ThresholdPublicKey):
            return NotImplemented
        return self._fingerprint == other._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    @property
    def key_id(self) -> str:
        return self.paillier.key_id

    @property
    def n(self) -> Mpz:
        return self.paillier.n

    @property
    def nsquare(self) -> Mpz:
        return self.paillier.nsquare

    @property
    def parties(self) -> int:
        return len(self.verification_keys)

    @property
    def delta(self) -> int:
        return delta(self.parties)

    @property
    def share_bits(self) -> int:
        return share_bits(self.n.bit_length(), self.parties)

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical JSON form: binds proofs to this exact key."""
        return self._fingerprint

    def verification_key(self, index: int) -> Mpz:
        """``v_i`` of party ``index`` (1-based); ``InvalidInput`` for an unknown party."""
        if isinstance(index, bool) or not isinstance(index, int) \
                or not 1 <= index <= self.parties:
            raise InvalidInput(f"party index must be 1..{self.parties}")
        return self.verification_keys[index - 1]

    def to_json(self) -> dict[str, Any]:
        """The manifest form: the Paillier JWK plus a ``threshold`` member."""
        doc = self.paillier.public_json()
        doc["threshold"] = {
            "format": FORMAT,
            "ceremony": self.ceremony,
            "parties": self.parties,
            "threshold": self.threshold,
            "sharing": self.sharing,
            "delta": self.delta,
            "v": _int_to_b64u(self.verification_base),
            "vk": [_int_to_b64u(v) for v in self.verification_keys],
        }
        return doc

    @classmethod
    def from_json(cls, obj: object) -> ThresholdPublicKey:
        """Parse and validate ``to_json`` output; ``InvalidInput`` naming the bad member."""
        paillier = PaillierPublic.from_json(obj)
        assert isinstance(obj, Mapping)  # from_json refused anything else
        where = "threshold public key"
        spec = obj.get("threshold")
        if not isinstance(spec, Mapping):
            raise InvalidInput(f'{where}: "threshold" must be an object')
        expected = {"format", "ceremony", "parties", "threshold", "sharing", "delta", "v",
                    "vk"}
        if set(spec) != expected:
            raise InvalidInput(f'{where}: "threshold" must have exactly {sorted(expected)}')
        if spec["format"] != FORMAT:
            raise InvalidInput(f'{where}: "threshold.format" must be {FORMAT!r}')
        vks = spec["vk"]
        if not isinstance(vks, list) or not MIN_PARTIES <= len(vks) <= MAX_PARTIES:
            raise InvalidInput(f'{where}: "threshold.vk" must list {MIN_PARTIES}..'
                               f"{MAX_PARTIES} keys")
        for member in ("parties", "threshold", "delta"):
            if isinstance(spec[member], bool) or not isinstance(spec[member], int):
                raise InvalidInput(f'{where}: "threshold.{member}" must be an integer')
        if spec["parties"] != len(vks):
            raise InvalidInput(f'{where}: "threshold.parties" does not match "vk"')
        if spec["delta"] != delta(len(vks)):
            raise InvalidInput(f'{where}: "threshold.delta" must be parties!')
        for member in ("ceremony", "sharing"):
            if not isinstance(spec[member], str):
                raise InvalidInput(f'{where}: "threshold.{member}" must be a string')
        base = _b64u_to_int(spec["v"], where, "threshold.v", InvalidInput)
        keys = tuple(_b64u_to_int(v, where, f"threshold.vk[{i}]", InvalidInput)
                     for i, v in enumerate(vks))
        return cls(paillier, base, keys, spec["threshold"], spec["sharing"], spec["ceremony"])


@dataclass(frozen=True, eq=False)
class KeyShare:
    """Party ``index``'s additive share ``d_i`` of the decryption exponent (secret!)."""

    index: int
    share: Mpz
    public: ThresholdPublicKey

    def __post_init__(self) -> None:
        if not isinstance(self.public, ThresholdPublicKey):
            raise InvalidInput("key share: public must be a ThresholdPublicKey")
        self.public.verification_key(self.index)
        if isinstance(self.share, bool) or not isinstance(self.share, int | gmpy2.mpz):
            raise InvalidInput("key share: share must be an integer")
        object.__setattr__(self, "share", gmpy2.mpz(self.share))
        if abs(self.share).bit_length() > self.public.share_bits:
            raise InvalidInput("key share: share is larger than any share of this key")
        public = self.public
        exponent = public.delta * self.share
        if secret_powmod(public.verification_base, exponent, public.nsquare) \
                != public.verification_key(self.index):
            raise InvalidInput(f"key share: share does not match verification key {self.index}")

    def __repr__(self) -> str:
        # Never print the share.
        return f"KeyShare(kid={self.key_id!r}, party={self.index}/{self.public.parties})"

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @property
    def storage_name(self) -> str:
        return share_storage_name(self.key_id, self.index)

    def to_storage(self) -> bytes:
        """JSON bytes for the key store (seal them: this is a secret)."""
        return json.dumps({
            "format": SHARE_FORMAT,
            "kid": self.key_id,
            "index": self.index,
            "share": _int_to_b64u(abs(self.share)),
            "negative": bool(self.share < 0),
            "public": self.public.to_json(),
        }).encode()

    @classmethod
    def from_storage(cls, data: bytes) -> KeyShare:
        """Load ``to_storage`` output; ``KeyStoreError`` if corrupt or inconsistent."""
        where = "stored threshold key share"
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise KeyStoreError(f"{where} is not JSON") from None
        expected = {"format", "kid", "index", "share", "negative", "public"}
        if not isinstance(obj, dict) or set(obj) != expected:
            raise KeyStoreError(f"{where} must be an object with {sorted(expected)}")
        if obj["format"] != SHARE_FORMAT:
            raise KeyStoreError(f'{where}: "format" must be {SHARE_FORMAT!r}')
        if not isinstance(obj["negative"], bool):
            raise KeyStoreError(f'{where}: "negative" must be a boolean')
        magnitude = _b64u_to_int(obj["share"], where, "share", KeyStoreError)
        try:
            public = ThresholdPublicKey.from_json(obj["public"])
            if obj["kid"] != public.key_id:
                raise KeyStoreError(f'{where}: "kid" does not match its public key')
            return cls(obj["index"], -magnitude if obj["negative"] else magnitude, public)
        except InvalidInput as exc:
            raise KeyStoreError(f"{where}: {exc.detail}") from None

