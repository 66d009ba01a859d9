"""Where the ingest hot path spends its time, measured three ways.

1. In process, no profiler: the aggregator is built here with its own app factory and
   configuration (its own SQLite file, the deployment's real key-holder for the manifest)
   and fed the same CBOR batches as the HTTP benchmark through Flask's test client; the
   rate is the ingest path without sockets or gunicorn.
2. The same under pyinstrument: the call tree (``ingest-profile.txt``) and a split into
   stages, each sample attributed to the innermost stage it falls in (stages add up to
   100%; what no stage claims is Flask/Werkzeug, auth and the reply). Profiling costs a
   little per Python call, so call-heavy stages (wire parsing) look bigger than they are.
3. Each stage's building block timed alone with ``perf_counter`` on the same batches
   (``stage_costs``): accurate microseconds per report, no profiler.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gmpy2

from blindsum.server.aggregator.store import pack_blobs, pack_proof
from blindsum.server.processes import Deployment
from blindsum.shared import codec
from blindsum.shared.codec import ReportBatch
from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.paillier import PaillierPublic

# (stage, function name, file name ending): the first match names a frame's stage.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("CBOR decode of the body (codec.loads)", "loads", "shared/codec.py"),
    ("body pre-scan (bodies.read_wire_body: scan_cbor, check_depth)", "read_wire_body",
     "server/bodies.py"),
    ("wire parsing (ReportBatch.from_wire)", "from_wire", "shared/codec.py"),
    ("duplicate-id lookups (SELECT ... IN)", "existing_report_ids", "aggregator/store.py"),
    ("ciphertext validation (PaillierPublic.load: bytes, range, gcd)", "load",
     "schemes/paillier.py"),
    ("routing and window checks (_route)", "_route", "aggregator/ingest.py"),
    ("homomorphic adds (add_many / add)", "add_many", "schemes/paillier.py"),
    ("homomorphic adds (add_many / add)", "add", "schemes/paillier.py"),
    ("ciphertext bytes for storage (pack_blobs, dump)", "pack_blobs", "aggregator/store.py"),
    ("ciphertext bytes for storage (pack_blobs, dump)", "dump", "schemes/paillier.py"),
    ("SQLite INSERT of the reports (executemany)", "insert_reports", "aggregator/store.py"),
    ("window row read/update", "window", "aggregator/store.py"),
    ("window row read/update", "fold_window", "aggregator/store.py"),
    ("BEGIN IMMEDIATE / COMMIT (durable, fsync)", "write_transaction", "server/sqlite.py"),
    ("bearer-token check", "require_token", "server/http.py"),
    ("receipt reply", "reply", "server/http.py"),
)
OTHER = "Flask/Werkzeug request handling, test client and the rest"


@dataclass(frozen=True)
class ProfileResult:
    reports: int
    seconds: float  # under the profiler
    unprofiled_reports: int
    unprofiled_seconds: float
    stages: dict[str, float]
    text: str

    def to_json(self) -> dict[str, Any]:
        total = sum(self.stages.values()) or 1.0
        return {
            "reports": self.reports,
            "seconds": self.seconds,
            "reports_per_s_in_process": self.unprofiled_reports / self.unprofiled_seconds,
            "us_per_report_in_process": 1e6 * self.unprofiled_seconds / self.unprofiled_reports,
            "reports_per_s_under_profiler": self.reports / self.seconds,
            "stages_percent": {name: round(100 * t / total, 1) for name, t in
                               sorted(self.stages.items(), key=lambda kv: -kv[1])},
            "stages_us_per_report": {name: round(1e6 * t / self.reports, 2)
                                     for name, t in sorted(self.stages.items(),
                                                           key=lambda kv: -kv[1])},
        }


def _stage_of(frame: Any) -> str | None:
    path = (frame.file_path or "").replace("\\", "/")
    for stage, function, suffix in STAGES:
        if frame.function == function and path.endswith(suffix):
            return stage
    return None


def attribute(root: Any) -> dict[str, float]:
    """Seconds per stage: each frame's self time goes to its innermost enclosing stage."""
    totals: dict[str, float] = {}
    stack = [(root, OTHER)]
    while stack:
        frame, inherited = stack.pop()
        stage = _stage_of(frame) or inherited
        self_time = frame.time - sum(child.time for child in frame.children)
        totals[stage] = totals.get(stage, 0.0) + max(0.0, self_time)
        stack.extend((child, stage) for child in frame.children)
    return totals


def profile_ingest(
    deployed: Deployment,
    data_dir: Path,
    batches: Sequence[tuple[bytes, int]],
    warmup: Sequence[tuple[bytes, int]],
) -> ProfileResult:
    """Post ``batches`` (CBOR) to an in-process aggregator, without then with pyinstrument
    (first half, second half)."""
    from pyinstrument import Profiler

    from blindsum.server.aggregator.app import close_app, create_app
    from blindsum.server.aggregator.config import load_config

    token = "ing_" + secrets.token_urlsafe(24)
    config = load_config({
        "data_dir": data_dir,
        "keyholder_url": deployed.keyholder.url,
        "keyholder_identity": deployed.identity,
        "ingest_tokens": token,
        "admin_tokens": "adm_" + secrets.token_urlsafe(24),
        "release_token": deployed.release_token,
        "auto_release": False,
        "manifest_refresh_seconds": 0,
        "ca_bundle": deployed.keyholder.verify if isinstance(deployed.keyholder.verify, str)
        else None,
    }, env={})
    app = create_app(config)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": codec.CBOR,
               "Accept": codec.JSON}
    try:
        client = app.test_client()

        def post(body: bytes, count: int) -> None:
            response = client.post("/v1/reports", data=body, headers=headers)
            if response.status_code != 200 or response.json["accepted"] != count:
                raise RuntimeError(f"in-process ingest failed: {response.get_data()[:300]!r}")

        for body, count in warmup:
            post(body, count)
        plain, profiled = batches[:len(batches) // 2], batches[len(batches) // 2:]
        started = time.perf_counter()
        for body, count in plain:
            post(body, count)
        unprofiled = time.perf_counter() - started
        profiler = Profiler(interval=0.0005)
        started = time.perf_counter()
        profiler.start()
        for body, count in profiled:
            post(body, count)
        profiler.stop()
        seconds = time.perf_counter() - started
    finally:
        close_app(app)
    session = profiler.last_session
    assert session is not None
    return ProfileResult(
        reports=sum(count for _, count in profiled),
        seconds=seconds,
        unprofiled_reports=sum(count for _, count in plain),
        unprofiled_seconds=unprofiled,
        stages=attribute(session.root_frame()),
        text=profiler.output_text(unicode=False, color=False, show_all=False),
    )


def _per_report(seconds: float, reports: int) -> float:
    return round(1e6 * seconds / reports, 2)


def stage_costs(scheme: PaillierPublic, spec: SlotSpec, bodies: Sequence[bytes],
                data_dir: Path) -> dict[str, float | None]:
    """Microseconds per report of each ingest building block, timed alone on ``bodies``.

    The SQLite stages go through the aggregator's own ``Store`` (its schema, WAL,
    ``synchronous=FULL``) in a fresh database; they are None if its API has moved.
    """
    from blindsum.server.aggregator.store import Store

    clock = time.perf_counter
    totals = dict.fromkeys(("decode", "prescan", "parse", "load", "gcd", "layout", "add",
                            "pack", "insert", "commit"), 0.0)
    prescan: Callable[[bytes], None] | None = _prescanner()
    reports = 0
    store: Any = Store(data_dir)
    try:
        for body in bodies:
            marks = [clock()]
            batch = ReportBatch.from_wire(codec.loads(body, codec.CBOR))
            marks.append(clock())
            loaded = [scheme.load(r.ciphertexts, spec) for r in batch.reports]
            marks.append(clock())
            for cts in loaded:
                for c in cts:
                    gmpy2.gcd(c, scheme.n)
            marks.append(clock())
            for _ in batch.reports:
                scheme.ciphertext_count(spec)
            marks.append(clock())
            scheme.add_many(loaded)
            marks.append(clock())
            rows = [pack_blobs(r.ciphertexts) for r in batch.reports]
            marks.append(clock())
            codec.loads(body, codec.CBOR)  # decode alone, to split it from parsing
            marks.append(clock())
            decode = marks[7] - marks[6]
            totals["decode"] += decode
            for key, (a, b) in zip(("parse", "load", "gcd", "layout", "add", "pack"),
                                   itertools.pairwise(marks[:7]), strict=True):
                totals[key] += b - a
            totals["parse"] -= decode
            reports += len(batch.reports)
            if prescan is not None:
                started = clock()
                try:
                    prescan(body)
                except Exception:  # the pre-scan's API moved: leave it out
                    prescan = None
                else:  # it decodes once more for check_depth: not part of the scan
                    totals["prescan"] += clock() - started - decode
            if store is not None:
                try:
                    insert, commit = _store_batch(store, batch.reports, rows)
                except Exception:  # the store's API moved: leave the SQLite stages out
                    store.close()
                    store = None
                else:
                    totals["insert"] += insert
                    totals["commit"] += commit
    finally:
        if store is not None:
            store.close()
    out = {key: _per_report(seconds, reports) for key, seconds in totals.items()}
    sqlite = store is not None
    return {
        "body pre-scan (bodies.scan_cbor + check_depth)":
            out["prescan"] if prescan is not None else None,
        "CBOR decode (codec.loads)": out["decode"],
        "wire parsing (ReportBatch.from_wire)": out["parse"],
        "ciphertext validation (PaillierPublic.load), total": out["load"],
        "  of which gcd(c, n)": out["gcd"],
        "  of which slot layout per report (ciphertext_count)": out["layout"],
        "homomorphic adds (add_many)": out["add"],
        "ciphertexts to stored CBOR (pack_blobs)": out["pack"],
        "SQLite INSERT (executemany)": out["insert"] if sqlite else None,
        "SQLite COMMIT (fsync, synchronous=FULL)": out["commit"] if sqlite else None,
    }


def _prescanner() -> Callable[[bytes], None] | None:
    """The aggregator's bounded-body pre-scan of a CBOR batch, if it has one."""
    try:
        from blindsum.server import bodies
    except ImportError:
        return None
    scan = getattr(bodies, "scan_cbor", None)
    depth = getattr(bodies, "check_depth", None)
    items, max_depth = getattr(bodies, "BATCH_ITEMS", None), getattr(bodies, "MAX_DEPTH", None)
    if scan is None or depth is None or items is None or max_depth is None:
        return None

    def prescan(body: bytes) -> None:
        scan(body, items, max_depth)
        depth(codec.loads(body, codec.CBOR), max_depth)

    return prescan


def _store_batch(store: Any, reports: Sequence[Any], rows: Sequence[bytes]
                 ) -> tuple[float, float]:
    """(insert seconds, commit seconds) of one batch through the aggregator's ``Store``."""
    now = time.time()
    transaction = store.transaction()
    tx = transaction.__enter__()
    started = time.perf_counter()
    try:
        tx.insert_reports((r.report_id, r.metric, r.version, r.key_id, r.window, blob, now,
                           pack_proof(r.proof)) for r, blob in zip(reports, rows, strict=True))
    except BaseException as exc:
        transaction.__exit__(type(exc), exc, exc.__traceback__)
        raise
    inserted = time.perf_counter()
    transaction.__exit__(None, None, None)
    return inserted - started, time.perf_counter() - inserted
