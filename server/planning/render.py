"""Terminal tables (rich) and PNG plots (matplotlib) of explorations, simulations, previews."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from blindsum.server.planning.accuracy import Exploration, Lifetime, value_range
from blindsum.server.planning.preview import Preview
from blindsum.server.planning.sample import Simulation
from blindsum.shared.errors import InvalidConfig
from blindsum.shared.policy import MetricPolicy, describe_period


def _units(kind: str) -> str:
    return {"histogram": "reports per bucket", "count": "reports", "mean": "value units",
            "sum": "value units", "vector": "value units per coordinate"}[kind]


def short(x: float) -> str:
    """Three significant digits with an SI suffix, so tables fit an 80-column terminal."""
    if abs(x) < 1e-9:
        return "0"  # float rounding residue (a mean of values on the precision grid)
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(x) >= factor:
            return f"{x / (1e3 if suffix == 'k' else factor):.3g}{suffix}"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def share(p: float) -> str:
    if p >= 0.1:
        return f"{p:.0%}"
    return f"{p:.1%}" if p >= 0.001 else "<0.1%"


def _days(life: Lifetime, releases: int | None) -> str:
    days = life.days(releases)
    return "-" if days is None else short(days)


def _period_note(policy: MetricPolicy) -> str:
    period = policy.privacy.budget_period
    return f"; the budget renews every {describe_period(period)}" if period else ""


def _count(releases: int | None) -> str:
    return "-" if releases is None else short(releases)


def _depends_on_n(exploration: Exploration) -> bool:
    widths = {tuple(exploration.at(e, n).half_width for e in exploration.epsilons)
              for n in exploration.contributors}
    return len(widths) > 1


def exploration_tables(exploration: Exploration) -> tuple[Table, Table]:
    """The accuracy by epsilon and report count, then the budget's lifetime by epsilon."""
    policy = exploration.policy
    privacy = policy.privacy
    delta = f", delta {privacy.delta:g}" if privacy.mechanism == "gaussian" else ""
    table = Table(title=(
        f"{policy.name} ({policy.kind}, {privacy.mechanism}{delta}): 95% CI +/- in "
        f"{_units(policy.kind)}, and its share of the value range with n reports"))
    table.add_column("epsilon", justify="right")
    table.add_column("sigma" if privacy.mechanism == "gaussian" else "b", justify="right")
    # Only a mean's half-width depends on n (a sum's noise is added once, whatever n is).
    per_n = _depends_on_n(exploration)
    if not per_n:
        table.add_column("CI +/-", justify="right")
    for n in exploration.contributors:
        table.add_column(f"n={short(n)}", justify="right")
    life_table = Table(title=(
        f"{policy.name}: releases the budget (epsilon {privacy.budget_epsilon:g}) allows, "
        f"{86400 / policy.window_seconds:g} windows a day"))
    for column in ("epsilon", "eps/day", "releases basic", "ledger", "days basic", "ledger",
                   "budget delta"):
        life_table.add_column(column, justify="right")
    for eps in exploration.epsilons:
        first = exploration.at(eps, exploration.contributors[0])
        cells = [] if per_n else [short(first.half_width)]
        for n in exploration.contributors:
            row = exploration.at(eps, n)
            cells.append(f"{short(row.half_width)} ({share(row.relative)})" if per_n
                         else share(row.relative))
        mark = " <" if eps == privacy.epsilon else ""
        style = "bold" if mark else None
        table.add_row(f"{eps:g}{mark}", short(first.scale), *cells, style=style)
        life = exploration.lifetimes[eps]
        life_table.add_row(
            f"{eps:g}{mark}", f"{life.epsilon_per_day:g}", _count(life.basic_releases),
            _count(life.ledger_releases), _days(life, life.basic_releases),
            _days(life, life.ledger_releases),
            "-" if life.zcdp_delta is None else f"{life.zcdp_delta:.2g}", style=style)
    table.caption = "< the policy's epsilon"
    life_table.caption = ("basic: epsilons add. ledger: what the key-holder pays, the "
                          "tighter of basic and zCDP composed and converted once (OpenDP) "
                          "at the budget's delta" + _period_note(policy) + ".")
    return table, life_table


def simulation_table(simulations: list[Simulation]) -> Table:
    table = Table(title="Simulated releases of the sample at each policy's epsilon (errors "
                        "against the raw, unclipped truth; worst coordinate)")
    table.add_column("metric", no_wrap=True)
    for column in ("n", "clipped", "clip bias", "mean err", "RMSE", "CI +/-", "covers"):
        table.add_column(column, justify="right")
    for sim in simulations:
        worst = max(range(len(sim.clipping_bias)), key=lambda i: abs(sim.clipping_bias[i]))
        table.add_row(sim.metric, short(sim.contributors), share(sim.clipped_share),
                      short(sim.clipping_bias[worst]), short(sim.mean_error[worst]),
                      short(sim.worst_rmse), short(sim.half_width), share(sim.coverage))
    table.caption = ("clipped: share of values outside the bounds; covers: share of 95% CIs "
                     "holding the raw truth. A clipping bias well inside the CI is harmless; "
                     "one near or beyond it means the bounds cut real values: widen them "
                     "(more noise) or accept the bias.")
    return table


def preview_tables(previews: list[Preview]) -> tuple[Table, Table]:
    """Two tables that fit 80 columns: one release, then the budget over time."""
    release = Table(title="One release (95% CI at the expected reports per window)")
    release.add_column("metric", no_wrap=True)
    for column in ("noise", "epsilon", "delta", "scale", "reports", "CI +/-", "of range"):
        release.add_column(column, justify="left" if column == "noise" else "right")
    budget = Table(title="The budget over time")
    budget.add_column("metric", no_wrap=True)
    for column in ("budget", "renews", "eps/day", "basic", "ledger", "days"):
        budget.add_column(column, justify="right")
    for item in previews:
        acc, life, privacy = item.accuracy, item.lifetime, item.policy.privacy
        release.add_row(item.policy.name, acc.mechanism, f"{privacy.epsilon:g}",
                        f"{privacy.delta:g}", short(acc.scale), short(acc.contributors),
                        short(acc.half_width), share(acc.relative))
        budget.add_row(item.policy.name, f"{privacy.budget_epsilon:g}",
                       describe_period(privacy.budget_period),
                       f"{life.epsilon_per_day:g}", _count(life.basic_releases),
                       _count(life.ledger_releases), _days(life, life.ledger_releases))
    budget.caption = ("releases per budget period (or lifetime). basic: epsilons add. "
                      "ledger: what the key-holder pays, the tighter of basic and zCDP "
                      "composed and converted once (OpenDP) at the budget's delta.")
    return release, budget


def print_warnings(console: Console, previews: list[Preview]) -> int:
    count = 0
    for item in previews:
        for advice in item.warnings:
            count += 1
            console.print(f"warning ({advice.kind}): {item.policy.name}: {advice.message}",
                          markup=False, highlight=False)
    return count


def plot_exploration(exploration: Exploration, folder: Path,
                     simulation: Simulation | None = None) -> Path:
    """One PNG per metric: CI half-width and its share of the range, against epsilon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    policy = exploration.policy
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4))
    # A sum's half-width does not depend on n (the noise is added once); a mean's does.
    widths = {n: [exploration.at(e, n).half_width for e in exploration.epsilons]
              for n in exploration.contributors}
    distinct = _depends_on_n(exploration)
    for n, values in widths.items():
        if distinct or n == exploration.contributors[0]:
            left.plot(exploration.epsilons, values, marker="o",
                      label=f"n = {n:,}" if distinct else "any n")
        right.plot(exploration.epsilons,
                   [100 * exploration.at(e, n).relative for e in exploration.epsilons],
                   marker="o", label=f"n = {n:,}")
    if simulation is not None:
        scale = 100 / value_range(policy, simulation.contributors)
        right.plot([simulation.epsilon], [simulation.worst_rmse * scale], "k*", markersize=12,
                   label=f"sample RMSE (n = {simulation.contributors:,})")
        if simulation.worst_bias > 0:  # a zero bias has no place on a log axis
            right.axhline(simulation.worst_bias * scale, color="k", linestyle=":",
                          label="sample clipping bias")
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(exploration.epsilons)
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.axvline(policy.privacy.epsilon, color="grey", linestyle="--", linewidth=1)
        axis.set_xlabel("epsilon per release")
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, loc="upper right")
    right.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    right.axhline(100, color="red", linewidth=1)
    right.text(exploration.epsilons[0], 100, " CI as wide as the range", color="red",
               va="bottom", fontsize=8)
    left.set_ylabel(f"95% CI half-width ({_units(policy.kind)})")
    right.set_ylabel("95% CI half-width, % of the value range")
    fig.suptitle(f"{policy.name}: {policy.kind}, {policy.privacy.mechanism}"
                 f" (dashed: the policy's epsilon {policy.privacy.epsilon:g})")
    fig.tight_layout()
    path = folder / f"{policy.name}.png"  # metric names are [a-z0-9_.-]: no path parts
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    except OSError as exc:
        raise InvalidConfig(f"cannot write the plot {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
    return path
