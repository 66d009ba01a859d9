"""Range proofs at an explicit slot layout (``validity/slots.py``): honest slots verify at
one and several chunks; every cheater (a slot out of range, a negative slot, a proof for
other ciphertexts, another context or layout, a tampered field) is refused."""

from __future__ import annotations

import dataclasses

import pytest
from validity_kit import CONTEXT, seeded_secret
from validity_kit import forge_slots as forge

from blindsum.shared.errors import InvalidInput, InvalidProof
from blindsum.shared.packing import pack
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.validity import SlotLayout, parse_slots_proof, prove_slots, verify_slots

# an aggregate-like layout: 31-bit slots, 66 to a plaintext, each slot of the noise <= 2B
ONE_CHUNK = SlotLayout(count=4, width=31, per=66, max_value=26_266)
# 700-bit slots, two to a plaintext: five slots span three ciphertexts
THREE_CHUNKS = SlotLayout(count=5, width=700, per=2, max_value=100)


@pytest.fixture(scope="module")
def public() -> PaillierPublic:
    return seeded_secret().public


@pytest.mark.parametrize(("layout", "slots"), [
    (ONE_CHUNK, [0, 26_266, 13_133, 1]),
    (THREE_CHUNKS, [100, 0, 57, 99, 1]),
])
def test_honest_slots_verify_at_their_layout(public: PaillierPublic, layout: SlotLayout,
                                             slots: list[int]) -> None:
    cts, proof = prove_slots(public, layout, slots, CONTEXT)
    assert len(cts) == layout.chunks
    verify_slots(public, layout, public.dump(cts), proof, CONTEXT)
    # the ciphertexts are packed exactly as the aggregate is: slot i at bit width·(i mod per)
    secret = seeded_secret()
    for k, c in enumerate(cts):
        chunk = slots[k * layout.per:(k + 1) * layout.per]
        assert secret.decrypt_plaintext(c) == pack(chunk, layout.width)
    # the JSON form round-trips through the strict parser
    assert parse_slots_proof(proof.to_json(), public, layout) == proof


@pytest.mark.parametrize("slots", [[0, 26_267, 5, 5], [0, -1, 5, 5], [2**31 - 1, 0, 0, 0]])
def test_a_slot_outside_the_range_is_refused(public: PaillierPublic, slots: list[int]) -> None:
    cts, proof = forge(public, ONE_CHUNK, slots)
    with pytest.raises(InvalidProof, match="does not hold"):
        verify_slots(public, ONE_CHUNK, public.dump(cts), proof, CONTEXT)


def test_aux_ciphertexts_that_are_not_bits_are_refused(public: PaillierPublic) -> None:
    layout = THREE_CHUNKS
    slots = [150, 0, 0, 0, 0]  # 150 = 2 + 148: weights 1, 2, 4, ..., plus a weight-2 "bit"
    aux = [0] * len(layout.aux_plan())
    aux[1] = 2 * 75  # the weight-2 aux carries 150: a sum, not a bit
    cts, proof = forge(public, layout, slots, aux_values=aux)
    with pytest.raises(InvalidProof, match="does not hold"):
        verify_slots(public, layout, public.dump(cts), proof, CONTEXT)


def test_a_proof_for_other_ciphertexts_another_context_or_layout_is_refused(
        public: PaillierPublic) -> None:
    cts, proof = prove_slots(public, ONE_CHUNK, [1, 2, 3, 4], CONTEXT)
    other, _ = prove_slots(public, ONE_CHUNK, [1, 2, 3, 4], CONTEXT)
    with pytest.raises(InvalidProof):
        verify_slots(public, ONE_CHUNK, public.dump(other), proof, CONTEXT)
    with pytest.raises(InvalidProof):
        verify_slots(public, ONE_CHUNK, public.dump(cts), proof,
                     dataclasses.replace(CONTEXT, report_id=b"another release"))
    with pytest.raises(InvalidProof):
        verify_slots(public, dataclasses.replace(ONE_CHUNK, width=32), public.dump(cts),
                     proof, CONTEXT)
    with pytest.raises(InvalidProof, match=r"proof\.aux"):
        verify_slots(public, dataclasses.replace(ONE_CHUNK, max_value=2**16),
                     public.dump(cts), proof, CONTEXT)


def test_a_tampered_field_is_refused(public: PaillierPublic) -> None:
    cts, proof = prove_slots(public, ONE_CHUNK, [7, 7, 7, 7], CONTEXT)
    blobs = public.dump(cts)
    first = proof.clauses[0]
    bumped = dataclasses.replace(first, responses=((first.responses[0][0] + 1,),
                                                   *first.responses[1:]))
    aux = (proof.aux[1], proof.aux[0], *proof.aux[2:])
    for forged in (dataclasses.replace(proof, clauses=(bumped, *proof.clauses[1:])),
                   dataclasses.replace(proof, aux=aux),
                   dataclasses.replace(proof, clauses=proof.clauses[:-1])):
        with pytest.raises(InvalidProof):
            verify_slots(public, ONE_CHUNK, blobs, forged, CONTEXT)
    wire = proof.to_json()
    wire["kind"] = "vector"
    with pytest.raises(InvalidProof, match="kind"):
        parse_slots_proof(wire, public, ONE_CHUNK)


def test_a_layout_that_does_not_fit_is_refused(public: PaillierPublic) -> None:
    with pytest.raises(InvalidInput, match="does not fit"):
        prove_slots(public, SlotLayout(1, 4, 1, 16), [3], CONTEXT)
    with pytest.raises(InvalidInput, match="usable bits"):
        prove_slots(public, SlotLayout(3, 700, 3, 1), [1, 1, 1], CONTEXT)
    with pytest.raises(InvalidInput, match="not an integer in"):
        prove_slots(public, ONE_CHUNK, [1, 2, 3, 26_267], CONTEXT)
    _, proof = prove_slots(public, ONE_CHUNK, [1, 2, 3, 4], CONTEXT)
    with pytest.raises(InvalidProof, match="expected 1 ciphertexts"):
        verify_slots(public, ONE_CHUNK, [], proof, CONTEXT)
