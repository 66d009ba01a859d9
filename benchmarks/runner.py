"""``blindsum bench``: every question side by side in one process, one table of ratios.

Order: machine description; the compute bound and the client costs (in this process, with
nothing else running); then one real deployment (key-holder + server) and the plaintext
baseline server for ingest, the ingest profile and the end-to-end runs; then scaling
series, targets, ``results.json``, ``machine.json``, ``summary.md`` and ``benchmarks.png``
in the output folder. ``--quick`` runs every step at reduced sizes (CI checks the figures,
not the speed) and never writes into the committed ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from blindsum.benchmarks import (
    client_cost,
    end_to_end,
    ingest,
    ingest_profile,
    ingest_proofs,
    machine,
    plot,
    report,
    scaling,
    servers,
    targets,
    threshold,
    validity,
)
from blindsum.benchmarks.client_cost import ClientCostConfig
from blindsum.benchmarks.ingest import IngestConfig
from blindsum.benchmarks.ingest_proofs import IngestProofsConfig
from blindsum.benchmarks.scaling import ServerValuesConfig
from blindsum.benchmarks.threshold import ThresholdConfig
from blindsum.benchmarks.validity import ValidityConfig
from blindsum.benchmarks.workload import cbor_batches, encrypt_reports, recycled_reports
from blindsum.shared.manifest import slot_spec

SCHEMA_VERSION = 1
CHECKOUT_RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sizes:
    client: ClientCostConfig
    ingest: IngestConfig
    e2e_clients: tuple[int, ...]
    e2e_batch: int
    profile_batches: int
    server_values: ServerValuesConfig
    threshold: ThresholdConfig
    validity: ValidityConfig
    ingest_proofs: IngestProofsConfig


FULL = Sizes(
    client=ClientCostConfig(values_per_report=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                            budget_s=1.0, min_repeat=3, max_repeat=2000),
    ingest=IngestConfig(batch_sizes=(1, 10, 100, 1000, 5000),
                        reports={1: 1000, 10: 5000, 100: 20_000, 1000: 60_000,
                                 5000: 60_000},
                        repeats=5, concurrency=4, pool=1000, compute_ops=100_000,
                        compute_repeats=5),
    e2e_clients=(1000, 3000, 10_000, 30_000, 100_000),
    e2e_batch=1000,
    profile_batches=20,
    server_values=ServerValuesConfig(values_per_report=(1, 16, 64, 256, 1024),
                                     reports={"paillier": 20_000, "ckks": 2000},
                                     batch={"paillier": 1000, "ckks": 200}, repeats=3,
                                     pool=100),
    threshold=ThresholdConfig(key_bits=3072, parties=2, repeat=10, ceremony_repeat=3),
    validity=ValidityConfig(key_bits=3072, repeat=5, batch=20, throughput_batch=500),
    ingest_proofs=IngestProofsConfig({"count": 2000, "sum": 200}, batch=100, concurrency=4),
)
QUICK = Sizes(
    client=ClientCostConfig(values_per_report=(1, 4, 16), budget_s=0.1, min_repeat=2,
                            max_repeat=200),
    ingest=IngestConfig(batch_sizes=(1, 100, 1000), reports={1: 100, 100: 1000, 1000: 3000},
                        repeats=2, concurrency=4, pool=100, compute_ops=10_000,
                        compute_repeats=2),
    e2e_clients=(300, 1000),
    e2e_batch=1000,
    profile_batches=2,
    server_values=ServerValuesConfig(values_per_report=(1, 16), reports={"paillier": 1000,
                                     "ckks": 200}, batch={"paillier": 1000, "ckks": 100},
                                     repeats=1, pool=20),
    threshold=ThresholdConfig(key_bits=2048, parties=2, repeat=2, ceremony_repeat=1),
    validity=ValidityConfig(key_bits=2048, repeat=1, batch=2, throughput_batch=10),
    ingest_proofs=IngestProofsConfig({"count": 40, "sum": 8}, batch=20, concurrency=2,
                                     key_bits=2048),
)


def default_output(quick: bool) -> Path:
    """benchmarks/results/ in a checkout, ./bench-results elsewhere; quick: a temp folder."""
    if quick:
        return Path(tempfile.mkdtemp(prefix="blindsum-bench-quick-"))
    if (CHECKOUT_RESULTS.parent.parent / "pyproject.toml").is_file():
        return CHECKOUT_RESULTS
    return Path("bench-results")


class Steps:
    """Progress bars on the console (stderr with --json) for the long steps."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console)

    @contextmanager
    def step(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        task = self.progress.add_task(description, total=total)
        try:
            yield lambda amount=1: self.progress.advance(task, amount)
        finally:
            self.progress.update(task, completed=total)


def _server_side(sizes: Sizes, bound: dict[str, Any], steps: Steps) -> dict[str, Any]:
    """Ingest, end to end and the values-per-report series, each on fresh servers."""
    with tempfile.TemporaryDirectory(prefix="blindsum-bench-") as tmp:
        root = Path(tmp)

        def with_baseline(metrics: list[str]) -> AbstractContextManager[servers.Servers]:
            return servers.running(root, metrics, plain=True)

        with steps.step("ingest over HTTP (encrypted, then plaintext)",
                        ingest.reports_total(sizes.ingest)) as advance:
            ingest_results = ingest.run(with_baseline, sizes.ingest, bound, advance)
        ingest_results["compute_bound"] = bound
        clients = sum(sizes.e2e_clients)
        with servers.running(root, end_to_end.metrics(sizes.e2e_clients)) as running, \
                steps.step("end to end: clients encrypting", clients) as encrypted, \
                steps.step("end to end: uploading", clients) as uploaded:
            e2e = end_to_end.run(running, sizes.e2e_clients, sizes.e2e_batch,
                                 sizes.ingest.concurrency, encrypted, uploaded)
        with servers.running(root, [ingest.metric_for(1000)],
                             sizes.server_values.metrics()) as running:
            with steps.step("ingest vs values per report (Paillier, CKKS)",
                            sizes.server_values.total_reports()) as advance:
                values = scaling.server_values(running, sizes.server_values,
                                               sizes.ingest.concurrency, advance)
            with steps.step("ingest profile (in-process, pyinstrument)",
                            sizes.profile_batches) as advance:
                ingest_results["profile"] = _profile(running, sizes, root)
                advance(sizes.profile_batches)
        with steps.step("ingest with validity proofs vs without", 1) as advance:
            proofs = ingest_proofs.run(sizes.ingest_proofs, root)
            advance(1)
    return {"ingest": ingest_results, "end_to_end": e2e, "server_values": values,
            "ingest_proofs": proofs}


def _profile(running: servers.Servers, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """The ingest profile; it builds the aggregator in this process, so a failure there is
    recorded (``error``) rather than losing the run's other results."""
    try:
        return _profile_run(running, sizes, tmp)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _profile_run(running: servers.Servers, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    metric = ingest.metric_for(1000)
    policy, public = running.policy(metric), running.paillier(metric)
    window = policy.window_start(time.time())
    pool = [r.ciphertexts[0] for r in encrypt_reports(
        public, policy, list(range(sizes.ingest.pool)), window).reports]
    count = 1000 * (sizes.profile_batches + 2)
    batches = cbor_batches(recycled_reports(pool, policy, public.key_id, window, count), 1000)
    result = ingest_profile.profile_ingest(
        running.deployed, Path(tempfile.mkdtemp(prefix="profile-", dir=tmp)), batches[2:],
        batches[:2])
    data = result.to_json()
    data["stages_direct_us_per_report"] = ingest_profile.stage_costs(
        public, slot_spec(policy), [body for body, _ in batches[2:]],
        Path(tempfile.mkdtemp(prefix="stages-", dir=tmp)))
    data["text"] = result.text
    return data


def _jsonable(value: Any) -> Any:
    """``asdict`` output with JSON object keys (batch sizes are ints in the configuration)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def collect(sizes: Sizes, quick: bool, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {"schema": SCHEMA_VERSION, "quick": quick,
                               "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "machine": machine.describe(),
                               "load_average_before": machine.load_average(),
                               "sizes": _jsonable(asdict(sizes))}
    steps = Steps(console)
    with steps.progress:
        with steps.step("keys (Paillier 3072, CKKS, TenSEAL README context)", 1) as advance:
            keys = client_cost.make_keys(sizes.client.key_bits)
            advance(1)
        with steps.step("compute bound (gmpy2 mulmods)", 1) as advance:
            bound = ingest.compute_bound(int(keys.paillier.n), sizes.ingest.compute_ops,
                                         sizes.ingest.compute_repeats)
            advance(1)
        total = len(sizes.client.values_per_report) * len(client_cost.PIPELINES)
        with steps.step("client cost per report", total) as advance:
            results["client_cost"] = client_cost.run(sizes.client, keys,
                                                     lambda *_: advance(1))
        with steps.step(f"threshold decryption (Paillier {sizes.threshold.key_bits}, "
                        f"{sizes.threshold.parties} parties)", 1) as advance:
            results["threshold"] = threshold.run(sizes.threshold)
            advance(1)
        with steps.step(f"validity proofs (Paillier {sizes.validity.key_bits})", 1) as advance:
            results["validity"] = validity.run(sizes.validity)
            advance(1)
        results.update(_server_side(sizes, bound, steps))
    results["scaling"] = scaling.build(results["client_cost"], results["ingest"],
                                       results["end_to_end"], results.pop("server_values"))
    results["targets"] = targets.evaluate(results)
    results["load_average_after"] = machine.load_average()
    results["duration_s"] = time.perf_counter() - started
    return results


def write_outputs(results: dict[str, Any], folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"results": "results.json", "machine": "machine.json", "plot": "benchmarks.png",
             "summary": "summary.md", "profile": "ingest-profile.txt"}
    results["files"] = files  # relative to the folder holding results.json
    plot.render(results, folder / files["plot"])
    (folder / files["machine"]).write_text(json.dumps(results["machine"], indent=2) + "\n")
    (folder / files["summary"]).write_text(report.markdown(results))
    profile = results["ingest"]["profile"]
    (folder / files["profile"]).write_text(profile.get("text") or profile.get("error", ""))
    (folder / files["results"]).write_text(json.dumps(results, indent=2) + "\n")
    return results["files"]


def run_benchmarks(quick: bool, as_json: bool, output: Path | None) -> int:
    """Run every benchmark; print the tables (stderr with ``as_json``) and, with ``as_json``,
    one JSON object on stdout. Returns the process exit status (0 unless a step failed;
    missed targets are reported, not failures)."""
    console = Console(stderr=as_json)
    if not console.is_terminal:
        console.width = max(console.width, 160)
    folder = output if output is not None else default_output(quick)
    sizes = QUICK if quick else FULL
    console.print(f"[bold]blindsum bench[/bold]{' --quick' if quick else ''}: "
                  f"results go to {folder}")
    try:
        results = collect(sizes, quick, console)
        write_outputs(results, folder)
    except Exception:
        console.print_exception()
        return 1
    report.render(results, console)
    console.print(f"results: {folder / 'results.json'}, plot: {folder / 'benchmarks.png'}")
    if as_json:
        print(json.dumps(results))
    return 0
