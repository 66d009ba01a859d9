"""The blindsum SDK: encrypt metric values on the device and send them to the aggregator.

Only ``requests`` and ``blindsum.shared`` are needed; importing this never pulls in Flask or
anything from ``blindsum.server``. Start with ``Client``; every error is a ``BlindsumError``.
"""

from blindsum.shared.codec import BatchReceipt
from blindsum.shared.errors import (
    AlreadyReleased,
    BlindsumError,
    BudgetExhausted,
    Conflict,
    ContributionLimit,
    Forbidden,
    InvalidCiphertext,
    InvalidConfig,
    InvalidInput,
    InvalidPolicy,
    ManifestError,
    MetricPaused,
    NotFound,
    PayloadTooLarge,
    ReleaseRefused,
    ReportCapExceeded,
    StorageUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
)

from .client import Client
from .errors import DroppedReport, ReportsDropped
from .transport import RetryPolicy, Timeouts

__all__ = [
    "AlreadyReleased",
    "BatchReceipt",
    "BlindsumError",
    "BudgetExhausted",
    "Client",
    "Conflict",
    "ContributionLimit",
    "DroppedReport",
    "Forbidden",
    "InvalidCiphertext",
    "InvalidConfig",
    "InvalidInput",
    "InvalidPolicy",
    "ManifestError",
    "MetricPaused",
    "NotFound",
    "PayloadTooLarge",
    "ReleaseRefused",
    "ReportCapExceeded",
    "ReportsDropped",
    "RetryPolicy",
    "StorageUnavailable",
    "Timeouts",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamError",
]
