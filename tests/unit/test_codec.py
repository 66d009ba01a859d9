"""Every wire message: one encode, one decode, round trips in JSON and CBOR, rejections."""

from __future__ import annotations

import secrets

import pytest

from blindsum.shared import codec
from blindsum.shared.codec import BatchReceipt, ReleaseRequest, Report, ReportBatch
from blindsum.shared.errors import InvalidInput, UnsupportedMediaType


def report(**changes: object) -> Report:
    fields: dict[str, object] = dict(report_id=secrets.token_bytes(16), metric="seconds",
                                     version=1, key_id="pai-1", window=1_700_000_000,
                                     ciphertexts=(b"\x01" * 256, b"\x02" * 3))
    fields.update(changes)
    return Report(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("media", codec.MEDIA_TYPES)
def test_batch_round_trips(media: str) -> None:
    batch = ReportBatch((report(), report(metric="temp")))
    raw = codec.dumps(batch.to_wire(), media)
    assert ReportBatch.from_wire(codec.loads(raw, media)) == batch


@pytest.mark.parametrize("media", codec.MEDIA_TYPES)
def test_release_request_round_trips(media: str) -> None:
    request = ReleaseRequest("seconds", 2, 3600, "pai-1", 42, b"\x07" * 32, (b"abc",), True)
    raw = codec.dumps(request.to_wire(), media)
    assert ReleaseRequest.from_wire(codec.loads(raw, media)) == request


def test_receipt_round_trips() -> None:
    receipt = BatchReceipt(3, 1)
    assert BatchReceipt.from_wire(codec.loads(codec.dumps(receipt.to_wire()))) == receipt


def test_cbor_is_smaller_than_json_for_ciphertexts() -> None:
    batch = ReportBatch(tuple(report(ciphertexts=(secrets.token_bytes(768),))
                              for _ in range(10)))
    assert len(codec.dumps(batch.to_wire(), codec.CBOR)) < 0.8 * len(codec.dumps(batch.to_wire()))


def _wire(**changes: object) -> dict:
    data = ReportBatch((report(),)).to_wire()
    data["reports"][0].update(changes)
    return codec.loads(codec.dumps(data))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": "AAAA"}, "id must be 16 bytes"),
        ({"id": "not base64!"}, "base64url"),
        ({"metric": "Bad Name"}, "metric must match"),
        ({"version": 0}, "version must be an integer"),
        ({"version": "1"}, "version must be an integer"),
        ({"window": -1}, "window must be an integer"),
        ({"kid": ""}, "kid must match"),
        ({"ct": []}, "ct must be a list of 1..64"),
        ({"ct": "abc"}, "ct must be a list"),
        ({"ct": [5]}, r"ct\[0\] must be bytes"),
        ({"extra": 1}, "unknown fields"),
    ],
)
def test_bad_report_fields_are_refused_by_name(changes: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ReportBatch.from_wire(_wire(**changes))


def test_missing_field_is_named() -> None:
    data = _wire()
    del data["reports"][0]["window"]
    with pytest.raises(InvalidInput, match=r"batch.reports\[0\].window is required"):
        ReportBatch.from_wire(data)


def test_unsupported_version_is_refused() -> None:
    data = _wire()
    data["v"] = 2
    with pytest.raises(InvalidInput, match="unsupported version"):
        ReportBatch.from_wire(data)


def test_empty_and_oversized_batches_are_refused() -> None:
    with pytest.raises(InvalidInput, match=r"1\.\.5000"):
        ReportBatch.from_wire({"v": 1, "reports": []})
    one = ReportBatch((report(),)).to_wire()["reports"][0]
    with pytest.raises(InvalidInput, match=r"1\.\.5000"):
        ReportBatch.from_wire({"v": 1, "reports": [one] * 5001})


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"[1, NaN]", b"1e999999"])
def test_malformed_json_is_invalid_input(raw: bytes) -> None:
    try:
        data = codec.loads(raw)
    except InvalidInput:
        return
    with pytest.raises(InvalidInput):
        ReportBatch.from_wire(data)


def test_malformed_cbor_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="not valid CBOR"):
        codec.loads(b"\x9f\x9f\x9f", codec.CBOR)


def test_media_type_is_negotiated_by_content_type() -> None:
    assert codec.media_type("application/json; charset=utf-8") == codec.JSON
    assert codec.media_type("application/cbor") == codec.CBOR
    with pytest.raises(UnsupportedMediaType, match="text/plain"):
        codec.media_type("text/plain")


def test_report_ids_digest_ignores_order() -> None:
    ids = [secrets.token_bytes(16) for _ in range(5)]
    assert codec.report_ids_digest(ids) == codec.report_ids_digest(list(reversed(ids)))
    assert codec.report_ids_digest(ids) != codec.report_ids_digest(ids[:4])


def test_phe_decimal_pairs_are_accepted_in_json() -> None:
    data = _wire(ct=[["123456789012345678901234567890", 0]])
    (parsed,) = ReportBatch.from_wire(data).reports
    assert parsed.ciphertexts == (123456789012345678901234567890,)
    assert codec.loads(codec.dumps(ReportBatch((parsed,)).to_wire()))["reports"][0]["ct"] == [
        ["123456789012345678901234567890", 0]]


@pytest.mark.parametrize("pair", [["12", 1], ["12"], ["-12", 0], ["1e5", 0], [12, 0],
                                  ["9" * 3000, 0], ["", 0], ["12", False]])
def test_bad_phe_pairs_are_refused(pair: list) -> None:
    with pytest.raises(InvalidInput, match="decimal ciphertext"):
        ReportBatch.from_wire(_wire(ct=[pair]))


def test_a_window_in_milliseconds_is_named_as_such() -> None:
    with pytest.raises(InvalidInput, match="looks like milliseconds: windows are unix seconds"):
        ReportBatch.from_wire(_wire(window=1_764_633_600_000))
    with pytest.raises(InvalidInput, match=r"window must be an integer in 0\.\.1099511627776"):
        ReportBatch.from_wire(_wire(window=2**40 * 1000 + 1))


def test_a_bare_decimal_ciphertext_is_named_as_such() -> None:
    digits = str(3**1200)  # 573 digits: a decimal string is also valid base64url text
    hint = r'ct\[0\] looks like a decimal ciphertext.*\["<decimal>", 0\]'
    with pytest.raises(InvalidInput, match=hint):
        ReportBatch.from_wire(_wire(ct=[digits]))
    (parsed,) = ReportBatch.from_wire(_wire(ct=[[digits, 0]])).reports
    assert parsed.ciphertexts == (3**1200,)


@pytest.mark.parametrize("version", [1.0, True, "1"])
def test_wire_version_must_be_the_integer_one(version: object) -> None:
    data = _wire()
    data["v"] = version
    with pytest.raises(InvalidInput, match="unsupported version"):
        ReportBatch.from_wire(data)


@pytest.mark.parametrize("exponent", [0.0, False])
def test_phe_exponent_must_be_the_integer_zero(exponent: object) -> None:
    with pytest.raises(InvalidInput, match="exponent 0"):
        ReportBatch.from_wire(_wire(ct=[["12345", exponent]]))


PROOF = {"v": 1, "kind": "count", "aux": [],
         "clauses": [{"e": ["AAAAAAAAAAAAAAAAAAAAAA"], "u": [["AQ"], ["Ag"]],
                      "s": [["Aw"], ["BA"]]}]}


@pytest.mark.parametrize("media", [codec.JSON, codec.CBOR])
def test_a_report_carries_its_proof_object_in_json_and_cbor(media: str) -> None:
    proven = report(proof=PROOF)
    wire = codec.loads(codec.dumps(proven.to_wire(), media), media)
    assert wire["proof"] == PROOF
    assert Report.from_wire(wire) == proven
    assert "proof" not in report().to_wire()  # absent, not null, when there is none


@pytest.mark.parametrize(("proof", "message"), [
    ([1, 2], "report.proof must be an object"),
    ("proof", "report.proof must be an object"),
    # byte strings are proof values since proofs travel raw in CBOR; a set never is
    ({"v": 1, "bad": {b"raw"}}, "report.proof must hold only JSON values"),
    ({"v": 1, "deep": [[[[[[[[[["x"]]]]]]]]]]}, "nested too deep"),
    ({"v": 1, "big": "A" * (codec.MAX_PROOF_BYTES + 1)}, "larger than"),
    ({"v": 1, "many": [0] * codec.MAX_PROOF_ITEMS}, "larger than"),
])
def test_a_proof_that_is_not_a_bounded_json_object_is_refused(proof: object,
                                                              message: str) -> None:
    wire = report().to_wire()
    wire["proof"] = proof
    with pytest.raises(InvalidInput, match=message):
        Report.from_wire(wire)
