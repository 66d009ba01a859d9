"""Threshold Paillier keys: safe primes, the dealer's sharing, the public and share formats,
and sealing shares in the key-holder's key store."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import gmpy2
import pytest

from blindsum.server.keystore import KeyStore
from blindsum.shared.errors import InvalidConfig, InvalidInput, KeyStoreError
from blindsum.shared.schemes.paillier import PaillierPublic, _int_to_b64u
from blindsum.shared.threshold import KeyShare, ThresholdPublicKey, run_ceremony
from blindsum.shared.threshold.ceremony import Ceremony, _deal
from blindsum.shared.threshold.keys import STATISTICAL_BITS, secret_powmod, share_bits
from blindsum.shared.threshold.primes import safe_prime

BITS = 2048  # PaillierPublic's minimum; 1024-bit safe primes take about a second each


@pytest.fixture(scope="module")
def primes() -> tuple[Any, Any]:
    return safe_prime(BITS // 2), safe_prime(BITS // 2)


@pytest.fixture(scope="module")
def dealt(primes: tuple[Any, Any]) -> Ceremony:
    """A white-box ceremony: the test knows the primes the dealer split."""
    return _deal(*primes, 3, "tpai-keys")


@pytest.fixture(scope="module")
def shamir(primes: tuple[Any, Any]) -> Ceremony:
    """2-of-3 on the same primes."""
    return _deal(*primes, 3, "tpai-shamir", 2)


def _secret_exponents(p: Any, q: Any) -> tuple[Any, Any]:
    n = p * q
    lam = gmpy2.lcm(p - 1, q - 1)
    return lam, lam * gmpy2.invert(lam, n)


# -- primes and the ceremony -------------------------------------------------------------


def test_safe_primes_have_a_prime_half_and_the_top_two_bits_set(primes: Any) -> None:
    for p in primes:
        assert p.bit_length() == BITS // 2 and p >> (BITS // 2 - 2) == 0b11
        assert gmpy2.is_prime(p) and gmpy2.is_prime((p - 1) // 2)
        # p - 1 = 2p': no odd small factor, so Z*_{n^2} has no element of order 3, 5, ...
        assert all((p - 1) % small for small in (3, 5, 7, 11, 13))


def test_secret_powmod_agrees_with_powmod_for_every_sign(primes: tuple[Any, Any]) -> None:
    modulus = primes[0] * primes[1]
    base = gmpy2.mpz(123_456_789)
    for exponent in (0, 1, 2**300 + 7, -(2**300 + 7), -1):
        assert secret_powmod(base, exponent, modulus) == gmpy2.powmod(base, exponent, modulus)


def test_safe_prime_refuses_tiny_sizes() -> None:
    with pytest.raises(ValueError):
        safe_prime(32)


def test_shares_sum_to_an_exponent_that_is_zero_mod_lambda_and_one_mod_n(
        dealt: Ceremony, primes: tuple[Any, Any]) -> None:
    p, q = primes
    lam, d = _secret_exponents(p, q)
    total = sum(s.share for s in dealt.shares)
    assert total == d and total % lam == 0 and total % (p * q) == 1
    assert [s.index for s in dealt.shares] == [1, 2, 3]


def test_a_share_is_not_lambda_d_or_a_factor(dealt: Ceremony, primes: tuple[Any, Any]) -> None:
    p, q = primes
    lam, d = _secret_exponents(p, q)
    n = p * q
    for share in dealt.shares:
        value = share.share
        assert value not in (lam, d, p, q)
        assert value % lam != 0 and value % (lam // 2) != 0  # exponentiating by it decrypts nothing
        assert gmpy2.gcd(value, n) == 1  # nor does it expose p or q
        assert abs(value).bit_length() > 2 * BITS + STATISTICAL_BITS - 16  # spread wide


def test_shares_are_spread_far_wider_than_the_secret(dealt: Ceremony) -> None:
    # The first shares are uniform on 2^(2|n| + 128): d (< n^2) is a negligible offset.
    first = dealt.shares[0].share
    assert 0 <= first < 1 << (2 * BITS + STATISTICAL_BITS)
    for share in dealt.shares:
        assert abs(share.share).bit_length() <= share_bits(BITS, 3)


def test_shamir_shares_interpolate_to_delta_times_d(shamir: Ceremony,
                                                    primes: tuple[Any, Any]) -> None:
    from blindsum.shared.threshold.decryption import lagrange_at_zero

    p, q = primes
    lam, d = _secret_exponents(p, q)
    order = p * q * lam // 2  # n·p'q', the order of QR(n^2)
    public = shamir.public
    assert (public.sharing, public.threshold, public.parties) == ("shamir", 2, 3)
    for share in shamir.shares:
        assert 0 <= share.share < order and share.share % (lam // 2) != 0
    for pair in ((1, 2), (1, 3), (2, 3), (1, 2, 3)):
        mu = lagrange_at_zero(pair, public.delta)
        total = sum(mu[s.index] * s.share for s in shamir.shares if s.index in pair)
        assert total % order == public.delta * d % order
    # One share alone is a uniform residue mod n·p'q': f(i) = d + a·i with a uniform.
    assert all(s.share != d % order for s in shamir.shares)


def test_verification_keys_are_powers_of_a_square_base(dealt: Ceremony) -> None:
    public = dealt.public
    nsq = public.nsquare
    assert gmpy2.jacobi(public.verification_base % public.n, public.n) == 1
    for share in dealt.shares:
        assert gmpy2.powmod(public.verification_base, public.delta * share.share, nsq) \
            == public.verification_key(share.index)
    assert public.delta == 6 and public.parties == public.threshold == 3


def test_run_ceremony_makes_a_fresh_key_of_the_requested_size() -> None:
    ceremony = run_ceremony(BITS, parties=2, key_id="tpai-fresh")
    public = ceremony.public
    assert public.n.bit_length() == BITS and public.key_id == "tpai-fresh"
    assert public.ceremony == "trusted-dealer" and len(ceremony.shares) == 2
    assert "share" not in repr(ceremony.shares[0]).replace("KeyShare", "")
    assert str(int(ceremony.shares[0].share)) not in repr(ceremony)


@pytest.mark.parametrize("bits, parties, threshold", [
    (1024, 2, None), (3000, 2, None), (True, 2, None), (2048, 1, None), (2048, 17, None),
    (2048, True, None), (2048, "2", None), (2048, 3, 1), (2048, 3, 4), (2048, 3, True),
    (2048, 3, "2"),
])
def test_run_ceremony_refuses_bad_sizes_party_counts_and_thresholds(
        bits: Any, parties: Any, threshold: Any) -> None:
    with pytest.raises(InvalidConfig):
        run_ceremony(bits, parties, threshold=threshold)


def test_run_ceremony_refuses_a_malformed_key_id() -> None:
    with pytest.raises(InvalidInput, match="kid"):
        run_ceremony(BITS, 2, key_id="no spaces")


# -- public key JSON -----------------------------------------------------------------------


def test_public_key_round_trips_through_json(dealt: Ceremony) -> None:
    doc = json.loads(json.dumps(dealt.public.to_json()))
    again = ThresholdPublicKey.from_json(doc)
    assert again == dealt.public and again.fingerprint == dealt.public.fingerprint
    assert doc["threshold"]["ceremony"] == "trusted-dealer"
    assert doc["threshold"]["parties"] == 3 and len(doc["threshold"]["vk"]) == 3


def test_sdk_reads_the_threshold_public_key_as_a_plain_paillier_key(dealt: Ceremony) -> None:
    plain = PaillierPublic.from_json(dealt.public.to_json())
    assert plain == dealt.public.paillier


def _tampered(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize("path, value, message", [
    (("threshold",), KeyError, "threshold"),
    (("threshold", "format"), "other-1", "format"),
    (("threshold", "ceremony"), "coin-toss", "ceremony"),
    (("threshold", "parties"), 2, "parties"),
    (("threshold", "threshold"), 2, "n-of-n"),
    (("threshold", "threshold"), 1, "threshold must be"),
    (("threshold", "threshold"), 4, "threshold must be"),
    (("threshold", "sharing"), "xor", "sharing must be"),
    (("threshold", "sharing"), 1, "sharing"),
    (("threshold", "delta"), 2, "delta"),
    (("threshold", "v"), "AA", "base64url"),
    (("threshold", "v"), "AQ", "must not be 1"),
    (("threshold", "vk"), ["AQ"], "vk"),
    (("threshold", "extra"), 1, "exactly"),
    (("d",), "AQ", "private"),
])
def test_public_key_json_rejects_tampering(dealt: Ceremony, path: tuple[str, ...], value: Any,
                                           message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ThresholdPublicKey.from_json(_tampered(dealt.public.to_json(), path, value))


def test_shamir_public_key_round_trips_and_names_its_sharing(shamir: Ceremony) -> None:
    doc = json.loads(json.dumps(shamir.public.to_json()))
    assert (doc["threshold"]["sharing"], doc["threshold"]["threshold"]) == ("shamir", 2)
    assert ThresholdPublicKey.from_json(doc) == shamir.public
    with pytest.raises(InvalidInput, match="additive sharing is n-of-n"):
        ThresholdPublicKey.from_json(_tampered(doc, ("threshold", "sharing"), "additive"))


def test_public_key_refuses_a_verification_key_sharing_a_factor_with_n(
        dealt: Ceremony, primes: tuple[Any, Any]) -> None:
    public = dealt.public
    bad = (primes[0], *public.verification_keys[1:])
    with pytest.raises(InvalidInput, match="vk\\[0\\]"):
        ThresholdPublicKey(public.paillier, public.verification_base, bad, 3)


# -- shares in storage and in the key store ------------------------------------------------


def test_share_round_trips_through_storage(dealt: Ceremony) -> None:
    for share in dealt.shares:
        again = KeyShare.from_storage(share.to_storage())
        assert (again.index, again.share, again.public) == (share.index, share.share,
                                                             share.public)


def _stored(source: KeyShare, **changes: Any) -> bytes:
    doc = json.loads(source.to_storage())
    doc.update(changes)
    return json.dumps(doc).encode()


def test_stored_share_must_match_its_verification_key(dealt: Ceremony) -> None:
    share = dealt.shares[0]
    with pytest.raises(KeyStoreError, match="does not match verification key"):
        KeyShare.from_storage(_stored(share, index=2))
    swapped = _stored(share, share=json.loads(dealt.shares[1].to_storage())["share"])
    off_by_one = KeyShare(1, share.share, share.public).to_storage().replace(
        json.loads(share.to_storage())["share"].encode(),
        _int_to_b64u(share.share + 1).encode())
    for corrupt in (swapped, off_by_one):
        with pytest.raises(KeyStoreError, match="verification key"):
            KeyShare.from_storage(corrupt)


def test_a_share_cannot_be_paired_with_another_ceremonys_public_key(
        dealt: Ceremony, primes: tuple[Any, Any]) -> None:
    other = _deal(*primes, 3, "tpai-keys")  # same modulus and id, fresh sharing
    mixed = _stored(dealt.shares[0], public=other.public.to_json())
    with pytest.raises(KeyStoreError, match="verification key"):
        KeyShare.from_storage(mixed)


@pytest.mark.parametrize("change", [{"format": "x"}, {"negative": "no"}, {"kid": "other"},
                                    {"share": "not b64"}, {"extra": 1}, {"index": 4}])
def test_stored_share_rejects_corruption(dealt: Ceremony, change: dict[str, Any]) -> None:
    with pytest.raises(KeyStoreError):
        KeyShare.from_storage(_stored(dealt.shares[1], **change))


def test_stored_share_rejects_bytes_that_are_not_json() -> None:
    with pytest.raises(KeyStoreError, match="not JSON"):
        KeyShare.from_storage(b"\xff\x00")


def test_key_store_seals_each_share_and_reads_it_back(dealt: Ceremony, tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, "correct horse battery staple")
    for share in dealt.shares:
        store.write_share(share)
    for share in dealt.shares:
        raw = (store.directory / share.storage_name).read_text()
        assert json.loads(raw)["sealed"] is True
        assert json.loads(share.to_storage())["share"] not in raw
        again = store.read_share(share.key_id, share.index)
        assert again.share == share.share and again.public == share.public
    with pytest.raises(KeyStoreError, match="passphrase"):
        KeyStore.open(tmp_path, "wrong").read_share(dealt.public.key_id, 1)
    with pytest.raises(KeyStoreError, match="missing"):
        store.read_share(dealt.public.key_id, 4)


def test_key_store_refuses_a_share_file_renamed_to_another_party(
        dealt: Ceremony, tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, None)
    store.write_share(dealt.shares[0])
    (store.directory / dealt.shares[0].storage_name).rename(
        store.directory / dealt.shares[1].storage_name)
    with pytest.raises(KeyStoreError, match="another share"):
        store.read_share(dealt.public.key_id, 2)
