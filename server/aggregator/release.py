"""The release driver: sends closed windows' aggregates to the key-holder, stores the results.

A release first *claims* its window (``open`` -> ``sealed`` in one UPDATE): from then on
ingest refuses reports for it, so the aggregate and the report-id digest that are sent are
final, and only the worker whose UPDATE changed the row proceeds. A claim is a lease: a
window left ``sealed`` by a crash (or by a failed call) is claimed again once
``claimed_until`` passes, and the *same* request is sent again: the key-holder answers a
repeated request with its stored result, never with a second noise draw.

Once a request may have reached the key-holder, the window is never re-opened, even if it
was an early release and its period has not ended: the key-holder may have paid for it and
consumed it (a lost answer), and new reports would change the request. Outcomes:

- ``released``: the verified result is stored;
- ``refused``: the key-holder refused on public grounds before paying (too few
  contributors, budget exhausted, window not closed, policy forbids early release...) —
  final, except that a refused *early* release re-opens a window still taking reports,
  since nothing was consumed — or the window is consumed for good (released with other
  reports, or paid for by a release that was interrupted);
- ``failed``: the key-holder was unreachable, busy with the same release, or misbehaved;
  the window stays sealed and the same request is retried later.

With a threshold key the key-holder answers a signed *partial release* instead of a
result; ``ThresholdFinisher`` checks it against our own aggregate, adds our partial
decryption and publishes (``threshold.py``). If a proof fails nothing is published and the
window stays sealed: the retry gets the same stored partial release, never a new noise draw.
With a ``noise = "both"`` policy the request also carries our own encrypted noise, drawn
once and stored before the first send, so a retry is the same request.

After every attempt that reached the key-holder, its signed audit-chain head is fetched and
kept (``audit_heads``), so a key-holder whose log is later rewritten or cut is caught by
``blindsum keyholder audit --server-url``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from blindsum.server.aggregator.keyholder_client import KeyholderApi
from blindsum.server.aggregator.store import Store, WindowKey, WindowRow
from blindsum.server.aggregator.threshold import ServerNoise, ThresholdFinisher
from blindsum.shared import codec
from blindsum.shared.codec import (
    MAX_FORWARDED_REPORTS,
    ReleaseRequest,
    Report,
    WindowReports,
    report_ids_digest,
)
from blindsum.shared.errors import (
    AlreadyReleased,
    BlindsumError,
    Conflict,
    InvalidCiphertext,
    InvalidProof,
    KeyStoreError,
    ManifestError,
    NotFound,
    ReleaseInProgress,
    ReleaseInterrupted,
    ReleaseRefused,
    UpstreamError,
)
from blindsum.shared.threshold.release import PARTIAL_TYPE

# Forwarded batches stay far below the key-holder's body limit (64 MiB by default).
FORWARD_BATCH_BYTES = 8 * 1024 * 1024
LEASE_SECONDS = 300.0  # longer than a release call may take (connect + read timeouts)
RETRY_SECONDS = 15.0
# Released a little after the window is due, so a key-holder whose clock lags ours by
# less than this still sees the window closed and does not refuse it as open.
GRACE_SECONDS = 2.0
log = logging.getLogger("blindsum.aggregator.release")

Status = Literal["released", "refused", "failed"]


@dataclass(frozen=True)
class ReleaseOutcome:
    key: WindowKey
    report_count: int
    status: Status
    code: str | None = None
    detail: str | None = None
    payload: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "metric": self.key.metric,
            "version": self.key.version,
            "window": self.key.window,
            "kid": self.key.key_id,
            "report_count": self.report_count,
        }
        if self.payload is not None:
            data.update(value=self.payload.get("value"), ci=self.payload.get("ci"),
                        epsilon=self.payload.get("epsilon"))
        else:
            data.update(code=self.code, detail=self.detail)
        return data


class ReleaseDriver:
    """Releases windows through a key-holder; safe to run in several threads and workers."""

    def __init__(
        self, store: Store, keyholder: KeyholderApi, clock: Callable[[], float] = time.time,
        finisher: ThresholdFinisher | None = None,
    ) -> None:
        self._store = store
        self._keyholder = keyholder
        self._clock = clock
        self._finisher = finisher

    def release_window(
        self, metric: str, version: int, window: int, key_id: str, early: bool
    ) -> ReleaseOutcome:
        """Claim, send and settle one window aggregate.

        ``early`` asks the key-holder to release a window that still takes reports (its
        policy decides); without it a window that is not due yet is left alone.

        Raises:
            NotFound: no such window.
        """
        key = WindowKey(metric, version, window, key_id)
        now = self._clock()
        row = self._store.window(key)
        if row is None:
            raise NotFound(f"no reports for {key.describe()}")
        if not early and now < row.due_at:
            return ReleaseOutcome(key, row.report_count, "failed", Conflict.code,
                                  f"{key.describe()} takes reports until {row.due_at:.0f}")
        with self._store.transaction() as tx:
            claimed = tx.claim_window(key, now, LEASE_SECONDS)
            row = tx.window(key)
        assert row is not None  # windows are never deleted
        if not claimed:
            return ReleaseOutcome(key, row.report_count, "failed", Conflict.code,
                                  f"{key.describe()} is {row.state} (being or already released)")
        return self._send(row, early=now < row.due_at)

    def release_due(self, now: float | None = None) -> list[ReleaseOutcome]:
        """Release every window that is due (oldest first); per-window faults are logged."""
        now = self._clock() if now is None else now
        outcomes = []
        for row in self._store.releasable_windows(due_by=now - GRACE_SECONDS, now=now):
            try:
                outcomes.append(self.release_window(*_key_fields(row.key), early=False))
            except Exception:
                log.exception("releasing %s failed", row.key.describe())
        return outcomes

    def release_requested(self, metric: str | None, window: int | None) -> list[ReleaseOutcome]:
        """The operator's release: every open window matching the filters, early if need be.

        Raises:
            NotFound: a named metric and window with no reports.
            AlreadyReleased / Conflict: that window was already released or refused.
        """
        rows = self._store.windows(metric=metric, window=window, states=("open", "sealed"))
        if not rows and metric is not None and window is not None:
            _explain_nothing_to_release(self._store.windows(metric=metric, window=window),
                                        metric, window)
        now = self._clock()
        return [self.release_window(*_key_fields(row.key), early=now < row.due_at)
                for row in rows]

    # -- one claimed window --------------------------------------------------------------

    def _send(self, row: WindowRow, early: bool) -> ReleaseOutcome:
        key = row.key
        report_ids = self._store.report_ids(key)
        if len(report_ids) != row.report_count:
            return self._failed(row, early, "internal",
                                f"{key.describe()} counts {row.report_count} reports but "
                                f"{len(report_ids)} are stored", sent=False)
        try:
            noise = self._finisher.committed_noise(self._store, key, self._clock()) \
                if self._finisher is not None else ServerNoise()
        except BlindsumError as exc:
            return self._failed(row, early, exc.code, exc.detail, sent=False)
        request = ReleaseRequest(
            metric=key.metric, version=key.version, window=key.window, key_id=key.key_id,
            report_count=row.report_count, report_ids_digest=report_ids_digest(report_ids),
            aggregate=row.aggregate, early=early, server_noise=noise.ciphertexts,
            server_noise_proof=noise.proof,
        )
        try:
            if self._finisher is not None and self._finisher.holds_share(key.key_id):
                self._forward(key)
            result = self._keyholder.release(request)
        except UpstreamError as exc:  # unreachable: no head to fetch either
            return self._failed(row, early, exc.code, exc.detail, sent=True)
        except (ReleaseInProgress, ManifestError) as exc:
            return self._after_attempt(self._failed(row, early, exc.code, exc.detail, sent=True))
        except (ReleaseRefused, AlreadyReleased, ReleaseInterrupted, InvalidCiphertext,
                InvalidProof, Conflict) as exc:
            # (InvalidProof, Conflict: the key-holder's intake refused a forwarded report or
            # the window for good; retrying would only be refused again)
            return self._after_attempt(self._refused(row, early, exc))
        except BlindsumError as exc:
            return self._after_attempt(self._failed(row, early, exc.code, exc.detail, sent=True))
        document: dict[str, Any] = result.document
        payload_text = result.document["payload"]
        if result.payload.get("type") == PARTIAL_TYPE:
            # A threshold key: the key-holder stored its partial release (paid, one noise
            # draw); a failure here publishes nothing and the same request is retried.
            try:
                if self._finisher is None:
                    raise KeyStoreError("this server holds no threshold key shares")
                document, payload_text = self._finisher.finish(request, result)
            except BlindsumError as exc:
                return self._after_attempt(
                    self._failed(row, early, exc.code, exc.detail, sent=True))
        now = self._clock()
        with self._store.transaction() as tx:
            tx.put_result(key, document, payload_text, now)
            tx.set_window_state(key, "released", None, now)
        log.info("released %s (%d reports)", key.describe(), row.report_count)
        return self._after_attempt(
            ReleaseOutcome(key, row.report_count, "released", payload=json.loads(payload_text)))

    def _forward(self, key: WindowKey) -> None:
        """Send a threshold window's reports to the key-holder, which verifies them again
        and releases only its own sum (``server/keyholder/intake.py``). Idempotent, so a
        retried release simply forwards again."""
        batch: list[Report] = []
        size = 0
        for report in self._store.window_reports(key):
            if not report.ciphertexts:
                continue  # erased by retention after the key-holder already held it
            weight = len(codec.dumps(report.to_wire(), codec.CBOR))
            if batch and (size + weight > FORWARD_BATCH_BYTES
                          or len(batch) == MAX_FORWARDED_REPORTS):
                self._keyholder.forward_reports(
                    WindowReports(key.metric, key.version, key.window, key.key_id,
                                  tuple(batch)))
                batch, size = [], 0
            batch.append(report)
            size += weight
        if batch:
            self._keyholder.forward_reports(
                WindowReports(key.metric, key.version, key.window, key.key_id, tuple(batch)))

    def _after_attempt(self, outcome: ReleaseOutcome) -> ReleaseOutcome:
        """Keep the key-holder's signed audit head (best effort: a failure is only logged)."""
        try:
            document, payload = self._keyholder.audit_head()
            self._store.put_audit_head(payload["seq"], payload["hash"], document,
                                       self._clock())
        except BlindsumError as exc:
            log.warning("could not fetch the key-holder's audit head: %s", exc.detail)
        return outcome

    def _refused(self, row: WindowRow, early: bool, exc: BlindsumError) -> ReleaseOutcome:
        # Only a refusal on public grounds consumed nothing: such an early release must not
        # end a window that still takes reports. A consumed window is final.
        public = isinstance(exc, ReleaseRefused | InvalidCiphertext)
        state = "open" if public and early and self._clock() < row.due_at else "refused"
        with self._store.transaction() as tx:
            tx.set_window_state(row.key, state, exc.detail, self._clock())
        log.warning("release of %s refused: %s", row.key.describe(), exc.detail)
        return ReleaseOutcome(row.key, row.report_count, "refused", exc.code, exc.detail)

    def _failed(self, row: WindowRow, early: bool, code: str, detail: str,
                *, sent: bool) -> ReleaseOutcome:
        now = self._clock()
        with self._store.transaction() as tx:
            if not sent and early and now < row.due_at:
                tx.set_window_state(row.key, "open", detail, now)
            else:
                # The request may have reached the key-holder: keep it sealed and unchanged.
                tx.set_window_state(row.key, "sealed", detail, now, now + RETRY_SECONDS)
        log.warning("release of %s failed (will retry): %s", row.key.describe(), detail)
        return ReleaseOutcome(row.key, row.report_count, "failed", code, detail)


def _key_fields(key: WindowKey) -> tuple[str, int, int, str]:
    return key.metric, key.version, key.window, key.key_id


def _explain_nothing_to_release(rows: list[WindowRow], metric: str, window: int) -> None:
    if not rows:
        raise NotFound(f"no reports for metric {metric!r} window {window}")
    states = sorted({row.state for row in rows})
    if states == ["released"]:
        raise AlreadyReleased(f"metric {metric!r} window {window} was already released")
    raise Conflict(f"metric {metric!r} window {window} is {', '.join(states)}: "
                   "nothing left to release")
