"""``Client``: the one object an app uses to record encrypted metrics.

On the device a value is validated and clipped by its metric's policy, encoded into integer
slots, encrypted under the signed manifest's active public key, and queued as a report with a
fresh random 16-byte id. A Paillier metric with ``validity = "proof"`` (the default) is
encrypted by ``validity.prove_report``, which also proves the report a valid encoding bound
to its metric, version, window, key id and id; the proof travels (and is queued) with it.
Reports go to the aggregator server in batches; a batch leaves the
queue only once the server has acknowledged it (every report in it durable), and a retried
batch carries the same ids, so the server counts each report once. Plaintext values never
leave ``record``.

The manifest (public keys and policies) is fetched from the server but trusted only if it
verifies against the key-holder identity the app pins: a server cannot substitute its own key
or loosen a policy. A manifest older (by serial) than one already seen is refused, so a server
cannot roll a client back to a retired key either.

Usage::

    with Client("https://metrics.example.com", token, "ed25519:...") as client:
        client.record("latency_ms", 41.5)
    # leaving the block flushes the queue

Thread-safe: ``record`` and ``flush`` may be called from any thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import requests

from blindsum.shared import codec
from blindsum.shared.codec import (
    MAX_BATCH_REPORTS,
    REPORT_ID_BYTES,
    BatchReceipt,
    Report,
    ReportBatch,
)
from blindsum.shared.encoding import Value, encode
from blindsum.shared.errors import (
    BlindsumError,
    Conflict,
    InvalidConfig,
    InvalidInput,
    ManifestError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    UpstreamError,
)
from blindsum.shared.manifest import Keyring, Manifest, slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import PublicScheme
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.signing import parse_identity
from blindsum.shared.validity import ProofContext, proof_kind, prove_report

from .errors import DroppedReport, ReportsDropped
from .limits import ContributionLimiter, QueueClaim, default_state_path
from .manifest_cache import ManifestCache
from .queue import DiskQueue, MemoryQueue, ReportQueue
from .transport import RetryPolicy, Timeouts, Transport

WIRES = {"cbor": codec.CBOR, "json": codec.JSON}
REPORTS_PATH = "/v1/reports"
MANIFEST_PATH = "/v1/manifest"
# After a failed automatic flush, record() waits this long (doubling, capped) before trying
# again, so an unreachable server does not make every record() block on retries.
AUTO_FLUSH_PAUSE = 1.0
AUTO_FLUSH_MAX_PAUSE = 300.0
# A scheduled manifest refresh that fails is tried again after this many seconds.
MANIFEST_RETRY_SECONDS = 60.0
# Ciphertext bytes per upload: half the server's default body limit (64 MiB), since CKKS
# reports are ~66 KB each. A 413 halves the batch further.
MAX_BATCH_BYTES = 32 * 1024 * 1024
# Proof bytes per upload. The server verifies a batch before answering, at roughly 1 ms
# per KB of proof at 3072 bits (benchmarks/validity.py: a sum's 42 KB in ~50 ms, an
# 8-coordinate vector's 270 KB in ~150 ms), so 4 MiB keeps that near 5 s, far inside the
# read timeout, where 1,000 proven sums in one batch would take ~50 s.
MAX_BATCH_PROOF_BYTES = 4 * 1024 * 1024
# A 429 without Retry-After defers sending this long.
RATE_LIMITED_PAUSE = 60.0

log = logging.getLogger("blindsum.client")


@dataclass(frozen=True)
class _Loaded:
    """A verified manifest, the keyring built from it, and when to refresh it (monotonic)."""

    manifest: Manifest
    keyring: Keyring
    refresh_at: float


class Client:
    """Records metric values for one app install and delivers them, encrypted, in batches.

    Args:
        server_url: the aggregator server, e.g. ``https://metrics.example.com``.
        token: the ingest bearer token.
        keyholder_identity: the pinned key-holder identity, ``ed25519:<base64url>``.
        timeout: seconds to wait for each read of an answer.
        batch_size: reports per upload (1..5000); ``record`` flushes when this many wait.
        max_retries: retries of a failed request (connection errors, timeouts, 429, 5xx).
        wire: ``"cbor"`` (compact, default) or ``"json"`` for report uploads.
        enforce_contribution_limit: refuse a record beyond the policy's
            ``contributions_per_window`` for this Client. Turn off only to simulate many
            installs from one process.
        session: a ``requests.Session`` to use (not closed by the Client).
        verify: TLS verification: True, or a CA bundle path.
        connect_timeout: seconds to wait for a connection.
        backoff: seconds before the first retry; doubles per retry, with jitter.
        manifest_ttl: seconds after which ``record`` re-fetches the manifest (key rotation);
            a failed re-fetch keeps the verified manifest already held.
        queue_path: where unsent reports wait, with the verified manifest, so they survive
            an app restart and a cold start offline can record: ``"default"`` (a file per
            server and key-holder under the user's state directory, ``limits.state_dir``,
            claimed by one live Client at a time: ``limits.QueueClaim``), a path (which then
            holds the contribution counts too), or None for memory only (unsent reports are
            lost when the process ends).
        limits_path: where contribution counts are kept: ``"default"`` (an explicit
            ``queue_path`` if given, else ``limits.default_state_path``: a file per server and
            key-holder, shared by every Client of the install), a path, or None for memory
            only (a restart then forgets them, and the app may exceed
            ``contributions_per_window``).

    Raises:
        InvalidConfig: a bad argument (URL, token, batch size, wire, ...).
        InvalidInput: ``keyholder_identity`` is not an ``ed25519:`` identity.
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        keyholder_identity: str,
        *,
        timeout: float = 30.0,
        batch_size: int = 500,
        max_retries: int = 5,
        wire: str = "cbor",
        enforce_contribution_limit: bool = True,
        session: requests.Session | None = None,
        verify: bool | str = True,
        connect_timeout: float = 5.0,
        backoff: float = 0.5,
        manifest_ttl: float = 3600.0,
        queue_path: Path | str | None = "default",
        limits_path: Path | str | None = "default",
    ) -> None:
        self._identity = parse_identity(keyholder_identity)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise InvalidConfig("batch_size must be an integer")
        if not 1 <= batch_size <= MAX_BATCH_REPORTS:
            raise InvalidConfig(f"batch_size must be in 1..{MAX_BATCH_REPORTS}, got {batch_size}")
        if wire not in WIRES:
            raise InvalidConfig(f"wire must be one of {sorted(WIRES)}, got {wire!r}")
        if not isinstance(manifest_ttl, int | float) or not manifest_ttl > 0:
            raise InvalidConfig("manifest_ttl must be a positive number of seconds")
        self.batch_size = batch_size
        self.manifest_ttl = float(manifest_ttl)
        self._transport = Transport(
            server_url,
            token,
            timeouts=Timeouts(connect=connect_timeout, read=timeout),
            retry=RetryPolicy(max_retries=max_retries, backoff=backoff),
            media=WIRES[wire],
            session=session,
            verify=verify,
        )
        self._claim: QueueClaim | None = None
        try:
            if queue_path == "default":
                self._claim = QueueClaim.acquire(server_url, keyholder_identity)
                if self._claim is None:
                    log.warning("every default queue file of this install is held by a live "
                                "Client: this one queues in memory (pass queue_path)")
                path = self._claim.path if self._claim else None
                explicit = None
            else:
                path = explicit = Path(queue_path) if queue_path is not None else None
            if limits_path == "default":
                limits = explicit or default_state_path(server_url, keyholder_identity)
            else:
                limits = Path(limits_path) if limits_path is not None else None
            self._queue: ReportQueue = DiskQueue(path) if path else MemoryQueue()
            self._limiter = ContributionLimiter(limits) if enforce_contribution_limit else None
            self._cache = ManifestCache(path) if path else None
        except BaseException:
            if self._claim is not None:
                self._claim.release()
            self._transport.close()
            raise
        self._loaded: _Loaded | None = None
        self._manifest_lock = threading.Lock()
        self._schemes: dict[tuple[str, str, str], PublicScheme] = {}
        self._schemes_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._batch_limit = batch_size
        self._auto_failures = 0
        self._auto_flush_at = 0.0
        self._deferred_until = 0.0
        self._closed = False

    # -- manifest ------------------------------------------------------------------------

    def manifest(self) -> Manifest:
        """The verified manifest, fetched from the server on first use and cached.

        Raises:
            ManifestError: the server's manifest is not signed by the pinned identity, or
                is older than one this Client already holds.
            UpstreamError: the server could not be reached.
        """
        return self._current().manifest

    def _current(self) -> _Loaded:
        """The manifest state to use now: fetched on first use, refreshed after its TTL."""
        loaded = self._loaded
        if loaded is None:
            with self._manifest_lock:
                loaded = self._loaded or self._first_manifest()
        elif time.monotonic() >= loaded.refresh_at:
            loaded = self._scheduled_refresh(loaded)
        return loaded

    def refresh_manifest(self) -> Manifest:
        """Fetch and verify the manifest again now (e.g. after a key rotation).

        Raises:
            ManifestError, UpstreamError: as ``manifest``; the old manifest stays in use.
        """
        with self._manifest_lock:
            return self._fetch_manifest().manifest

    def _scheduled_refresh(self, loaded: _Loaded) -> _Loaded:
        if not self._manifest_lock.acquire(blocking=False):
            return loaded  # another thread is refreshing; keep using the verified one
        try:
            return self._fetch_manifest(max_retries=0)
        except BlindsumError as exc:
            log.warning("manifest refresh failed, keeping serial %d: %s",
                        loaded.manifest.serial, exc.detail)
            self._loaded = loaded = _Loaded(
                loaded.manifest, loaded.keyring, time.monotonic() + MANIFEST_RETRY_SECONDS
            )
            return loaded
        finally:
            self._manifest_lock.release()

    def _first_manifest(self) -> _Loaded:
        """Fetch the manifest; offline, fall back to the one kept with the disk queue.

        With a cached manifest the fetch is tried once, without retries, so an app that
        starts offline records at once instead of waiting out the retry policy.
        """
        cached = self._cache.document() if self._cache is not None else None
        if cached is None:
            return self._fetch_manifest()
        try:
            return self._fetch_manifest(max_retries=0)
        except UpstreamError as exc:
            manifest = Manifest.verify(cached, self._identity)  # the file proves nothing
            log.warning("server unreachable (%s); recording with the cached manifest serial "
                        "%d until it answers", exc.detail, manifest.serial)
            loaded = _Loaded(manifest, self._keyring(manifest),
                             time.monotonic() + MANIFEST_RETRY_SECONDS)
            self._loaded = loaded
            return loaded

    def _fetch_manifest(self, max_retries: int | None = None) -> _Loaded:
        document = self._transport.get_data(MANIFEST_PATH, max_retries=max_retries)
        manifest = Manifest.verify(document, self._identity)
        held = self._loaded
        floor = max(held.manifest.serial if held is not None else 0,
                    (self._cache.serial() or 0) if self._cache is not None else 0)
        if manifest.serial < floor:
            raise ManifestError(
                f"the server offered manifest serial {manifest.serial}, older than serial "
                f"{floor} already verified; refusing to roll back"
            )
        if held is not None and manifest == held.manifest:
            keyring = held.keyring
        else:
            keyring = self._keyring(manifest)
        loaded = _Loaded(manifest, keyring, time.monotonic() + self.manifest_ttl)
        self._loaded = loaded
        if self._cache is not None:
            self._cache.store(dict(manifest.document), manifest.serial)
        return loaded

    def _keyring(self, manifest: Manifest) -> Keyring:
        return Keyring(manifest, lambda key_id: self._fetch_context(manifest, key_id))

    def _fetch_context(self, manifest: Manifest, key_id: str) -> bytes:
        # Keyring checks what this returns against the signed digest; the cache keeps only
        # bytes that match it, so one context swapped in flight is refused once, never kept
        expected = manifest.key(key_id).public.get("context_sha256")
        cached = self._cache.context(key_id) if self._cache is not None else None
        if cached is not None and hashlib.sha256(cached).hexdigest() == expected:
            return cached
        data = self._transport.get_bytes(f"/v1/keys/{quote(key_id, safe='')}/context")
        if self._cache is not None and hashlib.sha256(data).hexdigest() == expected:
            self._cache.store_context(key_id, data)
        return data

    def _scheme(self, loaded: _Loaded, policy: MetricPolicy) -> PublicScheme:
        """The active key's scheme for ``policy``, reused across records and refreshes.

        Building one is expensive (a Paillier fixed-base table, a CKKS context), so it is
        cached by key id *and* public key contents: a refreshed manifest re-listing the same
        key reuses it, while a different key under a reused id does not.
        """
        entry = loaded.manifest.active_key(policy.scheme)
        cache_key = (entry.scheme, entry.key_id, json.dumps(entry.public, sort_keys=True))
        with self._schemes_lock:
            scheme = self._schemes.get(cache_key)
        if scheme is None:
            scheme = loaded.keyring.scheme(entry.key_id)
            with self._schemes_lock:
                scheme = self._schemes.setdefault(cache_key, scheme)
        return scheme

    def precompute(self, reports: int) -> int:
        """Prepare Paillier randomness for ``reports`` future records, e.g. while idle.

        Each later Paillier ``record`` then costs one multiplication (~5 µs at 3072 bits)
        instead of ~0.5 ms. Returns how many randomisers were added.
        """
        if isinstance(reports, bool) or not isinstance(reports, int) or reports < 0:
            raise InvalidInput("reports must be a non-negative integer")
        loaded = self._current()
        policy = next((p for p in loaded.manifest.policies.values() if p.scheme == "paillier"),
                      None)
        if policy is None:
            return 0
        scheme = self._scheme(loaded, policy)  # one active key serves every Paillier metric
        return scheme.fill_pool(reports) if isinstance(scheme, PaillierPublic) else 0

    # -- recording -----------------------------------------------------------------------

    def record(self, metric: str, value: Value, *, at: float | None = None) -> None:
        """Encrypt one value of ``metric`` and queue it for the window holding ``at``.

        ``at`` is unix seconds (default: now). Out-of-bounds numbers are clipped by the
        policy, not refused. When ``batch_size`` reports are waiting, this flushes; a failed
        delivery is logged and the reports stay queued for the next ``flush``.

        Raises:
            NotFound: ``metric`` is not in the manifest.
            InvalidInput: ``value`` has the wrong type or shape for the metric, or ``at`` is
                not a valid time.
            ContributionLimit: this Client already sent the policy's
                ``contributions_per_window`` reports of ``metric`` to that window.
            MetricPaused: the manifest pauses ``metric`` (its privacy budget for the
                period is spent): nothing is encrypted or queued; the error says until when.
                Reports queued before the pause are still sent.
            ManifestError, UpstreamError: the manifest could not be fetched or verified.
            ReportsDropped: the automatic flush found queued reports the server can no
                longer accept (see ``flush``). This value was queued first, so it is either
                delivered, still queued, or listed among the dropped reports.
        """
        self._check_open()
        if not isinstance(metric, str):
            raise InvalidInput(f"metric must be a metric name, got {type(metric).__name__}")
        # One manifest state for the whole record: its policy and key belong together.
        loaded = self._current()
        policy = loaded.manifest.policy(metric)
        loaded.manifest.check_not_paused(metric, time.time())
        slots = encode(policy, value)
        window = policy.window_start(time.time() if at is None else at)
        scheme = self._scheme(loaded, policy)
        if self._limiter is not None:
            self._limiter.reserve(policy, window)
        try:
            self._queue.append(_encrypt(policy, scheme, slots, window))
        except BaseException:
            if self._limiter is not None:
                self._limiter.release(policy.name, window)
            raise
        if len(self._queue) >= self.batch_size:
            self._auto_flush()

    @property
    def pending(self) -> int:
        """Reports queued and not yet acknowledged by the server."""
        return len(self._queue)

    # -- delivery ------------------------------------------------------------------------

    def flush(self) -> BatchReceipt:
        """Send every queued report, in batches of at most ``batch_size``.

        Returns the totals the server acknowledged (``accepted`` new, ``duplicates`` it had
        already counted). A report leaves the queue only once acknowledged; on failure the
        rest stays queued and a later flush resends it under the same id.

        When the server rate-limits this install (429), the reports stay queued and flush
        returns what was acknowledged so far; nothing is sent until the ``Retry-After`` it
        gave (any length) has passed, see ``deferred_for``.

        Raises:
            ReportsDropped: the server refused reports it can no longer accept (the manifest
                changed under them, or their window closed). The manifest is refreshed once,
                those reports are dropped (never silently re-encrypted), every other report
                is still sent, and the error lists the dropped ones.
            UpstreamError: the server stayed unreachable or kept failing.
            BlindsumError: any other refusal, as the subclass the server named (e.g.
                ``Unauthorized`` for a bad token).
        """
        self._check_open()
        with self._flush_lock:
            return self._flush_locked()

    @property
    def deferred_for(self) -> float:
        """Seconds until the server's last ``Retry-After`` has passed (0: send any time)."""
        return max(0.0, self._deferred_until - time.time())

    def _auto_flush(self) -> None:
        if time.monotonic() < self._auto_flush_at or not self._flush_lock.acquire(blocking=False):
            return
        try:
            self._flush_locked()
        except ReportsDropped:
            raise
        except BlindsumError as exc:
            pause = min(AUTO_FLUSH_MAX_PAUSE, AUTO_FLUSH_PAUSE * 2.0**self._auto_failures)
            self._auto_failures += 1
            self._auto_flush_at = time.monotonic() + pause
            log.warning("could not deliver %d queued report(s), they stay queued "
                        "(next automatic try in %.0f s): %s", self.pending, pause, exc.detail)
        finally:
            self._flush_lock.release()

    def _flush_locked(self) -> BatchReceipt:
        accepted = duplicates = 0
        refreshed = False
        dropped: list[DroppedReport] = []
        if self.deferred_for > 0:
            log.info("server asked to wait %.0f s more; %d report(s) stay queued",
                     self.deferred_for, self.pending)
            return BatchReceipt(0, 0)
        while batch := _within_bytes(self._queue.peek(self._batch_limit), MAX_BATCH_BYTES):
            try:
                receipt = self._send(batch)
            except RateLimited as limited:
                wait = limited.retry_after if limited.retry_after is not None \
                    else RATE_LIMITED_PAUSE
                self._deferred_until = time.time() + wait
                log.warning("server rate-limited this install for %.0f s; %d report(s) stay "
                            "queued: %s", wait, self.pending, limited.detail)
                break
            except PayloadTooLarge:
                if len(batch) == 1:
                    raise
                # The server's body limit is below our batch: halve, and remember it.
                self._batch_limit = max(1, len(batch) // 2)
                continue
            except (InvalidInput, NotFound, Conflict) as refusal:
                if not refreshed:
                    self.refresh_manifest()
                    refreshed = True
                unsendable = self._unsendable(batch) or _refused_for_good(refusal, batch)
                if not unsendable:
                    raise refusal
                self._drop(unsendable)
                dropped.extend(unsendable)
                continue
            self._queue.remove([r.report_id for r in batch])
            accepted += receipt.accepted
            duplicates += receipt.duplicates
        self._auto_failures, self._auto_flush_at = 0, 0.0
        total = BatchReceipt(accepted, duplicates)
        if dropped:
            raise ReportsDropped(_dropped_detail(dropped), tuple(dropped), total)
        return total

    def _send(self, batch: list[Report]) -> BatchReceipt:
        data = self._transport.post_data(REPORTS_PATH, ReportBatch(tuple(batch)).to_wire())
        try:
            receipt = BatchReceipt.from_wire(data)
        except InvalidInput as exc:
            raise UpstreamError(f"server answered a malformed receipt: {exc.detail}") from None
        if receipt.accepted + receipt.duplicates != len(batch):
            raise UpstreamError(
                f"server acknowledged {receipt.accepted} + {receipt.duplicates} duplicate "
                f"report(s) for a batch of {len(batch)}; keeping them queued"
            )
        return receipt

    def _unsendable(self, batch: list[Report]) -> list[DroppedReport]:
        """Reports in ``batch`` the server can never accept under the current manifest."""
        manifest = self.manifest()
        now = time.time()
        out = []
        for report in batch:
            reason = _unsendable_reason(report, manifest, now)
            if reason:
                out.append(DroppedReport(report, reason))
        return out

    def _drop(self, dropped: list[DroppedReport]) -> None:
        self._queue.remove([d.report.report_id for d in dropped])
        if self._limiter is not None:
            for d in dropped:
                self._limiter.release(d.report.metric, d.report.window)
        log.warning("dropped %d report(s) the server can no longer accept: %s",
                    len(dropped), _dropped_detail(dropped))

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Release connections and files. Does not flush; unsent in-memory reports are lost."""
        if self._closed:
            return
        self._closed = True
        with self._flush_lock:
            if isinstance(self._queue, MemoryQueue) and len(self._queue):
                log.warning("closing with %d unsent report(s); they are lost", len(self._queue))
            self._queue.close()
            if self._limiter is not None:
                self._limiter.close()
            if self._cache is not None:
                self._cache.close()
            if self._claim is not None:
                self._claim.release()
            self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._closed:
                return
            if exc_type is None:
                self.flush()
            else:
                try:
                    self.flush()
                except BlindsumError as error:
                    log.warning("flush on exit failed: %s", error.detail)
        finally:
            self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput("this Client is closed; create a new one")


_NAMED_REPORT = re.compile(r"batch\.reports\[(\d+)\]")


def _encrypt(policy: MetricPolicy, scheme: PublicScheme, slots: list[int],
             window: int) -> Report:
    """The report of ``slots``, proven (in the policy's ``proof_form``) when the policy says
    so: the costly step of ``record``, on the calling thread. benchmarks/validity.py
    measures it per kind at 3072 bits (a few ms for a count or a small histogram, tens of
    ms for a 12-bit sum, seconds for an 8-coordinate vector in 0..1000)."""
    report_id = secrets.token_bytes(REPORT_ID_BYTES)
    spec = slot_spec(policy)
    proof = None
    if policy.proven and isinstance(scheme, PaillierPublic):
        context = ProofContext(policy.name, policy.version, window, scheme.key_id, report_id)
        ciphertexts, proven = prove_report(scheme, proof_kind(policy), spec, slots, context,
                                           policy.proof_form)
        proof = proven.to_wire()
    elif policy.proven:
        raise InvalidInput(f"metric {policy.name!r} requires proofs, which only Paillier has")
    else:
        ciphertexts = scheme.encrypt(slots, spec)
    return Report(report_id, policy.name, policy.version, scheme.key_id, window,
                  tuple(ciphertexts), proof)


def _refused_for_good(refusal: BlindsumError, batch: list[Report]) -> list[DroppedReport]:
    """The reports a Conflict names: their window was sealed, released or is full, or the
    token's per-window cap is reached, which no retry or manifest can change. Without
    dropping them, they would block every later report at the head of the queue. (Other
    refusals may be transient or caused in flight.)"""
    if not isinstance(refusal, Conflict):
        return []
    named = sorted({int(i) for i in _NAMED_REPORT.findall(refusal.detail)})
    if not named or named[-1] >= len(batch):
        return []
    return [DroppedReport(batch[i], f"the server refused it for good: {refusal.detail}")
            for i in named]


def _within_bytes(batch: list[Report], limit: int,
                  proof_limit: int = MAX_BATCH_PROOF_BYTES) -> list[Report]:
    """The longest head of ``batch`` whose ciphertexts and proofs fit in ``limit`` bytes and
    whose proofs fit in ``proof_limit`` (at least one report). A proof is far larger than
    its ciphertexts (a 40-bucket histogram's ~47 KB of JSON, an 8-coordinate vector's
    ~270 KB), and its bytes are what the server spends time verifying."""
    total = proofs = 0
    for index, report in enumerate(batch):
        proof = 0 if report.proof is None else codec.proof_size(report.proof)
        total += sum(len(ct) if isinstance(ct, bytes) else 0 for ct in report.ciphertexts)
        total += proof
        proofs += proof
        if (total > limit or proofs > proof_limit) and index > 0:
            return batch[:index]
    return batch


def _unsendable_reason(report: Report, manifest: Manifest, now: float) -> str | None:
    policy = manifest.policies.get(report.metric)
    if policy is None:
        return f"metric {report.metric!r} is no longer in the manifest"
    if policy.version != report.version:
        return (f"metric {report.metric!r} changed from version {report.version} "
                f"to {policy.version}")
    try:
        entry = manifest.key(report.key_id)
    except NotFound:
        return f"key {report.key_id!r} was retired"
    if entry.scheme != policy.scheme:
        return f"metric {report.metric!r} moved from {entry.scheme} to {policy.scheme}"
    if policy.proven != (report.proof is not None):
        return (f"metric {report.metric!r} now has validity = {policy.validity!r} and the "
                f"report was made {'without' if report.proof is None else 'with'} a proof")
    closes = report.window + policy.window_seconds + policy.late_seconds
    if closes <= math.floor(now):
        return f"the window of metric {report.metric!r} starting at {report.window} closed"
    return None


def _dropped_detail(dropped: list[DroppedReport]) -> str:
    reasons: dict[str, int] = {}
    for d in dropped:
        reasons[d.reason] = reasons.get(d.reason, 0) + 1
    summary = "; ".join(f"{reason} ({count} report(s))" for reason, count in reasons.items())
    return (f"{len(dropped)} queued report(s) can no longer be accepted and were dropped: "
            f"{summary}. Record those values again if they still matter.")
