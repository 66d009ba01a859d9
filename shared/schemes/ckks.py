"""CKKS (TenSEAL 0.3.18, Microsoft SEAL underneath) sized for sums of integer slots.

Parameters. A window aggregate is only ever a sum, so no multiplicative depth is needed and
the smallest ring with a useful modulus wins: ``N = 4096`` (2048 slots) with coefficient
primes ``[60, 49]``. The HomomorphicEncryption.org standard allows 109 bits of total modulus
at ``N = 4096`` for 128-bit classical security; SEAL enforces that (``tc128``) by default, and
``[60, 50]`` is refused with "encryption parameters are not set correctly" (``N = 2048``
allows only 54 bits, too little for both a special prime, which TenSEAL insists on, and a
useful data modulus). The 49-bit prime is the *special* prime, used only while encrypting;
ciphertexts live at the data level modulo the single 60-bit prime ``q``. One data prime
instead of ``[40, 20, 40]``'s two gives the same ``q ~ 2**60`` with half the residues:
65.7 KB per ciphertext instead of 80.8 KB, and additions are twice as fast.

Headroom. Decryption is exact only while every coefficient of ``sum * scale + noise`` stays
below ``q / 2 ~ 2**59``; with ``scale = 2**27`` that is ``2**32``, and ``MAX_SLOT_SUM =
2**31`` keeps a factor of two in reserve.

Precision. CKKS noise does not depend on the values, only on how many ciphertexts are added.
Measured here at scale ``2**27``: a fresh ciphertext's slot error has standard deviation
5.1e-6 on average, but slots differ (slot ``j``'s noise grows with ``|s(zeta_j)|`` for the
secret ``s``): the worst slot over 16 keys had 1.6e-5. Errors of independent reports add like
a random walk: the sum of ``2**18`` reports of ``2**13`` (a slot sum of ``2**31``, the
headroom limit) had std 2.6e-3 against 2.6e-3 predicted, and was off by at most 0.015.
Taking 2.5e-5 per fresh ciphertext, ``MAX_CONTRIBUTORS = 2**20`` reports give a worst-slot
std of at most 0.026: rounding to the nearest integer (wrong only past 0.5, 19 standard
deviations) is exact. More contributors would need a larger scale and so less headroom;
``max_slot_sum * sqrt(max_contributors) <~ 2**41`` is the real trade-off at ``q ~ 2**60``.

Leakage. Raw CKKS decryptions leak the secret key (Li and Micciancio, "On the Security of
Homomorphic Encryption on Approximate Numbers", EUROCRYPT 2021): the error term is a function
of ``s``. ``CkksSecret.decrypt`` therefore keeps the floats to itself and returns only rounded
integers, which equal the exact plaintext sums whenever the aggregate holds only honest
reports. It never refuses an aggregate on what it decrypts to: an earlier version refused
slots more than 0.25 from an integer, and that refusal was a free, repeatable bit about the
secret-key-dependent error (pinned to ~1e-8 in 24 queries). Now every decryption is paid
for and consumes its window before it runs, its rounded sums are noised with integer DP
noise, and a non-integer or out-of-range aggregate is published clamped, never refused.

Wire format. A report is ``ceil(count / 2048)`` ciphertexts, each TenSEAL's serialized
``CKKSVector`` of exactly 2048 slots (the report's slots zero-padded; decryption ignores the
padding): 65,676 bytes. ``load`` accepts only that exact protobuf framing (sizes =
[2048], one SEAL ciphertext, scale ``2**27``) and a SEAL header with zero reserved bytes
before handing the blob to TenSEAL, because TenSEAL trusts the chunk sizes: a vector with
ciphertexts but no sizes segfaults on decryption, and a huge size reads far past the
decrypted buffer. SEAL then checks the metadata (parameters, NTT form) and that every
coefficient is reduced modulo ``q``, and ``load`` requires two polynomials at scale
``2**27``. SEAL compresses with zstd by default, which gains nothing on 60-bit residues
(65,659 bytes against 65,649 uncompressed), and TenSEAL exposes no smaller encoding
(public-key ciphertexts cannot use SEAL's seeded form). Inside the zstd frame SEAL ignores
trailing data, so one ciphertext has several accepted encodings: never deduplicate reports by
the hash of their bytes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import tenseal as ts
import tenseal.sealapi  # registers seal::Modulus, which coeff_modulus() returns

from ..errors import BlindsumError, InvalidCiphertext, InvalidInput, KeyStoreError
from .base import PublicScheme, SecretScheme, SlotSpec, spec_error

POLY_MODULUS_DEGREE = 4096
COEFF_MOD_BIT_SIZES = (60, 49)
SCALE_BITS = 27
SLOTS = POLY_MODULUS_DEGREE // 2
MAX_SLOT_SUM = 2**31
MAX_CONTRIBUTORS = 2**20

# SEAL's CoeffModulus::Create(4096, [60, 49]) is deterministic; any other primes mean the
# context was not made by generate_ckks.
_PRIMES = (1152921504606830593, 562949953216513)
_SCALE = float(2**SCALE_BITS)
# Rounded sums are saturated here: far beyond any honest sum (MAX_SLOT_SUM), exact in float64.
_SATURATE = float(2**62)
# Honest sizes: ciphertext 65,676 bytes, public context ~124,750, secret context ~187,100.
MAX_CIPHERTEXT_BYTES = 66_560
MAX_CONTEXT_BYTES = 131_072
MAX_SECRET_CONTEXT_BYTES = 262_144

_KID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# CKKSVectorProto as TenSEAL writes it: field 1 (sizes, packed) = [SLOTS], field 2 (one SEAL
# ciphertext), field 3 (scale, double).
_FRAME_HEAD = b"\x0a" + bytes([len(_varint(SLOTS))]) + _varint(SLOTS) + b"\x12"
_FRAME_TAIL = b"\x19" + struct.pack("<d", _SCALE)
# SEAL's SEALHeader: magic, header size, version major/minor, compression, reserved, size.
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E
_SEAL_COMPRESSION = (0, 2)  # none or zstd, what TenSEAL's SEAL build writes


def generate_ckks(key_id: str | None = None) -> CkksSecret:
    """A fresh CKKS key (public key and secret key; no relinearisation or Galois keys)."""
    kid = _check_kid(key_id, InvalidInput) if key_id is not None else _new_kid()
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
    )
    context.global_scale = _SCALE
    # Through bytes, so a new key and a key-store key are the same object (no relin keys).
    return CkksSecret.from_bytes(_serialize(context, secret=True), kid)


class CkksPublic(PublicScheme):
    """A CKKS public context: encrypts reports, validates and adds ciphertexts."""

    name: ClassVar[str] = "ckks"

    def __init__(self, context: ts.Context, context_bytes: bytes, key_id: str) -> None:
        # Use from_context_bytes; this trusts ``context`` to be validated already.
        self.key_id = _check_kid(key_id, InvalidInput)
        self._context = context
        self._parms_id = _data_parms_id(context)
        self.context_bytes = context_bytes
        self.context_sha256 = hashlib.sha256(context_bytes).hexdigest()

    @classmethod
    def from_context_bytes(cls, data: bytes, key_id: str) -> CkksPublic:
        """Parse a public context; ``InvalidInput`` unless it is public and ours."""
        if not isinstance(data, bytes):
            raise InvalidInput("CKKS public context must be bytes")
        if len(data) > MAX_CONTEXT_BYTES:
            raise InvalidInput(
                f"CKKS public context is {len(data)} bytes, more than {MAX_CONTEXT_BYTES}"
            )
        context = _parse_context(data, "CKKS public context", InvalidInput)
        if context.has_secret_key() or not context.is_public():
            raise InvalidInput("CKKS public context carries a secret key")
        if not context.has_public_key():
            raise InvalidInput("CKKS public context has no public key")
        if context.has_relin_keys() or context.has_galois_keys():
            raise InvalidInput("CKKS public context carries evaluation keys it does not need")
        return cls(context, data, key_id)

    def __repr__(self) -> str:
        return f"CkksPublic(kid={self.key_id!r}, sha256={self.context_sha256[:12]}...)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CkksPublic):
            return NotImplemented
        return (self.context_sha256, self.key_id) == (other.context_sha256, other.key_id)

    def __hash__(self) -> int:
        return hash((self.context_sha256, self.key_id))

    def public_json(self) -> dict[str, Any]:
        return {
            "kid": self.key_id,
            "scheme": self.name,
            "poly_modulus_degree": POLY_MODULUS_DEGREE,
            "coeff_mod_bit_sizes": list(COEFF_MOD_BIT_SIZES),
            "scale_bits": SCALE_BITS,
            "context_sha256": self.context_sha256,
        }

    # -- layout ------------------------------------------------------------------------

    def capacity_error(self, spec: SlotSpec) -> str | None:
        return capacity_error(spec)

    def ciphertext_count(self, spec: SlotSpec) -> int:
        _check_spec(spec)
        return -(-spec.count // SLOTS)

    # -- client side -------------------------------------------------------------------

    def encrypt(self, slots: Sequence[int], spec: SlotSpec) -> list[bytes]:
        _check_spec(spec)
        if isinstance(slots, str | bytes | bytearray) or not isinstance(slots, Sequence):
            raise InvalidInput("slots must be a sequence of integers")
        if len(slots) != spec.count:
            raise InvalidInput(f"expected {spec.count} slots, got {len(slots)}")
        # C-speed checks first; the per-slot loop only runs to name the offending slot.
        if not all(type(v) is int for v in slots) or not (
            min(slots) >= 0 and max(slots) <= spec.max_value
        ):
            _check_slots(slots, spec)
        values = list(map(float, slots))
        blobs = []
        for start in range(0, spec.count, SLOTS):
            chunk = values[start : start + SLOTS]
            chunk.extend([0.0] * (SLOTS - len(chunk)))
            blobs.append(ts.ckks_vector(self._context, chunk, scale=_SCALE).serialize())
        return blobs

    # -- aggregator side ---------------------------------------------------------------

    def load(self, blobs: Sequence[bytes], spec: SlotSpec) -> list[ts.CKKSVector]:
        return _load(self._context, self._parms_id, blobs, self.ciphertext_count(spec))

    def add(self, left: list[ts.CKKSVector], right: list[ts.CKKSVector]) -> list[Any]:
        if len(left) != len(right) or not left:
            raise InvalidInput("can only add reports with the same, non-zero ciphertext count")
        try:
            return [a.add(b) for a, b in zip(left, right, strict=True)]
        except (ValueError, RuntimeError, TypeError) as exc:
            raise InvalidInput(f"cannot add CKKS ciphertexts: {exc}") from None

    def add_many(self, items: Sequence[list[ts.CKKSVector]]) -> list[Any]:
        if not items:
            raise InvalidInput("add_many needs at least one report")
        width = len(items[0])
        if width == 0:
            raise InvalidInput("a report has no ciphertexts")
        for index, item in enumerate(items):
            if len(item) != width:
                raise InvalidInput(
                    f"report {index} has {len(item)} ciphertext(s), expected {width}"
                )
        try:
            # One copy, then in-place adds: the inputs stay untouched.
            acc = [ct.copy() for ct in items[0]]
            for item in items[1:]:
                for j in range(width):
                    acc[j].add_(item[j])
        except (ValueError, RuntimeError, TypeError) as exc:
            raise InvalidInput(f"cannot add CKKS ciphertexts: {exc}") from None
        return acc

    def dump(self, cts: list[ts.CKKSVector]) -> list[bytes]:
        return [ct.serialize() for ct in cts]


class CkksSecret(SecretScheme):
    """A CKKS context with its secret key: decrypts aggregates to exact integer sums."""

    name: ClassVar[str] = "ckks"

    def __init__(self, context: ts.Context, key_id: str) -> None:
        # Use from_bytes or generate_ckks; this trusts ``context`` to be validated already.
        self.key_id = _check_kid(key_id, KeyStoreError)
        self._context = context
        self._parms_id = _data_parms_id(context)
        self._public = CkksPublic.from_context_bytes(_serialize(context, secret=False), key_id)

    @classmethod
    def from_bytes(cls, data: bytes, key_id: str, public: CkksPublic | None = None) -> CkksSecret:
        """Load ``to_bytes`` output; ``KeyStoreError`` if corrupt or not matching ``public``."""
        where = "stored CKKS secret context"
        if not isinstance(data, bytes):
            raise KeyStoreError(f"{where} must be bytes")
        if len(data) > MAX_SECRET_CONTEXT_BYTES:
            raise KeyStoreError(f"{where} is {len(data)} bytes, more than expected")
        context = _parse_context(data, where, KeyStoreError)
        if not (context.has_secret_key() and context.has_public_key()):
            raise KeyStoreError(f"{where} lacks its secret or public key")
        try:
            secret = cls(context, key_id)
        except InvalidInput as exc:
            raise KeyStoreError(f"{where}: {exc.detail}") from None
        if public is not None and public != secret.public:
            raise KeyStoreError(f"{where} does not match the public key {public.key_id!r}")
        return secret

    def to_storage(self) -> bytes:
        return self.to_bytes()

    def to_bytes(self) -> bytes:
        """Storage form (secret!): the context with public and secret key."""
        return _serialize(self._context, secret=True)

    def __repr__(self) -> str:
        return f"CkksSecret(kid={self.key_id!r})"

    @property
    def public(self) -> CkksPublic:
        return self._public

    def decrypt(self, blobs: Sequence[bytes], spec: SlotSpec) -> list[int]:
        """Rounded slot sums of an aggregate, for any ciphertext that loads: never refuses.

        The raw floats carry secret-key-dependent error (Li-Micciancio): they never leave
        this method, and nothing here branches on them. Each live slot is rounded to the
        nearest integer (a non-finite or huge value is saturated to ``±_SATURATE`` so the
        result is always a Python int); padding slots are ignored. The caller adds integer DP
        noise to these sums before anything is published, so the one bit a crafted
        near-half-integer slot could carry through rounding is covered by that noise, and the
        window is decrypted once only (the ledger consumes it before decryption).

        Raises:
            InvalidCiphertext: a blob is malformed (checked by ``load``, before decryption).
        """
        cts = _load(self._context, self._parms_id, blobs, self._public.ciphertext_count(spec))
        sums: list[int] = []
        for index, ct in enumerate(cts):
            live = min(SLOTS, spec.count - index * SLOTS)
            values = np.zeros(SLOTS, dtype=np.float64)
            decrypted = np.asarray(ct.decrypt(), dtype=np.float64)[:SLOTS]
            values[: decrypted.shape[0]] = decrypted
            rounded = np.clip(np.rint(np.nan_to_num(values[:live], nan=0.0)),
                              -_SATURATE, _SATURATE)
            sums.extend(int(v) for v in rounded)
        return sums


def capacity_error(spec: SlotSpec) -> str | None:
    """Why ``spec`` cannot be summed exactly under the CKKS parameters, or None."""
    problem = spec_error(spec)
    if problem:
        return problem
    if spec.max_slot_sum > MAX_SLOT_SUM:
        return (
            f"a window slot can reach {spec.max_slot_sum} (max_value * max_contributors) but "
            f"CKKS sums are exact only up to {MAX_SLOT_SUM}"
        )
    if spec.max_contributors > MAX_CONTRIBUTORS:
        return (
            f"max_contributors {spec.max_contributors} exceeds {MAX_CONTRIBUTORS}, beyond "
            "which CKKS noise could make rounding inexact"
        )
    return None


def _check_slots(slots: Sequence[int], spec: SlotSpec) -> None:
    for index, value in enumerate(slots):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"slot {index} is not an integer")
        if not 0 <= value <= spec.max_value:
            raise InvalidInput(f"slot {index} is outside 0..{spec.max_value}")


def _check_spec(spec: SlotSpec) -> None:
    problem = capacity_error(spec)
    if problem:
        raise InvalidInput(problem)


def _load(
    context: ts.Context, parms_id: list[int], blobs: Sequence[bytes], expected: int
) -> list[ts.CKKSVector]:
    if isinstance(blobs, str | bytes | bytearray) or not isinstance(blobs, Sequence):
        raise InvalidCiphertext("ciphertexts must be a list of byte strings")
    if len(blobs) != expected:
        raise InvalidCiphertext(
            f"expected {expected} ciphertext(s) for this metric, got {len(blobs)}"
        )
    return [_load_one(context, parms_id, blob, index) for index, blob in enumerate(blobs)]


def _load_one(context: ts.Context, parms_id: list[int], blob: bytes, index: int) -> Any:
    if not isinstance(blob, bytes):
        raise InvalidCiphertext(f"ciphertext {index} is {type(blob).__name__}, expected bytes")
    if len(blob) > MAX_CIPHERTEXT_BYTES:
        raise InvalidCiphertext(
            f"ciphertext {index} is {len(blob)} bytes, more than {MAX_CIPHERTEXT_BYTES}"
        )
    if not _well_framed(blob):
        raise InvalidCiphertext(
            f"ciphertext {index} is not a {SLOTS}-slot CKKS vector at scale 2**{SCALE_BITS}"
        )
    try:
        vector = ts.ckks_vector_from(context, blob)
        cts = vector.ciphertext()
        well_formed = (
            vector.size() == SLOTS
            and len(cts) == 1
            and cts[0].size() == 2
            and cts[0].scale == _SCALE
            and cts[0].is_ntt_form()
            and cts[0].parms_id() == parms_id
        )
    except Exception as exc:  # TenSEAL/SEAL raise assorted types for malformed input.
        raise InvalidCiphertext(
            f"ciphertext {index} does not parse under this CKKS key: {exc}"
        ) from None
    if not well_formed:
        raise InvalidCiphertext(f"ciphertext {index} has unexpected CKKS metadata")
    return vector


def _well_framed(blob: bytes) -> bool:
    """Exactly the protobuf framing TenSEAL writes for one SLOTS-sized vector at our scale."""
    if not (blob.startswith(_FRAME_HEAD) and blob.endswith(_FRAME_TAIL)):
        return False
    length, pos, shift = 0, len(_FRAME_HEAD), 0
    while pos < len(blob) and shift < 35:
        byte = blob[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return (
                pos + length + len(_FRAME_TAIL) == len(blob)
                and length >= _SEAL_HEADER.size
                and _seal_header_ok(_SEAL_HEADER.unpack_from(blob, pos), length)
            )
    return False


def _seal_header_ok(header: tuple[int, ...], length: int) -> bool:
    # SEAL ignores the reserved bytes; insisting on zeros leaves one encoding per header.
    magic, header_size, _major, _minor, compression, reserved, size = header
    return (
        magic == _SEAL_MAGIC
        and header_size == _SEAL_HEADER.size
        and compression in _SEAL_COMPRESSION
        and reserved == 0
        and size == length
    )


def _parse_context(data: bytes, where: str, error: type[BlindsumError]) -> ts.Context:
    try:
        context = ts.context_from(data)
        seal = context.seal_context().data
        parms = seal.key_context_data().parms()
        matches = (
            parms.scheme() == ts.SCHEME_TYPE.CKKS.value
            and parms.poly_modulus_degree() == POLY_MODULUS_DEGREE
            and tuple(m.value() for m in parms.coeff_modulus()) == _PRIMES
            and context.global_scale == _SCALE
        )
    except Exception as exc:  # TenSEAL raises assorted types for malformed input.
        raise error(f"{where} does not parse: {exc}") from None
    if not matches:
        raise error(
            f"{where} is not CKKS N={POLY_MODULUS_DEGREE}, primes {list(COEFF_MOD_BIT_SIZES)} "
            f"bits, scale 2**{SCALE_BITS}"
        )
    return context


def _data_parms_id(context: ts.Context) -> list[int]:
    return list(context.seal_context().data.first_parms_id())


def _serialize(context: ts.Context, *, secret: bool) -> bytes:
    return context.serialize(
        save_public_key=True,
        save_secret_key=secret,
        save_galois_keys=False,
        save_relin_keys=False,
    )


def _new_kid() -> str:
    return f"ckks-{secrets.token_hex(4)}"


def _check_kid(kid: object, error: type[BlindsumError]) -> str:
    if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
        raise error('key id "kid" must be 1..64 characters of A-Z a-z 0-9 . _ : -')
    return kid
