"""Encrypt-and-prove a report, verify one report, verify many at once, and single ranges.

``prove_report`` encrypts with ``PaillierPublic.encrypt_plaintext_with_exponent`` (so it knows
every randomiser exponent) and proves the kind's statement (``statements.py``);
``verify_report`` rebuilds the statement from the received ciphertexts and checks its
equations under one random combination (``sigma.check_batch``; ``verify_report_each``
checks them one by one, the reference); ``verify_reports`` does the same over many reports'
equations at once and falls back to per-report checks to name the bad ones. Measured at
3072 bits (``benchmarks/validity.py``), batching wins at every size, so it is the default
and the one-by-one check only runs to name a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidCiphertext, InvalidInput, InvalidProof
from ..packing import chunk_slots, pack
from ..schemes.base import SlotSpec
from ..schemes.paillier import PaillierPublic
from . import sigma, statements
from .codec import BATCHED, COMPACT, FORMS, ReportProof, Shape, check_proof
from .statements import ProofContext

Mpz = Any


def proof_kind(policy: Any) -> str:
    """The proof kind of a ``MetricPolicy``: its own kind (a count whose ``slot_max`` exceeds
    1 is proven as a range by ``statements``, from the spec's ``max_value``)."""
    kind = policy.kind
    if kind not in statements.KINDS:
        raise InvalidInput(f"metric kind {kind!r} has no validity proof")
    return kind


def prove_report(public: PaillierPublic, kind: str, spec: SlotSpec, slots: Sequence[int],
                 context: ProofContext, form: str = BATCHED
                 ) -> tuple[list[bytes], ReportProof]:
    """Encrypt ``slots`` and prove they are a valid ``kind`` encoding, bound to ``context``,
    in ``form`` (``"batched"``: verifiable in a random combination with other reports;
    ``"compact"``: challenges instead of commitments, see ``sigma.py``).

    Raises:
        InvalidInput: the slots are not a valid encoding (wrong length, a value outside
            ``0..max_value``, a histogram that is not one-hot), or the spec does not fit.
    """
    statements.check_kind(kind, spec)
    _check_slots(kind, spec, slots)
    if form not in FORMS:
        raise InvalidInput(f"proof form must be one of {list(FORMS)}")
    width, per = public.layout(spec)
    chunks = chunk_slots(list(slots), per)
    encrypted = [public.encrypt_plaintext_with_exponent(pack(chunk, width)) for chunk in chunks]
    cts = [c for c, _ in encrypted]
    exps = [a for _, a in encrypted]
    aux, aux_exps, aux_bits = [], [], []
    digits = len(statements.range_digits(spec.max_value))
    for place, values in statements.aux_plan(public, kind, spec):
        patterns = statements.digit_patterns(slots[place.index], spec.max_value)
        pattern = patterns[len(aux) % digits]
        b, a = public.encrypt_plaintext_with_exponent(values[pattern] * place.scale)
        aux.append(b)
        aux_exps.append(a)
        aux_bits.append(pattern)
    clauses = statements.clauses(public, kind, spec, cts, aux)
    witnesses = _witnesses(public, kind, spec, slots, exps, aux_exps, aux_bits)
    fields = statements.spec_fields(public, spec)
    transcript = statements.transcript(public, kind, fields, context, cts, aux)
    proofs = sigma.prove(public, clauses, witnesses, transcript)
    if form == COMPACT:
        proof = ReportProof(kind, public.byte_length, tuple(int(b) for b in aux),
                            sigma.compact(public, proofs, transcript), COMPACT)
    else:
        proof = ReportProof(kind, public.byte_length, tuple(int(b) for b in aux), proofs)
    return public.dump(cts), proof


def _check_slots(kind: str, spec: SlotSpec, slots: Sequence[int]) -> None:
    if isinstance(slots, str | bytes | bytearray) or not isinstance(slots, Sequence):
        raise InvalidInput("slots must be a sequence of integers")
    if len(slots) != spec.count:
        raise InvalidInput(f"expected {spec.count} slots, got {len(slots)}")
    for index, value in enumerate(slots):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"slot {index} is not an integer")
        if not 0 <= value <= spec.max_value:
            raise InvalidInput(f"slot {index} is outside 0..{spec.max_value}")
    if kind == "histogram" and sorted(slots) != [0] * (spec.count - 1) + [1]:
        raise InvalidInput("a histogram report must be one-hot (exactly one slot is 1)")


def _witnesses(public: PaillierPublic, kind: str, spec: SlotSpec, slots: Sequence[int],
               exps: list[Mpz], aux_exps: list[Mpz], aux_bits: list[int]) -> list[sigma.Witness]:
    if kind == "count" and not statements.is_range_kind(kind, spec):
        return [sigma.Witness(slots[0], (exps[0],))]
    if kind == "histogram":
        return [sigma.Witness(list(slots).index(1), tuple(exps))]
    out = [sigma.Witness(bit, (a,)) for bit, a in zip(aux_bits, aux_exps, strict=True)]
    plan = statements.aux_plan(public, kind, spec)
    for k, a in enumerate(exps):
        mine = sum(x for (place, _), x in zip(plan, aux_exps, strict=True) if place.chunk == k)
        out.append(sigma.Witness(0, (a - mine,)))
    return out


def _equations(public: PaillierPublic, kind: str, spec: SlotSpec, ciphertexts: object,
               proof: object, context: ProofContext) -> list[sigma.Equation] | None:
    """A batched proof's group equations; None once a compact proof has fully verified
    (it cannot join a batch). ``InvalidProof`` for anything that fails before."""
    shape = Shape.of(public, kind, spec)
    try:
        cts = public.load(ciphertexts, spec)  # type: ignore[arg-type]
    except InvalidCiphertext as exc:
        raise InvalidProof(f"ciphertexts: {exc.detail}") from None
    checked = check_proof(proof, public, shape, FORMS)
    clauses = statements.clauses(public, kind, spec, cts, checked.aux)
    fields = statements.spec_fields(public, spec)
    transcript = statements.transcript(public, kind, fields, context, cts, checked.aux)
    if checked.form == COMPACT:
        sigma.check_compact(public, clauses, checked.clauses,  # type: ignore[arg-type]
                            transcript)
        return None
    return sigma.equations(public, clauses, checked.clauses,  # type: ignore[arg-type]
                           transcript)


def verify_report(public: PaillierPublic, kind: str, spec: SlotSpec,
                  ciphertexts: Sequence[bytes], proof: ReportProof,
                  context: ProofContext) -> None:
    """Check that ``ciphertexts`` encrypt a valid ``kind`` report bound to ``context``.

    Raises:
        InvalidProof: naming the field or clause that fails (a malformed ciphertext too).
    """
    eqs = _equations(public, kind, spec, ciphertexts, proof, context)
    if eqs is not None:
        _check_equations(public, eqs)


def verify_report_each(public: PaillierPublic, kind: str, spec: SlotSpec,
                       ciphertexts: Sequence[bytes], proof: ReportProof,
                       context: ProofContext) -> None:
    """``verify_report`` checking every equation on its own (the reference; slower)."""
    eqs = _equations(public, kind, spec, ciphertexts, proof, context)
    bad = None if eqs is None else sigma.check_each(public, eqs)
    if bad is not None:
        raise InvalidProof(f"proof equation {bad} does not hold")


def _check_equations(public: PaillierPublic, eqs: list[sigma.Equation]) -> None:
    # One report's equations under random weights: its branches share their ciphertext
    # bases, so this is 3-7x faster than one check per equation (benchmarks/validity.py)
    # at a soundness error of 2^-64 per verification (sigma.py); the slow path only
    # names the failing equation.
    if not sigma.check_batch(public, eqs):
        bad = sigma.check_each(public, eqs)
        raise InvalidProof(f"proof equation {bad if bad is not None else '?'} does not hold")


def verify_reports(public: PaillierPublic, kind: str, spec: SlotSpec,
                   items: Sequence[tuple[Sequence[bytes], ReportProof, ProofContext]]
                   ) -> list[int]:
    """Indices of the invalid reports among ``(ciphertexts, proof, context)`` items.

    Every report's cheap checks (shape, bounds, challenges) run on their own; the group
    equations of all that pass are checked in one random combination, and only if it fails
    is each report checked alone.
    """
    Shape.of(public, kind, spec)  # a wrong kind or spec is the caller's error, not a report's
    bad: list[int] = []
    pending: list[tuple[int, list[sigma.Equation]]] = []
    for index, (ciphertexts, proof, context) in enumerate(items):
        try:
            eqs = _equations(public, kind, spec, ciphertexts, proof, context)
        except InvalidInput:
            bad.append(index)
            continue
        if eqs is not None:  # a compact proof has been checked on its own already
            pending.append((index, eqs))
    if not sigma.check_batch(public, [eq for _, eqs in pending for eq in eqs]):
        bad += [index for index, eqs in pending if sigma.check_each(public, eqs) is not None]
    return sorted(bad)


def _check_range(public: PaillierPublic, lo: object, hi: object) -> None:
    for name, value in (("lo", lo), ("hi", hi)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"range {name} must be an integer")
    assert isinstance(lo, int) and isinstance(hi, int)
    limit = 1 << public.usable_bits
    if not (-limit < lo <= hi < limit and hi - lo < limit):
        raise InvalidInput(f"range must satisfy lo <= hi within ±2^{public.usable_bits}")


def prove_range(public: PaillierPublic, m: int, lo: int, hi: int,
                context: ProofContext) -> tuple[bytes, ReportProof]:
    """Encrypt ``m`` (mod ``n``) and prove it lies in ``[lo, hi]``; ``InvalidInput`` if not."""
    _check_range(public, lo, hi)
    if isinstance(m, bool) or not isinstance(m, int) or not lo <= m <= hi:
        raise InvalidInput(f"plaintext must be an integer in {lo}..{hi}")
    c, a = public.encrypt_plaintext_with_exponent(m % int(public.n))
    patterns = statements.digit_patterns(m - lo, hi - lo)
    digits = statements.range_digits(hi - lo)
    aux, aux_exps = [], []
    for pattern, values in zip(patterns, digits, strict=True):
        b, x = public.encrypt_plaintext_with_exponent(values[pattern])
        aux.append(b)
        aux_exps.append(x)
    clauses = statements.range_clauses(public, c, lo, hi, aux)
    witnesses = [sigma.Witness(p, (x,)) for p, x in zip(patterns, aux_exps, strict=True)]
    witnesses.append(sigma.Witness(0, (a - sum(aux_exps),)))
    transcript = _range_transcript(public, lo, hi, context, c, aux)
    proofs = sigma.prove(public, clauses, witnesses, transcript)
    proof = ReportProof(statements.RANGE_KIND, public.byte_length,
                        tuple(int(b) for b in aux), proofs)
    return public.dump([c])[0], proof


def verify_range(public: PaillierPublic, ciphertext: bytes, lo: int, hi: int,
                 proof: ReportProof, context: ProofContext) -> None:
    """Check that ``ciphertext`` decrypts to an integer in ``[lo, hi]`` (``InvalidProof``)."""
    _check_range(public, lo, hi)
    try:
        c = public.load([ciphertext], _ONE)[0]
    except InvalidCiphertext as exc:
        raise InvalidProof(f"ciphertext: {exc.detail}") from None
    checked = check_proof(proof, public, Shape.of_range(public, lo, hi))
    clauses = statements.range_clauses(public, c, lo, hi, checked.aux)
    transcript = _range_transcript(public, lo, hi, context, c, checked.aux)
    _check_equations(public, sigma.equations(public, clauses, checked.clauses, transcript))


_ONE = SlotSpec(count=1, max_value=1, max_contributors=1)


def _range_transcript(public: PaillierPublic, lo: int, hi: int, context: ProofContext,
                      c: Mpz, aux: Sequence[Mpz]) -> list[bytes]:
    return statements.transcript(public, statements.RANGE_KIND, (lo, hi), context, [c], aux)
