"""No error answer received anywhere in this suite carries a stack trace or an internal
path. Runs last (conftest orders it so), over every error body the attacks collected:
HTTP problem documents, the odd non-problem answer, SDK error messages and CLI output.
"""

from __future__ import annotations

import pytest
from security_kit import ERROR_BODIES, LEAK_MARKERS


def test_error_answers_carry_no_stack_trace_or_internal_path(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if not ERROR_BODIES:
        pytest.skip("no error answers were collected: run this module with the attacks")
    # Data directories live under the test's temporary root: an answer naming one leaks a
    # server path. (The CLI may name the directory its operator passed it.)
    data_root = str(tmp_path_factory.getbasetemp())
    leaks = [
        (error.where, error.status, marker, error.text[:200])
        for error in ERROR_BODIES
        for marker in (*LEAK_MARKERS, *([data_root] if error.where != "cli" else []))
        if marker in error.text
    ]
    assert not leaks, leaks
