"""docs/INTEROP.md's proof recipe (plain phe + hashlib) makes proofs our verifier accepts,
for every kind and layout, and cannot prove what is not true."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import phe
import pytest

from blindsum.shared.errors import InvalidProof
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.validity import ProofContext, ReportProof, verify_report

DOC = Path(__file__).parents[2] / "docs" / "INTEROP.md"


@pytest.fixture(scope="module")
def recipe() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (block,) = [b for b in blocks if "proven report recipe" in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


def layout_of(public: PaillierPublic, spec: SlotSpec) -> dict[str, int]:
    width, per = public.layout(spec)
    return {"slots": spec.count, "slot_max": spec.max_value,
            "max_contributors": spec.max_contributors, "headroom": spec.headroom,
            "width": width, "per": per, "exponent_bits": public.exponent_bits}


def recipe_report(recipe: dict[str, Any], public: PaillierPublic, kind: str, spec: SlotSpec,
                  slots: list[int]) -> tuple[dict[str, Any], ProofContext]:
    prover = recipe["Prover"](phe.PaillierPublicKey(int(public.n)), layout_of(public, spec))
    report = recipe["proven_report"](prover, {"kind": kind, "name": "m", "version": 3},
                                     {"kid": public.key_id}, slots, 7200)
    report_id = base64.urlsafe_b64decode(report["id"] + "==")
    return report, ProofContext("m", 3, 7200, public.key_id, report_id)


def check(public: PaillierPublic, kind: str, spec: SlotSpec, report: dict[str, Any],
          context: ProofContext) -> None:
    ciphertexts = public.dump([int(c) for c, _ in report["ct"]])
    proof = ReportProof.from_json(report["proof"], public, spec, kind)
    verify_report(public, kind, spec, ciphertexts, proof, context)


CASES = [
    ("count", SlotSpec(1, 1, 1000), [1]),
    ("count", SlotSpec(1, 1, 1000), [0]),
    ("count", SlotSpec(1, 5, 100), [4]),  # a count of up to 5: proven as a range
    ("histogram", SlotSpec(7, 1, 1000), [0, 0, 0, 1, 0, 0, 0]),
    ("sum", SlotSpec(1, 600, 1000), [599]),
    ("mean", SlotSpec(1, 4095, 10), [0]),
    ("vector", SlotSpec(4, 30, 100), [3, 0, 30, 7]),
]


@pytest.mark.parametrize(("kind", "spec", "slots"), CASES)
def test_recipe_proofs_verify(recipe, paillier_secret, kind, spec, slots) -> None:
    public = paillier_secret.public
    report, context = recipe_report(recipe, public, kind, spec, slots)
    check(public, kind, spec, report, context)
    assert paillier_secret.decrypt(public.dump([int(c) for c, _ in report["ct"]]),
                                   spec) == slots


def test_recipe_reports_span_several_plaintexts(recipe, paillier_secret) -> None:
    public = paillier_secret.public
    spec = SlotSpec(120, 1, 2**40)  # 41-bit slots: more buckets than one plaintext holds
    _, per = public.layout(spec)
    assert per < spec.count
    slots = [0] * spec.count
    slots[-1] = 1
    report, context = recipe_report(recipe, public, "histogram", spec, slots)
    assert len(report["ct"]) == -(-spec.count // per)
    check(public, "histogram", spec, report, context)


def test_a_recipe_proof_of_another_ciphertext_is_refused(recipe, paillier_secret) -> None:
    public = paillier_secret.public
    spec = SlotSpec(1, 1, 1000)
    report, context = recipe_report(recipe, public, "count", spec, [1])
    forged, _ = recipe_report(recipe, public, "count", spec, [1])
    report["ct"] = forged["ct"]  # the proof is of another ciphertext
    with pytest.raises(InvalidProof):
        check(public, "count", spec, report, context)
