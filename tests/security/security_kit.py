"""What the security tests share: recorded HTTP calls, state snapshots, hand-built messages.

Every request an attack sends goes through ``call``, which keeps the body of every error
answer in ``ERROR_BODIES``; the last test of the suite greps them all for stack traces and
internal paths. ``snapshot`` reads what an attack must not change: the server's windows
(admin token), its published results, and the key-holder's budget ledger (release token).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from blindsum.server.keystore import KeyStore
from blindsum.server.processes import Deployment, ServiceProcess, start_service
from blindsum.shared import codec
from blindsum.shared.codec import ReleaseRequest, Report, ReportBatch
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.paillier import PaillierPublic, PaillierSecret
from blindsum.shared.signing import parse_identity
from blindsum.shared.validity import ProofContext, proof_kind, prove_report

PROBLEM_JSON = "application/problem+json"
TIMEOUT = 30.0
LEAK_MARKERS = ("Traceback", "/work/", "site-packages", '.py"', '.py\\"')
# The suite sends thousands of requests, hundreds of them unauthenticated, from one address
# in a few seconds: the server's rate limits (when configured) would answer 429 and hide
# the refusals under test. Unknown settings are ignored by servers that have no limits.
NO_RATE_LIMITS = {f"BLINDSUM_RATE_LIMIT_{name}": "off"
                  for name in ("INGEST", "ADMIN", "PUBLIC", "AUTH_FAILURES")}


@dataclass(frozen=True)
class ErrorBody:
    """One error answer (or error message) the suite received, for the leak check."""

    where: str
    status: int
    text: str


ERROR_BODIES: list[ErrorBody] = []
_ERRORS_LOCK = threading.Lock()


def record_error(where: str, status: int, text: str) -> None:
    with _ERRORS_LOCK:
        ERROR_BODIES.append(ErrorBody(where, status, text))


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def call(
    method: str,
    url: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    media: str | None = None,
    verify: bool | str = True,
    session: requests.Session | None = None,
    timeout: float = TIMEOUT,
) -> requests.Response:
    """One HTTP request; an error answer's body is kept for the leak check."""
    sent = {**bearer(token), **(headers or {})}
    if media is not None:
        sent["Content-Type"] = media
    response = (session or requests).request(method, url, data=data, headers=sent,
                                             verify=verify, timeout=timeout)
    if response.status_code >= 400:
        record_error(f"{method} {url}", response.status_code,
                     response.content.decode("utf-8", "replace"))
    return response


def problem(response: requests.Response) -> dict[str, Any]:
    """The problem document of an error answer; fails the test if it is not one."""
    content_type = response.headers.get("Content-Type", "")
    assert content_type.startswith(PROBLEM_JSON), (response.status_code, content_type,
                                                   response.text[:300])
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("status") == response.status_code, body
    assert isinstance(body.get("code"), str) and isinstance(body.get("detail"), str), body
    return body


# -- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """What a refused request must leave exactly as it was."""

    windows: list[dict[str, Any]]
    published: list[dict[str, Any]]
    budget: list[dict[str, Any]]

    def stable(self) -> State:
        """Without each window's ``detail`` (the reason of the last release attempt)."""
        windows = [{k: v for k, v in w.items() if k != "detail"} for w in self.windows]
        return State(windows, self.published, self.budget)


def snapshot(dep: Deployment) -> State:
    windows = requests.get(f"{dep.server.url}/v1/windows", headers=bearer(dep.admin_token),
                           verify=dep.verify, timeout=TIMEOUT)
    published = requests.get(f"{dep.server.url}/v1/published", verify=dep.verify,
                             timeout=TIMEOUT)
    budget = requests.get(f"{dep.keyholder.url}/v1/budget", headers=bearer(dep.release_token),
                          verify=dep.verify, timeout=TIMEOUT)
    for response in (windows, published, budget):
        assert response.status_code == 200, (response.url, response.text[:300])
    return State(
        sorted(windows.json()["windows"],
               key=lambda w: (w["metric"], w["version"], w["window"], w["kid"])),
        published.json()["results"],
        sorted(budget.json()["metrics"], key=lambda m: m["metric"]),
    )


def windows_of(dep: Deployment, metric: str) -> list[dict[str, Any]]:
    return [w for w in snapshot(dep).windows if w["metric"] == metric]


# -- manifests, reports, releases ----------------------------------------------------------


def keyholder_manifest(dep: Deployment) -> Manifest:
    """The key-holder's current manifest, verified against the deployment's identity."""
    response = requests.get(f"{dep.keyholder.url}/v1/manifest", verify=dep.verify,
                            timeout=TIMEOUT)
    response.raise_for_status()
    return Manifest.verify(response.json(), parse_identity(dep.identity))


def paillier_scheme(manifest: Manifest, key_id: str | None = None) -> PaillierPublic:
    entry = manifest.key(key_id) if key_id else manifest.active_key("paillier")
    return PaillierPublic.from_json(entry.public)


def paillier_report(
    manifest: Manifest,
    metric: str,
    value: float,
    *,
    at: float | None = None,
    key_id: str | None = None,
    report_id: bytes | None = None,
) -> Report:
    """A well-formed report, as an honest SDK would build it (or under a chosen key):
    proven, bound to its own fields, when the metric's policy has ``validity = "proof"``."""
    policy = manifest.policy(metric)
    scheme = paillier_scheme(manifest, key_id)
    report_id = report_id if report_id is not None else secrets.token_bytes(16)
    window = policy.window_start(time.time() if at is None else at)
    slots = encode(policy, value)
    if not policy.proven:
        cts = scheme.encrypt(slots, slot_spec(policy))
        return Report(report_id, metric, policy.version, scheme.key_id, window, tuple(cts))
    context = ProofContext(metric, policy.version, window, scheme.key_id, report_id)
    cts, proof = prove_report(scheme, proof_kind(policy), slot_spec(policy), slots, context)
    return Report(report_id, metric, policy.version, scheme.key_id, window, tuple(cts),
                  proof.to_json())


def batch_body(reports: Sequence[Report], media: str = codec.JSON) -> bytes:
    return codec.dumps(ReportBatch(tuple(reports)).to_wire(), media)


def post_reports(
    dep: Deployment,
    reports: Sequence[Report],
    *,
    media: str = codec.JSON,
    token: str | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    return call("POST", f"{dep.server.url}/v1/reports",
                token=dep.ingest_token if token is None else token,
                data=batch_body(reports, media), media=media, verify=dep.verify,
                session=session)


def receipt(response: requests.Response) -> tuple[int, int]:
    assert response.status_code == 200, response.text[:500]
    body = codec.loads(response.content, codec.media_type(response.headers["Content-Type"]))
    return body["accepted"], body["duplicates"]


def aggregate_of(
    manifest: Manifest, policy: MetricPolicy, values: Sequence[float],
    key_id: str | None = None,
) -> tuple[bytes, ...]:
    """The homomorphic sum of honest encryptions of ``values``: what a server would send."""
    scheme = paillier_scheme(manifest, key_id)
    spec = slot_spec(policy)
    loaded = [scheme.load(scheme.encrypt(encode(policy, v), spec), spec) for v in values]
    return tuple(scheme.dump(scheme.add_many(loaded)))


def valid_release(
    manifest: Manifest, metric: str, window: int, values: Sequence[float],
    *, early: bool = False,
) -> ReleaseRequest:
    """A release request the key-holder would grant: a real aggregate of ``values``."""
    policy = manifest.policy(metric)
    kid = manifest.active_key(policy.scheme).key_id
    return ReleaseRequest(metric, policy.version, window, kid, len(values),
                          secrets.token_bytes(32), aggregate_of(manifest, policy, values),
                          early=early)


def post_release(
    dep: Deployment, body: ReleaseRequest | bytes, *, token: str | None = None,
    media: str = codec.JSON, session: requests.Session | None = None,
) -> requests.Response:
    data = body if isinstance(body, bytes) else codec.dumps(body.to_wire(), media)
    return call("POST", f"{dep.keyholder.url}/v1/releases",
                token=dep.release_token if token is None else token, data=data,
                media=media, verify=dep.verify, session=session)


def backdate_registrations(dep: Deployment, seconds: float) -> None:
    """Move the key-holder's policy and key registration times ``seconds`` into the past.

    The key-holder releases only windows that ended after their policy version and key were
    registered (its horizon); attacks on past windows need a deployment that has existed
    for a while. The test plays the operator here, writing the key-holder's own database.
    """
    with contextlib.closing(sqlite3.connect(dep.keyholder_dir / "keyholder.db",
                                            timeout=30)) as conn, conn:
        conn.execute("UPDATE policies SET added_at = added_at - ?", (seconds,))
        conn.execute("UPDATE keys SET created_at = created_at - ?", (seconds,))


def closed_window(policy: MetricPolicy, windows_ago: int) -> int:
    """Start of a window that ended ``windows_ago`` windows before the current one."""
    return policy.window_start(time.time()) - windows_ago * policy.window_seconds


# -- privileged reads (the test plays the operator of both hosts) --------------------------


def paillier_secret(dep: Deployment, key_id: str) -> PaillierSecret:
    store = KeyStore.open(dep.keyholder_dir, dep.env["BLINDSUM_KEYSTORE_PASSPHRASE"])
    secret = store.read_scheme("paillier", key_id)
    assert isinstance(secret, PaillierSecret)
    return secret


def decrypted_window(dep: Deployment, manifest: Manifest, metric: str, window: int) -> list[int]:
    """The exact slot sums of a window aggregate, read from the server's database."""
    from blindsum.server.aggregator.store import unpack_blobs

    uri = f"file:{dep.server_dir / 'aggregator.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        rows = conn.execute('SELECT key_id, aggregate FROM windows WHERE metric = ? '
                            'AND "window" = ?', (metric, window)).fetchall()
    assert len(rows) == 1, rows
    key_id, blob = rows[0]
    policy = manifest.policy(metric)
    return paillier_secret(dep, key_id).decrypt(list(unpack_blobs(blob)), slot_spec(policy))


# -- processes -----------------------------------------------------------------------------


def service_env(dep: Deployment, *, passphrase: bool) -> dict[str, str]:
    """The deployment's BLINDSUM_* settings, with or without the key-store passphrase."""
    return {k: v for k, v in dep.env.items()
            if k.startswith("BLINDSUM_") and (passphrase or "PASSPHRASE" not in k)}


def port_of(service: ServiceProcess) -> int:
    return int(service.url.rsplit(":", 1)[1])


@contextlib.contextmanager
def running(
    name: str, args: Sequence[str], port: int, log_dir: Path, env: Mapping[str, str],
    *, wait: bool = True,
) -> Iterator[ServiceProcess]:
    """A service process this test started, stopped when the block ends."""
    service = start_service(name, args, port, log_dir, env, wait=wait)
    try:
        yield service
    finally:
        service.stop()


def run_cli(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 60.0,
) -> tuple[int, str, str, float]:
    """Run ``blindsum ARGS`` with exactly ``env``'s BLINDSUM_* settings (none inherited).

    Returns (exit code, stdout, stderr, seconds). A command still running at ``timeout`` is
    killed (its own process group only) and reported as exit code -9.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("BLINDSUM_")}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "blindsum.server.cli", *args], env={**base, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return -9, out, err, time.monotonic() - started
    return process.returncode, out, err, time.monotonic() - started


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- which server worker owns a connection -------------------------------------------------


def _workers(master: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            children.add(int(stat.parent.name))
    return children


def _owner(server_port: int, client_port: int, pids: set[int]) -> int | None:
    """The pid whose descriptor holds the server side of a loopback TCP connection."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in parts[1:3])
        if (local, remote) == (server_port, client_port):
            inode = parts[9]
    if inode is None:
        return None
    for pid in pids:
        with os.scandir(f"/proc/{pid}/fd") as entries:
            for entry in entries:
                try:
                    if os.readlink(entry.path) == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
    return None


def per_worker(dep: Deployment) -> Iterator[tuple[int, http.client.HTTPConnection]]:
    """One keep-alive connection to each server worker, pinned to it.

    Each gunicorn worker holds its own manifest and caches; an attack that must reach every
    worker opens connections until each worker owns one (which worker accepted a connection
    is read from /proc/net/tcp and the workers' file descriptors).
    """
    port = port_of(dep.server)
    workers = _workers(dep.server.process.pid)
    assert len(workers) >= 2, workers
    covered: set[int] = set()
    for _ in range(200):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        assert connection.sock is not None
        pid = _owner(port, connection.sock.getsockname()[1], workers)
        if pid is None or pid in covered:
            connection.close()
            continue
        covered.add(pid)
        try:
            yield pid, connection
        finally:
            connection.close()
        if covered == workers:
            return
    raise AssertionError(f"reached workers {covered} of {workers}")


# -- a network path that loses answers -----------------------------------------------------


class LossyProxy:
    """A loopback HTTP/1.1 relay that can forward a request and drop its answer.

    ``lose_next(prefix)``: the next request whose first line starts with ``prefix`` reaches
    the upstream service, which answers; the relay reads that answer and closes the client's
    connection instead of passing it on (a lost answer after the peer committed). Every
    other request and answer is relayed byte for byte. Bodies are framed by Content-Length
    (both services send it); chunked bodies are not relayed.
    """

    def __init__(self, upstream_port: int) -> None:
        import socket

        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lose: str | None = None
        self.lost = 0
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lose_next(self, prefix: str) -> None:
        with self._lock:
            self._lose = prefix

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: Any) -> None:
        import socket

        with contextlib.closing(client), \
                contextlib.closing(socket.create_connection(("127.0.0.1", self._upstream))) \
                as upstream:
            client.settimeout(60)
            upstream.settimeout(60)
            while True:
                request = _read_message(client)
                if request is None:
                    return
                upstream.sendall(request)
                answer = _read_message(upstream)
                if answer is None:
                    return
                with self._lock:
                    lose = self._lose is not None and request.startswith(self._lose.encode())
                    if lose:
                        self._lose = None
                        self.lost += 1
                if lose:
                    return
                client.sendall(answer)


def _read_message(sock: Any) -> bytes | None:
    """One HTTP message (head and Content-Length body) from ``sock``; None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body
