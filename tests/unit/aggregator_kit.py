"""Test kit for the aggregator: a real key-holder served over HTTP, its keys, reports.

Real parts, never a fake server: each test gets its own key-holder, a copy of one data
directory initialised once per session (``Keyholder.init`` and ``add_policies`` with the
kit's policies), served by the key-holder's own app (``create_app``) on 127.0.0.1 by
werkzeug's ``make_server`` in a thread. The aggregator under test reaches it through its
real HTTP client, exactly as in production.

Time: both services judge windows by one test clock (``Clock``), handed to the aggregator's
``create_app(clock=...)`` and to the key-holder's ``Releaser(clock=...)``, so a test moves to
"two hours later" without sleeping. That clock is the only thing the kit sets.

The secret keys stay in the key-holder's data directory; tests read them through
``Keyholder.secret_for`` to encrypt reports and to decrypt the server's stored aggregates.
Releases are noised by the key-holder, so exact sums are checked on the stored aggregate.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import secrets
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from blindsum.server.aggregator.app import create_app
from blindsum.server.aggregator.config import AggregatorConfig
from blindsum.server.aggregator.windows import window_start
from blindsum.server.http import token_digest
from blindsum.server.keyholder import audit, ledger
from blindsum.server.keyholder.app import create_app as create_keyholder_app
from blindsum.server.keyholder.config import KeyholderConfig
from blindsum.server.keyholder.service import Keyholder
from blindsum.server.keystore import KeyStore
from blindsum.shared import codec
from blindsum.shared.codec import Report
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import SecretScheme
from blindsum.shared.signing import identity_string, parse_identity
from blindsum.shared.validity import ProofContext, proof_kind, prove_report

INGEST = "ingest-token-0123456789"
ADMIN = "admin-token-0123456789"
HOUR = 3600
T0 = 1_700_000_000 - 1_700_000_000 % HOUR + 1200  # 20 minutes into an hour window
_PRIVACY = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 100.0}


def policies(version: int = 1) -> list[MetricPolicy]:
    """visits (count, max 5 per window), latency (sum), pages (histogram), embed (CKKS),
    proven (a count whose reports carry validity proofs)."""
    # The kit's tests are about ingest, limits, tokens and release, not client validity
    # (tests/unit/test_aggregator_proofs.py and tests/security/test_report_validity.py
    # are), so their metrics skip proofs explicitly; "proven" keeps the default.
    unproven = {"validity": "none"}
    raw: dict[str, dict[str, Any]] = {
        "visits": {"kind": "count", "scheme": "paillier", "window_seconds": HOUR,
                   "late_seconds": 600, "min_contributors": 2, "max_contributors": 5,
                   **unproven},
        "latency": {"kind": "sum", "scheme": "paillier", "lower": 0, "upper": 1000,
                    "window_seconds": HOUR, "late_seconds": 600, "min_contributors": 2,
                    "max_contributors": 1000, "allow_early_release": True, **unproven},
        "pages": {"kind": "histogram", "scheme": "paillier", "buckets": [0, 1, 2, 3, 4],
                  "window_seconds": HOUR, "min_contributors": 2, "max_contributors": 1000,
                  **unproven},
        "proven": {"kind": "count", "scheme": "paillier", "window_seconds": HOUR,
                   "min_contributors": 2, "max_contributors": 1000},
        "embed": {"kind": "vector", "scheme": "ckks", "lower": 0, "upper": 10,
                  "dimension": 8, "window_seconds": HOUR, "min_contributors": 2,
                  "max_contributors": 1000},
    }
    return [MetricPolicy.from_mapping(name, {**spec, "version": version, "privacy": _PRIVACY})
            for name, spec in raw.items()]


def policy(name: str, version: int = 1) -> MetricPolicy:
    return {p.name: p for p in policies(version)}[name]


IMPOSTOR_POLICY = MetricPolicy.from_mapping("impostor.extra", {
    "kind": "count", "scheme": "paillier", "window_seconds": HOUR, "privacy": _PRIVACY})


# -- the key-holder's data directory, initialised once per session -----------------------


@dataclass(frozen=True)
class Template:
    """An initialised key-holder data directory that tests copy."""

    data_dir: Path
    identity: str
    release_token: str
    holder: Keyholder


def _scratch() -> Path:
    root = Path(tempfile.mkdtemp(prefix="blindsum-aggregator-kit-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def _settle(holder: Keyholder) -> None:
    """Fold the WAL into the database file, so a file copy holds every committed write."""
    holder.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@functools.cache
def template() -> Template:
    """The key-holder every test starts from (no passphrase: scrypt would cost each test)."""
    data_dir = _scratch() / "keyholder"
    # Registered a month before the test clock starts, so the kit's windows are in the
    # key-holder's release horizon.
    holder, init = Keyholder.init(data_dir, None, paillier_bits=2048,
                                  clock=lambda: T0 - 30 * 86400)
    holder.add_policies(policies())
    _settle(holder)
    return Template(data_dir, init.identity, init.release_token, holder)


@functools.cache
def impostor_template() -> Template:
    """The same data directory with another identity key: it holds the secret keys and
    decrypts like the real one, but what it signs does not verify against the pin."""
    real = template()
    data_dir = _scratch() / "impostor"
    shutil.copytree(real.data_dir, data_dir)
    other = Ed25519PrivateKey.generate()
    KeyStore.open(data_dir, None).write_identity(other)
    holder = Keyholder.open(data_dir, None)
    holder.add_policies([IMPOSTOR_POLICY])  # so its newest manifest is signed by it too
    _settle(holder)
    return Template(data_dir, identity_string(other.public_key()), real.release_token, holder)


def pinned() -> Ed25519PublicKey:
    """The identity the aggregator under test pins."""
    return parse_identity(template().identity)


def _active_kid(scheme: str) -> str:
    return next(k.key_id for k in template().holder.db.key_records()
                if k.scheme == scheme and k.status == "active")


def paillier_kid() -> str:
    return _active_kid("paillier")


def ckks_kid() -> str:
    return _active_kid("ckks")


def secret_for(key_id: str) -> SecretScheme:
    """The key-holder's secret key ``key_id`` (test-only: the aggregator never holds one)."""
    scheme = "ckks" if key_id == ckks_kid() else "paillier"
    return template().holder.secret_for(scheme, key_id)


def paillier_secret() -> SecretScheme:
    return secret_for(paillier_kid())


def ckks_secret() -> SecretScheme:
    return secret_for(ckks_kid())


# -- a running key-holder ------------------------------------------------------------------


class Clock:
    """A wall clock the test moves by hand, shared by the aggregator and the key-holder."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Seen = tuple[str, str, str, str, str]
"""(method, path, Content-Type, Authorization, Accept) of one request the key-holder got"""


class RunningKeyholder:
    """The real key-holder app on 127.0.0.1; ``stop``/``start`` keep its port."""

    def __init__(self, data_dir: Path, identity: str, release_token: str, clock: Clock) -> None:
        self.data_dir = data_dir
        self.identity = identity
        self.release_token = release_token
        self.clock = clock
        self.seen: list[Seen] = []
        self.port = 0
        self.holder: Keyholder | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, data_dir: Path | None = None) -> None:
        """Serve ``data_dir`` (default: this key-holder's own) on this key-holder's port."""
        directory = data_dir or self.data_dir
        holder = Keyholder.open(directory, None)
        # The key-holder's own release code and registrations, judged by the test's clock.
        holder.db.clock = self.clock
        app = create_keyholder_app(KeyholderConfig(directory, None), holder)
        self._server = make_server("127.0.0.1", self.port, self._recording(app), threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()
        self.holder = holder

    def stop(self) -> None:
        """Stop serving: connections are refused until ``start``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _recording(self, app: Flask) -> Any:
        def recorded(environ: dict[str, Any], start_response: Any) -> Any:
            self.seen.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                              environ.get("CONTENT_TYPE", ""),
                              environ.get("HTTP_AUTHORIZATION", ""),
                              environ.get("HTTP_ACCEPT", "")))
            return app(environ, start_response)

        return recorded

    # -- what a test reads back ----------------------------------------------------------

    @property
    def live(self) -> Keyholder:
        assert self.holder is not None, "the key-holder was never started"
        return self.holder

    def events(self, *names: str) -> list[dict[str, Any]]:
        """Details of the audit entries named ``names``, oldest first."""
        return [e.detail for e in audit.entries(self.live.db.conn) if e.event in names]

    def released(self, metric: str, window: int, version: int = 1) -> dict[str, str] | None:
        """The signed result the key-holder stored for a window, if it released it."""
        return ledger.released_document(self.live.db.conn, metric, version, window)

    def add_policies(self, new: list[MetricPolicy]) -> None:
        """Register policies (issuing a new manifest), as ``keyholder policy add`` does."""
        self.live.add_policies(new)


@contextlib.contextmanager
def running_keyholder(root: Path, clock: Clock | None = None,
                      impostor: bool = False) -> Iterator[RunningKeyholder]:
    """A fresh copy of the template key-holder (or of the impostor), served until exit."""
    source = impostor_template() if impostor else template()
    data_dir = root / ("impostor" if impostor else "keyholder")
    shutil.copytree(source.data_dir, data_dir)
    running = RunningKeyholder(data_dir, source.identity, source.release_token,
                               clock or Clock())
    running.start()
    try:
        yield running
    finally:
        running.stop()


def copy_of(root: Path, impostor: bool = False) -> Path:
    """Another copy of a template data directory (for ``RunningKeyholder.start``)."""
    data_dir = root / f"copy-{secrets.token_hex(4)}"
    shutil.copytree((impostor_template() if impostor else template()).data_dir, data_dir)
    return data_dir


# -- the aggregator ------------------------------------------------------------------------


def make_config(data_dir: Path, keyholder: RunningKeyholder, **overrides: Any) -> AggregatorConfig:
    values: dict[str, Any] = {
        "data_dir": data_dir, "keyholder_url": keyholder.url,
        "keyholder_identity": template().identity,
        "ingest_token_digests": (token_digest(INGEST),),
        "admin_token_digests": (token_digest(ADMIN),),
        "release_token": keyholder.release_token,
        "auto_release": False, "manifest_refresh_seconds": 0.0,
    }
    values.update(overrides)
    return AggregatorConfig(**values)


def make_app(data_dir: Path, keyholder: RunningKeyholder, **overrides: Any) -> Flask:
    app = create_app(make_config(data_dir, keyholder, **overrides), clock=keyholder.clock)
    app.config["TESTING"] = True
    return app


def make_report(metric: str, value: object, *, window: int | None = None,
                key_id: str | None = None, version: int = 1,
                report_id: bytes | None = None, now: float = T0) -> Report:
    """A report as an SDK makes it, encrypted under the key-holder's active key (and proven,
    bound to its own fields, for a metric with ``validity = "proof"``)."""
    spec = policy(metric, version)
    kid = paillier_kid() if spec.scheme == "paillier" else ckks_kid()
    public = secret_for(kid).public
    start = window_start(now, spec.window_seconds) if window is None else window
    report_id = report_id or secrets.token_bytes(16)
    key_id = key_id or kid
    if not spec.proven:
        cts = public.encrypt(encode(spec, value), slot_spec(spec))
        return Report(report_id, metric, version, key_id, start, tuple(cts))
    context = ProofContext(metric, version, start, key_id, report_id)
    cts, proof = prove_report(public, proof_kind(spec), slot_spec(spec),  # type: ignore[arg-type]
                              encode(spec, value), context)
    return Report(report_id, metric, version, key_id, start, tuple(cts), proof.to_json())


def batch_body(reports: list[Report], media: str = codec.JSON) -> bytes:
    return codec.dumps(codec.ReportBatch(tuple(reports)).to_wire(), media)


def post_reports(client: Any, reports: list[Report], *, token: str = INGEST,
                 media: str = codec.JSON, body: bytes | None = None) -> Any:
    return client.post(
        "/v1/reports", data=batch_body(reports, media) if body is None else body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": media},
    )


def snapshot(data_dir: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every row of reports and windows, read from disk by a fresh connection."""
    conn = sqlite3.connect(data_dir / "aggregator.db")
    try:
        reports = conn.execute("SELECT * FROM reports ORDER BY report_id").fetchall()
        windows = conn.execute('SELECT * FROM windows ORDER BY metric, "window"').fetchall()
    finally:
        conn.close()
    return reports, windows


def window_aggregate(data_dir: Path, metric: str) -> tuple[list[bytes], int, str]:
    """(aggregate ciphertexts, report count, state) of the metric's only window."""
    import cbor2

    conn = sqlite3.connect(data_dir / "aggregator.db")
    try:
        rows = conn.execute(
            "SELECT aggregate, report_count, state FROM windows WHERE metric = ?", (metric,)
        ).fetchall()
    finally:
        conn.close()
    assert len(rows) == 1, rows
    return cbor2.loads(rows[0][0]), rows[0][1], rows[0][2]


def decrypt_window(data_dir: Path, metric: str) -> list[int]:
    """The exact slot sums of a metric's window, decrypted with the key-holder's secret key."""
    blobs, _, _ = window_aggregate(data_dir, metric)
    spec = policy(metric)
    kid = paillier_kid() if spec.scheme == "paillier" else ckks_kid()
    return secret_for(kid).decrypt(blobs, slot_spec(spec))


def assert_problem(response: Any, status: int, code: str, *fragments: str) -> dict[str, Any]:
    """Assert a problem+json answer of ``status`` and ``code`` whose detail holds ``fragments``."""
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.content_type == "application/problem+json"
    problem: dict[str, Any] = response.get_json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"urn:blindsum:error:{code}"
    for fragment in fragments:
        assert fragment in problem["detail"], problem["detail"]
    return problem
