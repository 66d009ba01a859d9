"""The aggregator's current manifest: loaded at start, refreshed on a timer and on demand.

The server only ever uses a manifest that verifies against the pinned key-holder identity,
whether it comes from the key-holder or from the local cache (the cache is re-verified on
load, so a tampered database cannot loosen a policy). A manifest with a lower serial than the
one in use is refused: replaying an old signed manifest must not roll policies back.

On-demand refreshes (a report names a metric version or key id we do not know) are rate
limited to one per ``ON_DEMAND_SECONDS`` per process, so a stream of bad reports cannot turn
the server into a load generator against the key-holder.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable

from blindsum.server.aggregator.keyholder_client import KeyholderApi
from blindsum.server.aggregator.store import Store
from blindsum.shared.errors import BlindsumError, ManifestError, NotFound, UpstreamError
from blindsum.shared.manifest import Keyring, Manifest
from blindsum.shared.signing import parse_identity

ON_DEMAND_SECONDS = 5.0
log = logging.getLogger("blindsum.aggregator.manifest")


class ManifestSource:
    """Holds the verified manifest and its ``Keyring``; thread-safe."""

    def __init__(
        self,
        store: Store,
        keyholder: KeyholderApi,
        identity: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._keyholder = keyholder
        self._pinned = parse_identity(identity)
        self._clock = clock
        self._keyring: Keyring | None = None
        self._lock = threading.Lock()
        self._last_on_demand = float("-inf")
        self.last_error: str | None = None

    # -- what callers use ----------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._keyring is not None

    def keyring(self) -> Keyring:
        """The current keyring; tries the key-holder once (rate limited) if none is loaded.

        Raises:
            UpstreamError: no verified manifest is available yet.
        """
        keyring = self._keyring
        if keyring is None:
            self.refresh_on_demand()
            keyring = self._keyring
        if keyring is None:
            raise UpstreamError(
                f"no verified manifest yet (the key-holder is unreachable: {self.last_error})"
            )
        return keyring

    def manifest(self) -> Manifest:
        return self.keyring().manifest

    def context_bytes(self, key_id: str) -> bytes:
        """A CKKS public context of the current manifest (cached or fetched), verified.

        Raises:
            NotFound: the manifest lists no CKKS key ``key_id``.
            ManifestError: the key-holder's bytes do not match the signed digest.
        """
        return self._context_for(self.manifest(), key_id)

    def _context_for(self, manifest: Manifest, key_id: str) -> bytes:
        entry = manifest.key(key_id)
        if entry.scheme != "ckks":
            raise NotFound(f"key {key_id!r} is a {entry.scheme} key and has no context")
        expected = entry.public.get("context_sha256")
        cached = self._store.cached_context(key_id)
        if cached is not None and hashlib.sha256(cached).hexdigest() == expected:
            return cached
        data = self._keyholder.fetch_context(key_id)
        if hashlib.sha256(data).hexdigest() != expected:
            raise ManifestError(
                f"CKKS context for key {key_id!r} does not match the signed manifest"
            )
        self._store.cache_context(key_id, data, self._clock())
        return data

    # -- loading -------------------------------------------------------------------------

    def start(self) -> None:
        """Load the cached manifest, then try the key-holder; never raises."""
        cached = self._store.cached_manifest()
        if cached is not None:
            try:
                self._adopt(Manifest.verify(cached, self._pinned), cache=False)
            except BlindsumError as exc:
                log.warning("ignoring the cached manifest: %s", exc.detail)
        self.refresh()

    def refresh(self) -> bool:
        """Fetch and adopt the key-holder's manifest now; False (logged) if that failed."""
        with self._lock:
            try:
                fetched = self._keyholder.fetch_manifest()
                # Checked here too, whatever the client did: only the pin decides.
                manifest = Manifest.verify(dict(fetched.document), self._pinned)
                self._adopt(manifest, cache=True)
            except BlindsumError as exc:
                self.last_error = exc.detail
                log.warning("manifest refresh failed: %s", exc.detail)
                return False
            self.last_error = None
            return True

    def refresh_on_demand(self) -> bool:
        """``refresh()`` unless an on-demand one ran in the last ``ON_DEMAND_SECONDS``.

        Returns True if a refresh ran and succeeded.
        """
        with self._lock:
            if time.monotonic() - self._last_on_demand < ON_DEMAND_SECONDS:
                return False
            self._last_on_demand = time.monotonic()
        return self.refresh()

    def _adopt(self, manifest: Manifest, cache: bool) -> None:
        current = self._keyring.manifest if self._keyring else None
        if current is not None and manifest.serial < current.serial:
            raise ManifestError(
                f"refusing manifest serial {manifest.serial}: older than serial "
                f"{current.serial} in use (replayed or rolled back)"
            )
        if current is not None and dict(manifest.document) == dict(current.document):
            return
        self._keyring = Keyring(manifest, lambda kid: self._context_for(manifest, kid))
        if cache:
            self._store.cache_manifest(manifest.serial, dict(manifest.document), self._clock())
        log.info("manifest serial %d adopted (%d metrics)", manifest.serial,
                 len(manifest.policies))
