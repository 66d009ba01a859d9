"""The aggregator's Flask app factory.

Each call builds an independent app (no module-level state): its store, manifest, release
driver and background thread live in ``app.extensions`` and are reached through
``current_app``. The background thread (release scheduler, manifest refresh) starts when the
app is built: gunicorn builds it in each worker after the fork, so a restarted server with
no traffic still releases due windows. It stops at interpreter exit or on ``close``.

Every answer that is not a success is ``application/problem+json``: our errors, werkzeug's
(404, 405 with ``Allow``, 413 naming the limit that applied), rate limits (429 with
``Retry-After``) and unexpected failures (500, with nothing about the cause).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

from flask import Flask, Response, request
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from blindsum.server.aggregator.config import AggregatorConfig
from blindsum.server.aggregator.keyholder_client import KeyholderApi
from blindsum.server.aggregator.metrics import WindowStates
from blindsum.server.aggregator.ratelimit import install_rate_limits
from blindsum.server.aggregator.readiness import aggregator_checks
from blindsum.server.aggregator.routes import AUTHENTICATED, BLUEPRINTS, EXTENSION, PUBLIC
from blindsum.server.aggregator.services import Aggregator
from blindsum.server.http import install_error_handlers, problem
from blindsum.server.observability import Telemetry, install_observability
from blindsum.shared.errors import PayloadTooLarge


def create_app(
    config: AggregatorConfig,
    *,
    keyholder: KeyholderApi | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """Build the aggregator app.

    ``keyholder`` replaces the HTTP client to the key-holder (tests, embedding); ``clock``
    is the wall clock windows are judged by.
    """
    app = Flask("blindsum.aggregator")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    telemetry = Telemetry.build()
    service = Aggregator.build(config, keyholder, clock, telemetry)
    telemetry.live.append(WindowStates(service.store))
    app.extensions[EXTENSION] = service
    install_error_handlers(app)
    _install_http_errors(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    observability = install_observability(
        app, telemetry, aggregator_checks(config, service.manifests))
    install_rate_limits(app, config, service.auth, AUTHENTICATED, (*PUBLIC, observability))
    service.ticker.start()

    # Stops the thread and closes connections when the app is collected or at exit.
    weakref.finalize(app, service.close)
    return app


def _install_http_errors(app: Flask) -> None:
    """werkzeug's errors as problem documents with what the client needs to act on them."""

    @app.errorhandler(MethodNotAllowed)
    def _method(exc: MethodNotAllowed) -> Response:
        allowed = sorted(exc.valid_methods or ())
        response = problem(405, "Method not allowed",
                           f"{request.method} is not allowed here; allowed: "
                           f"{', '.join(allowed)}", "method-not-allowed")
        response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_: RequestEntityTooLarge) -> Response:
        return problem(413, PayloadTooLarge.title,
                       f"request body exceeds {request.max_content_length} bytes; nothing "
                       "was stored", PayloadTooLarge.code)


def close_app(app: Flask) -> None:
    """Stop an app's background thread and close its connections (tests, embedding)."""
    service: Aggregator = app.extensions[EXTENSION]
    service.close()
