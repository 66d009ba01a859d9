"""Who is calling: the request's bearer token, looked up once per request and checked.

``require_role`` keeps ``server.http.require_token``'s answers: no or unknown token is 401,
a revoked one is 401 (from the next request after the revocation), a token of another role
is 403, and an ingest token used for a metric outside its scope is 403 naming the metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flask import g, request

from blindsum.server.aggregator.tokens import TokenBook, TokenRecord
from blindsum.server.http import token_digest
from blindsum.shared.errors import Forbidden, Unauthorized

_CALLER = "blindsum_caller"


@dataclass(frozen=True)
class Caller:
    """The credential a request carries: none, unknown, revoked or valid."""

    presented: bool
    record: TokenRecord | None

    @property
    def principal(self) -> TokenRecord | None:
        """The valid token's record, or None."""
        return self.record if self.record is not None and self.record.active else None


class Authenticator:
    """Resolves bearer tokens against the configured digests and the token table."""

    def __init__(self, book: TokenBook, environment: Mapping[str, TokenRecord]) -> None:
        self._book = book
        self._environment = dict(environment)

    def lookup(self, token: str) -> TokenRecord | None:
        """The record of ``token`` (revoked or not), or None if no one issued it."""
        digest = token_digest(token)
        return self._environment.get(digest) or self._book.find(digest)

    def caller(self) -> Caller:
        """The current request's credential, looked up at most once per request."""
        cached: Caller | None = g.get(_CALLER)
        if cached is None:
            cached = self._identify()
            setattr(g, _CALLER, cached)
        return cached

    def _identify(self) -> Caller:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Caller(False, None)
        return Caller(True, self.lookup(token))

    def require_role(self, role: str) -> TokenRecord:
        """The caller's valid token of ``role``.

        Raises:
            Unauthorized: no token, an unknown one, or a revoked one.
            Forbidden: a valid token of another role.
        """
        caller = self.caller()
        if not caller.presented:
            raise Unauthorized("send 'Authorization: Bearer <token>'")
        record = caller.record
        if record is None:
            raise Unauthorized("unknown token")
        if not record.active:
            raise Unauthorized("this token has been revoked")
        if record.role != role:
            raise Forbidden(f"this token may not act as {role}")
        return record


def require_metrics(principal: TokenRecord, metrics: Iterable[tuple[str, str]]) -> None:
    """Refuse unless ``principal`` may report every ``(where, metric)``.

    Raises:
        Forbidden: naming the first report whose metric is outside the token's scope.
    """
    for where, metric in metrics:
        if not principal.may_report(metric):
            allowed = sorted(principal.metrics or ())
            raise Forbidden(
                f"{where}: this token may not report metric {metric!r} (it may report "
                f"{allowed}); nothing in this batch was stored"
            )
