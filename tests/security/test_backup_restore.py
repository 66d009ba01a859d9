"""Backups taken while both services serve restore to services that keep their promises.

A backup of each data directory is taken (``blindsum keyholder backup`` / ``server backup``)
while an SDK client ingests. Both services are then replaced by processes serving the
copies. The restored server publishes exactly the signed results it had; the restored
key-holder's audit log verifies, and it refuses a second release of a window released
before the backup, so the privacy budget spent then cannot be spent again.

Not covered, because the design does not prevent it (docs/OPERATIONS.md, "Restore"): a
window released *after* the backup is unknown to a restored key-holder.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from security_kit import (
    keyholder_manifest,
    post_release,
    problem,
    run_cli,
    service_env,
    valid_release,
)

from blindsum.client import Client
from blindsum.server.processes import Deployment, deployment, free_port, start_service

TIMEOUT = 30.0
HERE = Path(__file__).parent
POLICIES = [HERE.parent / "policies" / "paillier.toml", HERE / "security_policies.toml"]


def _published(url: str, metric: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{url}/v1/published/{metric}", timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def _release(dep: Deployment, metric: str) -> int:
    answer = requests.post(f"{dep.server.url}/v1/windows/release", json={"metric": metric},
                           headers={"Authorization": f"Bearer {dep.admin_token}"},
                           timeout=TIMEOUT)
    [released] = answer.json()["released"]
    return int(released["window"])


def _ingest_until(dep: Deployment, stop: threading.Event, sent: list[int]) -> None:
    with Client(dep.server.url, dep.ingest_token, dep.identity,
                enforce_contribution_limit=False) as sdk:
        for _ in range(200):  # bounded even if the test never sets ``stop``
            if stop.is_set():
                return
            sdk.record("opened", 1)
            sent.append(sdk.flush().accepted)


def _backup(role: str, data_dir: Path, to: Path, env: dict[str, str]) -> str:
    code, out, err, _ = run_cli([role, "backup", "--data-dir", str(data_dir), "--to", str(to)],
                                env)
    assert code == 0 and "backup written" in out, err
    return out.strip()


def _restored(dep: Deployment, backups: Path, logs: Path) -> Deployment:
    kh_port, srv_port = free_port(), free_port()
    keyholder = start_service(
        "keyholder-restored", ["keyholder", "serve", "--data-dir", str(backups / "keyholder"),
                               "--port", str(kh_port)],
        kh_port, logs, service_env(dep, passphrase=True))
    try:
        server = start_service(
            "server-restored", ["server", "serve", "--data-dir", str(backups / "server"),
                                "--port", str(srv_port), "--keyholder-url", keyholder.url,
                                "--keyholder-identity", dep.identity],
            srv_port, logs, service_env(dep, passphrase=False))
    except BaseException:
        keyholder.stop()
        raise
    return Deployment(keyholder, server, dep.identity, dep.ingest_token, dep.admin_token,
                      dep.release_token, backups / "keyholder", backups / "server", dep.env)


def test_backup_under_load_restores_results_audit_and_spent_windows(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("backup")
    backups = root / "backups"
    with deployment(root / "live", POLICIES) as dep:
        with Client(dep.server.url, dep.ingest_token, dep.identity,
                    enforce_contribution_limit=False) as sdk:
            for value in (10, 20, 30):
                sdk.record("seconds", value)
            sdk.flush()
        window = _release(dep, "seconds")
        published = _published(dep.server.url, "seconds")
        stop, sent = threading.Event(), []
        load = threading.Thread(target=_ingest_until, args=(dep, stop, sent))
        load.start()
        try:
            written = [_backup("keyholder", dep.keyholder_dir, backups / "keyholder",
                               service_env(dep, passphrase=True)),
                       _backup("server", dep.server_dir, backups / "server",
                               service_env(dep, passphrase=False))]
        finally:
            stop.set()
            load.join(TIMEOUT)
        assert sent and set(sent) == {1}  # ingest went on while the copies were taken
        print(f"backup under load: {len(sent)} reports acknowledged while the copies were "
              f"taken; {'; '.join(written)}")

    for path in (backups / "keyholder" / "keyholder.db", backups / "server" / "aggregator.db"):
        assert path.stat().st_mode & 0o077 == 0, path
    code, out, err, _ = run_cli(["keyholder", "audit", "--data-dir",
                                 str(backups / "keyholder")], service_env(dep, passphrase=True))
    assert code == 0 and "intact" in out, err

    restored = _restored(dep, backups, root)
    try:
        assert _published(restored.server.url, "seconds") == published
        again = post_release(restored, valid_release(keyholder_manifest(restored), "seconds",
                                                     window, [10, 20, 30], early=True))
        assert again.status_code == 409 and problem(again)["code"] == "already-released"
        budget = requests.get(f"{restored.keyholder.url}/v1/budget", timeout=TIMEOUT,
                              headers={"Authorization": f"Bearer {dep.release_token}"}).json()
        assert [m["releases"] for m in budget["metrics"] if m["metric"] == "seconds"] == [1]
    finally:
        restored.stop()
