"""The aggregator's Flask app factory.

Each call builds an independent app (no module-level state): its store, manifest, release
driver and background thread live in ``app.extensions`` and are reached through
``current_app``. The background thread starts with the first request, so it runs in the
process that serves (a gunicorn worker), and stops at interpreter exit or on ``close``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

from flask import Flask

from blindsum.server.aggregator.config import AggregatorConfig
from blindsum.server.aggregator.keyholder_client import KeyholderApi
from blindsum.server.aggregator.routes import BLUEPRINTS, EXTENSION
from blindsum.server.aggregator.services import Aggregator
from blindsum.server.http import install_error_handlers


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
    service = Aggregator.build(config, keyholder, clock)
    app.extensions[EXTENSION] = service
    install_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)

    @app.before_request
    def _start_background() -> None:
        service.ticker.start()

    # Stops the thread and closes connections when the app is collected or at exit.
    weakref.finalize(app, service.close)
    return app


def close_app(app: Flask) -> None:
    """Stop an app's background thread and close its connections (tests, embedding)."""
    service: Aggregator = app.extensions[EXTENSION]
    service.close()
