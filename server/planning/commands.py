"""The planning commands behind ``blindsum explore`` and ``blindsum keyholder policy check``.

Both read a policy file and nothing else (no key-holder, no data directory); ``explore``
writes only its PNG plots, into the folder it is given. ``policy check`` refuses what
``policy add`` would refuse about budgets, for the file's metrics alone (``policy add`` also
counts the metrics already registered against the per-device budget).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from blindsum.server.keyholder import caps
from blindsum.server.keyholder.accounting import Spend
from blindsum.server.planning.accuracy import (
    DEFAULT_EPSILONS,
    Exploration,
    default_contributors,
    explore,
    with_settings,
)
from blindsum.server.planning.preview import Preview, preview
from blindsum.server.planning.render import (
    exploration_tables,
    plot_exploration,
    preview_tables,
    print_warnings,
    simulation_table,
)
from blindsum.server.planning.sample import Sample, Simulation, read_sample, simulate
from blindsum.shared.errors import InvalidConfig, InvalidInput
from blindsum.shared.policy import (
    MetricPolicy,
    UnitBudget,
    describe_period,
    load_policies_toml,
    load_unit_budget_toml,
)


def read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise InvalidConfig(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidConfig(f"cannot read {what} {path}: not UTF-8 text") from None


def read_policies(path: str) -> list[MetricPolicy]:
    """The policies of a TOML file; the whole file is refused on any error."""
    return load_policies_toml(read_text(path, "policy file"))


def previews(policies: list[MetricPolicy], contributors: int | None) -> list[Preview]:
    return [preview(p, contributors) for p in policies]


@dataclass(frozen=True)
class UnitUse:
    """What ``policies`` spend of the per-device budget ``unit`` in one of its periods."""

    unit: UnitBudget
    spend: Spend
    metrics: int

    def to_json(self) -> dict[str, object]:
        accounting, epsilon, delta = self.spend.guarantee(self.unit.delta)
        return {**self.unit.to_json(), "metrics": self.metrics,
                "releases": self.spend.releases, "accounting": accounting,
                "spent_epsilon": epsilon, "spent_delta": delta}

    def __str__(self) -> str:
        used = self.to_json()
        return (f"per-device budget ({self.unit.epsilon:g}, {self.unit.delta:.3g}) per "
                f"{describe_period(self.unit.period)}: {self.metrics} metric(s), "
                f"{self.spend.releases} releases in one period cost epsilon "
                f"{used['spent_epsilon']:.4g} at delta {used['spent_delta']:.3g} "
                f"({used['accounting']}), {used['spent_epsilon'] / self.unit.epsilon:.0%} "
                "of it")


def check_budgets(policies: list[MetricPolicy], unit: UnitBudget | None) -> UnitUse | None:
    """Refuse what registration refuses about budgets (a renewing budget too small for its
    period, a set over its per-device budget), for these policies alone.

    Raises:
        InvalidPolicy: saying which metric (or the set) and by how much.
    """
    for policy in policies:
        caps.check_metric_budget(policy)
    if unit is None:
        return None
    return UnitUse(unit, caps.check_unit_budget(policies, unit), len(policies))


def show_previews(items: list[Preview], as_json: bool, use: UnitUse | None = None) -> int:
    """Print the previews (table and warnings, or JSON); return how many warnings."""
    if as_json:
        print(json.dumps({"metrics": [item.to_json() for item in items],
                          "unit_budget": None if use is None else use.to_json()}))
        return sum(len(item.warnings) for item in items)
    console = Console()
    for table in preview_tables(items):
        console.print(table)
    if use is not None:
        print(use)
    return print_warnings(console, items)


def cmd_policy_check(args: argparse.Namespace) -> int:
    text = read_text(args.file, "policy file")
    policies = load_policies_toml(text)
    use = check_budgets(policies, load_unit_budget_toml(text))
    items = previews(policies, args.contributors)
    warnings = show_previews(items, args.json, use)
    if not args.json:
        print(f"{len(items)} metric(s) valid; {warnings} warning(s)")
    return 1 if warnings and args.strict else 0


def _selected(policies: list[MetricPolicy], names: list[str] | None) -> list[MetricPolicy]:
    if not names:
        return policies
    known = {p.name: p for p in policies}
    missing = [n for n in names if n not in known]
    if missing:
        raise InvalidInput(f"no metric {missing} in the policy file (it has {sorted(known)})")
    return [known[n] for n in names]


def _varied(policy: MetricPolicy, args: argparse.Namespace) -> MetricPolicy:
    changes = {"lower": args.lower, "upper": args.upper, "precision": args.precision,
               "window_seconds": args.window_seconds}
    if all(value is None for value in changes.values()):
        return policy
    return with_settings(policy, **changes)


def _run(policies: list[MetricPolicy], sample: Sample, args: argparse.Namespace,
         console: Console) -> tuple[list[Exploration], list[Simulation]]:
    explorations: list[Exploration] = []
    simulations: list[Simulation] = []
    grid = set(args.epsilon or DEFAULT_EPSILONS)
    total = sum(len(grid | {p.privacy.epsilon}) for p in policies)
    total += sum(args.releases for p in policies if p.name in sample)
    with Progress(console=console, transient=True, disable=args.json) as bar:
        task = bar.add_task("calibrating and simulating", total=total)
        for policy in policies:
            counts = list(args.contributors or default_contributors(policy))
            if policy.name in sample:  # the sample's own window size, for comparison
                counts.append(len(sample[policy.name]))
            explorations.append(explore(policy, args.epsilon, counts,
                                        progress=lambda k: bar.advance(task, k)))
            if policy.name in sample:
                simulations.append(simulate(policy, sample[policy.name], args.releases,
                                            progress=lambda k: bar.advance(task, k)))
    return explorations, simulations


def cmd_explore(args: argparse.Namespace) -> int:
    every = read_policies(args.file)
    policies = [_varied(p, args) for p in _selected(every, args.metric)]
    # Rows of metrics not selected are checked, then left out.
    sample = read_sample(read_text(args.sample, "sample file"),
                         {p.name: p for p in every}) if args.sample else {}
    console = Console(stderr=True)
    explorations, simulations = _run(policies, sample, args, console)
    by_metric = {sim.metric: sim for sim in simulations}
    plots = [] if args.no_plots else [
        plot_exploration(e, args.plots, by_metric.get(e.policy.name)) for e in explorations]
    if args.json:
        print(json.dumps({
            "metrics": [e.to_json() for e in explorations],
            "simulations": [dataclasses.asdict(sim) for sim in simulations],
            "plots": [str(p) for p in plots],
        }))
        return 0
    out = Console()
    for exploration in explorations:
        for table in exploration_tables(exploration):
            out.print(table)
    if simulations:
        out.print(simulation_table(simulations))
    for path in plots:
        out.print(f"plot: {path}", markup=False, highlight=False)
    return 0
