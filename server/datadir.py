"""A service's data directory, checked before it serves: private, writable, or a clear refusal.

Checked in the CLI, before gunicorn starts, so a read-only or foreign directory ends the
command with one line and exit code 2 instead of workers failing to boot with tracebacks.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from blindsum.shared.errors import InvalidConfig

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def prepare_data_dir(path: Path, what: str) -> Path:
    """Create ``path`` (0700) or tighten it to 0700, and prove it writable.

    Raises:
        InvalidConfig: naming the directory and why it cannot be used.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        if not path.is_dir():
            raise InvalidConfig(f"{what} {path} is not a directory")
        if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR:
            path.chmod(PRIVATE_DIR)  # databases hold ciphertexts, tokens' digests, keys
        for child in path.iterdir():
            if child.is_file() and stat.S_IMODE(child.stat().st_mode) & 0o077:
                child.chmod(PRIVATE_FILE)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise InvalidConfig(f"{what} {path} cannot be used: "
                            f"{exc.strerror or exc}") from None
    return path


def prepare_metrics_dir() -> Path:
    """A fresh directory for the workers' metric files (prometheus-client multiprocess mode).

    Not in the data directory: the files are memory-mapped, and a worker that touches a new
    page of one on a full disk dies of SIGBUS. Removed when the server exits; counters
    restart from zero with the server, as Prometheus expects of a restarted target.
    """
    metrics = Path(tempfile.mkdtemp(prefix="blindsum-metrics-"))
    atexit.register(_remove_if_owner, metrics, os.getpid())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    return metrics


def _remove_if_owner(path: Path, owner: int) -> None:
    # workers are forked from the master and inherit its exit handlers: only the master,
    # which outlives every worker, may remove the directory they all write to
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files and directories created inside are 0600 / 0700 (umask 077), then as before."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)
