"""Fixtures of the aggregator's unit tests: a real key-holder on loopback, the app, a client.

A module that needs another app (smaller body limit, rate limits on) overrides ``app``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aggregator_kit import RunningKeyholder, make_app, running_keyholder
from flask import Flask

from blindsum.server.aggregator.app import close_app


@pytest.fixture
def keyholder(tmp_path: Path) -> Iterator[RunningKeyholder]:
    with running_keyholder(tmp_path) as running:
        yield running


@pytest.fixture
def app(tmp_path: Path, keyholder: RunningKeyholder) -> Iterator[Flask]:
    app = make_app(tmp_path, keyholder)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()
