"""Data minimisation: a report's ciphertexts are erased once its window is final.

A released window's result is the signed noisy aggregate the server stores; its raw reports
are never needed again, and a refused window will never be released. Keeping them would only
keep a copy of every device's encrypted values around for an attacker who one day obtains a
key. So, ``retention_seconds`` after a window became released or refused, its reports'
ciphertexts are erased (``Store.erase_settled_reports``). Each report's id is kept, with its
metric and window: a late retry of an acknowledged report must still be answered as a
duplicate, not accepted into a new window or refused as an unknown report.

The sweep runs in every worker's background ticker and from ``blindsum server gc``; it erases
in bounded batches so it never holds the write lock for long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from blindsum.server.aggregator.store import Store

log = logging.getLogger("blindsum.aggregator.retention")
BATCH = 5000
SWEEP_INTERVAL_SECONDS = 60.0


@dataclass
class RetentionSweep:
    store: Store
    retention_seconds: float
    clock: Callable[[], float] = time.time

    def sweep(self, max_batches: int = 20) -> int:
        """Erase what is due (at most ``max_batches`` batches now); returns how many."""
        cutoff = self.clock() - self.retention_seconds
        total = 0
        for _ in range(max_batches):
            erased = self.store.erase_settled_reports(cutoff, BATCH)
            total += erased
            if erased < BATCH:
                break
        if total:
            log.info("erased the ciphertexts of %d reports of settled windows", total,
                     extra={"fields": {"erased_reports": total}})
        return total
