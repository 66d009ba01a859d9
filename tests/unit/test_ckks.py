"""Specification of the CKKS scheme: exact integer sums, and nothing malformed gets through."""

from __future__ import annotations

import hashlib
import random
import re
import struct

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi

from blindsum.shared.errors import InvalidCiphertext, InvalidInput, KeyStoreError
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.ckks import (
    COEFF_MOD_BIT_SIZES,
    MAX_CIPHERTEXT_BYTES,
    MAX_CONTRIBUTORS,
    MAX_SLOT_SUM,
    POLY_MODULUS_DEGREE,
    SCALE_BITS,
    SLOTS,
    CkksPublic,
    CkksSecret,
    generate_ckks,
)

SPEC = SlotSpec(count=5, max_value=100, max_contributors=1000)
SLOTS_5 = [0, 1, 2, 99, 100]


@pytest.fixture(scope="module")
def secret() -> CkksSecret:
    return generate_ckks("ckks-test")


@pytest.fixture(scope="module")
def public(secret: CkksSecret) -> CkksPublic:
    return secret.public


@pytest.fixture(scope="module")
def stranger() -> CkksSecret:
    """Another key with the very same parameters."""
    return generate_ckks("ckks-stranger")


@pytest.fixture(scope="module")
def blob(public: CkksPublic) -> bytes:
    return public.encrypt(SLOTS_5, SPEC)[0]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _proto(sizes: list[int], cts: list[bytes], scale: float = 2.0**SCALE_BITS) -> bytes:
    """A TenSEAL CKKSVectorProto with arbitrary fields."""
    packed = b"".join(_varint(s) for s in sizes)
    out = b"\x0a" + _varint(len(packed)) + packed if sizes else b""
    for ct in cts:
        out += b"\x12" + _varint(len(ct)) + ct
    return out + b"\x19" + struct.pack("<d", scale)


def _seal_ciphertext(blob: bytes) -> bytes:
    """The SEAL ciphertext inside an honest blob."""
    pos = blob.index(b"\x12") + 1
    length, shift = 0, 0
    while True:
        byte = blob[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return blob[pos : pos + length]


# -- parameters ---------------------------------------------------------------------------


def test_parameters_are_the_largest_128_bit_secure_modulus_at_n_4096(public: CkksPublic):
    context = ts.context_from(public.context_bytes)
    key_level = context.seal_context().data.key_context_data()
    max_bits = sealapi.CoeffModulus.MaxBitCount(POLY_MODULUS_DEGREE, sealapi.SEC_LEVEL_TYPE.TC128)
    assert max_bits == 109
    assert key_level.total_coeff_modulus_bit_count() == sum(COEFF_MOD_BIT_SIZES) == max_bits
    # SEAL enforces the standard: one bit more is refused.
    with pytest.raises(ValueError):
        ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[60, 50])


def test_headroom_fits_below_half_the_data_modulus(public: CkksPublic):
    context = ts.context_from(public.context_bytes)
    q = context.seal_context().data.first_context_data().total_coeff_modulus()
    assert q // 2 >= 1.99 * MAX_SLOT_SUM * 2**SCALE_BITS


def test_public_json_describes_the_key(public: CkksPublic):
    assert public.public_json() == {
        "kid": "ckks-test",
        "scheme": "ckks",
        "poly_modulus_degree": 4096,
        "coeff_mod_bit_sizes": [60, 49],
        "scale_bits": SCALE_BITS,
        "context_sha256": hashlib.sha256(public.context_bytes).hexdigest(),
    }
    assert public.context_sha256 == public.public_json()["context_sha256"]


def test_generated_key_ids():
    assert re.fullmatch(r"ckks-[0-9a-f]{8}", generate_ckks().key_id)
    with pytest.raises(InvalidInput):
        generate_ckks("not a kid!")


# -- encryption and sums ------------------------------------------------------------------


def test_round_trip(public: CkksPublic, secret: CkksSecret, blob: bytes):
    assert len(blob) <= MAX_CIPHERTEXT_BYTES
    out = secret.decrypt([blob], SPEC)
    assert out == SLOTS_5
    assert all(type(v) is int for v in out)


def test_load_then_dump_returns_the_same_bytes(public: CkksPublic, blob: bytes):
    assert public.dump(public.load([blob], SPEC)) == [blob]


def test_sum_at_the_headroom_limit_is_exact(public: CkksPublic, secret: CkksSecret):
    reports = 128
    spec = SlotSpec(count=3, max_value=MAX_SLOT_SUM // reports, max_contributors=reports)
    assert spec.max_slot_sum == MAX_SLOT_SUM
    top = spec.max_value
    loaded = [public.load(public.encrypt([top, 0, 1], spec), spec) for _ in range(reports)]
    total = public.add_many(loaded)
    assert secret.decrypt(public.dump(total), spec) == [MAX_SLOT_SUM, 0, reports]


def test_add_and_add_many_agree_and_leave_inputs_alone(public: CkksPublic, secret: CkksSecret):
    rng = random.Random(7)
    reports = [[rng.randint(0, SPEC.max_value) for _ in range(SPEC.count)] for _ in range(4)]
    blobs = [public.encrypt(r, SPEC) for r in reports]
    loaded = [public.load(b, SPEC) for b in blobs]
    folded = loaded[0]
    for item in loaded[1:]:
        folded = public.add(folded, item)
    expected = [sum(column) for column in zip(*reports, strict=True)]
    assert secret.decrypt(public.dump(folded), SPEC) == expected
    assert secret.decrypt(public.dump(public.add_many(loaded)), SPEC) == expected
    assert [public.dump(item) for item in loaded] == blobs
    with pytest.raises(InvalidInput):
        public.add_many([])
    with pytest.raises(InvalidInput):
        public.add(loaded[0], [])


def test_noise_of_many_reports_stays_far_below_the_rounding_tolerance(public, secret):
    # White-box: read the raw decryption with TenSEAL to see the error itself.
    # Independent errors grow like sqrt(k), so k reports' worst error, scaled up to
    # MAX_CONTRIBUTORS, must stay under the 0.25 integrity tolerance.
    k = 512
    spec = SlotSpec(count=SLOTS, max_value=1000, max_contributors=k)
    values = np.random.default_rng(3).integers(0, 1001, size=(k, SLOTS))
    total = public.add_many([public.load(public.encrypt(v.tolist(), spec), spec) for v in values])
    raw = ts.ckks_vector_from(secret._context, public.dump(total)[0]).decrypt()
    error = np.abs(np.asarray(raw) - values.sum(axis=0))
    assert error.max() * (MAX_CONTRIBUTORS / k) ** 0.5 < 0.25


def test_reports_longer_than_one_ciphertext_are_chunked(public: CkksPublic, secret: CkksSecret):
    spec = SlotSpec(count=2 * SLOTS + 5, max_value=50, max_contributors=10)
    assert public.ciphertext_count(spec) == 3
    rng = random.Random(1)
    a = [rng.randint(1, 50) for _ in range(spec.count)]
    b = [rng.randint(1, 50) for _ in range(spec.count)]
    total = public.add(
        public.load(public.encrypt(a, spec), spec), public.load(public.encrypt(b, spec), spec)
    )
    dumped = public.dump(total)
    assert secret.decrypt(dumped, spec) == [x + y for x, y in zip(a, b, strict=True)]
    with pytest.raises(InvalidCiphertext, match="expected 3"):
        public.load(dumped[:2], spec)
    # Chunks in the wrong order decrypt to the wrong slots, never to a refusal.
    swapped = secret.decrypt([dumped[2], dumped[1], dumped[0]], spec)
    assert len(swapped) == spec.count and swapped[SLOTS: 2 * SLOTS] == [
        x + y for x, y in zip(a[SLOTS: 2 * SLOTS], b[SLOTS: 2 * SLOTS], strict=True)]


def test_encrypt_rejects_bad_slots(public: CkksPublic):
    for slots in (
        [1, 2, 3],
        [0, 1, 2, 3, 101],
        [0, 1, 2, 3, -1],
        [0, 1, 2, 3, True],
        [0, 1, 2, 3, 1.0],
    ):
        with pytest.raises(InvalidInput):
            public.encrypt(slots, SPEC)
    with pytest.raises(InvalidInput):
        public.encrypt(b"\x00\x01\x02\x03\x04", SPEC)


def test_capacity(public: CkksPublic):
    assert public.capacity_error(SlotSpec(SLOTS, MAX_SLOT_SUM // 1024, 1024)) is None
    assert public.capacity_error(SlotSpec(1, 1, MAX_CONTRIBUTORS)) is None
    too_big = SlotSpec(1, MAX_SLOT_SUM // 1024 + 1, 1024)
    assert "exact only up to" in public.capacity_error(too_big)
    assert "max_contributors" in public.capacity_error(SlotSpec(1, 1, MAX_CONTRIBUTORS + 1))
    assert public.capacity_error(SlotSpec(0, 1, 1)) is not None
    assert public.capacity_error(SlotSpec(1, True, 1)) is not None
    with pytest.raises(InvalidInput):
        public.encrypt([1], too_big)
    with pytest.raises(InvalidInput):
        public.ciphertext_count(too_big)


# -- malformed ciphertexts ----------------------------------------------------------------


def _rejected(public: CkksPublic, blobs: list) -> str:
    with pytest.raises(InvalidCiphertext) as info:
        public.load(blobs, SPEC)
    return info.value.detail


def test_garbage_and_wrong_types_are_rejected(public: CkksPublic):
    rng = random.Random(2)
    for garbage in (b"", b"\x00", bytes(rng.getrandbits(8) for _ in range(65_676))):
        assert "ciphertext 0" in _rejected(public, [garbage])
    assert "is str" in _rejected(public, ["abc"])
    assert "is bytearray" in _rejected(public, [bytearray(10)])
    assert "more than" in _rejected(public, [bytes(MAX_CIPHERTEXT_BYTES + 1)])
    with pytest.raises(InvalidCiphertext):
        public.load(b"not a list", SPEC)


def test_wrong_count_is_rejected(public: CkksPublic, blob: bytes):
    assert "expected 1" in _rejected(public, [])
    assert "expected 1" in _rejected(public, [blob, blob])


def test_truncated_ciphertexts_are_rejected(public: CkksPublic, blob: bytes):
    for cut in (1, 5, 10, 30, 100, 1000, len(blob) // 2, len(blob) - 10, len(blob) - 1):
        _rejected(public, [blob[:cut]])
        _rejected(public, [blob[cut:]])


def test_bit_flips_in_framing_and_metadata_are_rejected(public: CkksPublic, blob: bytes):
    # Outer framing (0..8), SEAL header (8..24) and the scale: every flip there must fail to
    # load. Flipped coefficients may load: decryption catches those (below).
    for pos in (*range(0, 24), len(blob) - 9, len(blob) - 2, len(blob) - 1):
        for bit in (0, 7):
            flipped = bytearray(blob)
            flipped[pos] ^= 1 << bit
            _rejected(public, [bytes(flipped)])


def test_smashed_coefficients_decrypt_to_integers_never_a_refusal(public, secret, blob):
    for start in (200, 20_000, 40_000, 65_000):
        smashed = bytearray(blob)
        smashed[start : start + 64] = bytes(b ^ 0xFF for b in smashed[start : start + 64])
        try:
            loaded = public.load([bytes(smashed)], SPEC)
        except InvalidCiphertext:
            continue
        out = secret.decrypt(public.dump(loaded), SPEC)
        assert len(out) == SPEC.count and all(type(v) is int for v in out)


def test_forged_vector_layouts_are_rejected(public: CkksPublic, blob: bytes):
    # Plain TenSEAL trusts these fields: no sizes with two ciphertexts segfaults on decrypt,
    # and a huge size reads far past the decrypted buffer.
    ct = _seal_ciphertext(blob)
    assert _proto([SLOTS], [ct]) == blob
    for forged in (
        _proto([10_000_000], [ct]),
        _proto([], [ct, ct]),
        _proto([SLOTS], [ct, ct]),
        _proto([SLOTS, 5], [ct]),
        _proto([5], [ct]),
        _proto([SLOTS], [ct], scale=2.0**26),
        _proto([SLOTS], []),
        blob + b"\x00",
    ):
        _rejected(public, [forged])


def test_wrong_vector_size_is_rejected(public: CkksPublic, secret: CkksSecret):
    short = ts.ckks_vector(secret._context, [1.0] * 5, scale=2.0**SCALE_BITS).serialize()
    _rejected(public, [short])


def test_ciphertext_under_other_parameters_is_rejected(public: CkksPublic):
    other = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[59, 50])
    foreign = ts.ckks_vector(other, [1.0] * SLOTS, scale=2.0**SCALE_BITS).serialize()
    assert "does not parse" in _rejected(public, [foreign])


def test_ciphertext_under_another_key_decrypts_to_integers_never_a_refusal(
    public, secret, stranger
):
    # Same parameters, different key: indistinguishable without the secret key. Refusing it
    # was a repeatable bit about the secret-key-dependent error (Li-Micciancio); now it
    # rounds to garbage integers that the key-holder noises and clamps like any sum.
    foreign = stranger.public.encrypt(SLOTS_5, SPEC)
    loaded = public.load(foreign, SPEC)
    honest = public.load(public.encrypt(SLOTS_5, SPEC), SPEC)
    out = secret.decrypt(public.dump(public.add(loaded, honest)), SPEC)
    assert len(out) == SPEC.count and all(type(v) is int for v in out)
    assert all(abs(v) <= 2**62 for v in out)


def test_slot_sums_beyond_the_window_maximum_are_returned_as_they_are(public, secret):
    big = SlotSpec(count=5, max_value=1000, max_contributors=1)
    blob = public.encrypt([1000, 0, 0, 0, 0], big)
    assert secret.decrypt(blob, big) == [1000, 0, 0, 0, 0]
    small = SlotSpec(count=5, max_value=100, max_contributors=1)
    assert secret.decrypt(blob, small) == [1000, 0, 0, 0, 0]


# -- contexts and key storage -------------------------------------------------------------


def test_public_context_has_no_secret_key_and_cannot_decrypt(public: CkksPublic, blob: bytes):
    context = ts.context_from(public.context_bytes)
    assert context.is_public() and not context.has_secret_key()
    assert not context.has_relin_keys() and not context.has_galois_keys()
    (loaded,) = public.load([blob], SPEC)
    with pytest.raises(ValueError, match="secret"):
        loaded.decrypt()


def test_from_context_bytes_round_trips(public: CkksPublic):
    again = CkksPublic.from_context_bytes(public.context_bytes, public.key_id)
    assert again == public and again.context_sha256 == public.context_sha256


def test_from_context_bytes_rejects_secrets_and_garbage(public: CkksPublic, secret: CkksSecret):
    with_secret = secret._context.serialize(
        save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    with pytest.raises(InvalidInput, match="secret key"):
        CkksPublic.from_context_bytes(with_secret, "k")
    with pytest.raises(InvalidInput):
        CkksPublic.from_context_bytes(secret.to_bytes(), "k")
    data = public.context_bytes
    for bad in (b"", b"garbage", data[:100], data[: len(data) // 2], data + bytes(10_000)):
        with pytest.raises(InvalidInput):
            CkksPublic.from_context_bytes(bad, "k")
    with pytest.raises(InvalidInput):
        CkksPublic.from_context_bytes(bytearray(data), "k")
    with pytest.raises(InvalidInput):
        CkksPublic.from_context_bytes(data, "bad kid!")


def test_from_context_bytes_rejects_other_parameters():
    def public_bytes(context: ts.Context) -> bytes:
        return context.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )

    others = [
        ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 20, 40]),
        ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[60, 49]),
        ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=4096, plain_modulus=1032193),
    ]
    others[0].global_scale = 2.0**SCALE_BITS
    others[1].global_scale = 2.0**25
    for other in others:
        with pytest.raises(InvalidInput):
            CkksPublic.from_context_bytes(public_bytes(other), "k")


def test_secret_round_trip(public: CkksPublic, secret: CkksSecret, blob: bytes):
    again = CkksSecret.from_bytes(secret.to_bytes(), secret.key_id, public)
    assert again.public == public
    assert again.decrypt([blob], SPEC) == SLOTS_5
    assert "ckks-test" in repr(again)


def test_secret_from_bytes_rejects_corrupt_or_mismatched(public, secret, stranger):
    data = secret.to_bytes()
    for bad in (b"", b"junk", data[:1000], data[: len(data) // 2], public.context_bytes, "text"):
        with pytest.raises(KeyStoreError):
            CkksSecret.from_bytes(bad, secret.key_id)
    with pytest.raises(KeyStoreError, match="does not match"):
        CkksSecret.from_bytes(stranger.to_bytes(), secret.key_id, public)
    with pytest.raises(KeyStoreError, match="does not match"):
        CkksSecret.from_bytes(data, "other-kid", public)
