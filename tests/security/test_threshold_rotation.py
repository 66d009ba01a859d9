"""Rotating a two-party threshold key: a new ceremony, new shares sealed in both parties' key
stores, the old key still accepted, and windows under either key released and verified.

Real processes on loopback (``deployment(threshold=True)``); the rotation is the operator's
CLI run against the key-holder's data directory while both services keep running.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from blindsum.client import Client
from blindsum.server.processes import Deployment, cli, deployment
from blindsum.shared.signing import parse_identity
from blindsum.shared.verification import verify_result

POLICIES = Path(__file__).parent.parent / "policies"
METRIC = "opened"
REFRESH_WAIT = 30.0  # seconds for the server's on-demand manifest refresh to meet the key


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("rotate-threshold"), [POLICIES / "paillier.toml"],
                    paillier_bits=2048, threshold=True) as running:
        yield running


def _record(deployed: Deployment, values: list[int], kid: str) -> None:
    deadline = time.monotonic() + REFRESH_WAIT
    while True:
        with Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                    enforce_contribution_limit=False) as sdk:
            if sdk.manifest().active_key("paillier").key_id == kid:
                for value in values:
                    sdk.record(METRIC, value)
                assert sdk.flush().accepted == len(values)
                return
        assert time.monotonic() < deadline, f"the server never relayed key {kid}"
        time.sleep(1.0)


def _keys(deployed: Deployment) -> dict[str, str]:
    out = cli("keyholder", "key", "list", "--data-dir", str(deployed.keyholder_dir),
              env=deployed.env)
    return {line.split("\t")[0]: line.split("\t")[2] for line in out.splitlines()}


def test_a_threshold_key_rotates_by_a_new_ceremony_and_both_epochs_release(
        deployed: Deployment) -> None:
    manifest = requests.get(f"{deployed.server.url}/v1/manifest", timeout=30).json()
    (old,) = [k["kid"] for k in json.loads(manifest["payload"])["keys"]
              if k["scheme"] == "paillier"]
    _record(deployed, [1, 1, 0, 1], old)

    rotate = ["keyholder", "key", "rotate", "--scheme", "paillier",
              "--data-dir", str(deployed.keyholder_dir)]
    before = _keys(deployed)
    refused = subprocess.run([sys.executable, "-m", "blindsum.server.cli", *rotate],
                             capture_output=True, text=True, timeout=120, check=False,
                             env={**deployed.env, "PATH": "/usr/bin:/bin"})
    assert refused.returncode == 2 and "--server-dir" in refused.stderr
    assert before[old] == "active" and _keys(deployed) == before  # nothing changed
    out = cli(*rotate, "--server-dir", str(deployed.server_dir), env=deployed.env)
    match = re.search(r"new active paillier key: (\S+)", out)
    assert match, out
    new = match.group(1)
    keys = _keys(deployed)
    assert keys[old] == "accepted" and keys[new] == "active"
    server_shares = sorted(p.name for p in (deployed.server_dir / "keys").iterdir())
    assert server_shares == sorted([f"{old}.party2.share", f"{new}.party2.share"])
    keyholder_files = {p.name for p in (deployed.keyholder_dir / "keys").iterdir()}
    assert {f"{old}.party1.share", f"{new}.party1.share"} <= keyholder_files
    assert not any(name.startswith(new) and name.endswith(".key") for name in keyholder_files)

    _record(deployed, [1, 0, 1, 1, 1], new)
    response = requests.post(f"{deployed.server.url}/v1/windows/release",
                             json={"metric": METRIC},
                             headers={"Authorization": f"Bearer {deployed.admin_token}"},
                             timeout=300)
    response.raise_for_status()
    assert response.json()["refused"] == [], response.json()
    results = requests.get(f"{deployed.server.url}/v1/published/{METRIC}",
                           timeout=30).json()["results"]
    pinned = parse_identity(deployed.identity)
    checked = {r.key_id: r for r in (verify_result(entry, pinned) for entry in results)}
    assert set(checked) == {old, new}
    assert checked[old].report_count == 4 and checked[new].report_count == 5
    assert all(r.threshold for r in checked.values())


def test_a_ckks_key_cannot_be_made_a_threshold_key(deployed: Deployment) -> None:
    done = subprocess.run([sys.executable, "-m", "blindsum.server.cli", "keyholder", "key",
                           "rotate", "--scheme", "ckks", "--threshold", "--server-dir",
                           str(deployed.server_dir), "--data-dir", str(deployed.keyholder_dir)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**deployed.env, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "single-key" in done.stderr
