"""Rate limits (Flask-Limiter): per token for callers who authenticate, per address otherwise.

- ``rate_limit_ingest`` / ``rate_limit_admin``: one budget per valid token across the
  routes of its role, keyed by the token's digest. A request whose token is unknown or
  revoked is keyed by its client address instead, so inventing tokens buys no budget.
- ``rate_limit_auth_failures``: only 401 answers are counted, per client address, across
  the authenticated routes; once spent, that address's unauthenticated requests are 429
  before any token lookup or body read. Callers with a valid token are exempt, so a flood
  of bad tokens cannot lock an app out that shares its address.
- ``rate_limit_public``: per client address, across the unauthenticated endpoints.

Counters live in memory, per gunicorn worker (``memory://``): with N workers a caller may
get up to N times a limit in the worst case. That is enough to stop a flood; exact global
limits need a shared store (Flask-Limiter accepts a Redis URI) and are not configured here.
The client address is the TCP peer: behind a reverse proxy, every caller shares the
proxy's address unless the proxy's ``X-Forwarded-For`` is trusted (werkzeug's ``ProxyFix``).
A 429 is problem+json with ``Retry-After`` (seconds).
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import Blueprint, Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded

from blindsum.server.aggregator.auth import Authenticator
from blindsum.server.aggregator.config import AggregatorConfig
from blindsum.server.http import rate_limited_handler

# sliding-window-counter: two counters per key (no list of hits to keep), no burst of twice
# the limit at a fixed window's boundary.
STRATEGY = "sliding-window-counter"


def install_rate_limits(
    app: Flask,
    config: AggregatorConfig,
    auth: Authenticator,
    authenticated: Sequence[tuple[Blueprint, str]],
    public: Sequence[Blueprint],
) -> Limiter:
    """Attach the limits to ``app``; ``authenticated`` pairs each blueprint with its role."""

    def address() -> str:
        return f"addr:{request.remote_addr or 'unknown'}"

    def token_or_address() -> str:
        principal = auth.caller().principal
        return f"token:{principal.digest}" if principal is not None else address()

    def authenticated_caller() -> bool:
        return auth.caller().principal is not None

    limiter = Limiter(token_or_address, storage_uri="memory://", strategy=STRATEGY,
                      headers_enabled=False)
    limiter.init_app(app)
    per_role = {"ingest": config.rate_limit_ingest, "admin": config.rate_limit_admin}
    for blueprint, role in authenticated:
        if per_role[role]:
            limiter.shared_limit(per_role[role], scope=role)(blueprint)
        if config.rate_limit_auth_failures:
            limiter.shared_limit(
                config.rate_limit_auth_failures, scope="auth-failures", key_func=address,
                exempt_when=authenticated_caller, deduct_when=_unauthorized,
            )(blueprint)
    if config.rate_limit_public:
        for blueprint in public:
            limiter.shared_limit(config.rate_limit_public, scope="public",
                                 key_func=address)(blueprint)
    app.register_error_handler(RateLimitExceeded, rate_limited_handler(limiter))
    return limiter


def _unauthorized(response: Response) -> bool:
    return response.status_code == 401
