"""The release result as a typed message: one encode, one decode, strict rejections."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindsum.shared import codec
from blindsum.shared.codec import ReleaseResult
from blindsum.shared.errors import InvalidInput


def payload(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "blindsum.release", "v": 1, "metric": "screen_load_ms", "version": 2,
        "kind": "histogram", "scheme": "paillier", "window": 1_700_000_000,
        "window_seconds": 3600, "kid": "pai-1", "report_count": 40,
        "report_ids_digest": "ab" * 32, "request_digest": "cd" * 32,
        "value": [0.0, 12.0, 28.0], "noisy_value": [-2.5, 12.0, 30.5],
        "ci": [[0.0, 4.0], [7.5, 16.5], [26.0, 35.0]], "confidence": 0.95,
        "consistent": True, "mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-7,
        "rho": 0.02, "scale": 2.3, "released_at": 1_700_003_700.5, "audit_seq": 9,
        "audit_head": "ef" * 32, "threshold": True,
    }
    data.update(changes)
    return data


SCALAR = {"kind": "mean", "value": 31.5, "noisy_value": 31.4, "ci": [29.0, 33.8],
          "threshold": False}


@pytest.mark.parametrize("changes", [{}, SCALAR])
@pytest.mark.parametrize("media", codec.MEDIA_TYPES)
def test_round_trips_through_both_media(changes: dict[str, Any], media: str) -> None:
    original = payload(**changes)
    if not original["threshold"]:
        del original["threshold"]  # a single-key payload does not carry the flag
    result = ReleaseResult.from_json(original)
    assert result.to_json() == original
    again = codec.loads(codec.dumps(result.to_json(), media), media)
    assert ReleaseResult.from_json(again) == result


def test_older_payloads_read_with_the_defaults_they_meant() -> None:
    older = payload(**SCALAR)
    for field in ("noisy_value", "consistent", "threshold"):
        del older[field]
    result = ReleaseResult.from_json({**older, "rho": None})
    assert result.noisy_value == result.value == 31.5
    assert result.consistent and not result.threshold and result.rho is None


@pytest.mark.parametrize("changes,field", [
    ({"type": "blindsum.partial-release"}, "type"),
    ({"v": 2}, "version"),
    ({"kind": "median"}, "kind"),
    ({"scheme": "rsa"}, "scheme"),
    ({"metric": "Has Spaces"}, "metric"),
    ({"version": 0}, "version"),
    ({"window": -1}, "window"),
    ({"window_seconds": 0}, "window_seconds"),
    ({"kid": ""}, "kid"),
    ({"report_count": 0}, "report_count"),
    ({"report_count": True}, "report_count"),
    ({"report_ids_digest": "AB" * 32}, "report_ids_digest"),
    ({"request_digest": "cd" * 31}, "request_digest"),
    ({"value": 3.0}, "value"),
    ({"value": [1.0, float("nan"), 2.0]}, "value"),
    ({"value": []}, "value"),
    ({"value": ["1", 2.0, 3.0]}, "value"),
    ({"noisy_value": [1.0, 2.0]}, "noisy_value"),
    ({"ci": [[0.0, 4.0]]}, "ci"),
    ({"ci": [[4.0, 0.0], [7.5, 16.5], [26.0, 35.0]]}, "ci[0]"),
    ({"ci": [[0.0, 4.0], [7.5], [26.0, 35.0]]}, "ci[1]"),
    ({"confidence": 0.0}, "confidence"),
    ({"confidence": 1.5}, "confidence"),
    ({"consistent": "yes"}, "consistent"),
    ({"mechanism": "Gaussian!"}, "mechanism"),
    ({"epsilon": 0.0}, "epsilon"),
    ({"epsilon": float("inf")}, "epsilon"),
    ({"delta": -1e-9}, "delta"),
    ({"rho": "0.1"}, "rho"),
    ({"scale": 0}, "scale"),
    ({"released_at": -1.0}, "released_at"),
    ({"audit_seq": -1}, "audit_seq"),
    ({"audit_head": "x"}, "audit_head"),
    ({"threshold": 1}, "threshold"),
    ({"extra": 1}, "unknown fields"),
])
def test_malformed_fields_are_refused_by_name(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput, match=field.replace("[", r"\[").replace("]", r"\]")):
        ReleaseResult.from_json(payload(**changes))


@pytest.mark.parametrize("missing", ["metric", "value", "ci", "epsilon", "audit_head"])
def test_a_missing_required_field_is_named(missing: str) -> None:
    data = payload()
    del data[missing]
    with pytest.raises(InvalidInput, match=f"{missing} is required"):
        ReleaseResult.from_json(data)


@pytest.mark.parametrize("shape", [None, [], "payload", 3])
def test_a_non_object_is_refused(shape: object) -> None:
    with pytest.raises(InvalidInput, match="must be an object"):
        ReleaseResult.from_json(shape)


numbers = st.floats(-1e9, 1e9, allow_nan=False)


@given(st.lists(st.tuples(numbers, numbers, st.floats(0, 1e6)), min_size=1, max_size=12))
def test_any_well_formed_vector_result_round_trips_through_json(
        slots: list[tuple[float, float, float]]) -> None:
    data = payload(kind="vector", value=[v for v, _, _ in slots],
                   noisy_value=[n for _, n, _ in slots],
                   ci=[[n - w, n + w] for _, n, w in slots])
    result = ReleaseResult.from_json(json.loads(json.dumps(data)))
    assert ReleaseResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_a_result_says_who_added_noise_and_refuses_anything_else() -> None:
    base = payload()
    assert "noise_parties" not in base and ReleaseResult.from_json(base).noise_parties == ()
    both = payload(noise_parties=["keyholder", "server"])
    parsed = ReleaseResult.from_json(both)
    assert parsed.noise_parties == ("keyholder", "server") and parsed.to_json() == both
    for bad in (["server"], ["server", "keyholder"], "both", [], ["keyholder", "keyholder"]):
        with pytest.raises(InvalidInput, match="noise_parties"):
            ReleaseResult.from_json(payload(noise_parties=bad))
