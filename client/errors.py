"""Errors only the SDK raises; everything else comes from ``blindsum.shared.errors``."""

from __future__ import annotations

from dataclasses import dataclass

from blindsum.shared.codec import BatchReceipt, Report
from blindsum.shared.errors import Conflict


@dataclass(frozen=True)
class DroppedReport:
    """A queued report the server can never accept, and why."""

    report: Report
    reason: str


class ReportsDropped(Conflict):
    """Queued reports were dropped because the server can no longer accept them.

    That happens when the signed manifest changed under them (their metric has a new version,
    their key was retired) or their window closed before they could be delivered. They are
    not re-encrypted behind the app's back: record those values again if they still matter.
    Every other queued report was still sent; ``receipt`` totals what the server accepted.
    Each dropped report's contribution is given back, so re-recording in the same window
    does not hit the contribution limit.
    """

    code = "reports-dropped"
    title = "Queued reports dropped"

    def __init__(
        self, detail: str, dropped: tuple[DroppedReport, ...], receipt: BatchReceipt
    ) -> None:
        super().__init__(detail)
        self.dropped = dropped
        self.receipt = receipt

    @property
    def metrics(self) -> list[str]:
        """Names of the metrics that lost reports, sorted."""
        return sorted({d.report.metric for d in self.dropped})
