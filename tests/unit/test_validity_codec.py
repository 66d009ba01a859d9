"""The validity proof's wire form: round trips, and every malformed shape refused by name."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from validity_kit import CONTEXT, seeded_secret

from blindsum.shared.errors import InvalidProof
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.validity import ReportProof, prove_report, verify_report

SUM = SlotSpec(count=1, max_value=100, max_contributors=100)  # digits of 8, 8 and 2 values
HIST = SlotSpec(count=3, max_value=1, max_contributors=100)


@pytest.fixture(scope="module")
def public() -> PaillierPublic:
    return seeded_secret().public


@pytest.fixture(scope="module")
def report(public: PaillierPublic) -> tuple[list[bytes], ReportProof, dict[str, Any]]:
    cts, proof = prove_report(public, "sum", SUM, [4], CONTEXT)
    return cts, proof, proof.to_json()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_round_trip_through_json_text_verifies(public: PaillierPublic, report: Any) -> None:
    cts, proof, obj = report
    back = ReportProof.from_json(json.loads(json.dumps(obj)), public, SUM, "sum")
    assert back == proof
    verify_report(public, "sum", SUM, cts, back, CONTEXT)
    assert back.to_json() == obj


def test_histogram_round_trip(public: PaillierPublic) -> None:
    _, proof = prove_report(public, "histogram", HIST, [0, 0, 1], CONTEXT)
    assert ReportProof.from_json(proof.to_json(), public, HIST, "histogram") == proof


def test_size_counts_the_binary_content(public: PaillierPublic, report: Any) -> None:
    _, proof, _ = report
    # 3 aux ciphertexts, digit clauses of 8, 8 and 2 (u, s), one linear (u, s)
    elements = 3 + 8 + 8 + 2 + 1
    assert elements * public.byte_length < proof.size() < elements * (public.byte_length + 120)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return change


_DELETE = object()
_N2 = 512  # byte length of n^2 for a 2048-bit key


def _unit_multiple(public: PaillierPublic) -> str:
    return _b64(int(public.n).to_bytes(_N2, "big"))


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("extra field", _set(("extra",), 1), "exactly the fields"),
    ("missing field", _set(("aux",), _DELETE), "exactly the fields"),
    ("version", _set(("v",), 2), "proof.v"),
    ("version bool", _set(("v",), True), "proof.v"),
    ("kind", _set(("kind",), "mean"), "proof.kind"),
    ("aux not a list", _set(("aux",), "x"), "proof.aux must be a list"),
    ("aux count", _set(("aux",), lambda a: a[:-1]), "proof.aux must have 3"),
    ("aux length", _set(("aux", 0), _b64(b"\1" * 511)), "proof.aux[0] must be 512 bytes"),
    ("aux not text", _set(("aux", 1), 7), "proof.aux[1]"),
    ("aux padded", _set(("aux", 0), lambda t: t + "=="), "proof.aux[0]"),
    ("aux bad char", _set(("aux", 0), lambda t: "+" + t[1:]), "proof.aux[0]"),
    ("aux zero", _set(("aux", 2), _b64(bytes(_N2))), "proof.aux[2] is not a unit"),
    ("aux above n^2", _set(("aux", 0), _b64(b"\xff" * _N2)), "proof.aux[0] is out of range"),
    ("clauses count", _set(("clauses",), lambda c: c[:-1]), "proof.clauses must have 4"),
    ("clause not object", _set(("clauses", 0), []), "proof.clauses[0] must be an object"),
    ("clause extra key", _set(("clauses", 0, "x"), []), "proof.clauses[0] must be an object"),
    ("e count", _set(("clauses", 1, "e"), []), "proof.clauses[1].e must have 7"),
    ("e on a linear clause", _set(("clauses", 3, "e"), ["AAAAAAAAAAAAAAAAAAAAAA"]),
     "proof.clauses[3].e must have 0"),
    ("e length", _set(("clauses", 0, "e", 0), _b64(bytes(17))), "proof.clauses[0].e[0] must be 16"),
    ("u branches", _set(("clauses", 0, "u"), lambda u: u[:1]), "proof.clauses[0].u must have 8"),
    ("u ragged", _set(("clauses", 2, "u", 1), lambda r: r * 2),
     "proof.clauses[2].u[1] must have 1"),
    ("u not a list", _set(("clauses", 2, "u", 1), "x"), "proof.clauses[2].u[1] must be a list"),
    ("u shares a factor with n", None, "proof.clauses[0].u[1][0] is not a unit"),
    ("s not text", _set(("clauses", 0, "s", 0, 0), 12), "proof.clauses[0].s[0][0]"),
    ("s leading zero", _set(("clauses", 0, "s", 0, 0), lambda t: _b64(b"\0" + _raw(t))),
     "proof.clauses[0].s[0][0] must be a minimal"),
    ("s empty", _set(("clauses", 0, "s", 0, 0), ""), "proof.clauses[0].s[0][0] must be a minimal"),
    ("s too long", _set(("clauses", 3, "s", 0, 0), _b64(b"\x01" + bytes(200))),
     "proof.clauses[3].s[0][0] is not below"),
    ("not an object", lambda obj: obj.clear(), "exactly the fields"),
]


def _raw(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize(("name", "change", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_proof_is_refused_naming_the_field(public: PaillierPublic, report: Any,
                                                     name: str, change: Any,
                                                     message: str) -> None:
    _, _, obj = report
    bad = copy.deepcopy(obj)
    if change is None:
        bad["clauses"][0]["u"][1][0] = _unit_multiple(public)
    else:
        change(bad)
    with pytest.raises(InvalidProof, match=re.escape(message)):
        ReportProof.from_json(bad, public, SUM, "sum")
    assert obj == report[2]  # nothing changed in the original


@pytest.mark.parametrize("obj", [None, [], "proof", 3])
def test_non_object_is_refused(public: PaillierPublic, obj: Any) -> None:
    with pytest.raises(InvalidProof, match="JSON object"):
        ReportProof.from_json(obj, public, SUM, "sum")


def test_a_proof_for_another_key_size_is_refused(public: PaillierPublic, report: Any) -> None:
    _, proof, _ = report
    with pytest.raises(InvalidProof, match=r"proof\.width"):
        verify_report(public, "sum", SUM, report[0], dataclasses.replace(proof, width=768),
                      CONTEXT)
