"""Readiness checks both services share: is the data directory writable right now?

A write probe (a small file written, flushed to disk and removed) catches a read-only mount
or a full disk the way the next commit would meet it; the free-space floor says "not ready"
a little before that, while there is still room to finish the requests in flight.
"""

from __future__ import annotations

import os
from pathlib import Path

from blindsum.server.observability import Check

MIN_FREE_BYTES = 16 << 20
PROBE_NAME = ".ready-probe"


def storage_check(data_dir: Path, min_free_bytes: int = MIN_FREE_BYTES) -> Check:
    def check() -> str | None:
        try:
            stats = os.statvfs(data_dir)
            free = stats.f_bavail * stats.f_frsize
            if free < min_free_bytes:
                return f"{free >> 20} MiB free in the data directory (need {min_free_bytes >> 20})"
            probe = data_dir / f"{PROBE_NAME}-{os.getpid()}"
            with probe.open("wb") as handle:
                handle.write(b"ok")
                handle.flush()
                os.fsync(handle.fileno())
            probe.unlink()
        except OSError as exc:
            return f"data directory not writable: {exc.strerror or exc}"
        return None

    return check
