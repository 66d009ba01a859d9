"""HTTP plumbing both services share: problem+json errors, bodies, content types, bearer auth.

Every ``BlindsumError`` becomes an ``application/problem+json`` response with its status
here, and anything else becomes a bare 500 whose body names no path, type or stack frame
(the exception goes to the service log only).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from blindsum.server.bodies import read_wire_body
from blindsum.server.sqlite import storage_failure
from blindsum.shared import codec
from blindsum.shared.errors import (
    BlindsumError,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("blindsum.http")


# gunicorn's own limit on a request line (``limit_request_line``): a longer one is answered
# 414 with an HTML page before any app code runs, on every route, so each operation's
# description admits it (fuzzers reach it with long query strings).
REQUEST_LINE_LIMIT = 4094
URI_TOO_LONG_RESPONSE: Mapping[str, Any] = {
    "description": f"request line longer than {REQUEST_LINE_LIMIT} bytes, refused by the "
                   "WSGI server itself (an HTML page, not a problem document)",
    "content": {"text/html": {"schema": {"type": "string"}}},
}


def with_request_line_limit(paths: dict[str, Any]) -> dict[str, Any]:
    """``paths`` with the WSGI server's 414 documented on every operation."""
    for operations in paths.values():
        for operation in operations.values():
            operation["responses"].setdefault("414", dict(URI_TOO_LONG_RESPONSE))
    return paths


# How long a client should wait before retrying a 503 (storage or readiness): long enough
# for an operator's fix or a checkpoint, short enough that a queue drains soon after.
RETRY_AFTER_UNAVAILABLE = "10"


def problem(status: int, title: str, detail: str, code: str,
            extensions: Mapping[str, Any] | None = None) -> Response:
    """An RFC 9457 problem document; ``extensions`` are extra members (never secrets)."""
    document = {**(extensions or {}), "type": f"urn:blindsum:error:{code}", "title": title,
                "status": status, "detail": detail, "code": code}
    return Response(codec.dumps(document), status=status, content_type=PROBLEM_JSON)


def install_error_handlers(app: Flask) -> None:
    """Map every error a route can raise to problem+json, in this one place."""

    @app.errorhandler(BlindsumError)
    def _blindsum(exc: BlindsumError) -> Response:
        g.error_code = exc.code  # for the access log and metrics (server/observability.py)
        if exc.status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.detail)
        response = problem(exc.status, exc.title, exc.detail, exc.code)
        if exc.status == 503:
            response.headers["Retry-After"] = RETRY_AFTER_UNAVAILABLE
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_: RequestEntityTooLarge) -> Response:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        response = problem(413, PayloadTooLarge.title, f"request body exceeds {limit} bytes",
                           PayloadTooLarge.code)
        # the unread rest of the body is still on the socket: close it rather than reuse it
        response.headers["Connection"] = "close"
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = {404: "not-found", 405: "method-not-allowed"}.get(status, "http")
        return problem(status, exc.name, exc.description or exc.name, code)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        failure = storage_failure(exc)
        if failure is not None:
            return _blindsum(failure)
        g.error_code = "internal"
        log.exception("unhandled error")
        return problem(500, "Internal error", "the service failed; see its log", "internal")


def rate_limited_handler(limiter: Any) -> Any:
    """Flask-Limiter's RateLimitExceeded as a 429 problem with Retry-After (both services)."""
    import math
    import time

    def handle(exc: Any) -> Response:
        current = limiter.current_limit
        wait = 1 if current is None else max(1, math.ceil(current.reset_at - time.time()))
        response = problem(RateLimited.status, RateLimited.title,
                           f"rate limit of {exc.limit.limit} exceeded: retry in {wait} s",
                           RateLimited.code)
        response.headers["Retry-After"] = str(wait)
        return response

    return handle


def read_body(max_items: int = 1000) -> tuple[Any, str]:
    """Parse the request body by Content-Type, bounded (see ``server/bodies.py``).

    Returns (data, media type).
    """
    return read_wire_body(max_items), codec.media_type(request.content_type)


def reply(data: Any, status: int = 200) -> Response:
    """Serialise wire data in the media type the client accepts (CBOR if it asks first)."""
    accepted = request.accept_mimetypes
    media = codec.CBOR if accepted.best_match(codec.MEDIA_TYPES) == codec.CBOR else codec.JSON
    return Response(codec.dumps(data, media), status=status, content_type=media)


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    return token.strip()


def token_digest(token: str) -> str:
    """How services store a bearer token: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def require_token(digests: Mapping[str, Iterable[str]], role: str) -> None:
    """Check the bearer token in constant time against the stored digests of ``role``.

    ``digests`` maps each role to the SHA-256 hex digests of its tokens (``token_digest``).
    A token no role knows is 401; a token of another role is 403 (least privilege).
    """
    presented = token_digest(bearer_token()).encode()

    def matches(candidates: Iterable[str]) -> bool:
        found = False
        for candidate in candidates:
            # no early exit: the time taken does not tell which candidate matched
            found |= hmac.compare_digest(presented, candidate.encode())
        return found

    if matches(digests.get(role, ())):
        return
    if any(matches(candidates) for other, candidates in digests.items() if other != role):
        raise Forbidden(f"this token may not act as {role}")
    raise Unauthorized("unknown token")
