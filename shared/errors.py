"""The one exception hierarchy every role raises.

Each error carries the HTTP status it maps to and a short machine-readable ``code``; the
services turn them into ``application/problem+json`` in one place each, and the SDK turns a
problem document back into the same class, so an app catches the same type whether the
check failed on the device or on the server.
"""

from __future__ import annotations

from typing import ClassVar


class BlindsumError(Exception):
    """Base of every error blindsum raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        # seconds the peer asked to wait (its Retry-After), when an answer said so
        self.retry_after = retry_after


class InvalidInput(BlindsumError):
    """A value, body, field or argument is malformed or out of range."""

    status = 400
    code = "invalid-input"
    title = "Invalid input"


class InvalidCiphertext(InvalidInput):
    """A ciphertext does not parse, is out of range, or does not match its key."""

    code = "invalid-ciphertext"
    title = "Invalid ciphertext"


class InvalidPolicy(InvalidInput):
    """A metric policy (TOML or JSON) is inconsistent or unsafe."""

    code = "invalid-policy"
    title = "Invalid metric policy"


class InvalidConfig(InvalidInput):
    """Service or CLI configuration is missing or wrong."""

    code = "invalid-config"
    title = "Invalid configuration"


class InvalidProof(InvalidInput):
    """A zero-knowledge proof, or a value it should establish, does not verify (e.g. a
    partial decryption whose proof fails, or a published value that is not the decryption)."""

    code = "invalid-proof"
    title = "Invalid proof"


class Unauthorized(BlindsumError):
    """No credential, or one that is not known."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(BlindsumError):
    """A known credential that may not do this."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(BlindsumError):
    status = 404
    code = "not-found"
    title = "Not found"


class Conflict(BlindsumError):
    """The request contradicts state that already exists (e.g. a released window)."""

    status = 409
    code = "conflict"
    title = "Conflict"


class AlreadyReleased(Conflict):
    code = "already-released"
    title = "Window already released"


class ReleaseInProgress(Conflict):
    """Another request for the same window is being released; its result comes shortly."""

    code = "release-in-progress"
    title = "Release in progress"


class ReleaseInterrupted(Conflict):
    """The window was paid for and consumed, but its release never completed: final."""

    code = "release-interrupted"
    title = "Release interrupted"


class ReportCapExceeded(Conflict):
    """An ingest token sent more reports to a window than its per-window cap allows."""

    code = "report-cap-exceeded"
    title = "Report cap exceeded"


class MetricPaused(BlindsumError):
    """The metric's privacy budget for the current period is spent: the manifest pauses it,
    so nothing recorded now could be published. Record again after the pause ends."""

    status = 409
    code = "metric-paused"
    title = "Metric paused"


class PayloadTooLarge(BlindsumError):
    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(BlindsumError):
    status = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


class RateLimited(BlindsumError):
    """Too many requests for this token or address; retry after the stated delay."""

    status = 429
    code = "rate-limited"
    title = "Too many requests"


class ReleaseRefused(BlindsumError):
    """The key-holder's policy forbids this release (too few contributors, window open...)."""

    status = 422
    code = "release-refused"
    title = "Release refused by policy"


class BudgetExhausted(ReleaseRefused):
    code = "budget-exhausted"
    title = "Privacy budget exhausted"


class ContributionLimit(InvalidInput):
    """The SDK refused a record beyond the policy's contributions per window."""

    code = "contribution-limit"
    title = "Contribution limit reached"


class ManifestError(BlindsumError):
    """A manifest or result is not signed by the pinned key-holder identity."""

    status = 502
    code = "manifest-unverified"
    title = "Manifest could not be verified"


class UpstreamError(BlindsumError):
    """A peer service could not be reached or answered with an error."""

    status = 502
    code = "upstream"
    title = "Upstream service error"


class StorageUnavailable(BlindsumError):
    """The service's database cannot be written now (disk full, read-only, I/O error).

    Nothing was stored; the same request succeeds once the operator frees space or fixes
    the mount, with no restart.
    """

    status = 503
    code = "storage-unavailable"
    title = "Storage unavailable"


class KeyStoreError(BlindsumError):
    """The key-holder's key store is missing, corrupt or locked."""

    status = 500
    code = "keystore"
    title = "Key store error"


_BY_CODE: dict[str, type[BlindsumError]] = {}


def _register(cls: type[BlindsumError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(BlindsumError)


def error_for_code(code: str) -> type[BlindsumError]:
    """The exception class for a problem document's ``code`` (base class if unknown)."""
    return _BY_CODE.get(code, BlindsumError)
