"""Paillier scheme: interoperability with stock phe, wire validation, packing, key JSON."""

from __future__ import annotations

import base64
import re
import threading
from typing import Any

import gmpy2
import pytest
from phe import paillier as phe

from blindsum.shared.errors import InvalidCiphertext, InvalidConfig, InvalidInput, KeyStoreError
from blindsum.shared.packing import pack, slot_width
from blindsum.shared.schemes import paillier as paillier_module
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.paillier import (
    PaillierPublic,
    PaillierSecret,
    generate_paillier,
    short_exponent_bits,
)

SPEC = SlotSpec(count=5, max_value=1000, max_contributors=10_000)


@pytest.fixture(scope="module")
def secret() -> PaillierSecret:
    # 2048 bits keeps keygen fast; a default key id exercises the generated form.
    return generate_paillier(2048)


@pytest.fixture(scope="module")
def public(secret: PaillierSecret) -> PaillierPublic:
    return secret.public


@pytest.fixture(scope="module")
def stock(secret: PaillierSecret) -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    """phe's own key objects for the same modulus."""
    stock_public = phe.PaillierPublicKey(int(secret.public.n))
    return stock_public, phe.PaillierPrivateKey(stock_public, int(secret.p), int(secret.q))


def _blob(public: PaillierPublic, value: int) -> bytes:
    return int(value).to_bytes(public.byte_length, "big")


# -- key generation ------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1024, 2047, 2560, 8192, True, "3072"])
def test_generate_rejects_key_sizes_other_than_2048_3072_4096(bits: Any) -> None:
    with pytest.raises(InvalidConfig):
        generate_paillier(bits)


def test_generated_key_has_the_requested_size_and_a_pai_key_id(secret: PaillierSecret) -> None:
    assert secret.public.n.bit_length() == 2048
    assert secret.public.n == secret.p * secret.q
    assert re.fullmatch(r"pai-[0-9a-f]{8}", secret.key_id)
    assert secret.public.key_id == secret.key_id
    assert secret.name == secret.public.name == "paillier"


def test_short_exponent_is_four_times_the_security_level() -> None:
    assert short_exponent_bits(2048) == 448
    assert short_exponent_bits(3072) == 512
    assert short_exponent_bits(4096) == 608


def test_repr_never_shows_the_factors(secret: PaillierSecret) -> None:
    text = repr(secret)
    assert str(secret.p) not in text and str(secret.q) not in text
    assert secret.key_id in text


# -- encryption and stock phe interoperability -----------------------------------------


def test_encrypt_then_decrypt_returns_the_slots(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    assert secret.decrypt(public.encrypt([0, 1, 2, 999, 1000], SPEC), SPEC) == [0, 1, 2, 999, 1000]


def test_encryption_is_randomised(public: PaillierPublic) -> None:
    assert public.encrypt([1, 2, 3, 4, 5], SPEC) != public.encrypt([1, 2, 3, 4, 5], SPEC)


def test_ciphertexts_are_fixed_length_big_endian(public: PaillierPublic) -> None:
    assert public.byte_length == (public.nsquare.bit_length() + 7) // 8
    blobs = public.encrypt([1, 2, 3, 4, 5], SPEC)
    assert all(len(b) == public.byte_length for b in blobs)
    assert int.from_bytes(blobs[0], "big") == public.load(blobs, SPEC)[0]
    # A small value still takes the full length, left-padded with zeros.
    assert public.dump([gmpy2.mpz(7)]) == [b"\x00" * (public.byte_length - 1) + b"\x07"]


def test_stock_phe_decrypts_our_ciphertexts(
    public: PaillierPublic,
    stock: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey],
) -> None:
    stock_public, stock_private = stock
    slots = [3, 0, 1000, 42, 7]
    (blob,) = public.encrypt(slots, SPEC)
    c = int.from_bytes(blob, "big")
    packed = pack(slots, slot_width(SPEC.max_slot_sum))
    assert stock_private.raw_decrypt(c) == packed
    assert stock_private.decrypt(phe.EncryptedNumber(stock_public, c)) == packed


def test_stock_phe_ciphertexts_aggregate_with_ours(
    secret: PaillierSecret,
    public: PaillierPublic,
    stock: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey],
) -> None:
    stock_public, _ = stock
    width = slot_width(SPEC.max_slot_sum)
    theirs = [[10, 20, 30, 40, 50], [1000, 0, 1000, 0, 1000]]
    ours = [[1, 2, 3, 4, 5], [999, 998, 997, 996, 995]]
    reports = []
    for slots in theirs:
        c = stock_public.encrypt(pack(slots, width)).ciphertext()
        reports.append(public.load([_blob(public, c)], SPEC))
    reports += [public.load(public.encrypt(slots, SPEC), SPEC) for slots in ours]
    total = public.dump(public.add_many(reports))
    expected = [sum(column) for column in zip(*theirs, *ours, strict=True)]
    assert secret.decrypt(total, SPEC) == expected


def test_encryption_of_zero_is_a_pure_nth_residue_randomiser(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    c = public.encrypt_plaintext(0)
    assert c != 1
    assert secret.decrypt_plaintext(c) == 0


def test_randomiser_table_computes_h_to_the_exponent(
    public: PaillierPublic, monkeypatch: pytest.MonkeyPatch
) -> None:
    public.precompute()
    table = public._table
    assert table is not None
    h = table.table[0][1]
    exponent = (1 << (public.exponent_bits - 1)) | 0xDEADBEEF << 200 | 0xA5
    monkeypatch.setattr(paillier_module.secrets, "randbits", lambda bits: exponent)
    assert table.random_power() == gmpy2.powmod(h, exponent, public.nsquare)


def test_randomiser_table_is_built_once_under_concurrent_first_use(
    public: PaillierPublic, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = PaillierPublic(int(public.n), public.key_id)
    builds = []
    real = paillier_module._FixedBaseTable

    def counting(*args: Any) -> Any:
        builds.append(1)
        return real(*args)

    monkeypatch.setattr(paillier_module, "_FixedBaseTable", counting)
    barrier = threading.Barrier(6)

    def encrypt() -> None:
        barrier.wait()
        fresh.encrypt([1, 1, 1, 1, 1], SPEC)

    threads = [threading.Thread(target=encrypt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == [1]


@pytest.mark.parametrize(
    ("slots", "message"),
    [
        ([1, 2, 3, 4], "expected 5 slots"),
        ([1, 2, 3, 4, 5, 6], "expected 5 slots"),
        ([1, 2, 1001, 4, 5], "slot 2"),
        ([1, -1, 3, 4, 5], "slot 1"),
        ([1, 2, 3, True, 5], "slot 3"),
        ([1, 2, 3, 4, 5.0], "slot 4"),
    ],
)
def test_encrypt_rejects_slots_outside_the_spec(
    public: PaillierPublic, slots: list[Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        public.encrypt(slots, SPEC)


def test_encrypt_plaintext_rejects_values_outside_zero_to_n(public: PaillierPublic) -> None:
    for bad in (-1, int(public.n), True):
        with pytest.raises(InvalidInput):
            public.encrypt_plaintext(bad)


# -- packing layout and capacity --------------------------------------------------------


def test_usable_plaintext_bits_are_two_below_the_modulus_size(public: PaillierPublic) -> None:
    assert public.usable_bits == 2046


def test_a_report_with_more_slots_than_fit_spans_several_ciphertexts(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    width = slot_width(SPEC.max_slot_sum)
    per = public.usable_bits // width
    spec = SlotSpec(count=2 * per + 3, max_value=SPEC.max_value, max_contributors=10_000)
    assert public.ciphertext_count(spec) == 3
    slots = [i % (SPEC.max_value + 1) for i in range(spec.count)]
    blobs = public.encrypt(slots, spec)
    assert len(blobs) == 3
    assert secret.decrypt(blobs, spec) == slots


def test_capacity_accepts_a_slot_exactly_as_wide_as_the_plaintext(
    public: PaillierPublic,
) -> None:
    spec = SlotSpec(count=2, max_value=(1 << public.usable_bits) - 1, max_contributors=1)
    assert public.capacity_error(spec) is None
    assert public.ciphertext_count(spec) == 2


def test_capacity_refuses_a_window_maximum_wider_than_the_plaintext(
    public: PaillierPublic,
) -> None:
    spec = SlotSpec(count=1, max_value=1 << (public.usable_bits - 1), max_contributors=2)
    problem = public.capacity_error(spec)
    assert problem is not None and "bits" in problem
    with pytest.raises(InvalidInput):
        public.ciphertext_count(spec)
    with pytest.raises(InvalidInput):
        public.encrypt([0], spec)


@pytest.mark.parametrize(
    "spec",
    [
        SlotSpec(count=0, max_value=1, max_contributors=1),
        SlotSpec(count=1, max_value=0, max_contributors=1),
        SlotSpec(count=1, max_value=1, max_contributors=-5),
        SlotSpec(count=True, max_value=1, max_contributors=1),
        SlotSpec(count=1, max_value=1.5, max_contributors=1),  # type: ignore[arg-type]
    ],
)
def test_capacity_refuses_malformed_specs(public: PaillierPublic, spec: SlotSpec) -> None:
    assert public.capacity_error(spec) is not None


# -- load: validation of untrusted ciphertexts ---------------------------------------------


@pytest.fixture(scope="module")
def good(public: PaillierPublic) -> bytes:
    (blob,) = public.encrypt([1, 2, 3, 4, 5], SPEC)
    return blob


def test_load_accepts_valid_ciphertexts_and_returns_gmpy2_integers(
    public: PaillierPublic, good: bytes
) -> None:
    (c,) = public.load([good], SPEC)
    assert isinstance(c, gmpy2.mpz)
    assert public.dump([c]) == [good]


@pytest.mark.parametrize("delta", [-1, 1])
def test_load_rejects_a_ciphertext_of_the_wrong_length(
    public: PaillierPublic, good: bytes, delta: int
) -> None:
    blob = good[1:] if delta < 0 else b"\x00" + good
    with pytest.raises(InvalidCiphertext, match=r"ciphertext 0 is \d+ bytes"):
        public.load([blob], SPEC)


def test_load_rejects_a_zero_ciphertext(public: PaillierPublic) -> None:
    with pytest.raises(InvalidCiphertext, match="ciphertext 0 is zero"):
        public.load([bytes(public.byte_length)], SPEC)


@pytest.mark.parametrize("offset", [0, 1])
def test_load_rejects_a_ciphertext_not_below_n_squared(public: PaillierPublic, offset: int) -> None:
    with pytest.raises(InvalidCiphertext, match="not below n"):
        public.load([_blob(public, public.nsquare + offset)], SPEC)


def test_load_rejects_ciphertext_sharing_a_factor_with_n(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    for factor in (secret.p, secret.q, secret.p * 12345):
        with pytest.raises(InvalidCiphertext, match="shares a factor with n"):
            public.load([_blob(public, factor)], SPEC)


def test_load_rejects_the_wrong_number_of_ciphertexts(public: PaillierPublic, good: bytes) -> None:
    for blobs in ([], [good, good]):
        with pytest.raises(InvalidCiphertext, match=rf"expected 1 ciphertext.*got {len(blobs)}"):
            public.load(blobs, SPEC)


@pytest.mark.parametrize("bad", ["text", 1.5, True, None, bytearray(b"x"), memoryview(b"x")])
def test_load_rejects_blobs_that_are_not_bytes(public: PaillierPublic, bad: Any) -> None:
    with pytest.raises(InvalidCiphertext, match=r"ciphertext 0 is .*expected bytes"):
        public.load([bad], SPEC)


def test_load_takes_phe_integers_with_the_same_checks(public: PaillierPublic,
                                                      good: bytes) -> None:
    as_int = int.from_bytes(good, "big")
    assert public.load([as_int], SPEC) == public.load([good], SPEC)
    for bad, reason in ((0, "zero"), (int(public.nsquare), "below n"),
                        (int(public.n), "shares a factor"), (1 << 20000, "below n")):
        with pytest.raises(InvalidCiphertext, match=reason):
            public.load([bad], SPEC)


def test_load_rejects_a_bare_byte_string_instead_of_a_list(
    public: PaillierPublic, good: bytes
) -> None:
    with pytest.raises(InvalidCiphertext, match="list"):
        public.load(good, SPEC)


def test_load_errors_name_the_index_never_the_value(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    spec = SlotSpec(count=3, max_value=(1 << public.usable_bits) - 1, max_contributors=1)
    valid = public.encrypt([0, 0, 0], spec)
    bad = _blob(public, secret.p)
    with pytest.raises(InvalidCiphertext) as caught:
        public.load([valid[0], valid[1], bad], spec)
    assert "ciphertext 2" in caught.value.detail
    assert str(secret.p) not in caught.value.detail
    assert bad.hex() not in caught.value.detail


# -- homomorphic addition ---------------------------------------------------------------


def test_add_and_add_many_agree(secret: PaillierSecret, public: PaillierPublic) -> None:
    a = public.load(public.encrypt([1, 2, 3, 4, 5], SPEC), SPEC)
    b = public.load(public.encrypt([10, 20, 30, 40, 50], SPEC), SPEC)
    c = public.load(public.encrypt([100, 200, 300, 400, 500], SPEC), SPEC)
    assert public.add(public.add(a, b), c) == public.add_many([a, b, c])
    assert secret.decrypt(public.dump(public.add_many([a, b, c])), SPEC) == [
        111,
        222,
        333,
        444,
        555,
    ]


def test_add_many_of_one_report_is_that_report(public: PaillierPublic) -> None:
    a = public.load(public.encrypt([1, 2, 3, 4, 5], SPEC), SPEC)
    assert public.add_many([a]) == a


def test_addition_rejects_reports_of_different_shapes(public: PaillierPublic) -> None:
    one = [gmpy2.mpz(2)]
    two = [gmpy2.mpz(2), gmpy2.mpz(3)]
    with pytest.raises(InvalidInput):
        public.add(one, two)
    with pytest.raises(InvalidInput, match="report 1"):
        public.add_many([one, two])
    with pytest.raises(InvalidInput):
        public.add_many([])


# -- decryption of forged or over-filled aggregates ----------------------------------------


def test_decrypt_returns_exactly_count_slot_sums(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    spec = SlotSpec(count=1, max_value=1, max_contributors=1)
    assert secret.decrypt(public.encrypt([1], spec), spec) == [1]


def test_decrypt_never_refuses_a_plaintext_beyond_the_slot_layout(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    # A refusal here was a noise-free bit about the reports: the top slot keeps the excess.
    width = slot_width(SPEC.max_slot_sum)
    forged = public.dump([public.encrypt_plaintext(1 << (width * SPEC.count))])
    assert secret.decrypt(forged, SPEC) == [0, 0, 0, 0, 1 << width]


def test_decrypt_never_refuses_a_slot_above_the_window_maximum(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    width = slot_width(SPEC.max_slot_sum)
    over = pack([0, 0, SPEC.max_slot_sum + 1, 0, 0], width)
    assert secret.decrypt(public.dump([public.encrypt_plaintext(over)]), SPEC) == [
        0, 0, SPEC.max_slot_sum + 1, 0, 0]


def test_a_negative_report_subtracts_instead_of_wrapping(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    spec = SlotSpec(count=1, max_value=100, max_contributors=10)
    honest = public.load(public.encrypt([7], spec), spec)
    minus_ten = public.load(public.dump([public.encrypt_plaintext(public.n - 10)]), spec)
    out = secret.decrypt(public.dump(public.add(honest, minus_ten)), spec)
    assert out == [-3] and type(out[0]) is int  # a Python int, as the noise step needs
    # in a packed report the borrow moves up to the top slot, which keeps the sign
    width = slot_width(SPEC.max_slot_sum)
    packed = public.load(public.encrypt([2, 0, 0, 0, 1], SPEC), SPEC)
    minus_three = public.load(public.dump([public.encrypt_plaintext(public.n - 3)]), SPEC)
    mask = (1 << width) - 1
    assert secret.decrypt(public.dump(public.add(packed, minus_three)), SPEC) == [
        mask, mask, mask, mask, 0]


def test_decrypt_validates_its_input_like_load(secret: PaillierSecret) -> None:
    with pytest.raises(InvalidCiphertext):
        secret.decrypt([b"short"], SPEC)


# -- public key JSON ------------------------------------------------------------------------


def _b64u(value: int, length: int | None = None) -> str:
    raw = value.to_bytes(length or (value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_public_json_is_python_paillier_jwk(public: PaillierPublic) -> None:
    obj = public.public_json()
    assert obj == {
        "kty": "DAJ",
        "alg": "PAI-GN1",
        "key_ops": ["encrypt"],
        "n": _b64u(int(public.n)),
        "kid": public.key_id,
    }
    assert "=" not in obj["n"]


def test_public_json_round_trips(public: PaillierPublic) -> None:
    again = PaillierPublic.from_json(public.public_json())
    assert again == public
    assert again.n == public.n and again.key_id == public.key_id


def test_from_phe_wraps_a_stock_public_key(
    public: PaillierPublic, stock: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]
) -> None:
    assert PaillierPublic.from_phe(stock[0], public.key_id) == public
    with pytest.raises(InvalidInput):
        PaillierPublic.from_phe(int(public.n), public.key_id)  # type: ignore[arg-type]


def _bad_jwks(public: PaillierPublic) -> list[tuple[Any, str]]:
    good = public.public_json()
    n = int(public.n)
    return [
        ([good], "JSON object"),
        ({**good, "kty": "RSA"}, "kty"),
        ({k: v for k, v in good.items() if k != "kty"}, "kty"),
        ({**good, "alg": "PAI-GN2"}, "alg"),
        ({**good, "key_ops": ["decrypt"]}, "key_ops"),
        ({**good, "key_ops": "encrypt"}, "key_ops"),
        ({**good, "n": good["n"] + "=="}, "base64url"),
        ({**good, "n": good["n"][:-2] + "+/"}, "base64url"),
        ({**good, "n": n}, "base64url"),
        ({**good, "n": ""}, "base64url"),
        ({**good, "n": _b64u(n, 257)}, "base64url"),  # leading zero byte
        ({**good, "n": _b64u(n - 1)}, "odd"),
        ({**good, "n": _b64u((1 << 1023) + 1)}, "bits"),
        ({**good, "n": _b64u((1 << 4096) + 1)}, "bits"),
        ({k: v for k, v in good.items() if k != "n"}, "base64url"),
        ({**good, "kid": ""}, "kid"),
        ({**good, "kid": "x" * 65}, "kid"),
        ({**good, "kid": "has space"}, "kid"),
        ({**good, "kid": 7}, "kid"),
        ({k: v for k, v in good.items() if k != "kid"}, "kid"),
        ({**good, "p": "AQ"}, "private"),
    ]


def test_from_json_rejects_malformed_public_keys(public: PaillierPublic) -> None:
    for obj, message in _bad_jwks(public):
        with pytest.raises(InvalidInput, match=message):
            PaillierPublic.from_json(obj)


# -- secret key storage JSON ---------------------------------------------------------------


def test_secret_json_round_trips_and_still_decrypts(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    stored = secret.to_json()
    assert stored["kty"] == "DAJ" and stored["key_ops"] == ["decrypt"]
    assert stored["kid"] == secret.key_id
    loaded = PaillierSecret.from_json(stored, public)
    assert loaded.public == public
    assert loaded.decrypt(public.encrypt([5, 4, 3, 2, 1], SPEC), SPEC) == [5, 4, 3, 2, 1]


def test_secret_from_phe_matches(
    secret: PaillierSecret, stock: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]
) -> None:
    again = PaillierSecret.from_phe(stock[1], secret.key_id)
    assert again.public == secret.public
    assert again.to_phe() == stock[1]


def test_secret_from_json_rejects_corrupt_or_mismatched_keys(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    good = secret.to_json()
    p, q = int(secret.p), int(secret.q)
    corrupt: list[tuple[Any, str]] = [
        ("not a dict", "JSON object"),
        ({**good, "kty": "EC"}, "kty"),
        ({**good, "key_ops": ["encrypt"]}, "key_ops"),
        ({**good, "kid": None}, "kid"),
        ({k: v for k, v in good.items() if k != "p"}, '"p"'),
        ({**good, "q": "!!"}, '"q"'),
        ({**good, "p": _b64u(p + 1)}, "prime"),
        ({**good, "q": good["p"]}, "differ"),
        ({**good, "p": _b64u(int(gmpy2.next_prime(p)))}, "stored n"),
        ({**good, "n": _b64u(p * q + 2)}, "stored n"),
        ({**good, "p": _b64u(3), "q": _b64u(5)}, "bits"),
    ]
    for obj, message in corrupt:
        with pytest.raises(KeyStoreError, match=message):
            PaillierSecret.from_json(obj)
    other = PaillierPublic(int(public.n), "someone-else")
    with pytest.raises(KeyStoreError, match="does not match"):
        PaillierSecret.from_json(good, other)


def test_secret_key_errors_never_contain_the_factors(secret: PaillierSecret) -> None:
    good = secret.to_json()
    with pytest.raises(KeyStoreError) as caught:
        PaillierSecret.from_json({**good, "n": _b64u(int(secret.public.n) + 2)})
    assert good["p"] not in caught.value.detail and good["q"] not in caught.value.detail


def test_generate_rejects_a_malformed_key_id_before_generating() -> None:
    with pytest.raises(InvalidInput, match="kid"):
        generate_paillier(2048, key_id="")


def test_pooled_randomisers_are_used_once_and_decrypt(public: PaillierPublic,
                                                     secret: PaillierSecret) -> None:
    assert public.fill_pool(5) == 5 and public.pooled >= 5
    before = public.pooled
    cts = [public.encrypt_plaintext(7) for _ in range(before + 2)]  # past the pool's end
    assert public.pooled == 0
    assert len(set(cts)) == len(cts)  # no randomness shared between ciphertexts
    assert all(secret.decrypt_plaintext(c) == 7 for c in cts)


def test_one_gcd_per_batch_still_finds_the_report_sharing_a_factor(
    public: PaillierPublic, secret: PaillierSecret
) -> None:
    good = [public.load_deferred(public.encrypt([1] * SPEC.count, SPEC), SPEC) for _ in range(5)]
    assert public.first_invalid(good, public.add_many(good)) is None
    poisoned = [*good[:3], [gmpy2.mpz(secret.p) * 7], *good[3:]]  # range-valid, not a unit
    assert public.first_invalid(poisoned, public.add_many(poisoned)) == 3


# -- the public DJN base h (validity proofs rely on it) ---------------------------------


def test_public_base_is_derived_from_n_alone_and_is_an_nth_residue(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    again = PaillierPublic(int(public.n), "another-kid")
    assert again.h == public.h == paillier_module.public_base(int(public.n))
    # an n-th residue decrypts to 0, and is not a trivial element
    assert public.h not in (0, 1, public.nsquare - 1)
    assert secret.decrypt_plaintext(public.h) == 0
    x = public.h % public.n  # h = x**n with x = -(H(n)**2): x**n mod n, a unit
    assert gmpy2.gcd(x, public.n) == 1


def test_encryption_returns_its_randomiser_exponent(
    secret: PaillierSecret, public: PaillierPublic
) -> None:
    c, a = public.encrypt_plaintext_with_exponent(42)
    assert 0 <= a < 1 << public.exponent_bits
    expected = (1 + 42 * public.n) * gmpy2.powmod(public.h, a, public.nsquare) % public.nsquare
    assert c == expected
    assert secret.decrypt_plaintext(c) == 42


def test_fixed_base_power_matches_powmod_inside_and_beyond_the_table(
    public: PaillierPublic,
) -> None:
    table_bits = public.exponent_bits + paillier_module.POWER_SLACK_BITS
    for s in (0, 1, 255, 2**table_bits - 1, 2**table_bits + 12345, 3**900):
        assert public.power(s) == gmpy2.powmod(public.h, s, public.nsquare)
    with pytest.raises(InvalidInput):
        public.power(-1)


def test_pooled_randomisers_keep_their_exponents(public: PaillierPublic) -> None:
    fresh = PaillierPublic(int(public.n), public.key_id)
    fresh.fill_pool(3)
    for _ in range(3):
        c, a = fresh.encrypt_plaintext_with_exponent(7)
        assert c == (1 + 7 * fresh.n) * fresh.power(a) % fresh.nsquare
    assert fresh.pooled == 0


# -- the fixed-base table's secret exponents ---------------------------------------------------


def test_secret_powers_agree_with_powmod_at_every_edge(public: PaillierPublic) -> None:
    import secrets as _secrets

    bits = public.power_bits
    edges = [0, 1, 255, 256, 257, 2**bits - 1, 2**(bits - 1), int.from_bytes(
        bytes([0, 0, 7] * (bits // 24)), "little"),  # runs of zero bytes
        *(_secrets.randbits(bits) for _ in range(20))]
    h, nsq = public.h, public.nsquare
    for a in edges:
        assert public.secret_power(a) == gmpy2.powmod(h, a, nsq), a
        assert public.secret_power(a) == public.power(a)


def test_a_secret_exponent_never_selects_the_stored_one(public: PaillierPublic) -> None:
    """Every step of ``secret_power`` multiplies by a full-size table entry: the bijective
    digits of a + C are all in 1..256 (a zero byte would pick the stored 1)."""
    table = public._randomiser_table()
    picked: list[int] = []
    original = table.table
    try:
        class Row(list):  # records the digits read, to check none is 0
            def __getitem__(self, index: Any) -> Any:
                picked.append(index)
                return list.__getitem__(self, index)

        table.table = [Row(row) for row in original]
        for a in (0, 2**(table.rows * 8) - 1, 256**5):
            picked.clear()
            table.secret_power(a)
            assert len(picked) == table.rows and min(picked) >= 1 and max(picked) <= 256
    finally:
        table.table = original


def test_secret_power_refuses_exponents_beyond_the_table(public: PaillierPublic) -> None:
    with pytest.raises(InvalidInput, match="secret exponent"):
        public.secret_power(2**public.power_bits)
    with pytest.raises(InvalidInput, match="secret exponent"):
        public.secret_power(-1)
