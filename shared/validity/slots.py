"""Range proofs for packed slots at an explicit layout: "every slot is in ``[0, max_value]``".

A report's layout comes from its ``SlotSpec`` (``PaillierPublic.layout``). Noise folded into
an *aggregate* must instead be packed like the aggregate: the aggregate's slot width (sized
for ``max_slot_sum`` plus headroom) and slots per plaintext, while each slot of the noise is
only in ``[0, 2B]``. ``SlotLayout`` states that layout explicitly, so the statement is
"ciphertext ``k`` encrypts ``Σ_{i in chunk k} v_i · 2^(width·(i mod per))`` with every
``v_i`` in ``[0, max_value]``", proven exactly as the ``sum``/``vector`` kinds are
(``statements.py``): per slot and digit ``j`` of ``range_digits(max_value)`` one auxiliary
ciphertext ``B_ij`` with an OR clause "decrypts to ``v · 2^(width·pos_i)`` for one of the
digit's values ``v``", then
one linear clause per chunk "``c_k / Π B_ij`` decrypts to 0". ``max_value < 2^width`` and
``width · per <= usable_bits`` make the packed sum an integer below ``n``, so the equality
mod ``n`` is one of integers and each slot is exactly a 0/1 combination of
``range_weights(max_value)``.

The transcript binds the key, the context, the layout ``(count, max_value, width, per)``,
every ciphertext and every aux ciphertext, so a proof is valid for one statement only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2

from ..errors import InvalidInput, InvalidProof
from ..packing import chunk_slots, pack
from ..schemes.paillier import PaillierPublic
from . import sigma, statements
from .codec import ReportProof, Shape, check_proof
from .sigma import Clause, Element
from .statements import ProofContext, SlotPlace

Mpz = Any

SLOTS_KIND = "slots"


@dataclass(frozen=True)
class SlotLayout:
    """``count`` slots, ``width`` bits apart, ``per`` to a plaintext, each in ``[0, max_value]``."""

    count: int
    width: int
    per: int
    max_value: int

    def check(self, public: PaillierPublic) -> None:
        """``InvalidInput`` unless the layout is well-formed and fits ``public``."""
        for name in ("count", "width", "per", "max_value"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"slot layout {name} must be an integer >= 1")
        if self.max_value >> self.width:
            raise InvalidInput(f"slot layout max_value {self.max_value} does not fit "
                               f"{self.width}-bit slots")
        if self.width * self.per > public.usable_bits:
            raise InvalidInput(f"{self.per} slots of {self.width} bits exceed the key's "
                               f"{public.usable_bits} usable bits")

    @property
    def chunks(self) -> int:
        return -(-self.count // self.per)

    def places(self) -> list[SlotPlace]:
        return [SlotPlace(i, i // self.per, 1 << (self.width * (i % self.per)))
                for i in range(self.count)]

    def aux_plan(self) -> list[tuple[SlotPlace, statements.Digit]]:
        """``(slot, digit values)`` of every aux ciphertext, slot-major."""
        digits = statements.range_digits(self.max_value)
        return [(place, d) for place in self.places() for d in digits]

    def fields(self) -> tuple[int, int, int, int]:
        return (self.count, self.max_value, self.width, self.per)

    def shape(self, public: PaillierPublic) -> Shape:
        """What a proof for this layout looks like (``codec.check_proof``)."""
        bits = sigma.response_bits(public.exponent_bits)
        per_chunk = len(statements.range_digits(self.max_value))
        linear = []
        for k in range(self.chunks):
            terms = per_chunk * min(self.per, self.count - k * self.per)
            linear.append((1, 1, sigma.response_bits(statements._linear_bits(public, terms))))
        plan = self.aux_plan()
        digits = tuple((len(values), 1, bits) for _, values in plan)
        return Shape(SLOTS_KIND, len(plan), digits + tuple(linear))


def slot_clauses(public: PaillierPublic, layout: SlotLayout, cts: Sequence[Mpz],
                 aux: Sequence[Mpz]) -> list[Clause]:
    """The statement's clauses: a bit clause per aux ciphertext, a linear clause per chunk."""
    plan = layout.aux_plan()
    out = [statements.digit_clause(public, b, values, place.scale)
           for (place, values), b in zip(plan, aux, strict=True)]
    for k, c in enumerate(cts):
        mine = [b for (place, _), b in zip(plan, aux, strict=True) if place.chunk == k]
        out.append(Clause(((Element(statements._divide(c, mine, public.nsquare), 0),),),
                          statements._linear_bits(public, len(mine))))
    return out


def prove_slots(public: PaillierPublic, layout: SlotLayout, slots: Sequence[int],
                context: ProofContext) -> tuple[list[Mpz], ReportProof]:
    """Encrypt ``slots`` packed at ``layout`` and prove each is in ``[0, max_value]``.

    Returns the ciphertexts (one per chunk) and the proof.

    Raises:
        InvalidInput: the layout does not fit the key, or a slot is not an integer in range.
    """
    layout.check(public)
    if isinstance(slots, str | bytes) or not isinstance(slots, Sequence) \
            or len(slots) != layout.count:
        raise InvalidInput(f"expected {layout.count} slots")
    for index, value in enumerate(slots):
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 0 <= value <= layout.max_value:
            raise InvalidInput(f"slot {index} is not an integer in 0..{layout.max_value}")
    encrypted = [public.encrypt_plaintext_with_exponent(pack(chunk, layout.width))
                 for chunk in chunk_slots(list(slots), layout.per)]
    cts = [c for c, _ in encrypted]
    aux, aux_exps, witnesses = [], [], []
    digits = len(statements.range_digits(layout.max_value))
    for place, values in layout.aux_plan():
        patterns = statements.digit_patterns(slots[place.index], layout.max_value)
        pattern = patterns[len(aux) % digits]
        b, a = public.encrypt_plaintext_with_exponent(values[pattern] * place.scale)
        aux.append(b)
        aux_exps.append(a)
        witnesses.append(sigma.Witness(pattern, (a,)))
    plan = layout.aux_plan()
    for k, (_, a) in enumerate(encrypted):
        # the chunk's exponent minus its aux exponents: ``c_k / Π B_ij = h^(a - Σ a_ij)``
        mine = sum(x for (place, _), x in zip(plan, aux_exps, strict=True) if place.chunk == k)
        witnesses.append(sigma.Witness(0, (a - mine,)))
    clauses = slot_clauses(public, layout, cts, aux)
    transcript = statements.transcript(public, SLOTS_KIND, layout.fields(), context, cts, aux)
    proofs = sigma.prove(public, clauses, witnesses, transcript)
    return cts, ReportProof(SLOTS_KIND, public.byte_length, tuple(int(b) for b in aux), proofs)


def verify_slots(public: PaillierPublic, layout: SlotLayout, ciphertexts: Sequence[bytes],
                 proof: ReportProof, context: ProofContext) -> None:
    """Check that ``ciphertexts`` encrypt ``layout.count`` slots at ``layout``, each in
    ``[0, max_value]``, bound to ``context``.

    Raises:
        InvalidProof: naming the field or equation that fails (a malformed ciphertext or a
            layout that does not fit the key too).
    """
    try:
        layout.check(public)
    except InvalidInput as exc:
        raise InvalidProof(exc.detail) from None
    if len(ciphertexts) != layout.chunks:
        raise InvalidProof(f"expected {layout.chunks} ciphertexts, got {len(ciphertexts)}")
    cts = [_load(public, blob, f"ciphertexts[{i}]") for i, blob in enumerate(ciphertexts)]
    checked = check_proof(proof, public, layout.shape(public))
    clauses = slot_clauses(public, layout, cts, checked.aux)
    transcript = statements.transcript(public, SLOTS_KIND, layout.fields(), context, cts,
                                       checked.aux)
    eqs = sigma.equations(public, clauses, checked.clauses, transcript)
    # one random combination (2^-64 soundness error per verification, ``sigma.py``); the
    # one-by-one check only runs to name the failing equation
    if not sigma.check_batch(public, eqs):
        bad = sigma.check_each(public, eqs)
        raise InvalidProof(f"proof equation {bad if bad is not None else '?'} does not hold")


def parse_slots_proof(obj: object, public: PaillierPublic, layout: SlotLayout) -> ReportProof:
    """A proof's JSON form (``ReportProof.to_json``), checked against ``layout``'s shape."""
    try:
        layout.check(public)
    except InvalidInput as exc:
        raise InvalidProof(exc.detail) from None
    return ReportProof.from_json_shape(obj, public, layout.shape(public))


def _load(public: PaillierPublic, blob: object, where: str) -> Mpz:
    if not isinstance(blob, bytes) or len(blob) != public.byte_length:
        raise InvalidProof(f"{where} must be {public.byte_length} bytes")
    c = gmpy2.mpz.from_bytes(blob, "big")
    if not 0 < c < public.nsquare or gmpy2.gcd(c, public.n) != 1:
        raise InvalidProof(f"{where} is not a unit below n^2")
    return c
