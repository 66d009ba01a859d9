"""The planning commands' arguments, kept free of heavy imports (OpenDP, matplotlib).

``build_parser`` runs for every ``blindsum`` command, services included, so the modules that
do the work are imported only when a planning command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_explore(args: argparse.Namespace) -> int:
    from blindsum.server.planning.commands import cmd_explore as run

    return run(args)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def epsilon_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"epsilon must be a number, got {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"epsilon must be in (0, 100], got {text}")
    return value


def add_explore_parser(roles: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = roles.add_parser(
        "explore", help="accuracy against epsilon, reports, bounds and windows, before going live")
    parser.add_argument("file", help="policy TOML file ([metrics.NAME] tables)")
    parser.add_argument("--metric", action="append", metavar="NAME",
                        help="only this metric (repeatable; default: every metric)")
    parser.add_argument("--epsilon", action="append", type=epsilon_value, metavar="E",
                        help="epsilon per release to try (repeatable; default 0.1 ... 8; "
                             "the policy's own is always included)")
    parser.add_argument("--contributors", action="append", type=positive_int, metavar="N",
                        help="reports per window (repeatable; default k, 10k, 100k, 1000k)")
    for name in ("lower", "upper", "precision"):
        parser.add_argument(f"--{name}", type=float,
                            help=f"try another {name} (every selected metric; see --metric)")
    parser.add_argument("--window-seconds", type=positive_int,
                        help="try another window length (changes releases per day)")
    parser.add_argument("--sample", help="CSV of raw values (header 'metric,value'; a vector "
                                         "metric's values on one row): simulate releases on it")
    parser.add_argument("--releases", type=positive_int, default=200,
                        help="simulated releases per metric with --sample (default 200)")
    parser.add_argument("--plots", type=Path, default=Path("explore-plots"),
                        help="folder for one PNG per metric (default ./explore-plots)")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=cmd_explore)


def add_preview_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--contributors", type=positive_int, metavar="N",
                        help="expected reports per window for the preview "
                             "(default: each metric's min_contributors, the worst case)")
    parser.add_argument("--json", action="store_true", help="print the preview as JSON")
