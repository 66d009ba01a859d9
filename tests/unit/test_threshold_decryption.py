"""Threshold decryption: honest parties decrypt what the SDK and stock phe encrypt; missing,
cheating, replayed and malformed partials are refused; anyone can check a plaintext."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import secrets
from pathlib import Path
from typing import Any

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier as phe

from blindsum.server.keystore import KeyStore
from blindsum.shared.encoding import encode
from blindsum.shared.errors import InvalidCiphertext, InvalidInput, InvalidProof
from blindsum.shared.manifest import slot_spec
from blindsum.shared.packing import chunk_slots, slot_width, slots_per_plaintext, unpack
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.threshold import (
    Ceremony,
    PartialDecryption,
    ThresholdPublicKey,
    combine,
    partial_decrypt,
    run_ceremony,
    verify_partial,
    verify_plaintext,
)
from blindsum.shared.threshold import decryption as decryption_module
from blindsum.shared.threshold import proof as eqlog
from blindsum.shared.threshold.ceremony import _deal

BITS = 2048
CONTEXT = b"metric=latency;version=1;window=1764075600;release=r-1"
PRIVACY = {"mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-7, "budget_epsilon": 10.0}


@pytest.fixture(scope="module")
def two() -> Ceremony:
    return run_ceremony(BITS, parties=2, key_id="tpai-two")


@pytest.fixture(scope="module")
def three() -> Ceremony:
    """A three-party ceremony; a fresh key, so it doubles as 'another ceremony' for two."""
    return run_ceremony(BITS, parties=3, key_id="tpai-three")


@pytest.fixture(scope="module")
def two_of_three() -> Ceremony:
    return run_ceremony(BITS, parties=3, key_id="tpai-2of3", threshold=2)


def _partials(ceremony: Ceremony, c: Any, context: bytes = CONTEXT) -> list[PartialDecryption]:
    return [partial_decrypt(share, c, context) for share in ceremony.shares]


def _encrypt(public: ThresholdPublicKey, m: int) -> Any:
    return public.paillier.encrypt_plaintext(m)


# -- honest parties ------------------------------------------------------------------------


@pytest.mark.parametrize("parties", ["two", "three", "two_of_three"])
def test_honest_partials_combine_to_the_plaintext(parties: str,
                                                  request: pytest.FixtureRequest) -> None:
    ceremony: Ceremony = request.getfixturevalue(parties)
    public = ceremony.public
    for m in (0, 1, 123_456_789, int(public.n) - 1):
        c = _encrypt(public, m)
        assert combine(public, c, _partials(ceremony, c), CONTEXT) == m


def _policies() -> list[MetricPolicy]:
    raw = {
        "pages": {"kind": "histogram", "buckets": [0, 1, 2, 3, 4, 5, 6, 7, 8],
                  "max_contributors": 1000},
        # 120 coordinates of 0..60 do not fit one 2048-bit plaintext: two ciphertexts.
        "minutes": {"kind": "vector", "lower": 0, "upper": 60, "dimension": 120,
                    "max_contributors": 100_000},
    }
    return [MetricPolicy.from_mapping(name, {**spec, "scheme": "paillier", "version": 1,
                                             "min_contributors": 2, "privacy": PRIVACY})
            for name, spec in raw.items()]


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: p.name)
def test_packed_sdk_aggregates_decrypt_to_the_slot_sums(two: Ceremony,
                                                        policy: MetricPolicy) -> None:
    public = two.public
    spec = slot_spec(policy)
    rng = random.Random(policy.name)
    values = [rng.uniform(0, 9) if policy.kind == "histogram"
              else [rng.uniform(0, 60) for _ in range(policy.dimension)] for _ in range(25)]
    reports = [public.paillier.load(public.paillier.encrypt(encode(policy, v), spec), spec)
               for v in values]
    aggregate = public.paillier.add_many(reports)
    expected = [sum(column) for column in zip(*(encode(policy, v) for v in values),
                                              strict=True)]
    # a threshold key's slots are wider: they hold noise and its offset too (headroom)
    width = slot_width(spec.max_slot_sum + spec.headroom)
    per = slots_per_plaintext(public.paillier.usable_bits, width)
    assert public.paillier.layout(spec) == (width, per)
    chunks = chunk_slots(expected, per)
    assert len(aggregate) == len(chunks) == public.paillier.ciphertext_count(spec)
    decrypted: list[int] = []
    for c, chunk in zip(aggregate, chunks, strict=True):
        m = combine(public, c, _partials(two, c), CONTEXT)
        decrypted += unpack(m, width, len(chunk))
    assert decrypted == expected


def test_stock_phe_ciphertexts_decrypt(two: Ceremony) -> None:
    public = two.public
    stock = phe.PaillierPublicKey(int(public.n))
    for value in (0, 42, 10**30):
        c = stock.encrypt(value).ciphertext()  # phe's own r^n randomiser
        assert combine(public, c, _partials(two, c), CONTEXT) == value
    summed = (stock.encrypt(5) + stock.encrypt(7) + 30).ciphertext()
    assert combine(public, summed, _partials(two, summed), CONTEXT) == 42


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_combine_and_offline_verification_round_trip(two: Ceremony, data: st.DataObject) -> None:
    public = two.public
    m = data.draw(st.integers(min_value=0, max_value=int(public.n) - 1), label="m")
    context = data.draw(st.binary(max_size=64), label="context")
    c = _encrypt(public, m)
    partials = [PartialDecryption.from_json(json.loads(json.dumps(p.to_json())))
                for p in _partials(two, c, context)]
    verify_plaintext(public, c, list(reversed(partials)), context, m)
    for wrong in ((m + 1) % int(public.n), (m - 1) % int(public.n)):
        with pytest.raises(InvalidProof, match="not the decryption"):
            verify_plaintext(public, c, partials, context, wrong)


def test_a_published_value_verifies_with_only_public_documents(two: Ceremony) -> None:
    public = two.public
    c = _encrypt(public, 977)
    published = {"key": public.to_json(), "ciphertext": int(c),
                 "partials": [p.to_json() for p in _partials(two, c)]}
    document = json.loads(json.dumps(published))  # what a third party downloads
    key = ThresholdPublicKey.from_json(document["key"])
    partials = [PartialDecryption.from_json(p) for p in document["partials"]]
    verify_plaintext(key, document["ciphertext"], partials, CONTEXT, 977)
    with pytest.raises(InvalidProof):
        verify_plaintext(key, document["ciphertext"], partials, CONTEXT, 978)


def test_key_store_shares_decrypt_after_a_sealed_round_trip(two: Ceremony,
                                                            tmp_path: Path) -> None:
    stores = [KeyStore.open(tmp_path / f"party{s.index}", "pass") for s in two.shares]
    for store, share in zip(stores, two.shares, strict=True):
        store.write_share(share)
    loaded = [store.read_share(two.public.key_id, i + 1) for i, store in enumerate(stores)]
    c = _encrypt(two.public, 31337)
    partials = [partial_decrypt(share, c, CONTEXT) for share in loaded]
    assert combine(two.public, c, partials, CONTEXT) == 31337


# -- fewer than all parties ----------------------------------------------------------------


def _without(public: ThresholdPublicKey, partials: list[PartialDecryption]) -> int:
    """What a coalition short of a party gets by applying the combination formula anyway."""
    nsq, n = public.nsquare, public.n
    product = gmpy2.mpz(1)
    for partial in partials:
        product = product * gmpy2.powmod(partial.value, 2, nsq) % nsq
    return int((product - 1) // n * gmpy2.invert(4 * public.delta, n) % n)


@pytest.mark.parametrize("parties", ["two", "three"])
def test_any_coalition_short_of_one_party_gets_no_decryption(
        parties: str, request: pytest.FixtureRequest) -> None:
    ceremony: Ceremony = request.getfixturevalue(parties)
    public = ceremony.public
    m = 271_828
    encryptions = [_encrypt(public, m) for _ in range(2)]
    every = [_partials(ceremony, c) for c in encryptions]
    for size in range(1, public.parties):
        for coalition in itertools.combinations(range(public.parties), size):
            guesses = []
            for c, all_partials in zip(encryptions, every, strict=True):
                partials = [all_partials[i] for i in coalition]
                product = gmpy2.mpz(1)
                for p in partials:
                    product = product * gmpy2.powmod(p.value, 2, public.nsquare)
                # Without every share the r^n part survives: the result is no 1 + k·n at all.
                assert product % public.nsquare % public.n != 1
                guesses.append(_without(public, partials))
                with pytest.raises(InvalidInput, match="exactly one partial from each"):
                    combine(public, c, partials, CONTEXT)
            # Two encryptions of one value give unrelated "decryptions", neither of them m.
            assert m not in guesses and guesses[0] != guesses[1]


def test_any_threshold_of_shamir_partials_combines_and_fewer_do_not(
        two_of_three: Ceremony) -> None:
    public = two_of_three.public
    c = _encrypt(public, 4_711)
    partials = _partials(two_of_three, c)
    for pair in itertools.combinations(partials, 2):
        assert combine(public, c, list(pair), CONTEXT) == 4_711
        verify_plaintext(public, c, list(pair), CONTEXT, 4_711)
        with pytest.raises(InvalidProof):
            verify_plaintext(public, c, list(pair), CONTEXT, 4_712)
    for alone in partials:
        # Shoup's formula with one party: c_i^(2Δ) = c^(4Δ²·d_i), no decryption at all.
        guess = gmpy2.powmod(alone.value, 2 * public.delta, public.nsquare)
        assert guess % public.n != 1
        with pytest.raises(InvalidInput, match="at least 2 distinct parties"):
            combine(public, c, [alone], CONTEXT)
    with pytest.raises(InvalidInput, match="distinct"):
        combine(public, c, [partials[0], partials[0]], CONTEXT)


def test_a_cheating_shamir_party_is_caught(two_of_three: Ceremony) -> None:
    public = two_of_three.public
    c = _encrypt(public, 5)
    honest = _partials(two_of_three, c)
    nsq = public.nsquare
    x = public.delta * two_of_three.shares[2].share
    shifted = gmpy2.powmod(c, 2 * x, nsq) * (1 + public.n) % nsq
    with pytest.raises(InvalidProof, match="party 3"):
        combine(public, c, [honest[0], _forged(public, c, 3, shifted, x)], CONTEXT)


# -- cheating parties ------------------------------------------------------------------------


def _forged(public: ThresholdPublicKey, c: Any, index: int, value: Any, witness: Any,
            context: bytes = CONTEXT) -> PartialDecryption:
    """A partial ``value`` with a proof made honestly by the prover's algorithm for it."""
    statement = decryption_module._statement(public, c, index, value)
    transcript = decryption_module._transcript(public, index, c, value, context)
    made = eqlog.prove(statement, witness, decryption_module._witness_bits(public),
                       public.nsquare, transcript)
    return PartialDecryption(public.key_id, index, value, made)


def test_a_wrong_partial_with_an_honest_looking_proof_is_refused(two: Ceremony) -> None:
    public = two.public
    share = two.shares[0]
    c = _encrypt(public, 5)
    x = public.delta * share.share
    nsq = public.nsquare
    shifted = gmpy2.powmod(c, 2 * x, nsq) * (1 + public.n) % nsq  # would decrypt to 5 + k
    other_exponent = gmpy2.powmod(c, 2 * (x + 1), nsq)  # a proof for it is self-consistent
    forgeries = (_forged(public, c, 1, shifted, x), _forged(public, c, 1, other_exponent, x + 1))
    for partial in forgeries:
        with pytest.raises(InvalidProof, match="party 1: proof does not verify"):
            verify_partial(public, c, partial, CONTEXT)
        with pytest.raises(InvalidProof):
            combine(public, c, [partial, partial_decrypt(two.shares[1], c, CONTEXT)], CONTEXT)


def test_a_partial_proven_for_another_ciphertext_is_refused(two: Ceremony) -> None:
    public = two.public
    c, other = _encrypt(public, 5), _encrypt(public, 5)
    moved = partial_decrypt(two.shares[0], other, CONTEXT)
    with pytest.raises(InvalidProof, match="does not verify"):
        verify_partial(public, c, moved, CONTEXT)


def test_a_partial_replayed_under_another_context_is_refused(two: Ceremony) -> None:
    public = two.public
    c = _encrypt(public, 5)
    partials = _partials(two, c, b"window=1")
    combine(public, c, partials, b"window=1")
    with pytest.raises(InvalidProof, match="does not verify"):
        combine(public, c, partials, b"window=2")


def test_a_partial_for_another_party_index_is_refused(two: Ceremony) -> None:
    public = two.public
    c = _encrypt(public, 5)
    honest = partial_decrypt(two.shares[0], c, CONTEXT)
    with pytest.raises(InvalidProof, match="party 2"):
        verify_partial(public, c, dataclasses.replace(honest, index=2), CONTEXT)


@pytest.mark.parametrize("field, change", [
    ("challenge", lambda e: e ^ 1),
    ("challenge", lambda e: e + (1 << eqlog.CHALLENGE_BITS)),
    ("challenge", lambda e: -1),
    ("response", lambda z: z + 1),
    ("response", lambda z: z - 1),
    ("response", lambda z: -z),
    ("response", lambda z: z << 200),
    ("response", lambda z: "12"),
])
def test_a_tampered_challenge_or_response_is_refused(two: Ceremony, field: str,
                                                     change: Any) -> None:
    public = two.public
    c = _encrypt(public, 5)
    honest = partial_decrypt(two.shares[1], c, CONTEXT)
    proof = dataclasses.replace(honest.proof, **{field: change(getattr(honest.proof, field))})
    with pytest.raises(InvalidProof):
        verify_partial(public, c, dataclasses.replace(honest, proof=proof), CONTEXT)


def test_a_partial_from_another_ceremonys_share_is_refused(two: Ceremony,
                                                           three: Ceremony) -> None:
    public = two.public
    c = _encrypt(public, 5)
    foreign = partial_decrypt(three.shares[0], c % three.public.nsquare, CONTEXT)
    with pytest.raises(InvalidProof, match="for key 'tpai-three'"):
        verify_partial(public, c, foreign, CONTEXT)
    # Same key id, same modulus, but another sharing of d: the proof binds the old keys.
    twin = _deal_twin(two)
    relabelled = partial_decrypt(twin.shares[0], c, CONTEXT)
    with pytest.raises(InvalidProof, match="does not verify"):
        verify_partial(public, c, relabelled, CONTEXT)
    with pytest.raises(InvalidProof):
        verify_partial(twin.public, c, partial_decrypt(two.shares[0], c, CONTEXT), CONTEXT)


def _deal_twin(ceremony: Ceremony) -> Ceremony:
    """Reshare a key by finding its factors from the shares (the test plays the dealer)."""
    public = ceremony.public
    d = sum(s.share for s in ceremony.shares)
    n = public.n
    # d is a multiple of λ: the classic randomized factoring from a multiple of φ's exponent.
    k = d
    while k % 2 == 0:
        k //= 2
    while True:
        g = gmpy2.mpz(secrets.randbelow(int(n) - 3) + 2)
        x = gmpy2.powmod(g, k, n)
        while x != 1:
            y = x * x % n
            if y == 1 and x != n - 1:
                p = gmpy2.gcd(x - 1, n)
                return _deal(p, n // p, public.parties, public.key_id)
            x = y


def test_a_sign_flipped_partial_can_be_proven_and_changes_nothing(two: Ceremony) -> None:
    # The transcript binds c_i itself, so flipping an honest partial breaks its proof; but
    # the party can prove -c_i afresh (squares are all the statement holds), and squares
    # are all the combination uses: the flip is harmless.
    public = two.public
    c = _encrypt(public, 808)
    first, second = _partials(two, c)
    negated = public.nsquare - first.value
    with pytest.raises(InvalidProof):
        verify_partial(public, c, dataclasses.replace(first, value=negated), CONTEXT)
    reproven = _forged(public, c, 1, negated, public.delta * two.shares[0].share)
    verify_partial(public, c, reproven, CONTEXT)
    assert combine(public, c, [reproven, second], CONTEXT) == 808


def test_with_ordinary_primes_a_forged_partial_would_pass_its_proof() -> None:
    """Why the ceremony insists on safe primes (white box: this dealer knows p and q)."""
    p = q = gmpy2.mpz(0)
    while p % 3 != 1:  # 3 | p - 1: Z*_{n^2} has elements of order 3
        p = gmpy2.next_prime(secrets.randbits(BITS // 2) | 3 << (BITS // 2 - 2))
    while q in (0, p):
        q = gmpy2.next_prime(secrets.randbits(BITS // 2) | 3 << (BITS // 2 - 2))
    ceremony = _deal(p, q, 2, "tpai-weak")
    public = ceremony.public
    omega = _order_three_element(p, q)
    c = _encrypt(public, 5)
    honest = partial_decrypt(ceremony.shares[0], c, CONTEXT)
    x = public.delta * ceremony.shares[0].share
    forged_value = honest.value * omega % public.nsquare
    for _ in range(200):  # passes when the challenge is 0 mod 3: one try in three
        forged = _forged(public, c, 1, forged_value, x)
        try:
            verify_partial(public, c, forged, CONTEXT)
            break
        except InvalidProof:
            continue
    else:
        pytest.fail("the forgery never passed: order-3 elements would not matter")
    second = partial_decrypt(ceremony.shares[1], c, CONTEXT)
    # The combination's own check (a decryption is 1 mod n) still catches this one.
    with pytest.raises(InvalidProof, match="do not combine"):
        combine(public, c, [forged, second], CONTEXT)


def _order_three_element(p: Any, q: Any) -> Any:
    """ω = ζ mod p^2 (ζ a cube root of unity), 1 mod q^2."""
    psq, qsq = p * p, q * q
    while True:
        zeta = gmpy2.powmod(secrets.randbelow(int(psq) - 2) + 2, p * (p - 1) // 3, psq)
        if zeta != 1:
            break
    return (zeta * qsq * gmpy2.invert(qsq, psq) + psq * gmpy2.invert(psq, qsq)) % (psq * qsq)


# -- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize("value, message", [
    (0, "not a unit"), (1 << 5000, "not a unit"), ("12", "not a unit"), (True, "not a unit"),
    (1.5, "not a unit"),
])
def test_a_partial_value_outside_the_units_is_refused(two: Ceremony, value: Any,
                                                      message: str) -> None:
    public = two.public
    c = _encrypt(public, 5)
    honest = partial_decrypt(two.shares[0], c, CONTEXT)
    with pytest.raises(InvalidProof, match=message):
        verify_partial(public, c, dataclasses.replace(honest, value=value), CONTEXT)


def test_a_partial_sharing_a_factor_with_n_is_refused(two: Ceremony) -> None:
    public = two.public
    c = _encrypt(public, 5)
    honest = partial_decrypt(two.shares[0], c, CONTEXT)
    factor_multiple = dataclasses.replace(honest, value=public.n * 7)
    with pytest.raises(InvalidProof, match="not a unit"):
        verify_partial(public, c, factor_multiple, CONTEXT)


@pytest.mark.parametrize("change, message", [
    ({"index": 0}, "party must be"), ({"index": 3}, "party must be"),
    ({"index": True}, "party must be"), ({"key_id": "tpai-other"}, "for key"),
    ({"proof": (1, 2)}, "EqualLogProof"),
])
def test_a_malformed_partial_is_refused(two: Ceremony, change: dict[str, Any],
                                        message: str) -> None:
    public = two.public
    c = _encrypt(public, 5)
    honest = partial_decrypt(two.shares[0], c, CONTEXT)
    with pytest.raises(InvalidProof, match=message):
        verify_partial(public, c, dataclasses.replace(honest, **change), CONTEXT)
    with pytest.raises(InvalidProof):
        verify_partial(public, c, honest.to_json(), CONTEXT)  # a dict is not a partial


@pytest.mark.parametrize("ciphertext", [0, -1, "5", None, True])
def test_a_ciphertext_that_is_no_unit_is_refused(two: Ceremony, ciphertext: Any) -> None:
    with pytest.raises(InvalidCiphertext):
        partial_decrypt(two.shares[0], ciphertext, CONTEXT)


def test_a_ciphertext_sharing_a_factor_with_n_or_above_n_squared_is_refused(
        two: Ceremony) -> None:
    public = two.public
    c = _encrypt(public, 5)
    partials = _partials(two, c)
    for bad in (public.n, public.nsquare + c):
        with pytest.raises(InvalidCiphertext, match="not a unit"):
            partial_decrypt(two.shares[0], bad, CONTEXT)
        with pytest.raises(InvalidCiphertext):
            combine(public, bad, partials, CONTEXT)


@pytest.mark.parametrize("context", ["text", None, b"x" * 4097])
def test_a_context_that_is_not_short_bytes_is_refused(two: Ceremony, context: Any) -> None:
    with pytest.raises(InvalidInput, match="context"):
        partial_decrypt(two.shares[0], _encrypt(two.public, 5), context)


def test_combine_refuses_a_duplicated_party_and_a_non_list(two: Ceremony) -> None:
    public = two.public
    c = _encrypt(public, 5)
    first, _ = _partials(two, c)
    with pytest.raises(InvalidInput, match="exactly one partial"):
        combine(public, c, [first, first], CONTEXT)
    with pytest.raises(InvalidInput, match="sequence"):
        combine(public, c, first, CONTEXT)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [
    {"party": "1"}, {"party": True}, {"kid": 5}, {"c": "AA"}, {"e": 5}, {"z": "+"},
    {"extra": 1},
])
def test_partial_json_rejects_malformed_members(two: Ceremony, change: dict[str, Any]) -> None:
    honest = partial_decrypt(two.shares[0], _encrypt(two.public, 5), CONTEXT).to_json()
    with pytest.raises(InvalidProof):
        PartialDecryption.from_json({**honest, **change})
    with pytest.raises(InvalidProof):
        PartialDecryption.from_json([honest])


# -- the deployment size ---------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_at_3072_bits(tmp_path: Path) -> None:
    ceremony = run_ceremony(3072, parties=2)
    public = ThresholdPublicKey.from_json(json.loads(json.dumps(ceremony.public.to_json())))
    stores = [KeyStore.open(tmp_path / f"party{s.index}", "pass") for s in ceremony.shares]
    for store, share in zip(stores, ceremony.shares, strict=True):
        store.write_share(share)
    shares = [store.read_share(public.key_id, i + 1) for i, store in enumerate(stores)]
    policy = _policies()[0]
    spec = slot_spec(policy)
    values = [0.5, 3.2, 3.9, 7.1, 8.8]
    reports = [public.paillier.load(public.paillier.encrypt(encode(policy, v), spec), spec)
               for v in values]
    (aggregate,) = public.paillier.add_many(reports)
    partials = [PartialDecryption.from_json(partial_decrypt(s, aggregate, CONTEXT).to_json())
                for s in shares]
    m = combine(public, aggregate, partials, CONTEXT)
    width, _ = public.paillier.layout(spec)  # with the threshold key's noise headroom
    assert unpack(m, width, spec.count) == [1, 0, 0, 2, 0, 0, 0, 2]
    verify_plaintext(public, aggregate, partials, CONTEXT, m)
    with pytest.raises(InvalidProof):
        verify_plaintext(public, aggregate, partials, CONTEXT, m + 1)
    with pytest.raises(InvalidProof):
        combine(public, aggregate, partials, CONTEXT + b"!")
