"""One daemon thread per worker that runs periodic jobs (window releases, manifest refresh).

A job that raises is logged and runs again at its next tick: a key-holder outage must not
kill the thread that will release the windows once it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("blindsum.aggregator.background")

Job = tuple[str, float, Callable[[], object]]
"""(name, interval in seconds, function)"""


class Ticker:
    """Runs each job every ``interval`` seconds on one daemon thread until ``stop()``."""

    def __init__(self, name: str, jobs: Sequence[Job]) -> None:
        self._name = name
        self._jobs = [job for job in jobs if job[1] > 0]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (once; later calls do nothing)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or not self._jobs or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        start = time.monotonic()
        due = [start + interval for _, interval, _ in self._jobs]
        while not self._stop.is_set():
            wait = max(0.0, min(due) - time.monotonic())
            if self._stop.wait(wait):
                return
            now = time.monotonic()
            for index, (name, interval, job) in enumerate(self._jobs):
                if now < due[index]:
                    continue
                try:
                    job()
                except Exception:
                    log.exception("background job %s failed", name)
                due[index] = time.monotonic() + interval
                if self._stop.is_set():
                    return
