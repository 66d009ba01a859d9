"""``blindsum demo``: a real key-holder and server, simulated app installs, a published table.

Everything goes through the real parts: the CLI initialises the key-holder and registers the
demo policies, both services run under gunicorn on free loopback ports, each simulated
install's values are clipped, encoded, packed and encrypted by the SDK and sent over HTTP,
the window is closed through the operator endpoint, and the key-holder's noisy, signed
results are read back from the server's public endpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from blindsum.client import Client
from blindsum.server.aggregator.rounding import format_number
from blindsum.server.processes import Deployment, deployment
from blindsum.shared.encoding import clipped_value
from blindsum.shared.policy import MetricPolicy, load_policies_toml
from blindsum.shared.signing import parse_identity
from blindsum.shared.verification import verify_result

POLICY_FILES = {"paillier": "demo_paillier.toml", "ckks": "demo_ckks.toml"}
# With --serve: a metric the demo neither simulates nor releases, open for outside clients
OUTSIDE_FILE = "demo_outside.toml"


def _policy_paths(scheme: str, into: Path) -> list[Path]:
    names = list(POLICY_FILES.values()) if scheme == "both" else [POLICY_FILES[scheme]]
    return [_copy_policy_file(name, into) for name in names]


def _copy_policy_file(name: str, into: Path) -> Path:
    path = into / name
    path.write_text(resources.files("blindsum.server").joinpath(name).read_text())
    return path


def simulated_value(policy: MetricPolicy, rng: random.Random) -> Any:
    """A plausible value for one install (real telemetry shapes, some out of bounds)."""
    if policy.kind == "count":
        return 1 if rng.random() < 0.8 else 0
    if policy.kind == "histogram":
        return rng.lognormvariate(6.0 if policy.scheme == "paillier" else 4.5, 0.9)
    if policy.kind == "vector":
        return [rng.expovariate(1 / (3 + 2 * i)) for i in range(policy.dimension)]
    if policy.name == "battery_temp_c":
        return rng.gauss(31.0, 7.0)
    if policy.kind == "mean":
        return rng.betavariate(30, 1.5) * (policy.upper - policy.lower) + policy.lower
    return rng.expovariate(1 / 900)


@dataclass
class Truth:
    """Exact aggregate of the clipped values, to compare with what was published."""

    policy: MetricPolicy
    total: float | list[float] | None = None
    count: int = 0

    def add(self, value: Any) -> None:
        clipped = clipped_value(self.policy, value)
        self.count += 1
        if isinstance(clipped, list):
            current = self.total if isinstance(self.total, list) else [0.0] * len(clipped)
            self.total = [a + b for a, b in zip(current, clipped, strict=True)]
        else:
            self.total = (self.total or 0.0) + clipped  # type: ignore[operator]

    def value(self) -> float | list[float]:
        assert self.total is not None
        if self.policy.kind == "mean":
            return float(self.total) / self.count  # type: ignore[arg-type]
        return self.total


def _covered(truth: Any, ci: Any) -> list[bool]:
    if isinstance(truth, list):
        return [low - 1e-6 <= t <= high + 1e-6 for t, (low, high) in zip(truth, ci, strict=True)]
    return [ci[0] - 1e-6 <= truth <= ci[1] + 1e-6]


def simulate(
    deployed: Deployment, policies: list[MetricPolicy], clients: int, console: Console
) -> dict[str, Truth]:
    truths = {p.name: Truth(p) for p in policies}
    rng = random.Random(20261125)
    at = time.time()
    # One SDK instance stands in for many installs: reports carry no install identity, and
    # reusing it shares the Paillier fixed-base tables and the verified manifest.
    # A simulation: its reports wait in memory, not in the state directory of whoever
    # runs the demo.
    with Client(deployed.server.url, deployed.ingest_token, deployed.identity,
                enforce_contribution_limit=False, batch_size=1000, queue_path=None,
                verify=deployed.verify) as client:
        client.manifest()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            task = progress.add_task("installs encrypting and reporting", total=clients)
            for _ in range(clients):
                for policy in policies:
                    value = simulated_value(policy, rng)
                    client.record(policy.name, value, at=at)
                    truths[policy.name].add(value)
                progress.advance(task)
            client.flush()
    return truths


def release_all(deployed: Deployment) -> dict[str, Any]:
    response = requests.post(
        f"{deployed.server.url}/v1/windows/release",
        json={},
        headers={"Authorization": f"Bearer {deployed.admin_token}"},
        timeout=300,
        verify=deployed.verify,
    )
    response.raise_for_status()
    return response.json()


def published(deployed: Deployment) -> dict[str, dict[str, Any]]:
    response = requests.get(f"{deployed.server.url}/v1/published", timeout=30,
                            verify=deployed.verify)
    response.raise_for_status()
    return {r["metric"]: r for r in response.json()["results"]}


def _short(value: Any, step: float) -> str:
    """A value (or the first values of a list) rounded to ``step``, as the dashboard does."""
    if isinstance(value, list):
        head = ", ".join(format_number(v, step) for v in value[:3])
        return f"[{head}, … {len(value)} values]"
    return format_number(value, step)


def _ci_text(ci: Any, step: float) -> str:
    if ci and isinstance(ci[0], list):
        widths = [(high - low) / 2 for low, high in ci]
        return f"± {format_number(sum(widths) / len(widths), step)} (each)"
    return f"[{format_number(ci[0], step)}, {format_number(ci[1], step)}]"


def build_rows(policies: list[MetricPolicy], truths: dict[str, Truth],
               results: dict[str, dict[str, Any]], identity: str) -> list[dict[str, Any]]:
    """One row per metric, from results checked as a reader would: offline, against the
    pinned identity (signature, and for threshold results both parties' proofs)."""
    pinned = parse_identity(identity)
    rows = []
    for policy in policies:
        result = results.get(policy.name)
        truth = truths[policy.name].value()
        row: dict[str, Any] = {"name": policy.name, "kind": policy.kind,
                               "scheme": policy.scheme, "truth": truth,
                               "published": None, "ci": None, "epsilon": None,
                               "delta": None, "report_count": truths[policy.name].count,
                               "covered": None, "verified": None}
        if result is not None:
            checked = verify_result(result, pinned)
            row["verified"] = "proofs" if checked.threshold else "signature"
            covered = _covered(truth, result["ci"])
            row.update(published=result["value"], ci=result["ci"], epsilon=result["epsilon"],
                       delta=result["delta"], mechanism=result["mechanism"],
                       covered=sum(covered) / len(covered))
            # what the dashboard shows: rounded to the noise, consistent histogram counts
            derived = result.get("derived") or {}
            row["shown"] = derived.get("value", result["value"])
            row["shown_ci"] = derived.get("ci", result["ci"])
            row["rounding_step"] = derived.get("rounding_step", 10.0 ** -_DIGITS[policy.kind])
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="Published metrics (95% confidence intervals)")
    for column in ("metric", "kind", "scheme", "true value", "published", "95% CI",
                   "covered", "privacy cost", "verified"):
        table.add_column(column, overflow="fold")
    for row in rows:
        if row["published"] is None:
            table.add_row(row["name"], row["kind"], row["scheme"],
                          _short(row["truth"], 10.0 ** -_DIGITS[row["kind"]]),
                          "[red]not published[/red]", "", "", "", "")
            continue
        cost = f"ε={row['epsilon']:g}" + (f", δ={row['delta']:g}" if row["delta"] else "")
        truth_step = 10.0 ** -_DIGITS[row["kind"]]  # the truth is exact: a fixed precision
        step = row["rounding_step"]
        table.add_row(row["name"], row["kind"], row["scheme"], _short(row["truth"], truth_step),
                      _short(row["shown"], step), _ci_text(row["shown_ci"], step),
                      f"{row['covered']:.0%}", cost, row["verified"])
    console.print(table)


def _windows_for_outside_clients(released: list[MetricPolicy],
                                 outside: list[MetricPolicy]) -> dict[str, Any]:
    """Which windows an outside client may still report to, for ``--serve``'s output.

    The demo released the current window of each of its own metrics early (reports for it
    are refused with 409 until the next window starts); the outside metrics were left alone.
    """
    now = time.time()
    return {
        "released_windows": [
            {"metric": p.name, "window": p.window_start(now),
             "next_window": p.window_start(now) + p.window_seconds} for p in released],
        "open_for_outside_clients": [
            {"metric": p.name, "version": p.version, "window": p.window_start(now),
             "accepts_reports_until": p.window_start(now) + p.window_seconds + p.late_seconds,
             "validity": p.validity} for p in outside],
    }


def _describe_windows(windows: dict[str, Any]) -> str:
    lines = []
    for item in windows["open_for_outside_clients"]:
        lines.append(f"open for your reports: metric {item['metric']!r} window {item['window']} "
                     f"(until {item['accepts_reports_until']}; validity {item['validity']}: "
                     "plain phe works); release it with `blindsum release --metric "
                     f"{item['metric']}` and the admin token in the credentials file")
    if windows["released_windows"]:
        first = windows["released_windows"][0]
        lines.append(f"the demo's own metrics: window {first['window']} is released (reports "
                     f"for it get 409); their next window starts at {first['next_window']}")
    return "\n".join(lines)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


TOKENS = ("ingest_token", "admin_token", "release_token")
# decimals of the true values in the table (results are rounded to their noise instead)
_DIGITS = {"count": 0, "sum": 1, "mean": 3, "histogram": 0, "vector": 1}


def _without_tokens(deployed: Deployment, root: Path) -> dict[str, str]:
    """What ``--serve`` prints: everything but the tokens, which go to a 0600 file.

    stdout ends up in terminals' scrollback, CI logs and process managers' journals; the
    tokens do not belong there.
    """
    described = deployed.describe()
    tokens = {name: described.pop(name) for name in TOKENS}
    path = root / "credentials.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(tokens, handle)
    described["credentials_file"] = str(path)
    return described


@contextmanager
def _setting_up(console: Console, threshold: bool) -> Iterator[None]:
    """An elapsed-time bar while the services are set up: the key ceremony's safe-prime
    search takes seconds to half a minute at 3072 bits, with no way to know in advance."""
    what = ("key ceremony (two-party Paillier key from safe primes) and service start"
            if threshold else "key generation and service start")
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task(what, total=None)
        yield
        progress.update(task, total=1, completed=1)


def run_demo(clients: int = 200, scheme: str = "both", as_json: bool = False,
             keep_serving: bool = False, paillier_bits: int = 3072, tls: bool = True,
             threshold: bool = True) -> int:
    # With --json, stdout carries only the JSON object; the narrative goes to stderr.
    console = Console(stderr=as_json)
    if not console.is_terminal:
        console.width = max(console.width, 132)  # logs and CI: room for the table
    with tempfile.TemporaryDirectory(prefix="blindsum-demo-") as tmp:
        root = Path(tmp)
        paths = _policy_paths(scheme, root)
        policies = [p for path in paths for p in load_policies_toml(path.read_text())]
        outside = _copy_policy_file(OUTSIDE_FILE, root) if keep_serving else None
        outside_policies = load_policies_toml(outside.read_text()) if outside else []
        mode = "two-party threshold" if threshold else "single-key"
        console.print(f"[bold]blindsum demo[/bold]: {clients} installs, "
                      f"{len(policies)} metrics, {paillier_bits}-bit {mode} Paillier + CKKS")
        started = time.monotonic()
        with ExitStack() as stack:
            with _setting_up(console, threshold):
                deployed = stack.enter_context(deployment(
                    root, paths + ([outside] if outside else []), paillier_bits=paillier_bits,
                    tls=tls, threshold=threshold))
            console.print(f"key-holder {deployed.keyholder.url}  server {deployed.server.url}"
                          + ("  (TLS, private loopback CA)" if tls else ""))
            console.print(f"key-holder identity {deployed.identity}")
            truths = simulate(deployed, policies, clients, console)
            outcome = release_all(deployed)
            for refused in outcome.get("refused", []):
                console.print(f"[red]refused[/red] {refused}")
            rows = build_rows(policies, truths, published(deployed), deployed.identity)
            render(rows, console)
            elapsed = time.monotonic() - started
            ok = all(row["published"] is not None for row in rows)
            coverage = [row["covered"] for row in rows if row["covered"] is not None]
            mean_cov = sum(coverage) / len(coverage) if coverage else math.nan
            console.print(f"{'all' if ok else 'NOT all'} metrics published in {elapsed:.1f} s; "
                          f"mean CI coverage of the truth {mean_cov:.0%}")
            if as_json:
                print(json.dumps({"metrics": rows, "elapsed_seconds": round(elapsed, 2),
                                  "clients": clients}))
            if keep_serving and ok:
                dashboard = f"{deployed.server.url}/"
                windows = _windows_for_outside_clients(policies, outside_policies)
                print(json.dumps({**_without_tokens(deployed, root),
                                  "dashboard_url": dashboard, **windows}), flush=True)
                how = ("dashboard: " + dashboard + (f" (trust {deployed.ca_bundle})"
                                                    if deployed.ca_bundle else "")
                       + "\nserving until Ctrl-C or SIGTERM, which stops both services")
                print(how, file=sys.stderr if as_json else sys.stdout, flush=True)
                print(_describe_windows(windows), file=sys.stderr if as_json else sys.stdout,
                      flush=True)
                _wait_for_signal()
        sys.stdout.flush()
    return 0 if ok else 1
