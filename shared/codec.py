"""The one versioned wire codec: every message has one encode and one decode.

Messages are frozen dataclasses. ``to_wire`` turns one into plain data (dicts, lists, str,
int, bool, bytes); ``dumps`` serialises that as JSON (bytes become base64url strings without
padding, as in JOSE) or CBOR (bytes stay raw, roughly 25% smaller), chosen by content type.
``loads`` and each message's ``from_wire`` are strict: unknown versions, missing or extra
fields, wrong types and oversized collections are refused with ``InvalidInput`` naming the
field, before anything is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from blindsum.shared.errors import InvalidInput, UnsupportedMediaType
from blindsum.shared.policy import MAX_SLOTS as MAX_RESULT_SLOTS

WIRE_VERSION = 1
JSON = "application/json"
CBOR = "application/cbor"
MEDIA_TYPES = (JSON, CBOR)

REPORT_ID_BYTES = 16
DIGEST_BYTES = 32
MAX_BATCH_REPORTS = 5000
# proofs make forwarded reports large (a 40-bucket histogram's is ~47 KB of JSON)
MAX_FORWARDED_REPORTS = 500
MAX_CIPHERTEXTS = 64
MAX_CIPHERTEXT_BYTES = 1 << 20
# 4096-bit keys: n^2 has 8192 bits, 2467 decimal digits; the bound stops int() from
# spending quadratic time on a hostile megabyte of digits.
MAX_DECIMAL_DIGITS = 2500
# A validity proof's JSON object (shared/validity/codec.py), bounded before its content is
# checked: an 8-dim vector in 0..1000 at 3072 bits is ~270 KB, a 40-bucket histogram ~47 KB;
# the bound leaves room for big range proofs (~13 MB for 64 slots in 0..2^40), and the
# body limit (max_body_bytes) applies first anyway.
MAX_PROOF_BYTES = 16 << 20
MAX_PROOF_ITEMS = 1 << 17
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
# Windows are unix seconds below 2^40 (year 36812). A value past that but below 2^40 * 1000
# is most likely a JavaScript or Java timestamp in milliseconds: say so instead of a range.
MAX_WINDOW = 2**40
# A base64url ciphertext of hundreds of bytes made only of digits has probability below
# (10/64)^400; such a string is a decimal ciphertext sent bare instead of as phe's pair.
DECIMAL_LOOKALIKE_CHARS = 400
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str, field: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise InvalidInput(f"{field} must be base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field} is not valid base64url") from None


def media_type(content_type: str | None) -> str:
    """The codec's media type for a Content-Type header (parameters ignored)."""
    base = (content_type or "").split(";")[0].strip().lower()
    if base not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type must be {JSON} or {CBOR}, got {content_type or 'none'!r}"
        )
    return base


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return b64encode(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def dumps(data: Any, media: str = JSON) -> bytes:
    """Serialise wire data (from ``to_wire``) in ``media``."""
    if media == CBOR:
        return cbor2.dumps(data)
    return json.dumps(_jsonable(data), separators=(",", ":"), allow_nan=False).encode()


def loads(raw: bytes, media: str = JSON) -> Any:
    """Parse a body; raise ``InvalidInput`` for anything that is not well-formed."""
    try:
        if media == CBOR:
            return cbor2.loads(raw)
        return json.loads(raw)
    except (ValueError, TypeError, cbor2.CBORDecodeError, RecursionError) as exc:
        kind = "CBOR" if media == CBOR else "JSON"
        raise InvalidInput(f"body is not valid {kind}: {str(exc)[:120]}") from None


class _Fields:
    """Strict reader of one wire object; every error names the message and field."""

    def __init__(self, data: Any, message: str, allowed: set[str]) -> None:
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{message} must be an object")
        extra = set(data) - allowed - {"v"}
        if extra:
            raise InvalidInput(f"{message} has unknown fields {sorted(map(str, extra))}")
        version = data.get("v", WIRE_VERSION)
        if type(version) is not int or version != WIRE_VERSION:  # 1.0 and true are not 1
            raise InvalidInput(f"{message} has unsupported version {data.get('v')!r}")
        self.data = data
        self.message = message

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise InvalidInput(f"{self.message}.{key} is required")
        return self.data[key]

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInput(f"{self.message}.{key} must be an integer in {low}..{high}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise InvalidInput(f"{self.message}.{key} must be true or false")
        return value

    def text(self, key: str, pattern: re.Pattern[str]) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not pattern.match(value):
            raise InvalidInput(f"{self.message}.{key} must match {pattern.pattern}")
        return value

    def blob(self, key: str, value: Any, size: int | None = None, limit: int = 0) -> bytes:
        if isinstance(value, str):
            value = b64decode(value, f"{self.message}.{key}")
        if not isinstance(value, bytes):
            raise InvalidInput(f"{self.message}.{key} must be bytes or base64url text")
        if size is not None and len(value) != size:
            raise InvalidInput(f"{self.message}.{key} must be {size} bytes, got {len(value)}")
        if limit and len(value) > limit:
            raise InvalidInput(f"{self.message}.{key} is larger than {limit} bytes")
        return value

    def blobs(self, key: str) -> tuple[bytes, ...]:
        value = self.get(key)
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_CIPHERTEXTS:
            raise InvalidInput(f"{self.message}.{key} must be a list of 1..{MAX_CIPHERTEXTS}")
        return tuple(
            self.blob(f"{key}[{i}]", item, limit=MAX_CIPHERTEXT_BYTES)
            for i, item in enumerate(value)
        )

    def ciphertexts(self, key: str) -> tuple[bytes | int, ...]:
        """Binary ciphertexts, or python-paillier's JSON pairs ``["<decimal>", 0]``.

        phe serialises an EncryptedNumber as ``(str(ciphertext), exponent)``; our slots are
        integers, so the exponent must be 0. Such a ciphertext comes out as a Python int and
        the Paillier scheme range-checks it like any other.
        """
        value = self.get(key)
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_CIPHERTEXTS:
            raise InvalidInput(f"{self.message}.{key} must be a list of 1..{MAX_CIPHERTEXTS}")
        out: list[bytes | int] = []
        for index, item in enumerate(value):
            where = f"{self.message}.{key}[{index}]"
            if isinstance(item, list):
                out.append(_phe_pair(item, where))
            elif _bare_decimal(item):
                raise InvalidInput(
                    f"{where} looks like a decimal ciphertext: send it as python-paillier's "
                    f'pair ["<decimal>", 0], or as base64url of its big-endian bytes')
            else:
                out.append(self.blob(f"{key}[{index}]", item, limit=MAX_CIPHERTEXT_BYTES))
        return tuple(out)

    def window(self, key: str) -> int:
        """A window start in unix seconds; a millisecond timestamp is named as such."""
        value = self.get(key)
        if type(value) is int and MAX_WINDOW < value <= MAX_WINDOW * 1000:
            raise InvalidInput(
                f"{self.message}.{key} {value} looks like milliseconds: windows are unix "
                f"seconds (a multiple of the metric's window_seconds)")
        return self.integer(key, 0, MAX_WINDOW)


def _bare_decimal(item: Any) -> bool:
    return (isinstance(item, str) and len(item) >= DECIMAL_LOOKALIKE_CHARS
            and item.isascii() and item.isdigit())


def _phe_pair(item: list[Any], where: str) -> int:
    if len(item) != 2 or not isinstance(item[0], str) or type(item[1]) is not int or item[1]:
        raise InvalidInput(f'{where} must be ["<decimal ciphertext>", 0] (exponent 0)')
    digits = item[0]
    if not 0 < len(digits) <= MAX_DECIMAL_DIGITS or not digits.isascii() or not digits.isdigit():
        raise InvalidInput(f"{where} must hold a decimal ciphertext of at most "
                           f"{MAX_DECIMAL_DIGITS} digits")
    return int(digits)


@dataclass(frozen=True)
class Report:
    """One encrypted report of one metric for one window.

    ``report_id`` is 16 random bytes chosen by the client: a retry reuses it, so the server
    counts a report once however often it arrives.
    """

    report_id: bytes
    metric: str
    version: int
    key_id: str
    window: int
    ciphertexts: tuple[bytes | int, ...]
    proof: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "id": self.report_id,
            "metric": self.metric,
            "version": self.version,
            "kid": self.key_id,
            "window": self.window,
            "ct": [[str(c), 0] if isinstance(c, int) else c for c in self.ciphertexts],
        }
        if self.proof is not None:
            wire["proof"] = self.proof
        return wire

    @classmethod
    def from_wire(cls, data: Any, where: str = "report") -> Report:
        fields = _Fields(data, where, {"id", "metric", "version", "kid", "window", "ct",
                                       "proof"})
        return cls(
            report_id=fields.blob("id", fields.get("id"), size=REPORT_ID_BYTES),
            metric=fields.text("metric", _NAME),
            version=fields.integer("version", 1, 2**31 - 1),
            key_id=fields.text("kid", KEY_ID_PATTERN),
            window=fields.window("window"),
            ciphertexts=fields.ciphertexts("ct"),
            proof=_proof_object(data.get("proof"), f"{where}.proof"),
        )


def proof_size(proof: Any) -> int:
    """Bytes a proof object holds (its strings and byte strings), near its encoded length."""
    if isinstance(proof, str | bytes):
        return len(proof)
    if isinstance(proof, Mapping):
        return sum(len(str(k)) + proof_size(v) for k, v in proof.items())
    if isinstance(proof, list):
        return sum(proof_size(v) for v in proof)
    return 8


def _proof_object(value: Any, where: str) -> dict[str, Any] | None:
    """A proof's outer form only: an object of JSON values within ``MAX_PROOF_BYTES`` and
    ``MAX_PROOF_ITEMS``. Its content needs the key and the metric's spec, so it is checked
    at ingest (``validity.ReportProof.from_json``)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where} must be an object")
    budget = [MAX_PROOF_ITEMS, MAX_PROOF_BYTES]
    _bounded(value, budget, where, depth=0)
    return dict(value)


def _bounded(value: Any, budget: list[int], where: str, depth: int) -> None:
    # iterative bounds would be no shorter; the depth cap keeps the recursion shallow
    budget[0] -= 1
    if budget[0] < 0 or depth > 8:
        raise InvalidInput(f"{where} is larger than {MAX_PROOF_ITEMS} items or nested too deep")
    if isinstance(value, str | bytes):
        budget[1] -= len(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where} has a non-text key")
            budget[1] -= len(key)
            _bounded(item, budget, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _bounded(item, budget, where, depth + 1)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{where} must hold only JSON values")
    if budget[1] < 0:
        raise InvalidInput(f"{where} is larger than {MAX_PROOF_BYTES} bytes")


@dataclass(frozen=True)
class ReportBatch:
    reports: tuple[Report, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"v": WIRE_VERSION, "reports": [r.to_wire() for r in self.reports]}

    @classmethod
    def from_wire(cls, data: Any) -> ReportBatch:
        fields = _Fields(data, "batch", {"reports"})
        reports = fields.get("reports")
        if not isinstance(reports, list) or not 1 <= len(reports) <= MAX_BATCH_REPORTS:
            raise InvalidInput(f"batch.reports must be a list of 1..{MAX_BATCH_REPORTS} reports")
        return cls(
            tuple(Report.from_wire(r, f"batch.reports[{i}]") for i, r in enumerate(reports))
        )


@dataclass(frozen=True)
class WindowReports:
    """A batch of one window's reports, forwarded by the server to a threshold key-holder,
    which verifies each report again and keeps its own aggregate and count."""

    metric: str
    version: int
    window: int
    key_id: str
    reports: tuple[Report, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"v": WIRE_VERSION, "metric": self.metric, "version": self.version,
                "window": self.window, "kid": self.key_id,
                "reports": [r.to_wire() for r in self.reports]}

    @classmethod
    def from_wire(cls, data: Any) -> WindowReports:
        fields = _Fields(data, "window reports", {"metric", "version", "window", "kid",
                                                  "reports"})
        metric, version = fields.text("metric", _NAME), fields.integer("version", 1, 2**31 - 1)
        window, key_id = fields.integer("window", 0, 2**40), fields.text("kid", KEY_ID_PATTERN)
        raw = fields.get("reports")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FORWARDED_REPORTS:
            raise InvalidInput(
                f"window reports.reports must be a list of 1..{MAX_FORWARDED_REPORTS} reports")
        reports = tuple(Report.from_wire(r, f"window reports.reports[{i}]")
                        for i, r in enumerate(raw))
        for index, report in enumerate(reports):
            if (report.metric, report.version, report.window, report.key_id) != \
                    (metric, version, window, key_id):
                raise InvalidInput(f"window reports.reports[{index}] belongs to another "
                                   "window, metric version or key")
        return cls(metric, version, window, key_id, reports)


@dataclass(frozen=True)
class IntakeReceipt:
    """The key-holder's account of a window after a forwarded batch."""

    accepted: int
    duplicates: int
    report_count: int

    def to_wire(self) -> dict[str, Any]:
        return {"v": WIRE_VERSION, "accepted": self.accepted, "duplicates": self.duplicates,
                "report_count": self.report_count}

    @classmethod
    def from_wire(cls, data: Any) -> IntakeReceipt:
        fields = _Fields(data, "intake receipt", {"accepted", "duplicates", "report_count"})
        return cls(fields.integer("accepted", 0, MAX_FORWARDED_REPORTS),
                   fields.integer("duplicates", 0, MAX_FORWARDED_REPORTS),
                   fields.integer("report_count", 0, 2**40))


@dataclass(frozen=True)
class BatchReceipt:
    """The server's answer to a batch: every report in it is durable when this is sent."""

    accepted: int
    duplicates: int

    def to_wire(self) -> dict[str, Any]:
        return {"v": WIRE_VERSION, "accepted": self.accepted, "duplicates": self.duplicates}

    @classmethod
    def from_wire(cls, data: Any) -> BatchReceipt:
        fields = _Fields(data, "receipt", {"accepted", "duplicates"})
        return cls(
            fields.integer("accepted", 0, MAX_BATCH_REPORTS),
            fields.integer("duplicates", 0, MAX_BATCH_REPORTS),
        )


@dataclass(frozen=True)
class ReleaseRequest:
    """What the server sends the key-holder for one closed window: never a single report."""

    metric: str
    version: int
    window: int
    key_id: str
    report_count: int
    report_ids_digest: bytes
    aggregate: tuple[bytes, ...]
    early: bool = False
    # The server's own encrypted noise (``noise = "both"`` threshold policies): committed in
    # the request, so it is fixed before anyone sees a noisy value and a retry resends it.
    server_noise: tuple[bytes, ...] = ()
    # Its proof of range and knowledge (``threshold/noise_proof.py``, the JSON form of a
    # ``validity.ReportProof``), checked by the key-holder with the key; not part of the
    # digest: it is bound to ``server_noise`` by its own transcript, and to the window.
    server_noise_proof: Mapping[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "v": WIRE_VERSION,
            "metric": self.metric,
            "version": self.version,
            "window": self.window,
            "kid": self.key_id,
            "report_count": self.report_count,
            "report_ids_digest": self.report_ids_digest,
            "aggregate": list(self.aggregate),
            "early": self.early,
        }
        if self.server_noise:
            wire["server_noise"] = list(self.server_noise)
        if self.server_noise_proof is not None:
            wire["server_noise_proof"] = dict(self.server_noise_proof)
        return wire

    @classmethod
    def from_wire(cls, data: Any) -> ReleaseRequest:
        fields = _Fields(
            data,
            "release",
            {"metric", "version", "window", "kid", "report_count", "report_ids_digest",
             "aggregate", "early", "server_noise", "server_noise_proof"},
        )
        proof = data.get("server_noise_proof")
        if proof is not None and not isinstance(proof, Mapping):
            raise InvalidInput("release.server_noise_proof must be an object")
        return cls(
            metric=fields.text("metric", _NAME),
            version=fields.integer("version", 1, 2**31 - 1),
            window=fields.integer("window", 0, 2**40),
            key_id=fields.text("kid", KEY_ID_PATTERN),
            report_count=fields.integer("report_count", 1, 10**9),
            report_ids_digest=fields.blob(
                "report_ids_digest", fields.get("report_ids_digest"), size=DIGEST_BYTES
            ),
            aggregate=fields.blobs("aggregate"),
            early=fields.boolean("early", False),
            server_noise=fields.blobs("server_noise") if "server_noise" in data else (),
            server_noise_proof=proof,
        )


def report_ids_digest(report_ids: Sequence[bytes]) -> bytes:
    """SHA-256 over the sorted report ids: binds a release to exactly the reports it sums."""
    digest = hashlib.sha256()
    for report_id in sorted(report_ids):
        digest.update(report_id)
    return digest.digest()


def release_digest(request: ReleaseRequest) -> str:
    """SHA-256 of what a release decrypts and for whom (``early`` is not part of it).

    Two requests with the same digest ask for the same decryption, so the second gets the
    first's stored answer; any other request for a consumed window is refused. The server
    computes it too: a threshold release's proofs are bound to it. The server's noise
    ciphertexts, when sent, are part of it (and the digest of a request without any is what
    it always was, so stored releases still match their retries).
    """
    return request_fields_digest(request.metric, request.version, request.window,
                                 request.key_id, request.report_count,
                                 request.report_ids_digest.hex(), request.aggregate,
                                 request.server_noise)


def request_fields_digest(metric: str, version: int, window: int, key_id: str,
                          report_count: int, report_ids_hex: str,
                          aggregate: Sequence[bytes], server_noise: Sequence[bytes] = ()
                          ) -> str:
    """``release_digest`` from its fields: what a published threshold statement lets anyone
    recompute offline."""
    items: list[Any] = [metric, version, window, key_id, report_count, report_ids_hex,
                        [hashlib.sha256(c).hexdigest() for c in aggregate]]
    if server_noise:
        items.append([hashlib.sha256(c).hexdigest() for c in server_noise])
    material = json.dumps(items, separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


RELEASE_RESULT_TYPE = "blindsum.release"
RESULT_KINDS = ("count", "sum", "mean", "histogram", "vector")
RESULT_SCHEMES = ("paillier", "ckks")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_MECHANISM = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_RESULT_FIELDS = {
    "type", "metric", "version", "kind", "scheme", "window", "window_seconds", "kid",
    "report_count", "report_ids_digest", "request_digest", "value", "noisy_value", "ci",
    "confidence", "consistent", "mechanism", "epsilon", "delta", "rho", "scale",
    "released_at", "audit_seq", "audit_head", "threshold", "noise_parties",
}
NOISE_PARTIES = ("keyholder", "server")

Number = float | int
Interval = tuple[float, float]


@dataclass(frozen=True)
class ReleaseResult:
    """A released window's signed payload: what the key-holder (single key) or the server
    (threshold: combining both partial decryptions) publishes, and what readers parse.

    ``value`` is the noisy value clamped to the metric's domain, ``noisy_value`` the raw,
    unbiased one, ``ci`` the per-slot interval around ``noisy_value`` clipped to the domain;
    scalars for count/sum/mean, lists for histogram/vector. ``threshold`` says the value was
    decrypted by two parties whose partial decryptions are proven (``blindsum verify``).

    ``from_json`` is strict about types, shapes and ranges; the fields later versions added
    (``noisy_value``, ``consistent``, ``rho``, ``threshold``) default as older key-holders
    meant them, so results stored before them still read.
    """

    metric: str
    version: int
    kind: str
    scheme: str
    window: int
    window_seconds: int
    key_id: str
    report_count: int
    report_ids_digest: str
    request_digest: str
    value: Number | tuple[Number, ...]
    noisy_value: Number | tuple[Number, ...]
    ci: Interval | tuple[Interval, ...]
    confidence: float
    consistent: bool
    mechanism: str
    epsilon: float
    delta: float
    rho: float | None
    scale: float
    released_at: float
    audit_seq: int
    audit_head: str
    threshold: bool = False
    # who added an independent noise draw (threshold results; empty before the field
    # existed, meaning the key-holder alone): the interval is for the sum of the draws
    noise_parties: tuple[str, ...] = ()

    @property
    def scalar(self) -> bool:
        return self.kind in ("count", "sum", "mean")

    def to_json(self) -> dict[str, Any]:
        """The payload's fields (signed as canonical JSON by whoever publishes it)."""
        def numbers(value: Number | tuple[Number, ...]) -> Number | list[Number]:
            return list(value) if isinstance(value, tuple) else value

        ci: list[float] | list[list[float]] = (
            list(self.ci) if self.scalar  # type: ignore[arg-type]
            else [list(pair) for pair in self.ci])  # type: ignore[union-attr]
        data: dict[str, Any] = {
            "type": RELEASE_RESULT_TYPE, "v": WIRE_VERSION,
            "metric": self.metric, "version": self.version, "kind": self.kind,
            "scheme": self.scheme, "window": self.window,
            "window_seconds": self.window_seconds, "kid": self.key_id,
            "report_count": self.report_count, "report_ids_digest": self.report_ids_digest,
            "request_digest": self.request_digest, "value": numbers(self.value),
            "noisy_value": numbers(self.noisy_value), "ci": ci,
            "confidence": self.confidence, "consistent": self.consistent,
            "mechanism": self.mechanism, "epsilon": self.epsilon, "delta": self.delta,
            "rho": self.rho, "scale": self.scale, "released_at": self.released_at,
            "audit_seq": self.audit_seq, "audit_head": self.audit_head,
        }
        if self.threshold:
            data["threshold"] = True
        if self.noise_parties:
            data["noise_parties"] = list(self.noise_parties)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "release result") -> ReleaseResult:
        fields = _Fields(data, where, _RESULT_FIELDS)
        if fields.get("type") != RELEASE_RESULT_TYPE:
            raise InvalidInput(f"{where}.type must be {RELEASE_RESULT_TYPE!r}")
        kind = fields.get("kind")
        if kind not in RESULT_KINDS:
            raise InvalidInput(f"{where}.kind must be one of {RESULT_KINDS}")
        scheme = fields.get("scheme")
        if scheme not in RESULT_SCHEMES:
            raise InvalidInput(f"{where}.scheme must be one of {RESULT_SCHEMES}")
        scalar = kind in ("count", "sum", "mean")
        value = _result_numbers(fields, "value", scalar)
        noisy = (_result_numbers(fields, "noisy_value", scalar) if "noisy_value" in data
                 else value)
        slots = 1 if scalar else len(value)  # type: ignore[arg-type]
        if not scalar and len(noisy) != slots:  # type: ignore[arg-type]
            raise InvalidInput(f"{where}.noisy_value must have {slots} numbers like value")
        rho = data.get("rho")
        return cls(
            metric=fields.text("metric", _NAME),
            version=fields.integer("version", 1, 2**31 - 1),
            kind=kind,
            scheme=scheme,
            window=fields.integer("window", 0, 2**40),
            window_seconds=fields.integer("window_seconds", 1, 2**40),
            key_id=fields.text("kid", KEY_ID_PATTERN),
            report_count=fields.integer("report_count", 1, 2**40),
            report_ids_digest=fields.text("report_ids_digest", _HEX_DIGEST),
            request_digest=fields.text("request_digest", _HEX_DIGEST),
            value=value,
            noisy_value=noisy,
            ci=_result_intervals(fields, scalar, slots),
            confidence=_result_real(fields, "confidence", 0.0, 1.0, open_low=True),
            consistent=fields.boolean("consistent", True),
            mechanism=fields.text("mechanism", _MECHANISM),
            epsilon=_result_real(fields, "epsilon", 0.0, math.inf, open_low=True),
            delta=_result_real(fields, "delta", 0.0, 1.0),
            rho=None if rho is None else _result_real(fields, "rho", 0.0, math.inf),
            scale=_result_real(fields, "scale", 0.0, math.inf, open_low=True),
            released_at=_result_real(fields, "released_at", 0.0, 2.0**40),
            audit_seq=fields.integer("audit_seq", 0, 2**62),
            audit_head=fields.text("audit_head", _HEX_DIGEST),
            threshold=fields.boolean("threshold", False),
            noise_parties=_noise_parties(fields) if "noise_parties" in data else (),
        )


def _noise_parties(fields: _Fields) -> tuple[str, ...]:
    value = fields.get("noise_parties")
    if value not in (["keyholder"], list(NOISE_PARTIES)):
        raise InvalidInput(f"{fields.message}.noise_parties must be [\"keyholder\"] or "
                           f"{json.dumps(list(NOISE_PARTIES))}")
    return tuple(value)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _result_real(fields: _Fields, key: str, low: float, high: float,
                 open_low: bool = False) -> float:
    value = fields.get(key)
    if not _is_number(value) or value < low or value > high or (open_low and value == low):
        bound = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise InvalidInput(f"{fields.message}.{key} must be a finite number in {bound}")
    return float(value)


def _result_numbers(fields: _Fields, key: str, scalar: bool) -> Number | tuple[Number, ...]:
    value = fields.get(key)
    if scalar:
        if not _is_number(value):
            raise InvalidInput(f"{fields.message}.{key} must be a finite number")
        return value  # type: ignore[no-any-return]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RESULT_SLOTS or \
            not all(_is_number(item) for item in value):
        raise InvalidInput(
            f"{fields.message}.{key} must be a list of 1..{MAX_RESULT_SLOTS} finite numbers")
    return tuple(value)


def _result_intervals(fields: _Fields, scalar: bool, slots: int
                      ) -> Interval | tuple[Interval, ...]:
    value = fields.get("ci")

    def pair(item: Any, where: str) -> Interval:
        if not isinstance(item, list | tuple) or len(item) != 2 or \
                not all(_is_number(x) for x in item) or item[0] > item[1]:
            raise InvalidInput(f"{where} must be a pair [low, high] of numbers, low <= high")
        return (float(item[0]), float(item[1]))

    where = f"{fields.message}.ci"
    if scalar:
        return pair(value, where)
    if not isinstance(value, list) or len(value) != slots:
        raise InvalidInput(f"{where} must list {slots} intervals, one per slot")
    return tuple(pair(item, f"{where}[{index}]") for index, item in enumerate(value))
