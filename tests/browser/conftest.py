"""Browser tests: Debian's chromium driven by playwright, against a real server on loopback.

The server is the aggregator app with a five-window history of four metrics (the
aggregator kit's real key-holder releases every window) and two with nothing published yet
(one of them described at length), served over HTTP on 127.0.0.1.
Playwright never downloads a browser: it launches ``/usr/bin/chromium``, which
``make chromium`` (a step of ``make test`` and ``make screenshots``) installs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The aggregator kit and the publication kit live beside the unit tests.
sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))

from aggregator_kit import make_app, running_keyholder
from publication_kit import publish_history, serving

from blindsum.server.aggregator.app import close_app
from blindsum.shared.policy import MetricPolicy

CHROMIUM = "/usr/bin/chromium"
# A metric with a description as long as the demo's: the text that made the phone-width
# index overflow when only the kit's undescribed metrics were drawn.
WEEKLY = MetricPolicy.from_mapping("weekly_installs", {
    "kind": "count", "scheme": "paillier", "window_seconds": 3600, "min_contributors": 2,
    "validity": "none", "description": "Installs that opened the app at least once in the "
    "window, counted once per install however often they opened it",
    "privacy": {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 100.0}})
ARTIFACTS_ENV = "BLINDSUM_BROWSER_ARTIFACTS"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (``BLINDSUM_BROWSER_ARTIFACTS``, default build/browser)."""
    folder = Path(os.environ.get(ARTIFACTS_ENV, Path(__file__).parents[2] / "build" /
                                 "browser"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def dashboard_url() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="blindsum-browser-"))
    try:
        with running_keyholder(root) as keyholder:
            keyholder.add_policies([WEEKLY])
            app = make_app(root / "server", keyholder)
            publish_history(app.test_client(), app, keyholder,
                            metrics=("visits", "latency", "pages", "embed"))
            with serving(app) as url:
                yield url
            close_app(app)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs it")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(params=[1280, 390], ids=["desktop", "phone"])
def page(request: pytest.FixtureRequest, browser: Any) -> Iterator[Any]:
    """A fresh page at a desktop or a phone width; fails the test on any console error."""
    context = browser.new_context(viewport={"width": request.param, "height": 900},
                                  java_script_enabled=False)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert errors == []
