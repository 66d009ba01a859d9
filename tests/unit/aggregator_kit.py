"""Test kit for the aggregator: keys, a locally issued manifest, a fake key-holder, reports.

The secret keys live here, in the tests only: the aggregator under test never holds one.
The fake key-holder decrypts aggregates *without* noise, so a test can check that the
server summed exactly the reports it acknowledged.
"""

from __future__ import annotations

import functools
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

from blindsum.server.aggregator.app import create_app
from blindsum.server.aggregator.config import AggregatorConfig
from blindsum.server.aggregator.keyholder_client import VerifiedResult, result_mismatch
from blindsum.server.aggregator.windows import due_at, window_start
from blindsum.shared import codec
from blindsum.shared.codec import ReleaseRequest, Report
from blindsum.shared.encoding import encode
from blindsum.shared.errors import AlreadyReleased, NotFound, ReleaseRefused, UpstreamError
from blindsum.shared.manifest import KeyEntry, Manifest, slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import SecretScheme
from blindsum.shared.schemes.ckks import CkksSecret, generate_ckks
from blindsum.shared.schemes.paillier import PaillierSecret, generate_paillier
from blindsum.shared.signing import identity_string, sign_document

PAILLIER_KID = "pai-test"
CKKS_KID = "ckks-test"
INGEST = "ingest-token-0123456789"
ADMIN = "admin-token-0123456789"
RELEASE = "release-token-0123456789"
HOUR = 3600
T0 = 1_700_000_000 - 1_700_000_000 % HOUR + 1200  # 20 minutes into an hour window
_PRIVACY = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 100.0}


@functools.cache
def identity_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@functools.cache
def paillier_secret() -> PaillierSecret:
    return generate_paillier(2048, PAILLIER_KID)


@functools.cache
def ckks_secret() -> CkksSecret:
    return generate_ckks(CKKS_KID)


def policies(version: int = 1) -> list[MetricPolicy]:
    """visits (count, max 5 per window), latency (sum), pages (histogram), embed (CKKS)."""
    raw: dict[str, dict[str, Any]] = {
        "visits": {"kind": "count", "scheme": "paillier", "window_seconds": HOUR,
                   "late_seconds": 600, "min_contributors": 2, "max_contributors": 5},
        "latency": {"kind": "sum", "scheme": "paillier", "lower": 0, "upper": 1000,
                    "window_seconds": HOUR, "late_seconds": 600, "min_contributors": 2,
                    "max_contributors": 1000, "allow_early_release": True},
        "pages": {"kind": "histogram", "scheme": "paillier", "buckets": [0, 1, 2, 3, 4],
                  "window_seconds": HOUR, "min_contributors": 2, "max_contributors": 1000},
        "embed": {"kind": "vector", "scheme": "ckks", "lower": 0, "upper": 10,
                  "dimension": 8, "window_seconds": HOUR, "min_contributors": 2,
                  "max_contributors": 1000},
    }
    return [MetricPolicy.from_mapping(name, {**spec, "version": version, "privacy": _PRIVACY})
            for name, spec in raw.items()]


def key_entries() -> list[KeyEntry]:
    return [
        KeyEntry("paillier", PAILLIER_KID, "active", paillier_secret().public.public_json()),
        KeyEntry("ckks", CKKS_KID, "active", ckks_secret().public.public_json()),
    ]


def issue_manifest(serial: int = 1, version: int = 1,
                   signer: Ed25519PrivateKey | None = None) -> Manifest:
    return Manifest.issue(signer or identity_key(), serial, key_entries(), policies(version))


def secret_for(key_id: str) -> SecretScheme:
    return paillier_secret() if key_id == PAILLIER_KID else ckks_secret()


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeKeyholder:
    """An in-process key-holder: serves the manifest, releases aggregates exactly (no noise)."""

    manifest: Manifest = field(default_factory=issue_manifest)
    clock: Clock = field(default_factory=Clock)
    down: bool = False
    signer: Ed25519PrivateKey = field(default_factory=identity_key)
    released: dict[tuple[str, int, int], VerifiedResult] = field(default_factory=dict)
    requests: list[ReleaseRequest] = field(default_factory=list)
    manifest_fetches: int = 0

    def fetch_manifest(self) -> Manifest:
        self._reachable()
        self.manifest_fetches += 1
        return self.manifest

    def fetch_context(self, key_id: str) -> bytes:
        self._reachable()
        if key_id != CKKS_KID:
            raise NotFound(f"no context for {key_id!r}")
        return ckks_secret().public.context_bytes

    def release(self, request: ReleaseRequest) -> VerifiedResult:
        self._reachable()
        self.requests.append(request)
        slot = (request.metric, request.version, request.window)
        if slot in self.released:
            stored = self.released[slot]
            if result_mismatch(stored.payload, request):
                raise AlreadyReleased("released before with other reports")
            return stored
        policy = self.manifest.policy(request.metric)
        if not request.early and self.clock() < due_at(policy, request.window):
            raise ReleaseRefused("window is still open")
        if request.early and not policy.allow_early_release:
            raise ReleaseRefused("the policy does not allow early release")
        if request.report_count < policy.min_contributors:
            raise ReleaseRefused(f"fewer than {policy.min_contributors} contributors")
        sums = secret_for(request.key_id).decrypt(list(request.aggregate), slot_spec(policy))
        payload = {
            "type": "blindsum.release", "v": 1, "metric": request.metric,
            "version": request.version, "kind": policy.kind, "scheme": policy.scheme,
            "window": request.window, "window_seconds": policy.window_seconds,
            "report_count": request.report_count,
            "report_ids_digest": request.report_ids_digest.hex(),
            "value": sums if len(sums) > 1 else sums[0], "ci": [0, 0],
            "mechanism": "none", "epsilon": policy.privacy.epsilon, "delta": 0.0, "rho": 0.0,
            "scale": 0.0, "released_at": int(self.clock()), "audit_seq": len(self.released),
        }
        document = sign_document(self.signer, payload)
        result = VerifiedResult(document, payload)
        self.released[slot] = result
        return result

    def close(self) -> None:
        pass

    def _reachable(self) -> None:
        if self.down:
            raise UpstreamError("key-holder is down (test)")


def make_config(data_dir: Path, **overrides: Any) -> AggregatorConfig:
    values: dict[str, Any] = {
        "data_dir": data_dir, "keyholder_url": "http://127.0.0.1:9",
        "keyholder_identity": identity_string(identity_key().public_key()),
        "ingest_tokens": (INGEST,), "admin_tokens": (ADMIN,), "release_token": RELEASE,
        "auto_release": False, "manifest_refresh_seconds": 0.0,
    }
    values.update(overrides)
    return AggregatorConfig(**values)


def make_app(data_dir: Path, keyholder: FakeKeyholder, **overrides: Any) -> Flask:
    app = create_app(make_config(data_dir, **overrides), keyholder=keyholder,
                     clock=keyholder.clock)
    app.config["TESTING"] = True
    return app


def make_report(metric: str, value: object, *, window: int | None = None,
                key_id: str | None = None, version: int = 1,
                report_id: bytes | None = None, now: float = T0) -> Report:
    policy = {p.name: p for p in policies(version)}[metric]
    kid = key_id or (PAILLIER_KID if policy.scheme == "paillier" else CKKS_KID)
    public = secret_for(PAILLIER_KID if policy.scheme == "paillier" else CKKS_KID).public
    cts = public.encrypt(encode(policy, value), slot_spec(policy))
    start = window_start(now, policy.window_seconds) if window is None else window
    return Report(report_id or secrets.token_bytes(16), metric, version, kid, start, tuple(cts))


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
    """The exact slot sums of a metric's window (test-only: uses the secret key)."""
    blobs, _, _ = window_aggregate(data_dir, metric)
    policy = {p.name: p for p in policies()}[metric]
    kid = PAILLIER_KID if policy.scheme == "paillier" else CKKS_KID
    return secret_for(kid).decrypt(blobs, slot_spec(policy))
