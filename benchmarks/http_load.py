"""Upload pre-serialised report batches over HTTP on loopback and time the whole run.

The uploader is deliberately thin (``http.client``, bodies built before the clock starts)
so the figure is the server's: every batch must come back 200 with every report
acknowledged, which the server only sends once they are durable.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

REPORTS_PATH = "/v1/reports"


@dataclass(frozen=True)
class Target:
    """Where batches go: the base URL, a bearer token and the body's media type."""

    url: str
    token: str
    content_type: str
    verify: bool | str = True


@dataclass(frozen=True)
class UploadResult:
    seconds: float
    requests: int
    reports: int
    accepted: int
    duplicates: int

    @property
    def reports_per_second(self) -> float:
        return self.reports / self.seconds if self.seconds > 0 else float("inf")


class UploadError(RuntimeError):
    """A batch was refused or not fully acknowledged: the figures would be meaningless."""


def _connection(target: Target) -> http.client.HTTPConnection:
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    if parts.scheme == "https":
        context = ssl.create_default_context(
            cafile=target.verify if isinstance(target.verify, str) else None
        )
        if target.verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(host, port, timeout=600, context=context)
    return http.client.HTTPConnection(host, port, timeout=600)


def upload(
    target: Target,
    batches: Sequence[tuple[bytes, int]],
    concurrency: int = 4,
    on_batch: Callable[[int], None] | None = None,
    keep_alive: bool = False,
) -> UploadResult:
    """POST every ``(body, report_count)``, ``concurrency`` at a time; time the lot.

    By default each batch opens its own connection, as batches from many devices would.
    With ``keep_alive`` the ``concurrency`` connections are reused; gunicorn then serves
    each kept-alive connection from the one worker that accepted it, so a few long-lived
    connections can leave one worker idle while another is saturated (measured: 1.0 vs
    0.0 cores busy with two connections), which makes rates depend on an accept race.

    Raises:
        UploadError: any answer other than 200 acknowledging every report of its batch.
    """
    headers = {"Authorization": f"Bearer {target.token}", "Content-Type": target.content_type,
               "Accept": "application/json"}
    if not keep_alive:
        headers["Connection"] = "close"
    lock = threading.Lock()
    cursor = iter(range(len(batches)))
    totals = {"accepted": 0, "duplicates": 0}
    errors: list[str] = []
    ready = threading.Barrier(concurrency + 1)

    def worker() -> None:
        conn = _connection(target)
        try:
            conn.connect()
            ready.wait()
            while not errors:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                body, count = batches[index]
                if not keep_alive and conn.sock is None:
                    conn.connect()
                conn.request("POST", REPORTS_PATH, body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                if response.status != 200:
                    errors.append(f"batch {index}: HTTP {response.status} {raw[:300]!r}")
                    return
                if not keep_alive:
                    conn.close()
                receipt = json.loads(raw)
                if receipt["accepted"] + receipt["duplicates"] != count:
                    errors.append(f"batch {index}: acknowledged {receipt} of {count}")
                    return
                with lock:
                    totals["accepted"] += receipt["accepted"]
                    totals["duplicates"] += receipt["duplicates"]
                if on_batch:
                    on_batch(count)
        except Exception as exc:  # reported below; a dead thread must not hang the barrier
            errors.append(f"{type(exc).__name__}: {exc}")
            ready.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait()  # every connection is open: start the clock
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise UploadError(f"upload to {target.url} failed: {errors[0]}")
    return UploadResult(seconds, len(batches), sum(count for _, count in batches),
                        totals["accepted"], totals["duplicates"])
