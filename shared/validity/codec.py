"""The validity proof's typed wire object: one ``to_json``, one strict ``from_json``.

Wire form (``to_wire``: byte strings as bytes, so CBOR carries them raw; ``shared/codec.py``'s
JSON encoding spells each as unpadded base64url, which ``to_json`` gives directly)::

    {"v": 1, "kind": "histogram",
     "aux": [<byte_length(n^2) bytes>, ...],            # range kinds: one per slot and bit
     "clauses": [{"e": [<16 bytes>, ...],                # branch challenges but the last
                  "u": [[<byte_length(n^2) bytes>, ...], ...],   # per branch, per conjunct
                  "s": [[<minimal big-endian unsigned>, ...], ...]}, ...]}

The compact form (``sigma.compact``) adds ``"form": "compact"`` and its clauses carry every
branch's challenge and no commitments: ``{"e": [<16 bytes> x branches], "s": [[...], ...]}``.
The batched form is spelled by the field's absence, so each proof still has one spelling.

Group elements and challenges have fixed lengths; a response is the minimal big-endian
encoding of an integer below its clause's bound (no leading zero byte), so every proof has
exactly one spelling. ``from_json`` takes the public key, spec and kind and checks every
count, length and range against the statement's shape, and that every aux ciphertext and
commitment is a unit below ``n^2``, raising ``InvalidProof`` that names the field
(``proof.clauses[2].u[0][1]``). ``check_proof`` applies the same checks to a proof object
built in code, so ``verify_report`` never trusts either.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gmpy2

from ..errors import InvalidProof
from ..schemes.base import SlotSpec
from ..schemes.paillier import PaillierPublic
from . import statements
from .sigma import CHALLENGE_BITS, ClauseProof, CompactClauseProof, response_bits

WIRE_VERSION = 1
BATCHED = "batched"
COMPACT = "compact"
FORMS = (BATCHED, COMPACT)
_B64 = re.compile(r"[A-Za-z0-9_-]*")
_CHALLENGE_BYTES = CHALLENGE_BITS // 8


@dataclass(frozen=True)
class ReportProof:
    """A validity proof: aux ciphertexts (range kinds) and one ``ClauseProof`` per clause.

    ``width`` is the byte length of ``n^2`` under the proof's key (group elements' size).
    """

    kind: str
    width: int
    aux: tuple[int, ...]
    clauses: tuple[ClauseProof, ...] | tuple[CompactClauseProof, ...]
    form: str = BATCHED

    def to_wire(self) -> dict[str, Any]:
        """The proof with raw byte strings: CBOR carries them as they are (a quarter smaller
        than base64 text), JSON as base64url (``shared.codec.dumps``)."""
        width = self.width
        clauses = []
        for c in self.clauses:
            item: dict[str, Any] = {"e": [e.to_bytes(_CHALLENGE_BYTES, "big")
                                          for e in c.challenges]}
            if isinstance(c, ClauseProof):
                item["u"] = [[int(u).to_bytes(width, "big") for u in branch]
                             for branch in c.commitments]
            item["s"] = [[_minimal(s) for s in branch] for branch in c.responses]
            clauses.append(item)
        wire: dict[str, Any] = {"v": WIRE_VERSION, "kind": self.kind}
        if self.form == COMPACT:
            wire["form"] = COMPACT
        wire["aux"] = [int(b).to_bytes(width, "big") for b in self.aux]
        wire["clauses"] = clauses
        return wire

    def to_json(self) -> dict[str, Any]:
        """The JSON form: every byte string as unpadded base64url text."""
        return _as_text(self.to_wire())

    @classmethod
    def from_json(cls, obj: object, public: PaillierPublic, spec: SlotSpec,
                  kind: str) -> ReportProof:
        """Parse and check a proof for ``kind``/``spec`` under ``public`` (``InvalidProof``)."""
        shape = Shape.of(public, kind, spec)
        return _parse(obj, public, shape, FORMS)

    @classmethod
    def from_json_shape(cls, obj: object, public: PaillierPublic, shape: Shape) -> ReportProof:
        """Parse and check a batched proof that must have ``shape`` (e.g. ``SlotLayout``'s)."""
        return _parse(obj, public, shape, (BATCHED,))

    def size(self) -> int:
        """Bytes of the proof's binary content (what CBOR would carry, framing aside)."""
        width = self.width
        total = width * len(self.aux)
        for c in self.clauses:
            total += _CHALLENGE_BYTES * len(c.challenges)
            if isinstance(c, ClauseProof):
                total += sum(width * len(b) for b in c.commitments)
            total += sum(len(_minimal(s)) for b in c.responses for s in b)
        return total


@dataclass(frozen=True)
class Shape:
    """What a proof for one statement must look like: kind, aux count, and per clause
    ``(branches, conjuncts, response bits)``."""

    kind: str
    aux: int
    clauses: tuple[tuple[int, int, int], ...]

    @classmethod
    def of(cls, public: PaillierPublic, kind: str, spec: SlotSpec) -> Shape:
        statements.check_kind(kind, spec)
        chunks = statements.chunk_count(public, spec)
        bits = public.exponent_bits
        if kind == "count" and not statements.is_range_kind(kind, spec):
            return cls(kind, 0, ((2, 1, response_bits(bits)),))
        if kind == "histogram":
            return cls(kind, 0, ((spec.count, chunks, response_bits(bits)),))
        plan = statements.aux_plan(public, kind, spec)
        linear = []
        for k in range(chunks):
            terms = sum(1 for place, _ in plan if place.chunk == k)
            linear.append((1, 1, response_bits(statements._linear_bits(public, terms))))
        digits = tuple((len(values), 1, response_bits(bits)) for _, values in plan)
        return cls(kind, len(plan), digits + tuple(linear))

    @classmethod
    def of_range(cls, public: PaillierPublic, lo: int, hi: int) -> Shape:
        digits = statements.range_digits(hi - lo)
        terms = len(digits)
        bits = response_bits(public.exponent_bits)
        linear = (1, 1, response_bits(statements._linear_bits(public, terms)))
        return cls(statements.RANGE_KIND, terms,
                   (*((len(values), 1, bits) for values in digits), linear))


def check_proof(proof: object, public: PaillierPublic, shape: Shape,
                forms: tuple[str, ...] = (BATCHED,)) -> ReportProof:
    """The checks ``from_json`` makes, on a proof object (``InvalidProof`` naming the field).
    ``forms``: the wire forms the caller verifies (reports: both; ranges and slots:
    batched)."""
    if not isinstance(proof, ReportProof):
        raise InvalidProof("proof must be a ReportProof")
    if proof.width != public.byte_length:
        raise InvalidProof(f"proof.width is {proof.width}, expected {public.byte_length}")
    if proof.kind != shape.kind:
        raise InvalidProof(f'proof.kind is "{proof.kind}", expected "{shape.kind}"')
    if proof.form not in forms:
        raise InvalidProof(f"proof.form must be one of {list(forms)}")
    compact = proof.form == COMPACT
    _check_list(proof.aux, shape.aux, "proof.aux", tuple)
    for i, b in enumerate(proof.aux):
        _check_unit(b, public, f"proof.aux[{i}]")
    _check_list(proof.clauses, len(shape.clauses), "proof.clauses", tuple)
    for i, (clause, (branches, conjuncts, bits)) in enumerate(zip(proof.clauses,
                                                                  shape.clauses, strict=True)):
        where = f"proof.clauses[{i}]"
        expected = CompactClauseProof if compact else ClauseProof
        if not isinstance(clause, expected):
            raise InvalidProof(f"{where} must be a {expected.__name__}")
        _check_list(clause.challenges, branches if compact else branches - 1, f"{where}.e",
                    tuple)
        for j, e in enumerate(clause.challenges):
            _check_int(e, 1 << CHALLENGE_BITS, f"{where}.e[{j}]")
        named: list[tuple[str, Any]] = [("s", clause.responses)]
        if isinstance(clause, ClauseProof):
            named.insert(0, ("u", clause.commitments))
        for name, rows in named:
            _check_list(rows, branches, f"{where}.{name}", tuple)
            for b, row in enumerate(rows):
                _check_list(row, conjuncts, f"{where}.{name}[{b}]", tuple)
                for j, value in enumerate(row):
                    field = f"{where}.{name}[{b}][{j}]"
                    if name == "u":
                        _check_unit(value, public, field)
                    else:
                        _check_int(value, 1 << bits, field)
    return proof


def _parse(obj: object, public: PaillierPublic, shape: Shape,
           forms: tuple[str, ...]) -> ReportProof:
    if not isinstance(obj, Mapping):
        raise InvalidProof("proof must be a JSON object")
    keys = set(obj)
    compact = "form" in obj
    if keys != {"v", "kind", "aux", "clauses"} | ({"form"} if compact else set()):
        raise InvalidProof(f"proof must have exactly the fields v, kind, aux, clauses (and "
                           f"form, for a compact proof); got {sorted(map(str, keys))}")
    if compact and obj["form"] != COMPACT:
        raise InvalidProof(f'proof.form must be "{COMPACT}" (a batched proof has no form)')
    if obj["v"] != WIRE_VERSION or isinstance(obj["v"], bool):
        raise InvalidProof(f"proof.v must be {WIRE_VERSION}")
    if obj["kind"] != shape.kind:
        raise InvalidProof(f'proof.kind must be "{shape.kind}"')
    width = public.byte_length
    aux = _list(obj["aux"], shape.aux, "proof.aux")
    aux_values = tuple(_fixed(text, width, f"proof.aux[{i}]") for i, text in enumerate(aux))
    clauses = []
    for i, item in enumerate(_list(obj["clauses"], len(shape.clauses), "proof.clauses")):
        where = f"proof.clauses[{i}]"
        branches, conjuncts, bits = shape.clauses[i]
        fields = {"e", "s"} if compact else {"e", "u", "s"}
        if not isinstance(item, Mapping) or set(item) != fields:
            raise InvalidProof(f"{where} must be an object with exactly "
                               f"{', '.join(sorted(fields))}")
        count = branches if compact else branches - 1
        es = tuple(_fixed(t, _CHALLENGE_BYTES, f"{where}.e[{j}]")
                   for j, t in enumerate(_list(item["e"], count, f"{where}.e")))
        us = () if compact else tuple(
            tuple(_fixed(t, width, f"{where}.u[{b}][{j}]")
                  for j, t in enumerate(_list(row, conjuncts, f"{where}.u[{b}]")))
            for b, row in enumerate(_list(item["u"], branches, f"{where}.u")))
        ss = tuple(
            tuple(_response(t, bits, f"{where}.s[{b}][{j}]")
                  for j, t in enumerate(_list(row, conjuncts, f"{where}.s[{b}]")))
            for b, row in enumerate(_list(item["s"], branches, f"{where}.s")))
        clauses.append(CompactClauseProof(es, ss) if compact else ClauseProof(es, us, ss))
    proof = ReportProof(shape.kind, width, aux_values, tuple(clauses),  # type: ignore[arg-type]
                        COMPACT if compact else BATCHED)
    return check_proof(proof, public, shape, forms)


def _list(value: object, length: int, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidProof(f"{field} must be a list")
    if len(value) != length:
        raise InvalidProof(f"{field} must have {length} items, got {len(value)}")
    return value


def _check_list(value: object, length: int, field: str, kind: type) -> None:
    if not isinstance(value, kind | list):
        raise InvalidProof(f"{field} must be a sequence")
    if len(value) != length:  # type: ignore[arg-type]
        raise InvalidProof(f"{field} must have {length} items, got {len(value)}")  # type: ignore[arg-type]


def _check_int(value: object, bound: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | gmpy2.mpz):
        raise InvalidProof(f"{field} must be an integer")
    if not 0 <= value < bound:
        raise InvalidProof(f"{field} is out of range")


def _check_unit(value: object, public: PaillierPublic, field: str) -> None:
    _check_int(value, public.nsquare, field)
    if value == 0 or gmpy2.gcd(value, public.n) != 1:
        raise InvalidProof(f"{field} is not a unit mod n^2")


def _as_text(value: Any) -> Any:
    if isinstance(value, bytes):
        return _b64(value)
    if isinstance(value, dict):
        return {k: _as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    return value


def _bytes(text: object, field: str) -> bytes:
    if isinstance(text, bytes):  # CBOR's raw byte string
        return text
    if not isinstance(text, str) or not _B64.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidProof(f"{field} must be bytes (CBOR) or unpadded base64url text")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidProof(f"{field} is not valid base64url") from None
    if _b64(raw) != text:
        raise InvalidProof(f"{field} is not canonical base64url")
    return raw


def _fixed(text: object, length: int, field: str) -> int:
    raw = _bytes(text, field)
    if len(raw) != length:
        raise InvalidProof(f"{field} must be {length} bytes, got {len(raw)}")
    return int.from_bytes(raw, "big")


def _response(text: object, bits: int, field: str) -> int:
    raw = _bytes(text, field)
    if not raw or (raw[0] == 0 and len(raw) > 1):
        raise InvalidProof(f"{field} must be a minimal big-endian integer")
    value = int.from_bytes(raw, "big")
    if value >> bits:
        raise InvalidProof(f"{field} is not below 2^{bits}")
    return value


def _minimal(value: int) -> bytes:
    return int(value).to_bytes(max(1, (int(value).bit_length() + 7) // 8), "big")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
