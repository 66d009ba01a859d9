"""The aggregator's HTTP client to the key-holder.

Everything the key-holder says that matters is signed: the manifest and every release result
are checked against the *pinned* identity from the configuration before they are used or
stored, so a compromised network path cannot feed the server a key or a result of its own.
A result must also describe exactly the window that was sent (metric, version, window,
report count and report-id digest), or it is rejected.

Problem responses become our exceptions by their ``code``; refusals that concern this server
itself (401/403: our release token; 400: our request) and every 5xx or connection failure
become ``UpstreamError`` so an operator is never told *they* are unauthorized when the
server's credential is wrong.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import requests

from blindsum.server.logs import request_id
from blindsum.server.observability import REQUEST_ID_HEADER
from blindsum.shared import codec
from blindsum.shared.codec import (
    RELEASE_RESULT_TYPE,
    IntakeReceipt,
    ReleaseRequest,
    ReleaseResult,
    WindowReports,
)
from blindsum.shared.errors import (
    AlreadyReleased,
    BlindsumError,
    Conflict,
    InvalidCiphertext,
    InvalidInput,
    InvalidProof,
    ManifestError,
    NotFound,
    ReleaseRefused,
    UpstreamError,
    error_for_code,
)
from blindsum.shared.manifest import Manifest
from blindsum.shared.signing import parse_identity, verify_document
from blindsum.shared.threshold.release import PARTIAL_TYPE

RESULT_TYPE = RELEASE_RESULT_TYPE
AUDIT_HEAD_TYPE = "blindsum.audit-head"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
RELEASE_READ_TIMEOUT = 120.0  # decrypting a large CKKS aggregate and sampling noise
log = logging.getLogger("blindsum.aggregator.keyholder")


@dataclass(frozen=True)
class VerifiedResult:
    """A release result whose signature and contents were checked against the request.

    ``result`` is the typed payload of a final result; a threshold key-holder's partial
    release has none (the server finishes it, ``server/aggregator/threshold.py``).
    """

    document: dict[str, str]
    payload: dict[str, Any]
    result: ReleaseResult | None = None


class KeyholderApi(Protocol):
    """What the aggregator needs from a key-holder (the HTTP client, or a test double)."""

    def fetch_manifest(self) -> Manifest: ...

    def fetch_context(self, key_id: str) -> bytes: ...

    def release(self, request: ReleaseRequest) -> VerifiedResult: ...

    def forward_reports(self, batch: WindowReports) -> IntakeReceipt: ...

    def audit_head(self) -> tuple[dict[str, str], dict[str, Any]]: ...

    def close(self) -> None: ...


def result_mismatch(payload: Mapping[str, Any], request: ReleaseRequest) -> str | None:
    """Why a verified result payload does not describe ``request``'s window, or None."""
    # A threshold key's key-holder answers a partial release (the server then combines).
    if payload.get("type") not in (RESULT_TYPE, PARTIAL_TYPE):
        return f"result field 'type' is {payload.get('type')!r}, expected {RESULT_TYPE!r}"
    expected = {
        "v": 1,
        "metric": request.metric,
        "version": request.version,
        "window": request.window,
        "kid": request.key_id,
        "report_count": request.report_count,
        "report_ids_digest": request.report_ids_digest.hex(),
    }
    for field, value in expected.items():
        got = payload.get(field)
        if got != value or isinstance(got, bool) != isinstance(value, bool):
            return f"result field {field!r} is {got!r}, expected {value!r}"
    return None


def check_result(document: Any, pinned: Any, request: ReleaseRequest) -> VerifiedResult:
    """Verify a signed result document against the pinned identity and the request.

    Raises:
        ManifestError: not signed by the pinned identity, or about another window.
    """
    payload = verify_document(document, pinned, "release result")
    mismatch = result_mismatch(payload, request)
    if mismatch:
        raise ManifestError(f"the key-holder's result does not match the request: {mismatch}")
    if payload.get("type") != RESULT_TYPE:
        return VerifiedResult(dict(document), payload)
    try:
        result = ReleaseResult.from_json(payload)
    except InvalidInput as exc:
        raise ManifestError(f"the key-holder's result is malformed: {exc.detail}") from None
    return VerifiedResult(dict(document), payload, result)


class KeyholderClient:
    """HTTP client for one key-holder, pinned to its identity. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        identity: str,
        release_token: str,
        ca_bundle: str | None = None,
        media: str = codec.CBOR,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.pinned = parse_identity(identity)
        self._token = release_token
        self._verify: str | bool = ca_bundle or True
        self._media = media
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.verify = self._verify
            session.headers["User-Agent"] = "blindsum-aggregator/1"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    # -- public documents ----------------------------------------------------------------

    def fetch_manifest(self) -> Manifest:
        """The key-holder's manifest, verified against the pinned identity."""
        response = self._call("GET", "/v1/manifest", accept=codec.JSON)
        return Manifest.verify(_json_body(response, "manifest"), self.pinned)

    def fetch_context(self, key_id: str) -> bytes:
        """CKKS public context bytes (the caller checks them against the manifest digest)."""
        response = self._call("GET", f"/v1/keys/{quote(key_id, safe='')}/context",
                              accept="application/octet-stream")
        return response.content

    # -- releases ------------------------------------------------------------------------

    def release(self, request: ReleaseRequest) -> VerifiedResult:
        """Ask for a window's release and return the verified, matching result.

        The same request sent again (a retry after a lost answer) is answered with the
        stored result (200); a 409 ``already-released`` is checked against the stored
        result, which matches only if it is for exactly these reports.

        Raises:
            ReleaseRefused / BudgetExhausted: the policy refuses on public grounds (422);
                nothing was consumed.
            InvalidCiphertext: the aggregate's bytes are malformed (nothing consumed).
            AlreadyReleased: the window was consumed by a release of *other* reports.
            ReleaseInterrupted: the window was paid for but its release never completed
                (final: it is never decrypted again).
            ReleaseInProgress: the same release is under way; retry for its result.
            ManifestError: the result is unsigned, signed by another key, or mismatched.
            UpstreamError: the key-holder cannot be reached or fails.
        """
        try:
            response = self._call(
                "POST", "/v1/releases", body=codec.dumps(request.to_wire(), self._media),
                content_type=self._media, accept=codec.JSON, auth=True,
                timeout=RELEASE_READ_TIMEOUT,
            )
        except AlreadyReleased:
            return self._stored_result(request)
        return check_result(_json_body(response, "release result"), self.pinned, request)

    def forward_reports(self, batch: WindowReports) -> IntakeReceipt:
        """Hand a threshold window's reports to the key-holder, which verifies them again
        and keeps its own sum and count (a batch sent twice adds nothing the second time).

        Raises:
            InvalidProof / InvalidCiphertext: the key-holder refuses a report (by index).
            ReleaseRefused / Conflict: the window cannot take reports (unknown metric or
                key, already paid for with other reports, over max_contributors).
            UpstreamError: the key-holder cannot be reached or fails.
        """
        response = self._call(
            "POST", "/v1/windows/reports", body=codec.dumps(batch.to_wire(), self._media),
            content_type=self._media, accept=codec.JSON, auth=True,
            timeout=RELEASE_READ_TIMEOUT)
        try:
            return IntakeReceipt.from_wire(_json_body(response, "intake receipt"))
        except InvalidInput as exc:
            raise UpstreamError(f"the key-holder's intake receipt is malformed: "
                                f"{exc.detail}") from None

    def audit_head(self) -> tuple[dict[str, str], dict[str, Any]]:
        """The key-holder's signed audit-chain head and its verified payload."""
        response = self._call("GET", "/v1/audit/head", accept=codec.JSON, auth=True)
        document = _json_body(response, "audit head")
        payload = verify_document(document, self.pinned, "audit head")
        seq, digest = payload.get("seq"), payload.get("hash")
        if payload.get("type") != AUDIT_HEAD_TYPE or type(seq) is not int or seq < 0 or \
                not isinstance(digest, str) or len(digest) != 64:
            raise ManifestError("the key-holder's audit head is not a signed audit head")
        return dict(document), payload

    def _stored_result(self, request: ReleaseRequest) -> VerifiedResult:
        path = (f"/v1/releases/{quote(request.metric, safe='')}/{request.version}/"
                f"{request.window}?kid={quote(request.key_id, safe='')}")
        response = self._call("GET", path, accept=codec.JSON, auth=True)
        document = _json_body(response, "stored release result")
        payload = verify_document(document, self.pinned, "stored release result")
        mismatch = result_mismatch(payload, request)
        if mismatch:
            raise AlreadyReleased(
                f"metric {request.metric!r} version {request.version} window {request.window} "
                f"was already released with other reports ({mismatch}); the "
                f"{request.report_count} report(s) under key {request.key_id!r} stay unreleased"
            )
        return VerifiedResult(dict(document), payload)

    # -- plumbing ------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        accept: str,
        body: bytes | None = None,
        content_type: str | None = None,
        auth: bool = False,
        timeout: float = READ_TIMEOUT,
    ) -> requests.Response:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        rid = request_id()
        if rid:  # one id for the request in both services' logs (a scheduled job has none)
            headers[REQUEST_ID_HEADER] = rid
        url = self.base_url + path
        try:
            # verify per request: requests lets REQUESTS_CA_BUNDLE override session.verify
            response = self._session().request(
                method, url, data=body, headers=headers, timeout=(CONNECT_TIMEOUT, timeout),
                verify=self._verify,
            )
        except requests.RequestException as exc:
            raise UpstreamError(
                f"key-holder at {self.base_url} is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code >= 400:
            raise _problem_error(response, f"{method} {path}")
        return response


def _json_body(response: requests.Response, what: str) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        raise UpstreamError(f"the key-holder's {what} is not JSON") from None


# Key-holder verdicts about the *window*, passed on as they are (an aggregate that does not
# decrypt to valid sums holds a malformed report: final, like a refusal); anything else is a
# failure of the upstream call as far as our callers are concerned.
_PASSED_ON: tuple[type[BlindsumError], ...] = (
    ReleaseRefused, Conflict, NotFound, InvalidCiphertext, InvalidProof,
)


def _problem_error(response: requests.Response, what: str) -> BlindsumError:
    code, detail = "", response.reason or ""
    try:
        problem = json.loads(response.content)
        if isinstance(problem, dict):
            code = str(problem.get("code", ""))
            detail = str(problem.get("detail", detail))[:500]
    except ValueError:
        pass
    cls = error_for_code(code)
    if response.status_code < 500 and issubclass(cls, _PASSED_ON):
        return cls(f"key-holder: {detail}")
    return UpstreamError(
        f"key-holder answered {what} with {response.status_code} {code or 'error'}: {detail}"
    )
