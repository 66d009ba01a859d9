"""docs/CONFIGURATION.md names every setting the code reads (issue: eight ``BLINDSUM_*``
variables and several policy fields were documented nowhere).

The lists come from the code itself: the variables from the source text, the flags from the
real argument parser, the policy fields from the policy reader's own field sets. A setting
added without its line in the reference fails here.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from blindsum.server.cli import build_parser
from blindsum.shared import policy

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "CONFIGURATION.md").read_text()


def _variables() -> set[str]:
    names: set[str] = set()
    for folder in ("server", "client", "shared"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(re.findall(r"BLINDSUM_[A-Z_]*[A-Z]", path.read_text()))
    return names


def _flags(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str]]:
    for action in parser._actions:  # argparse offers no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _flags(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            for option in action.option_strings:
                yield path, option


def test_every_environment_variable_is_documented() -> None:
    variables = _variables()
    assert len(variables) >= 20  # the scan found the code's variables at all
    assert sorted(v for v in variables if f"`{v}`" not in DOC) == []


def test_every_cli_flag_is_documented() -> None:
    flags = list(_flags(build_parser(), "blindsum"))
    assert len(flags) >= 80
    missing = sorted({(path, flag) for path, flag in flags if not re.search(
        rf"`{re.escape(flag)}(?![\w-])", DOC)})
    assert missing == []


def test_every_policy_field_is_documented() -> None:
    fields = {f"`{name}`" for name in policy._KNOWN_FIELDS - {"name", "privacy"}}
    fields |= {f"`privacy.{name}`" for name in policy._KNOWN_PRIVACY}
    assert sorted(field for field in fields if field not in DOC) == []
