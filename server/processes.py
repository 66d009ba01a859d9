"""Start the two services as real processes on loopback, wait until healthy, stop them.

Used by ``blindsum demo``, the integration tests and the benchmarks, so all three exercise
exactly what an operator runs: the ``blindsum`` CLI under gunicorn.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from blindsum.server.cli import STOP_WITH_PARENT
from blindsum.shared.errors import UpstreamError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    """Run a ``blindsum`` CLI command to completion; return stdout or raise naming stderr."""
    completed = subprocess.run(
        [sys.executable, "-m", "blindsum.server.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise UpstreamError(
            f"`blindsum {' '.join(args[:3])}` failed ({completed.returncode}): "
            f"{completed.stderr.strip()[-500:]}"
        )
    return completed.stdout


@dataclass
class ServiceProcess:
    """One service process; ``stop`` is safe to call twice."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    verify: bool | str = True
    _stopped: bool = field(default=False)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UpstreamError(f"{self.name} exited early:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/healthz", timeout=2,
                                verify=self.verify).status_code == 200:
                    return
            time.sleep(0.1)
        raise UpstreamError(f"{self.name} did not become healthy:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def start_service(
    name: str,
    args: Sequence[str],
    port: int,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    scheme: str = "http",
    verify: bool | str = True,
    wait: bool = True,
) -> ServiceProcess:
    """Start ``blindsum <args>`` in its own process group and (unless told not to) wait for
    /healthz to answer 200."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "blindsum.server.cli", *args],
        # the service stops if this process dies, even by SIGKILL (see cli.stop_with_parent)
        env={**os.environ, **(env or {}), STOP_WITH_PARENT: str(os.getpid())},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    service = ServiceProcess(name, f"{scheme}://{LOOPBACK}:{port}", process, log_path, verify)
    if wait:
        try:
            service.wait_healthy()
        except BaseException:
            service.stop()
            raise
    return service


@dataclass
class Deployment:
    """A key-holder and a server running side by side, with everything needed to use them."""

    keyholder: ServiceProcess
    server: ServiceProcess
    identity: str
    ingest_token: str
    admin_token: str
    release_token: str
    keyholder_dir: Path
    server_dir: Path
    env: dict[str, str]
    ca_bundle: str | None = None

    @property
    def verify(self) -> bool | str:
        """What HTTP clients pass as ``verify``: the loopback CA when TLS is on."""
        return self.ca_bundle or True

    def describe(self) -> dict[str, str]:
        return {
            "server_url": self.server.url,
            "keyholder_url": self.keyholder.url,
            "keyholder_identity": self.identity,
            "ingest_token": self.ingest_token,
            "admin_token": self.admin_token,
            "release_token": self.release_token,
            "keyholder_data_dir": str(self.keyholder_dir),
            "server_data_dir": str(self.server_dir),
            "ca_bundle": self.ca_bundle or "",
        }

    def stop(self) -> None:
        self.server.stop()
        self.keyholder.stop()


@contextlib.contextmanager
def deployment(
    root: Path,
    policy_files: Sequence[Path],
    *,
    paillier_bits: int = 2048,
    auto_release: bool = False,
    server_env: Mapping[str, str] | None = None,
    keyholder_env: Mapping[str, str] | None = None,
    tls: bool = False,
    threshold: bool = False,
) -> Iterator[Deployment]:
    """Initialise a key-holder, register policies, start both services; stop them after.

    With ``threshold`` the Paillier key is a two-party threshold key: its ceremony seals the
    server's share in the server's data directory (its own passphrase).

    With ``tls`` both services serve HTTPS with a certificate from a fresh loopback CA
    (``Deployment.ca_bundle``), and the server verifies the key-holder against that CA.
    """
    import secrets

    from blindsum.server.pki import make_loopback_pki

    keyholder_dir, server_dir = root / "keyholder", root / "server"
    server_dir.mkdir(parents=True, exist_ok=True)
    env = {"BLINDSUM_KEYSTORE_PASSPHRASE": secrets.token_urlsafe(24)}
    server_secret = {"BLINDSUM_SERVER_KEYSTORE_PASSPHRASE": secrets.token_urlsafe(24)}
    split = ["--threshold", "--server-dir", str(server_dir)] if threshold else []
    init = json.loads(cli("keyholder", "init", "--data-dir", str(keyholder_dir),
                          "--paillier-bits", str(paillier_bits), "--json", *split,
                          env={**env, **server_secret}))
    for policy_file in policy_files:
        cli("keyholder", "policy", "add", "--data-dir", str(keyholder_dir), str(policy_file),
            env=env)
    kh_port, srv_port = free_port(), free_port()
    tls_args: list[str] = []
    scheme, verify, ca_bundle = "http", True, None
    if tls:
        pki = make_loopback_pki(root / "tls")
        tls_args = ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
        scheme, verify, ca_bundle = "https", str(pki.ca_cert), str(pki.ca_cert)
    # The demo releases every metric at once and tests fire releases in bursts; pass
    # keyholder_env to run with the production release rate limit.
    kh_env = {**env, "BLINDSUM_RATE_LIMIT_RELEASES": "off", **(keyholder_env or {})}
    keyholder = start_service(
        "keyholder",
        ["keyholder", "serve", "--data-dir", str(keyholder_dir), "--port", str(kh_port),
         *tls_args],
        kh_port, root, kh_env, scheme=scheme, verify=verify,
    )
    ingest, admin = "ing_" + secrets.token_urlsafe(24), "adm_" + secrets.token_urlsafe(24)
    srv_env = {
        "BLINDSUM_INGEST_TOKENS": ingest,
        "BLINDSUM_ADMIN_TOKENS": admin,
        "BLINDSUM_RELEASE_TOKEN": init["release_token"],
        "BLINDSUM_AUTO_RELEASE": "1" if auto_release else "0",
        # The demo and load generators send a whole fleet's reports through one token, far
        # above a per-token budget; pass server_env to run with the production limits.
        "BLINDSUM_RATE_LIMIT_INGEST": "off",
        "BLINDSUM_RATE_LIMIT_ADMIN": "off",
        "BLINDSUM_RATE_LIMIT_PUBLIC": "off",
        **server_secret,
        **(server_env or {}),
    }
    try:
        server = start_service(
            "server",
            ["server", "serve", "--data-dir", str(server_dir), "--port", str(srv_port),
             "--keyholder-url", keyholder.url, "--keyholder-identity", init["identity"],
             *tls_args, *(["--ca-bundle", ca_bundle] if ca_bundle else [])],
            srv_port, root, srv_env, scheme=scheme, verify=verify,
        )
    except BaseException:
        keyholder.stop()
        raise
    deployed = Deployment(keyholder, server, init["identity"], ingest, admin,
                          init["release_token"], keyholder_dir, server_dir,
                          {**kh_env, **srv_env}, ca_bundle)
    try:
        yield deployed
    finally:
        deployed.stop()
