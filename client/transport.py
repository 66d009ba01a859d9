"""HTTP to the aggregator server: one ``requests.Session``, timeouts, retries, error mapping.

Retries use exponential backoff with jitter and happen only where a second try can succeed:
connection errors, timeouts, broken responses, 408, 429 and 5xx. Retrying a report upload is
safe because report ids make it idempotent: the server counts a resent report once. A
``Retry-After`` header is honoured; one asking for more than ``RetryPolicy.max_delay`` ends the
retries instead of blocking the app that long.

Every failure becomes a ``BlindsumError``: an ``application/problem+json`` answer becomes the
class of its ``code`` with the server's ``detail`` (so an app catches the same type whether a
check failed on the device or on the server), anything else becomes ``UpstreamError``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from blindsum.shared import codec
from blindsum.shared.errors import (
    BlindsumError,
    Conflict,
    Forbidden,
    InvalidConfig,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ReleaseRefused,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
    error_for_code,
)

PROBLEM_JSON = "application/problem+json"
OCTET_STREAM = "application/octet-stream"
USER_AGENT = "blindsum-client/0.1"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# No answer we expect comes near this (a CKKS context is ~130 KB, a manifest a few KB); the
# cap keeps a hostile server or proxy from filling the app's memory.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
# When a problem document's code is unknown to this SDK, the status still says what happened.
_BY_STATUS: dict[int, type[BlindsumError]] = {
    400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 415: UnsupportedMediaType, 422: ReleaseRefused,
}

log = logging.getLogger("blindsum.client")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    Attributes:
        max_retries: retries after the first attempt (0 = try once).
        backoff: delay before the first retry, in seconds; doubles per retry.
        max_delay: longest single wait, in seconds. A ``Retry-After`` above it ends retrying.
    """

    max_retries: int = 5
    backoff: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise InvalidConfig("max_retries must be an integer")
        if not 0 <= self.max_retries <= 100:
            raise InvalidConfig(f"max_retries must be in 0..100, got {self.max_retries}")
        for name in ("backoff", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InvalidConfig(f"{name} must be a non-negative number of seconds")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based).

        "Equal jitter": a uniform draw from the upper half of ``backoff * 2**retry`` (capped at
        ``max_delay``), so clients that failed together do not retry together, and never less
        than the server's ``Retry-After``.
        """
        ceiling = min(self.max_delay, self.backoff * 2.0**retry)
        jittered = ceiling / 2 + random.uniform(0, ceiling / 2)
        return max(jittered, retry_after or 0.0)


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection and then for each read of the answer."""

    connect: float = 5.0
    read: float = 30.0

    def __post_init__(self) -> None:
        for name in ("connect", "read"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidConfig(f"{name} timeout must be a number of seconds")
            if not (math.isfinite(value) and value > 0):
                raise InvalidConfig(f"{name} timeout must be positive, got {value!r}")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read in full: status, headers (case-insensitive) and body bytes."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def media(self) -> str:
        """The Content-Type without parameters, lower-case ("" if absent)."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


class Transport:
    """Authenticated requests to one blindsum server, with retries and error mapping.

    ``media`` (``codec.CBOR`` or ``codec.JSON``) is how request bodies are sent and the answer
    type asked for first. A ``session`` passed in is used but not closed; otherwise the
    transport owns its session. ``verify`` is passed to requests (a CA bundle path, or False
    for tests only); ``sleep`` exists so tests can observe waits without waiting.

    Raises:
        InvalidConfig: a URL that is not http(s)://host[:port][/path], an empty or
            multi-line token, or an unknown media type.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        media: str = codec.CBOR,
        session: requests.Session | None = None,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = _check_base_url(base_url)
        if not isinstance(token, str) or not token.strip() or any(c in token for c in "\r\n"):
            raise InvalidConfig("token must be a non-empty, single-line string")
        if media not in codec.MEDIA_TYPES:
            raise InvalidConfig(f"media must be one of {list(codec.MEDIA_TYPES)}, got {media!r}")
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.media = media
        self._owns_session = session is None
        self._session = session or requests.Session()
        # None defers to the session's own setting (e.g. a CA bundle the app configured).
        self._verify = None if verify is True else verify
        self._sleep = sleep
        self._headers = {"Authorization": f"Bearer {token.strip()}", "User-Agent": USER_AGENT}

    def get_data(self, path: str, *, max_retries: int | None = None) -> Any:
        """GET ``path`` and decode its JSON or CBOR answer."""
        accept = f"{self.media}, {_other(self.media)};q=0.5"
        return _decode(self.request("GET", path, accept=accept, max_retries=max_retries))

    def get_bytes(self, path: str) -> bytes:
        """GET ``path`` and return its raw body (e.g. a CKKS public context)."""
        return self.request("GET", path, accept=OCTET_STREAM).body

    def post_data(self, path: str, data: Any) -> Any:
        """POST wire data (from ``to_wire``) encoded as ``media``; decode the answer."""
        body = codec.dumps(data, self.media)
        accept = f"{self.media}, {_other(self.media)};q=0.5"
        answer = self.request("POST", path, body=body, content_type=self.media, accept=accept)
        return _decode(answer)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str = codec.JSON,
        max_retries: int | None = None,
    ) -> Answer:
        """Send one request, retrying transient failures; return a 2xx/3xx answer.

        Raises:
            UpstreamError: the server stayed unreachable, kept failing, answered more than
                ``MAX_ANSWER_BYTES``, or answered an error without a problem document.
            BlindsumError: the subclass named by a problem document's ``code``.
        """
        url = self.base_url + path
        headers = dict(self._headers, Accept=accept)
        if content_type:
            headers["Content-Type"] = content_type
        retries = self.retry.max_retries if max_retries is None else max_retries
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self._exchange(method, url, body, headers)
            except requests.exceptions.SSLError as exc:
                raise UpstreamError(f"TLS with {self.base_url} failed: {exc}") from None
            except (
                requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                if attempt > retries:
                    raise UpstreamError(
                        f"{method} {url} failed after {attempt} attempt(s): "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                wait = self.retry.delay(attempt - 1)
                log.info("%s %s: %s; retrying in %.2f s", method, path, type(exc).__name__, wait)
            else:
                if answer.status < 400:
                    return answer
                wait = self._retry_wait(answer, attempt, retries)
                if wait is None:
                    error = error_from_answer(answer, attempt)
                    error.retry_after = parse_retry_after(answer.headers.get("Retry-After"))
                    raise error
                log.info("%s %s: HTTP %d; retrying in %.2f s", method, path, answer.status, wait)
            self._sleep(wait)

    def _exchange(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> Answer:
        response = self._session.request(
            method, url, data=body, headers=headers, verify=self._verify, stream=True,
            timeout=(self.timeouts.connect, self.timeouts.read),
        )
        with response:
            chunks, size = [], 0
            for chunk in response.iter_content(chunk_size=1 << 16):
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise UpstreamError(
                        f"{method} {url}: the answer exceeds {MAX_ANSWER_BYTES} bytes"
                    )
                chunks.append(chunk)
            return Answer(response.status_code, response.reason or "", response.headers,
                          b"".join(chunks))

    def _retry_wait(self, answer: Answer, attempt: int, retries: int) -> float | None:
        if answer.status not in RETRY_STATUSES or attempt > retries:
            return None
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        if retry_after is not None and retry_after > self.retry.max_delay:
            return None
        return self.retry.delay(attempt - 1, retry_after)

    def close(self) -> None:
        """Close the session if this transport created it."""
        if self._owns_session:
            self._session.close()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_answer(answer: Answer, attempts: int = 1) -> BlindsumError:
    """The exception for an error answer (status >= 400).

    A problem document becomes the class of its ``code`` carrying the server's ``detail``
    (a code this SDK does not know falls back to the class of the status); a 5xx of no
    known class, or an answer without a problem document, becomes ``UpstreamError`` naming
    the status.
    """
    problem = _problem(answer)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if problem is None and answer.status == PayloadTooLarge.status:
        # a proxy's bare 413 (nginx's body limit...) still means "send smaller batches"
        return PayloadTooLarge(f"server answered HTTP 413{tries}: the batch is too large")
    if problem is None:
        snippet = answer.body[:200].decode("utf-8", "replace").strip()
        return UpstreamError(
            f"server answered HTTP {answer.status} {answer.reason}".rstrip()
            + tries + (f": {snippet}" if snippet else "")
        )
    code = problem.get("code")
    detail = problem.get("detail") or problem.get("title") or f"HTTP {answer.status}"
    cls = error_for_code(code) if isinstance(code, str) else BlindsumError
    if cls is BlindsumError:
        cls = _BY_STATUS.get(answer.status, BlindsumError)
    if cls is BlindsumError:
        return UpstreamError(f"server answered HTTP {answer.status} ({code}){tries}: {detail}")
    return cls(str(detail))


def _problem(answer: Answer) -> Mapping[str, Any] | None:
    if answer.media not in (PROBLEM_JSON, codec.JSON):
        return None
    try:
        data = json.loads(answer.body)
    except ValueError:
        return None
    if isinstance(data, Mapping) and ("code" in data or answer.media == PROBLEM_JSON):
        return data
    return None


def _decode(answer: Answer) -> Any:
    try:
        media = codec.media_type(answer.headers.get("Content-Type"))
        return codec.loads(answer.body, media)
    except BlindsumError as exc:
        raise UpstreamError(f"server answered an unreadable body: {exc.detail}") from None


def _other(media: str) -> str:
    return codec.JSON if media == codec.CBOR else codec.CBOR


def _check_base_url(url: str) -> str:
    if not isinstance(url, str):
        raise InvalidConfig("server_url must be a string such as https://metrics.example.com")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidConfig(f"server_url must be http(s)://host[:port], got {url!r}")
    if parts.query or parts.fragment:
        raise InvalidConfig(f"server_url must not carry a query or fragment, got {url!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        log.warning("server_url %s is plain HTTP: the bearer token travels unencrypted", url)
    return url.strip().rstrip("/")
