"""Storage faults are answered clearly (issue: a full disk gave 500 ``internal`` while health
stayed green; a read-only data directory made the server print a traceback and exit).

The data directories live on small tmpfs mounts, so the disk really fills and the mount is
really read-only (root only: CI runs as root; elsewhere these tests skip).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fault_kit import POLICIES

from blindsum.client import Client, StorageUnavailable
from blindsum.server.processes import Deployment, deployment, free_port

TIMEOUT = 30.0


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                              "tmpfs", str(mount_point)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write zeros into ``directory`` until its file system has no byte left."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while handle.write(b"\0" * size):
                    pass
    return filler


def readiness(dep: Deployment) -> tuple[int, dict[str, object]]:
    response = requests.get(f"{dep.server.url}/readyz", timeout=TIMEOUT)
    return response.status_code, response.json()


@pytest.fixture(scope="module")
def on_tmpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("disk")
    # 64 MiB: above the 16 MiB floor readiness asks for, small enough to fill in a blink
    with tmpfs(root / "server", "64m"), deployment(root, POLICIES) as running:
        yield running


def test_full_disk_answers_503_storage_unavailable_then_recovers_without_restart(
    on_tmpfs: Deployment,
) -> None:
    dep = on_tmpfs
    assert readiness(dep)[0] == 200
    with Client(dep.server.url, dep.ingest_token, dep.identity, max_retries=0,
                timeout=TIMEOUT, enforce_contribution_limit=False) as sdk:
        assert sdk.manifest().serial >= 1
        filler = fill(dep.server_dir)
        status, body = readiness(dep)
        assert status == 503 and body["code"] == "not-ready", body
        assert body["checks"]["storage"] != "ok", body  # type: ignore[index]
        refusals = []
        for _ in range(10):  # until SQLite needs a page the disk no longer has
            for _ in range(50):
                sdk.record("taps", 1)
            try:
                sdk.flush()
            except StorageUnavailable as exc:
                refusals.append(exc)
                break
        assert refusals, "ingest never met the full disk"
        assert "disk is full" in refusals[0].detail
        assert refusals[0].retry_after is not None and refusals[0].retry_after > 0
        queued = sdk.pending
        assert queued >= 50  # nothing acknowledged, nothing lost: still queued on the device
        filler.unlink()
        receipt = sdk.flush()
        assert receipt.accepted == queued and sdk.pending == 0
        print(f"full disk: ingest refused with {refusals[0].status} {refusals[0].code} "
              f"(Retry-After {refusals[0].retry_after}), {queued} reports kept queued, all "
              f"{receipt.accepted} accepted after space was freed, no restart")
    assert readiness(dep)[0] == 200
    log = dep.server.log_path.read_text()
    assert '"internal"' not in log and "Traceback" not in log


def test_read_only_data_directory_stops_serve_with_one_line(
    deployed: Deployment, tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "ro", "1m") as mount:
        (mount / "server").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        completed = subprocess.run(
            [sys.executable, "-m", "blindsum.server.cli", "server", "serve",
             "--data-dir", str(mount / "server"), "--port", str(free_port()),
             "--keyholder-url", deployed.keyholder.url,
             "--keyholder-identity", deployed.identity],
            env={**os.environ, "BLINDSUM_RELEASE_TOKEN": deployed.release_token},
            capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: server data directory"), lines
    assert "Read-only file system" in lines[0]
