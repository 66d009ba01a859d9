"""Validity proofs: honest reports verify for every kind, every cheater is refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import gmpy2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from validity_kit import CONTEXT, forge, seeded_secret

from blindsum.shared.errors import InvalidInput, InvalidProof
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.paillier import PaillierPublic, PaillierSecret
from blindsum.shared.validity import (
    ProofContext,
    ReportProof,
    prove_range,
    prove_report,
    range_weights,
    sigma,
    statements,
    verify_range,
    verify_report,
    verify_report_each,
    verify_reports,
)

COUNT = SlotSpec(count=1, max_value=1, max_contributors=1000)
COUNT5 = SlotSpec(count=1, max_value=5, max_contributors=1000)
HIST = SlotSpec(count=6, max_value=1, max_contributors=1000)
SUM = SlotSpec(count=1, max_value=3600, max_contributors=1000)
VECTOR = SlotSpec(count=4, max_value=10, max_contributors=1000)
# wide slots: 2046 usable bits hold 3 slots of 2**600, so these span several ciphertexts
WIDE_HIST = SlotSpec(count=7, max_value=1, max_contributors=2**600)
WIDE_VECTOR = SlotSpec(count=5, max_value=6, max_contributors=2**600)

HONEST = [
    ("count", COUNT, [0]), ("count", COUNT, [1]), ("count", COUNT5, [4]),
    ("histogram", HIST, [0, 0, 0, 1, 0, 0]), ("histogram", HIST, [1, 0, 0, 0, 0, 0]),
    ("sum", SUM, [0]), ("sum", SUM, [3600]), ("sum", SUM, [2049]), ("mean", SUM, [1777]),
    ("vector", VECTOR, [0, 10, 3, 7]),
    ("histogram", WIDE_HIST, [0, 0, 0, 0, 0, 0, 1]),
    ("histogram", WIDE_HIST, [0, 0, 1, 0, 0, 0, 0]),
    ("vector", WIDE_VECTOR, [6, 0, 5, 1, 3]),
]


@pytest.fixture(scope="module")
def secret() -> PaillierSecret:
    return seeded_secret()


@pytest.fixture(scope="module")
def public(secret: PaillierSecret) -> PaillierPublic:
    return secret.public


def _rejected(public: PaillierPublic, kind: str, spec: SlotSpec, cts: Any, proof: Any,
              context: ProofContext = CONTEXT) -> None:
    with pytest.raises(InvalidProof):
        verify_report(public, kind, spec, cts, proof, context)
    with pytest.raises(InvalidProof):
        verify_report_each(public, kind, spec, cts, proof, context)
    assert verify_reports(public, kind, spec, [(cts, proof, context)]) == [0]


# -- honest provers ---------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "spec", "slots"), HONEST)
def test_honest_report_verifies_and_decrypts_to_its_slots(
    secret: PaillierSecret, public: PaillierPublic, kind: str, spec: SlotSpec, slots: list[int]
) -> None:
    cts, proof = prove_report(public, kind, spec, slots, CONTEXT)
    verify_report(public, kind, spec, cts, proof, CONTEXT)
    verify_report_each(public, kind, spec, cts, proof, CONTEXT)
    assert secret.decrypt(cts, spec) == slots
    assert ReportProof.from_json(proof.to_json(), public, spec, kind) == proof


def test_wide_specs_really_span_several_ciphertexts(public: PaillierPublic) -> None:
    assert public.ciphertext_count(WIDE_HIST) == 3
    assert public.ciphertext_count(WIDE_VECTOR) == 2


@pytest.mark.parametrize("max_value", [1, 2, 3, 5, 7, 8, 100, 3600, 4095, 4096])
def test_range_weights_cover_exactly_zero_to_max_value(max_value: int) -> None:
    weights = range_weights(max_value)
    sums = {0}
    for w in weights:
        sums |= {s + w for s in sums}
    assert sums == set(range(max_value + 1))
    for value in range(0, max_value + 1, max(1, max_value // 50)):
        bits = statements.decompose(value, max_value)
        assert sum(b * w for b, w in zip(bits, weights, strict=True)) == value
        digits = statements.range_digits(max_value)
        patterns = statements.digit_patterns(value, max_value)
        assert sum(d[p] for d, p in zip(digits, patterns, strict=True)) == value


@pytest.mark.parametrize("max_value", [1, 2, 3, 5, 7, 8, 100, 3600, 4095, 4096])
def test_range_digits_sum_to_exactly_zero_to_max_value(max_value: int) -> None:
    # one value per digit, every combination: exactly the range, nothing beyond it
    digits = statements.range_digits(max_value)
    assert all(len(d) <= 1 << statements.DIGIT_WEIGHTS for d in digits)
    sums = {0}
    for values in digits:
        sums = {s + v for s in sums for v in values}
    assert sums == set(range(max_value + 1))
    assert len(digits) == -(-len(range_weights(max_value)) // statements.DIGIT_WEIGHTS)


def test_invalid_slots_are_refused_before_anything_is_encrypted(public: PaillierPublic) -> None:
    for kind, spec, slots in [("count", COUNT, [2]), ("histogram", HIST, [0] * 6),
                              ("histogram", HIST, [1, 1, 0, 0, 0, 0]), ("sum", SUM, [3601]),
                              ("sum", SUM, [-1]), ("vector", VECTOR, [1, 2, 3]),
                              ("vector", VECTOR, [1, 2, 3, True])]:
        with pytest.raises(InvalidInput):
            prove_report(public, kind, spec, slots, CONTEXT)


# -- cheating provers --------------------------------------------------------------------

CHEATS = [
    ("count", COUNT, [2]),
    ("count", COUNT, [-1]),  # n - 1
    ("count", COUNT5, [6]),
    ("histogram", HIST, [1, 1, 0, 0, 0, 0]),
    ("histogram", HIST, [0, 0, 0, 0, 0, 0]),
    ("histogram", HIST, [0, 0, 2, 0, 0, 0]),
    ("histogram", HIST, [0, 0, -1, 0, 0, 1]),
    ("histogram", WIDE_HIST, [0, 0, 0, 1, 0, 0, 1]),
    ("sum", SUM, [3601]),
    ("sum", SUM, [-1]),
    ("mean", SUM, [2**20]),
    ("vector", VECTOR, [0, 11, 3, 7]),
    ("vector", VECTOR, [0, 1, -2, 7]),
    ("vector", WIDE_VECTOR, [6, 0, 5, 1, 7]),
]


@pytest.mark.parametrize(("kind", "spec", "slots"), CHEATS)
def test_cheating_prover_is_rejected(public: PaillierPublic, kind: str, spec: SlotSpec,
                                     slots: list[int]) -> None:
    cts, proof = forge(public, kind, spec, slots)
    _rejected(public, kind, spec, cts, proof)


def test_out_of_range_sum_with_aux_digits_that_add_up_is_rejected(
        public: PaillierPublic) -> None:
    # 3601 = the digits of 3600 (every digit at its largest value) with one aux ciphertext
    # raised by 1: the linear relation holds, so the false digit clause is what must fail
    aux = [max(values) for values in statements.range_digits(3600)]
    assert sum(aux) == 3600
    aux[0] += 1  # 8: not a value of the first digit (0..7)
    cts, proof = forge(public, "sum", SUM, [3601], aux_values=aux)
    _rejected(public, "sum", SUM, cts, proof)


def test_negative_slot_with_a_negative_aux_value_is_rejected(public: PaillierPublic) -> None:
    aux = [0] * len(statements.range_digits(3600))
    aux[0] = -1
    cts, proof = forge(public, "sum", SUM, [-1], aux_values=aux)
    _rejected(public, "sum", SUM, cts, proof)


def test_simulated_proof_not_bound_by_fiat_shamir_is_rejected(public: PaillierPublic) -> None:
    # Every branch simulated with challenges of the forger's choice: all equations hold,
    # but the challenges do not add up to the hash of the commitments.
    c = public.encrypt_plaintext(2)
    clause = statements.clauses(public, "count", COUNT, [c], [])[0]
    commitments, responses, challenges = [], [], [5, 7]
    for branch, e in zip(clause.branches, challenges, strict=True):
        u, s = sigma.simulate(public, branch, e, clause.witness_bits)
        commitments.append(u)
        responses.append(s)
    proof = ReportProof("count", public.byte_length, (),
                        (sigma.ClauseProof((5,), tuple(commitments), tuple(responses)),))
    cts = public.dump([c])
    eqs = sigma.equations(public, [clause], proof.clauses, [b"unrelated"])
    assert len(eqs) == 2  # shape and bounds fine ...
    assert sigma.check_each(public, [dataclasses.replace(eqs[0], e=5)]) is None  # ... holds
    _rejected(public, "count", COUNT, cts, proof)


@pytest.mark.parametrize("field", ["metric", "version", "window_start", "key_id", "report_id"])
def test_proof_cannot_be_replayed_under_another_context(public: PaillierPublic,
                                                        field: str) -> None:
    cts, proof = prove_report(public, "histogram", HIST, [0, 1, 0, 0, 0, 0], CONTEXT)
    other = {"metric": "other", "version": 4, "window_start": 1_764_079_200,
             "key_id": "kid-b", "report_id": bytes(16)}[field]
    _rejected(public, "histogram", HIST, cts, proof, dataclasses.replace(CONTEXT,
                                                                          **{field: other}))


def test_proof_cannot_be_replayed_under_another_key_id(public: PaillierPublic) -> None:
    cts, proof = prove_report(public, "count", COUNT, [1], CONTEXT)
    renamed = PaillierPublic(int(public.n), "kid-b")
    _rejected(renamed, "count", COUNT, cts, proof)


def test_proof_cannot_be_moved_to_another_reports_ciphertext(public: PaillierPublic) -> None:
    _, proof = prove_report(public, "sum", SUM, [10], CONTEXT)
    other, _ = prove_report(public, "sum", SUM, [10], CONTEXT)
    _rejected(public, "sum", SUM, other, proof)
    hist, hproof = prove_report(public, "histogram", WIDE_HIST, [1, 0, 0, 0, 0, 0, 0], CONTEXT)
    swapped = [hist[0], hist[1], prove_report(public, "histogram", WIDE_HIST,
                                              [0, 0, 0, 0, 0, 0, 1], CONTEXT)[0][2]]
    _rejected(public, "histogram", WIDE_HIST, swapped, hproof)


def _tamper(proof: ReportProof, where: str, delta: int = 1) -> ReportProof:
    """``where``: "aux", "e", "u" or "s" (first item of the first clause that has one)."""
    if where == "aux":
        return dataclasses.replace(proof, aux=(proof.aux[0] + delta, *proof.aux[1:]))
    clauses = list(proof.clauses)
    index = next(i for i, c in enumerate(clauses) if where != "e" or c.challenges)
    clause = clauses[index]
    if where == "e":
        clause = dataclasses.replace(clause, challenges=(clause.challenges[0] + delta,
                                                         *clause.challenges[1:]))
    else:
        name = "commitments" if where == "u" else "responses"
        rows = [list(r) for r in getattr(clause, name)]
        rows[-1][0] += delta
        clause = dataclasses.replace(clause, **{name: tuple(map(tuple, rows))})
    clauses[index] = clause
    return dataclasses.replace(proof, clauses=tuple(clauses))


@pytest.mark.parametrize("where", ["aux", "e", "u", "s"])
def test_tampering_any_field_is_rejected(public: PaillierPublic, where: str) -> None:
    cts, proof = prove_report(public, "vector", VECTOR, [1, 2, 3, 4], CONTEXT)
    _rejected(public, "vector", VECTOR, cts, _tamper(proof, where))


def test_wrong_kind_or_foreign_object_is_rejected(public: PaillierPublic) -> None:
    cts, proof = prove_report(public, "sum", SUM, [5], CONTEXT)
    _rejected(public, "mean", SUM, cts, proof)
    _rejected(public, "sum", SUM, cts, proof.to_json())


# -- batch verification ------------------------------------------------------------------


def test_batch_verification_names_exactly_the_bad_reports(public: PaillierPublic) -> None:
    items: list[Any] = []
    for i in range(8):
        cts, proof = prove_report(public, "histogram", HIST, [int(j == i % 6) for j in range(6)],
                                  dataclasses.replace(CONTEXT, report_id=bytes([i]) * 16))
        items.append((cts, proof, dataclasses.replace(CONTEXT, report_id=bytes([i]) * 16)))
    assert verify_reports(public, "histogram", HIST, items) == []
    cheat = forge(public, "histogram", HIST, [0, 1, 1, 0, 0, 0],
                  dataclasses.replace(CONTEXT, report_id=bytes([2]) * 16))
    items[2] = (*cheat, items[2][2])
    items[5] = (items[5][0], _tamper(items[5][1], "s"), items[5][2])  # equation only
    items[6] = (items[6][0], items[6][1], CONTEXT)  # wrong context
    assert verify_reports(public, "histogram", HIST, items) == [2, 5, 6]


def test_batch_check_rejects_an_equation_off_by_a_power_of_h(public: PaillierPublic) -> None:
    cts, proof = prove_report(public, "sum", SUM, [99], CONTEXT)
    items = [(cts, proof, CONTEXT), (cts, _tamper(proof, "s", 1 << 40), CONTEXT)]
    assert verify_reports(public, "sum", SUM, items) == [1]


def test_multi_power_matches_separate_powers(public: PaillierPublic) -> None:
    nsq = public.nsquare
    pairs = [(gmpy2.mpz(3 + i), (i * 0x9E3779B97F4A7C15) ** 3 + i) for i in range(40)]
    expected = gmpy2.mpz(1)
    for base, x in pairs:
        expected = expected * gmpy2.powmod(base, x, nsq) % nsq
    assert sigma.multi_power(pairs, nsq) == expected
    assert sigma.multi_power(pairs[:2], nsq) == \
        gmpy2.powmod(3, pairs[0][1], nsq) * gmpy2.powmod(4, pairs[1][1], nsq) % nsq


# -- zero knowledge margin ------------------------------------------------------------------


def test_real_responses_fit_the_bound_and_simulated_ones_have_the_same_shape(
    public: PaillierPublic,
) -> None:
    real_bits, sim_bits = [], []
    for _ in range(6):
        _, proof = prove_report(public, "count", COUNT, [1], CONTEXT)
        clause = proof.clauses[0]
        # branch 1 is the true one for a 1, branch 0 simulated
        real_bits.append(clause.responses[1][0].bit_length())
        sim_bits.append(clause.responses[0][0].bit_length())
    bound = sigma.response_bits(public.exponent_bits)
    nonce = sigma.nonce_bits(public.exponent_bits)
    assert nonce == public.exponent_bits + 256
    assert all(b <= bound for b in real_bits)
    assert all(b <= nonce for b in sim_bits)
    # b dominates e*x by 2^128: a real response almost never reaches the extra carry bit,
    # and both lie in the top few bits of the nonce range (uniform on 2^nonce)
    assert all(nonce - 24 <= b <= nonce for b in real_bits + sim_bits)


def test_simulated_branch_satisfies_the_verifier_equation(public: PaillierPublic) -> None:
    c = public.encrypt_plaintext(2)  # false for both branches
    clause = statements.clauses(public, "count", COUNT, [c], [])[0]
    for branch in clause.branches:
        u, s = sigma.simulate(public, branch, 12345, clause.witness_bits)
        eq = sigma.Equation(branch[0], u[0], 12345, s[0])
        assert sigma.check_each(public, [eq]) is None
        assert sigma.check_batch(public, [eq])


# -- single-plaintext ranges ----------------------------------------------------------------


@pytest.mark.parametrize(("m", "lo", "hi"), [(0, 0, 0), (-7, -10, 20), (20, -10, 20),
                                             (1000, 999, 2**70), (-5, -5, -5)])
def test_range_proof_verifies_and_decrypts(secret: PaillierSecret, public: PaillierPublic,
                                           m: int, lo: int, hi: int) -> None:
    c, proof = prove_range(public, m, lo, hi, CONTEXT)
    verify_range(public, c, lo, hi, proof, CONTEXT)
    plain = int(secret.decrypt_plaintext(public.load([c], COUNT)[0]))
    assert plain == m % int(public.n)


def test_range_proof_is_bound_to_its_bounds_and_context(public: PaillierPublic) -> None:
    c, proof = prove_range(public, 3, -10, 20, CONTEXT)
    for lo, hi, ctx in [(-10, 19, CONTEXT), (-9, 20, CONTEXT),
                        (-10, 20, dataclasses.replace(CONTEXT, version=9))]:
        with pytest.raises(InvalidProof):
            verify_range(public, c, lo, hi, proof, ctx)
    with pytest.raises(InvalidInput):
        prove_range(public, 21, -10, 20, CONTEXT)


def test_range_proof_for_an_out_of_range_plaintext_is_rejected(public: PaillierPublic) -> None:
    # the noise a cheating key-holder would like to add: one above the headroom
    c, a = public.encrypt_plaintext_with_exponent(21)
    digits = statements.range_digits(30)
    aux_enc = [public.encrypt_plaintext_with_exponent(max(d)) for d in digits]  # 30
    aux = [b for b, _ in aux_enc]
    clauses = statements.range_clauses(public, c, -10, 20, aux)
    witnesses = [sigma.Witness(d.index(max(d)), (x,)) for d, (_, x) in zip(digits, aux_enc,
                                                                            strict=True)]
    witnesses.append(sigma.Witness(0, (a - sum(x for _, x in aux_enc),)))
    transcript = statements.transcript(public, "range", (-10, 20), CONTEXT, [c], aux)
    proof = ReportProof("range", public.byte_length, tuple(map(int, aux)),
                        sigma.prove(public, clauses, witnesses, transcript))
    with pytest.raises(InvalidProof):
        verify_range(public, public.dump([c])[0], -10, 20, proof, CONTEXT)


# -- properties ------------------------------------------------------------------------------

SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(st.integers(0, 10), min_size=4, max_size=4))
def test_any_valid_vector_proves_and_verifies(public: PaillierPublic, slots: list[int]) -> None:
    cts, proof = prove_report(public, "vector", VECTOR, slots, CONTEXT)
    verify_report(public, "vector", VECTOR, cts, proof, CONTEXT)


@SETTINGS
@given(st.integers(0, 6), st.integers(0, 3600))
def test_any_valid_histogram_and_sum_prove_and_verify(public: PaillierPublic, hot: int,
                                                      value: int) -> None:
    cts, proof = prove_report(public, "histogram", HIST, [int(i == hot) for i in range(6)]
                              if hot < 6 else [0] * 5 + [1], CONTEXT)
    verify_report(public, "histogram", HIST, cts, proof, CONTEXT)
    cts, proof = prove_report(public, "sum", SUM, [value], CONTEXT)
    verify_report(public, "sum", SUM, cts, proof, CONTEXT)


@pytest.fixture(scope="module")
def vector_report(public: PaillierPublic) -> tuple[list[bytes], ReportProof]:
    return prove_report(public, "vector", VECTOR, [3, 0, 10, 9], CONTEXT)


@SETTINGS
@given(st.data())
def test_random_tampering_is_always_rejected(public: PaillierPublic,
                                             vector_report: Any, data: Any) -> None:
    cts, proof = vector_report
    clauses = list(proof.clauses)
    i = data.draw(st.integers(0, len(clauses) - 1))
    where = data.draw(st.sampled_from(["e", "u", "s", "aux", "ct"]))
    delta = data.draw(st.integers(1, 2**200))
    clause = clauses[i]
    if where == "ct":
        blob = (int.from_bytes(cts[0], "big") + delta) % int(public.nsquare)
        _rejected(public, "vector", VECTOR, [blob.to_bytes(public.byte_length, "big")], proof)
        return
    if where == "aux":
        j = data.draw(st.integers(0, len(proof.aux) - 1))
        aux = list(proof.aux)
        aux[j] = (aux[j] + delta) % int(public.nsquare)
        _rejected(public, "vector", VECTOR, cts, dataclasses.replace(proof, aux=tuple(aux)))
        return
    if where == "e":
        if not clause.challenges:
            return
        clause = dataclasses.replace(clause, challenges=(
            (clause.challenges[0] + delta) % 2**128,))
    else:
        name = "commitments" if where == "u" else "responses"
        rows = [list(r) for r in getattr(clause, name)]
        b = data.draw(st.integers(0, len(rows) - 1))
        rows[b][0] = rows[b][0] + delta
        if where == "u":
            rows[b][0] %= int(public.nsquare)
        clause = dataclasses.replace(clause, **{name: tuple(map(tuple, rows))})
    clauses[i] = clause
    _rejected(public, "vector", VECTOR, cts, dataclasses.replace(proof, clauses=tuple(clauses)))


def test_small_order_elements_are_nth_residues_so_they_cannot_change_a_plaintext(
    secret: PaillierSecret, public: PaillierPublic,
) -> None:
    # -1 (order 2) and any element of order coprime to n decrypt to 0: multiplying a
    # ciphertext, a commitment or an aux ciphertext by one moves nothing in Z*_{n^2}/R
    nsq = public.nsquare
    minus_one = nsq - 1
    assert secret.decrypt_plaintext(minus_one) == 0
    c = public.encrypt_plaintext(1)
    assert secret.decrypt_plaintext(c * minus_one % nsq) == 1
    # and a proof about c does not carry over to -c: the hash binds the ciphertext
    cts, proof = prove_report(public, "count", COUNT, [1], CONTEXT)
    flipped = public.dump([public.load(cts, COUNT)[0] * minus_one % nsq])
    _rejected(public, "count", COUNT, flipped, proof)


def test_simulated_branches_from_openings_equal_the_general_simulation(public) -> None:
    # A false branch's commitment made from the prover's opening (one table power) must be
    # the very value the general simulator computes for the same (e, s): h^s * D^-e.
    nsq = public.nsquare
    for m, other in ((0, 1), (1, 0), (5, 3)):
        c, a = public.encrypt_plaintext_with_exponent(m)
        true = (sigma.Element(c, m),)
        false = (sigma.Element(c, other),)
        e = gmpy2.mpz(2**127 + 12345)
        us, ss = sigma._simulate_opened(public, false, true, (a,), int(e),
                                        public.exponent_bits)
        general = public.power(ss[0]) * sigma.element_power(public, false[0], -int(e)) % nsq
        assert us[0] == general
        assert public.power(ss[0]) == us[0] * sigma.element_power(public, false[0], int(e)) % nsq
        assert ss[0] < 1 << sigma.nonce_bits(public.exponent_bits)
