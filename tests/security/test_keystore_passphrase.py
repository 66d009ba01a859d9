"""A key-holder started (or administered) with the wrong key-store passphrase stops at once,
says the passphrase is the problem, prints no traceback, and changes nothing.

The commands run against the live key-holder's own data directory while it serves, as an
operator's typo would.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from security_kit import keyholder_manifest, record_error, run_cli, snapshot

from blindsum.server.processes import Deployment, free_port

QUICKLY = 15.0  # seconds: scrypt once, no key generation, no server start


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _assert_clear_refusal(code: int, out: str, err: str, seconds: float, needle: str) -> None:
    record_error("cli", code, out + err)
    assert code not in (0, -9), (code, out, err)
    assert seconds < QUICKLY, seconds
    assert needle in err.lower(), err
    assert "Traceback" not in out + err, err


def _wrong_passphrase_settings(kind: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    if kind == "environment":
        return [], {"BLINDSUM_KEYSTORE_PASSPHRASE": "not-the-passphrase"}
    path = tmp_path / "passphrase"
    path.write_text("not-the-passphrase\n")
    return ["--passphrase-file", str(path)], {}


@pytest.mark.parametrize("kind", ["environment", "file"])
def test_keyholder_serve_with_a_wrong_passphrase_exits_naming_the_passphrase(
    deployed: Deployment, tmp_path: Path, kind: str,
) -> None:
    extra, env = _wrong_passphrase_settings(kind, tmp_path)
    port = free_port()
    code, out, err, seconds = run_cli(
        ["keyholder", "serve", "--data-dir", str(deployed.keyholder_dir), "--port", str(port),
         *extra], env, timeout=60)
    _assert_clear_refusal(code, out, err, seconds, "passphrase")
    assert not _listening(port)


@pytest.mark.parametrize("kind", ["environment", "file"])
def test_key_rotate_with_a_wrong_passphrase_exits_and_adds_no_key(
    deployed: Deployment, tmp_path: Path, kind: str,
) -> None:
    before, manifest = snapshot(deployed), keyholder_manifest(deployed)
    extra, env = _wrong_passphrase_settings(kind, tmp_path)
    code, out, err, seconds = run_cli(
        ["keyholder", "key", "rotate", "--scheme", "paillier", "--data-dir",
         str(deployed.keyholder_dir), *extra], env)
    _assert_clear_refusal(code, out, err, seconds, "passphrase")
    after = keyholder_manifest(deployed)
    assert (after.serial, after.keys) == (manifest.serial, manifest.keys)
    assert snapshot(deployed) == before


@pytest.mark.parametrize("command", ["serve", "rotate"])
def test_sealed_keystore_without_a_passphrase_says_how_to_give_one(
    deployed: Deployment, command: str,
) -> None:
    manifest = keyholder_manifest(deployed)
    port = free_port()
    action = (["serve", "--port", str(port)] if command == "serve"
              else ["key", "rotate", "--scheme", "paillier"])
    args = ["keyholder", *action, "--data-dir", str(deployed.keyholder_dir)]
    code, out, err, seconds = run_cli(args, {}, timeout=60)
    _assert_clear_refusal(code, out, err, seconds, "blindsum_keystore_passphrase")
    assert not _listening(port)
    assert keyholder_manifest(deployed).serial == manifest.serial
