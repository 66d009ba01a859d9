"""Compact validity proofs ((e, s) form): honest ones verify wherever batched ones do, every
cheater and every tampered field is refused, and the form is what the policy chose."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from test_validity_proofs import CHEATS, COUNT, HIST, HONEST, SUM, VECTOR, _rejected
from validity_kit import CONTEXT, forge, seeded_secret

from blindsum.shared.errors import InvalidInput, InvalidPolicy, InvalidProof
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.paillier import PaillierPublic, PaillierSecret
from blindsum.shared.validity import (
    ReportProof,
    prove_range,
    prove_report,
    sigma,
    statements,
    verify_range,
    verify_report,
    verify_report_each,
    verify_reports,
)


@pytest.fixture(scope="module")
def secret() -> PaillierSecret:
    return seeded_secret()


@pytest.fixture(scope="module")
def public(secret: PaillierSecret) -> PaillierPublic:
    return secret.public


@pytest.mark.parametrize(("kind", "spec", "slots"), HONEST)
def test_honest_compact_report_verifies_round_trips_and_is_smaller(
        secret, public, kind, spec, slots) -> None:
    cts, proof = prove_report(public, kind, spec, slots, CONTEXT, "compact")
    assert proof.form == "compact"
    verify_report(public, kind, spec, cts, proof, CONTEXT)
    verify_report_each(public, kind, spec, cts, proof, CONTEXT)
    assert verify_reports(public, kind, spec, [(cts, proof, CONTEXT)]) == []
    assert secret.decrypt(cts, spec) == slots
    assert ReportProof.from_json(proof.to_json(), public, spec, kind) == proof
    assert ReportProof.from_json(proof.to_wire(), public, spec, kind) == proof
    _, batched = prove_report(public, kind, spec, slots, CONTEXT)
    assert proof.size() < batched.size()


@pytest.mark.parametrize(("kind", "spec", "slots"), CHEATS)
def test_compact_cheating_prover_is_rejected(public, kind, spec, slots) -> None:
    cts, proof = forge(public, kind, spec, slots, form="compact")
    _rejected(public, kind, spec, cts, proof)


def test_every_branch_simulated_with_free_challenges_is_rejected(public) -> None:
    # The forger's own challenges make every equation hold by construction; the sum of the
    # challenges is what the hash pins, and it does not match.
    c = public.encrypt_plaintext(2)
    clause = statements.clauses(public, "count", COUNT, [c], [])[0]
    responses = []
    for branch, e in zip(clause.branches, (5, 7), strict=True):
        responses.append(sigma.simulate(public, branch, e, clause.witness_bits)[1])
    proof = ReportProof("count", public.byte_length, (),
                        (sigma.CompactClauseProof((5, 7), tuple(responses)),), "compact")
    _rejected(public, "count", COUNT, public.dump([c]), proof)


@pytest.mark.parametrize("field", ["metric", "window_start", "report_id"])
def test_compact_proof_cannot_be_replayed_under_another_context(public, field) -> None:
    cts, proof = prove_report(public, "histogram", HIST, [0, 1, 0, 0, 0, 0], CONTEXT,
                              "compact")
    other = {"metric": "other", "window_start": 1_764_079_200, "report_id": bytes(16)}[field]
    _rejected(public, "histogram", HIST, cts, proof,
              dataclasses.replace(CONTEXT, **{field: other}))


@pytest.mark.parametrize("where", ["aux", "e", "s"])
def test_tampering_a_compact_proof_is_rejected(public, where) -> None:
    cts, proof = prove_report(public, "vector", VECTOR, [1, 2, 3, 4], CONTEXT, "compact")
    clauses = list(proof.clauses)
    if where == "aux":
        proof = dataclasses.replace(proof, aux=(proof.aux[0] + 1, *proof.aux[1:]))
    elif where == "e":
        first = clauses[0]
        clauses[0] = dataclasses.replace(first, challenges=(first.challenges[0] + 1,
                                                            *first.challenges[1:]))
        proof = dataclasses.replace(proof, clauses=tuple(clauses))
    else:
        last = clauses[-1]
        rows = [list(r) for r in last.responses]
        rows[0][0] += 1
        clauses[-1] = dataclasses.replace(last, responses=tuple(map(tuple, rows)))
        proof = dataclasses.replace(proof, clauses=tuple(clauses))
    _rejected(public, "vector", VECTOR, cts, proof)


def test_compact_wire_shape_is_strict(public) -> None:
    _, proof = prove_report(public, "count", COUNT, [1], CONTEXT, "compact")
    wire = proof.to_json()
    with pytest.raises(InvalidProof, match=r"must have 2 items"):
        ReportProof.from_json({**wire, "clauses": [{**wire["clauses"][0],
                                                    "e": wire["clauses"][0]["e"][:1]}]},
                              public, COUNT, "count")
    with pytest.raises(InvalidProof, match="exactly"):
        ReportProof.from_json({**wire, "clauses": [{**wire["clauses"][0], "u": [[], []]}]},
                              public, COUNT, "count")
    with pytest.raises(InvalidProof, match="a batched proof has no form"):
        ReportProof.from_json({**wire, "form": "batched"}, public, COUNT, "count")
    with pytest.raises(InvalidInput, match="proof form"):
        prove_report(public, "count", COUNT, [1], CONTEXT, "tiny")


def test_a_compact_proof_is_refused_where_only_batched_ones_are_verified(public) -> None:
    # range proofs (the key-holder's and server's noise) stay batched: a compact object
    # in their place is refused by shape, never half-checked
    ct, proof = prove_range(public, 7, 0, 10, CONTEXT)
    clauses = sigma.compact(public, proof.clauses, [b"any"])
    with pytest.raises(InvalidProof, match="form"):
        verify_range(public, ct, 0, 10, dataclasses.replace(proof, clauses=clauses,
                                                            form="compact"), CONTEXT)


def test_batches_mixing_both_forms_name_exactly_the_bad_reports(public) -> None:
    items: list[Any] = []
    for i in range(6):
        form = "compact" if i % 2 else "batched"
        context = dataclasses.replace(CONTEXT, report_id=bytes([i]) * 16)
        cts, proof = prove_report(public, "sum", SUM, [i * 100], context, form)
        items.append((cts, proof, context))
    cheat = forge(public, "sum", SUM, [4000], dataclasses.replace(CONTEXT, report_id=bytes(16)),
                  form="compact")
    items.insert(2, (*cheat, dataclasses.replace(CONTEXT, report_id=bytes(16))))
    assert verify_reports(public, "sum", SUM, items) == [2]


def test_the_policy_chooses_the_form_and_only_for_proven_metrics() -> None:
    base = {"kind": "count", "scheme": "paillier", "upper": 1, "min_contributors": 3,
            "max_contributors": 1000,
            "privacy": {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 3.0}}
    assert MetricPolicy.from_mapping("a", base).proof_form == "batched"
    assert "proof_form" not in MetricPolicy.from_mapping("a", base).to_json()
    compact = MetricPolicy.from_mapping("a", {**base, "proof_form": "compact"})
    assert compact.proof_form == "compact"
    assert MetricPolicy.from_mapping("a", compact.to_json()) == compact
    with pytest.raises(InvalidPolicy, match="proof_form must be one of"):
        MetricPolicy.from_mapping("a", {**base, "proof_form": "small"})
    with pytest.raises(InvalidPolicy, match='validity = "proof" metrics only'):
        MetricPolicy.from_mapping("a", {**base, "validity": "none", "proof_form": "compact"})
