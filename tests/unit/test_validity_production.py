"""Validity proofs at production parameters: a 3072-bit key, a 40-bucket histogram and a sum."""

from __future__ import annotations

import dataclasses

import pytest
from validity_kit import CONTEXT, forge, seeded_secret

from blindsum.shared.errors import InvalidProof
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.validity import ReportProof, prove_report, verify_report, verify_reports

HIST = SlotSpec(count=40, max_value=1, max_contributors=100_000)
SUM = SlotSpec(count=1, max_value=3600, max_contributors=100_000)


def test_histogram_and_sum_reports_at_3072_bits() -> None:
    secret = seeded_secret(3072, seed=3072)
    public = secret.public
    assert public.n.bit_length() == 3072 and public.exponent_bits == 512
    slots = [0] * 40
    slots[33] = 1
    items = []
    for kind, spec, value in [("histogram", HIST, slots), ("sum", SUM, [3599])]:
        cts, proof = prove_report(public, kind, spec, value, CONTEXT)
        back = ReportProof.from_json(proof.to_json(), public, spec, kind)
        verify_report(public, kind, spec, cts, back, CONTEXT)
        assert secret.decrypt(cts, spec) == value
        items.append((kind, spec, cts, proof))
    kind, spec, cts, proof = items[1]
    bad = forge(public, "sum", SUM, [3601])
    other = dataclasses.replace(CONTEXT, window_start=CONTEXT.window_start + 3600)
    assert verify_reports(public, kind, spec, [(cts, proof, CONTEXT), (*bad, CONTEXT),
                                              (cts, proof, other)]) == [1, 2]
    with pytest.raises(InvalidProof):
        verify_report(public, kind, spec, bad[0], bad[1], CONTEXT)
