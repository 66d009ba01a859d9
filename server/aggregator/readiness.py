"""The aggregator's readiness: store writable, key-holder reachable and accepting our release
token, manifest loaded and fresh.

The key-holder check calls its authenticated ``GET /v1/budget`` with the release token, so a
wrong or revoked token shows here rather than at the first due window. Its answer is kept for
``CACHE_SECONDS``: a burst of probes must not become a burst of calls to the key-holder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import requests

from blindsum.server.aggregator.config import AggregatorConfig
from blindsum.server.aggregator.manifests import ManifestSource
from blindsum.server.observability import Check
from blindsum.server.readiness import storage_check

CACHE_SECONDS = 5.0
TIMEOUT_SECONDS = 3.0


class KeyholderCheck:
    """Is the key-holder up, and does it accept this server's release token?"""

    def __init__(self, config: AggregatorConfig) -> None:
        self._url = f"{config.keyholder_url}/v1/budget"
        self._token = config.release_token
        self._verify: bool | str = config.ca_bundle or True
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._reason: str | None = None

    def __call__(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._checked_at < CACHE_SECONDS:
                return self._reason
            self._reason = self._probe()
            self._checked_at = time.monotonic()
            return self._reason

    def _probe(self) -> str | None:
        try:
            response = requests.get(self._url, timeout=TIMEOUT_SECONDS, verify=self._verify,
                                    headers={"Authorization": f"Bearer {self._token}"})
        except requests.RequestException as exc:
            return f"key-holder unreachable ({type(exc).__name__})"
        if response.status_code in (401, 403):
            return f"key-holder refuses this server's release token ({response.status_code})"
        if response.status_code != 200:
            return f"key-holder answered {response.status_code}"
        return None


def manifest_check(manifests: ManifestSource) -> Check:
    def check() -> str | None:
        if not manifests.loaded:
            return f"no verified manifest ({manifests.last_error or 'not loaded yet'})"
        if manifests.last_error is not None:
            return f"manifest refresh failing: {manifests.last_error}"
        return None

    return check


def aggregator_checks(config: AggregatorConfig,
                      manifests: ManifestSource) -> Iterable[tuple[str, Check]]:
    return (("storage", storage_check(config.data_dir)),
            ("keyholder", KeyholderCheck(config)),
            ("manifest", manifest_check(manifests)))
