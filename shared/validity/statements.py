"""What each metric kind's proof states, as clauses of ``sigma.py`` over a report's ciphertexts.

A report of ``spec.count`` slots is packed ``width`` bits apart, ``per`` slots to a plaintext
(``PaillierPublic.layout``), slot ``i`` in chunk ``i // per`` at position ``i % per``, i.e.
worth ``2^(width · (i % per))`` in its chunk's plaintext. Per kind:

- **count** with ``max_value == 1``: one clause, two branches: ``c`` decrypts to 0 or to 1.
- **histogram**: one clause with one branch per bucket ``j``; branch ``j`` is the AND over
  chunks "chunk of ``j`` decrypts to ``2^(width·pos_j)``, every other chunk to 0". Exactly one
  branch is true, so exactly one slot is 1 and all others 0.
- **sum**, **mean**, **vector** and a count with ``max_value > 1``: every slot in
  ``[0, max_value]``. The weights of ``range_weights(max_value)`` (whose 0/1 combinations are
  exactly ``0..max_value``) are grouped into *digits* of ``DIGIT_WEIGHTS = 3`` consecutive
  weights; a digit's allowed values are the subset sums of its weights (``range_digits``:
  ``0..7``, ``0, 8, ..., 56``, ...; the last group may be shorter, and its sums may repeat).
  For slot ``i`` and digit ``j`` the prover sends an auxiliary ciphertext ``B_ij`` with a
  digit clause "``B_ij`` decrypts to ``v · 2^(width·pos_i)`` for one of the digit's values
  ``v``" (an OR over up to 8 branches); then one clause per chunk: "``c_k / Π_{i in k, j}
  B_ij`` decrypts to 0". So each slot equals a sum of one allowed value per digit, i.e. a
  0/1 combination of the weights, which lies exactly in ``[0, max_value]``; the sum of the
  slot terms never reaches ``n`` (``packing.py``), so the equality mod ``n`` is one of
  integers. Digits of three weights instead of single bits (one aux ciphertext per bit)
  cut a 12-bit range's aux ciphertexts from 12 to 4 for 32 OR-branches instead of 24: the
  same proving work (a table power per ciphertext and per branch), fewer multi-exponentiation
  bases in batched verification, and a compact proof (``sigma.compact``) of 4 + 1
  ciphertexts and 32 challenge/response pairs instead of 12 + 1 and 24. Scaling the aux
  plaintexts by the slot's place (rather than raising ``B_ij`` to that power) keeps the
  linear relation's witness short: it is ``a_k - Σ a_ij`` (computed exactly over the
  integers, negative in general), with ``|x| < K · 2^exponent_bits`` for ``K`` aux ciphertexts
  in the chunk, so the clause's witness bound is ``exponent_bits + bit_length(K)``.
- **range** ("``c`` decrypts to an integer in ``[lo, hi]``", one plaintext, for the key-holder's
  noise): the same digits over ``hi - lo``, with the linear clause on ``c·(1+n)^(-lo)``.

``ProofContext`` says what a proof is bound to; ``transcript`` hashes it with the public key,
the kind and spec, every ciphertext and aux ciphertext (each length-prefixed by ``sigma``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2

from ..errors import InvalidInput
from ..packing import chunk_slots
from ..schemes.base import SlotSpec
from ..schemes.paillier import PaillierPublic
from .sigma import Clause, Element

Mpz = Any

KINDS = ("count", "histogram", "sum", "mean", "vector")
RANGE_KIND = "range"
STATEMENT_TAG = b"blindsum/validity/statement/v2"  # v2: digits of DIGIT_WEIGHTS weights
DIGIT_WEIGHTS = 3


@dataclass(frozen=True)
class ProofContext:
    """What a report's proof is bound to: replaying it under any other value fails."""

    metric: str
    version: int
    window_start: int
    key_id: str
    report_id: bytes

    def encoded(self) -> list[bytes]:
        for name in ("metric", "key_id"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInput(f"proof context {name} must be a string")
        for name in ("version", "window_start"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"proof context {name} must be an integer")
        if not isinstance(self.report_id, bytes):
            raise InvalidInput("proof context report_id must be bytes")
        return [self.metric.encode(), str(self.version).encode(),
                str(self.window_start).encode(), self.key_id.encode(), self.report_id]


def range_weights(max_value: int) -> list[int]:
    """Weights whose 0/1 combinations are exactly ``0..max_value``: ``1, 2, ..., 2^(k-2)`` and
    ``max_value - (2^(k-1) - 1)`` for ``k = bit_length(max_value)`` (none for 0).

    The first ``k-1`` cover ``[0, 2^(k-1) - 1]``; the last, ``L >= 1``, shifts that to
    ``[L, max_value]``, and ``L <= 2^(k-1)`` leaves no gap; the largest sum is ``max_value``.
    """
    k = max_value.bit_length()
    if k == 0:
        return []
    return [1 << j for j in range(k - 1)] + [max_value - ((1 << (k - 1)) - 1)]


def decompose(value: int, max_value: int) -> list[int]:
    """Bits of ``value`` over ``range_weights(max_value)``; ``0 <= value <= max_value``."""
    weights = range_weights(max_value)
    if not weights:
        return []
    top = value > (1 << (len(weights) - 1)) - 1  # then value >= 2^(k-1) >= the last weight
    rest = value - weights[-1] if top else value
    return [(rest >> j) & 1 for j in range(len(weights) - 1)] + [int(top)]


def range_digits(max_value: int) -> list[tuple[int, ...]]:
    """Each digit's allowed values: the subset sums of ``DIGIT_WEIGHTS`` consecutive
    ``range_weights(max_value)``, listed by bit pattern (pattern ``p`` sums the weights whose
    bit is set in ``p``)."""
    weights = range_weights(max_value)
    digits = []
    for start in range(0, len(weights), DIGIT_WEIGHTS):
        group = weights[start:start + DIGIT_WEIGHTS]
        digits.append(tuple(sum(w for j, w in enumerate(group) if pattern >> j & 1)
                            for pattern in range(1 << len(group))))
    return digits


def digit_patterns(value: int, max_value: int) -> list[int]:
    """The bit pattern of each digit of ``value`` (``0 <= value <= max_value``)."""
    bits = decompose(value, max_value)
    return [sum(bit << j for j, bit in enumerate(bits[start:start + DIGIT_WEIGHTS]))
            for start in range(0, len(bits), DIGIT_WEIGHTS)]


def is_range_kind(kind: str, spec: SlotSpec) -> bool:
    return kind in ("sum", "mean", "vector") or (kind == "count" and spec.max_value > 1)


def check_kind(kind: object, spec: SlotSpec) -> None:
    if kind not in KINDS:
        raise InvalidInput(f"proof kind must be one of {KINDS}")
    if kind in ("count", "sum", "mean") and spec.count != 1:
        raise InvalidInput(f"a {kind} report has one slot, the spec has {spec.count}")
    if kind == "histogram" and spec.count < 2:
        raise InvalidInput("a histogram needs at least two buckets")


@dataclass(frozen=True)
class SlotPlace:
    """Where slot ``index`` lives: its chunk and its value ``2^(width·position)``."""

    index: int
    chunk: int
    scale: int


def places(public: PaillierPublic, spec: SlotSpec) -> list[SlotPlace]:
    width, per = public.layout(spec)
    return [SlotPlace(i, i // per, 1 << (width * (i % per))) for i in range(spec.count)]


Digit = tuple[int, ...]


def aux_plan(public: PaillierPublic, kind: str, spec: SlotSpec
             ) -> list[tuple[SlotPlace, Digit]]:
    """``(slot, digit values)`` for every aux ciphertext, slot-major (empty for bit and
    one-hot kinds)."""
    if not is_range_kind(kind, spec):
        return []
    digits = range_digits(spec.max_value)
    return [(place, d) for place in places(public, spec) for d in digits]


def _bit_clause(public: PaillierPublic, c: Mpz, value: int) -> Clause:
    return Clause(((Element(c, 0),), (Element(c, value),)), public.exponent_bits)


def digit_clause(public: PaillierPublic, b: Mpz, values: Digit, scale: int) -> Clause:
    """"``b`` decrypts to ``v·scale`` for one of ``values``": one branch per value."""
    return Clause(tuple((Element(b, v * scale),) for v in values), public.exponent_bits)


def _linear_bits(public: PaillierPublic, terms: int) -> int:
    return public.exponent_bits + max(terms, 1).bit_length()


def clauses(public: PaillierPublic, kind: str, spec: SlotSpec, cts: Sequence[Mpz],
            aux: Sequence[Mpz]) -> list[Clause]:
    """The statement's clauses over loaded ciphertexts and aux ciphertexts."""
    if kind == "count" and not is_range_kind(kind, spec):
        return [_bit_clause(public, cts[0], 1)]
    if kind == "histogram":
        branches = []
        for place in places(public, spec):
            branches.append(tuple(
                Element(c, place.scale if k == place.chunk else 0) for k, c in enumerate(cts)))
        return [Clause(tuple(branches), public.exponent_bits)]
    plan = aux_plan(public, kind, spec)
    out = [digit_clause(public, b, values, place.scale)
           for (place, values), b in zip(plan, aux, strict=True)]
    nsq = public.nsquare
    for k, c in enumerate(cts):
        mine = [b for (place, _), b in zip(plan, aux, strict=True) if place.chunk == k]
        out.append(Clause(((Element(_divide(c, mine, nsq), 0),),),
                          _linear_bits(public, len(mine))))
    return out


def range_clauses(public: PaillierPublic, c: Mpz, lo: int, hi: int,
                  aux: Sequence[Mpz]) -> list[Clause]:
    """Clauses for "``c`` decrypts to an integer in ``[lo, hi]``"."""
    digits = range_digits(hi - lo)
    out = [digit_clause(public, b, values, 1) for values, b in zip(digits, aux, strict=True)]
    out.append(Clause(((Element(_divide(c, aux, public.nsquare), lo % int(public.n)),),),
                      _linear_bits(public, len(aux))))
    return out


def _divide(c: Mpz, divisors: Sequence[Mpz], nsq: Mpz) -> Mpz:
    if not divisors:
        return c
    product = gmpy2.mpz(1)
    for d in divisors:
        product = product * d % nsq
    return c * gmpy2.invert(product, nsq) % nsq


def transcript(public: PaillierPublic, kind: str, spec_fields: Sequence[int],
               context: ProofContext, cts: Sequence[Mpz], aux: Sequence[Mpz]) -> list[bytes]:
    """Everything the Fiat-Shamir hash binds besides the commitments."""
    width = public.byte_length
    return [
        STATEMENT_TAG,
        int(public.n).to_bytes(width, "big"),
        public.key_id.encode(),
        *context.encoded(),
        kind.encode(),
        b",".join(str(int(x)).encode() for x in spec_fields),
        len(cts).to_bytes(4, "big"),
        *(int(c).to_bytes(width, "big") for c in cts),
        len(aux).to_bytes(4, "big"),
        *(int(b).to_bytes(width, "big") for b in aux),
    ]


def spec_fields(public: PaillierPublic, spec: SlotSpec) -> tuple[int, ...]:
    width, per = public.layout(spec)
    return (spec.count, spec.max_value, spec.max_contributors, spec.headroom, width, per)


def chunk_count(public: PaillierPublic, spec: SlotSpec) -> int:
    _, per = public.layout(spec)
    return len(chunk_slots(range(spec.count), per))
