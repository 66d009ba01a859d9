"""Bearer tokens: created, listed and revoked by the CLI, stored hashed, scoped to metrics.

The CLI works on the data directory of a running server (SQLite WAL); the server looks each
token up per request, so a revocation is refused from the very next request.
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aggregator_kit import (
    ADMIN,
    INGEST,
    RunningKeyholder,
    assert_problem,
    make_app,
    make_report,
    post_reports,
    snapshot,
)
from flask import Flask

from blindsum.server.aggregator.app import close_app
from blindsum.server.cli import main
from blindsum.server.http import token_digest


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "server"


@pytest.fixture
def app(data_dir: Path, keyholder: RunningKeyholder) -> Iterator[Flask]:
    app = make_app(data_dir, keyholder)
    yield app
    close_app(app)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["server", "token", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _create(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> dict[str, Any]:
    code, out, err = _cli(capsys, "create", "--data-dir", str(data_dir), "--json", *args)
    assert code == 0, err
    created: dict[str, Any] = json.loads(out)
    return created


# -- the CLI -------------------------------------------------------------------------------


def test_create_prints_the_token_once_and_stores_only_its_digest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _cli(capsys, "create", "--data-dir", str(tmp_path), "--role", "ingest",
                          "--label", "android app", "--metric", "visits", "--metric", "latency")
    assert code == 0
    token = out.strip()
    assert token.startswith("ing_") and len(token) == 4 + 43
    assert "android app" in err and "latency, visits" in err
    conn = sqlite3.connect(tmp_path / "aggregator.db")
    rows = conn.execute("SELECT digest, role, label, metrics, revoked_at FROM tokens").fetchall()
    conn.close()
    assert rows == [(token_digest(token), "ingest", "android app", '["latency", "visits"]',
                     None)]
    assert token.encode() not in (tmp_path / "aggregator.db").read_bytes()


def test_json_create_and_list_never_show_a_token_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    created = _create(capsys, tmp_path, "--role", "admin")
    assert created["role"] == "admin" and created["metrics"] is None
    assert created["token"].startswith("adm_")
    assert created["label"] == f"admin-{token_digest(created['token'])[:8]}"
    for extra in ((), ("--json",)):
        code, out, _ = _cli(capsys, "list", "--data-dir", str(tmp_path), *extra)
        assert code == 0
        assert created["token"] not in out
        assert token_digest(created["token"])[:12] in out
        assert token_digest(created["token"]) not in out  # a prefix, not the digest
    [listed] = json.loads(out)
    assert listed["label"] == created["label"] and listed["revoked_at"] is None


def test_revoke_by_label_by_digest_prefix_and_by_token_on_stdin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = [_create(capsys, tmp_path, "--role", "ingest", "--label", f"app {i}")["token"]
              for i in range(3)]
    assert _cli(capsys, "revoke", "--data-dir", str(tmp_path), "app 0")[0] == 0
    assert _cli(capsys, "revoke", "--data-dir", str(tmp_path),
                token_digest(tokens[1])[:10])[0] == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(tokens[2] + "\n"))
    code, out, _ = _cli(capsys, "revoke", "--data-dir", str(tmp_path), "-")
    assert code == 0 and "'app 2'" in out and "revoked" in out
    listed = json.loads(_cli(capsys, "list", "--data-dir", str(tmp_path), "--json")[1])
    assert all(item["revoked_at"] is not None for item in listed)
    code, out, _ = _cli(capsys, "revoke", "--data-dir", str(tmp_path), "app 0")
    assert code == 0 and "already revoked" in out


@pytest.mark.parametrize("args, fragment", [
    (("--role", "admin", "--metric", "visits"), "only ingest tokens are scoped"),
    (("--role", "ingest", "--metric", "Not A Metric"), "metric names must match"),
    (("--role", "ingest", "--label", "\x1b[31mred"), "a label is"),
])
def test_create_refuses_bad_requests(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     args: tuple[str, ...], fragment: str) -> None:
    code, _, err = _cli(capsys, "create", "--data-dir", str(tmp_path), *args)
    assert code == 2 and fragment in err


def test_a_label_names_one_active_token(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    _create(capsys, tmp_path, "--role", "ingest", "--label", "ios")
    code, _, err = _cli(capsys, "create", "--data-dir", str(tmp_path), "--role", "ingest",
                        "--label", "ios")
    assert code == 2 and "already labelled 'ios'" in err
    assert _cli(capsys, "revoke", "--data-dir", str(tmp_path), "ios")[0] == 0
    _create(capsys, tmp_path, "--role", "ingest", "--label", "ios")  # free again


def test_revoke_of_an_unknown_reference_is_an_error(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    _create(capsys, tmp_path, "--role", "ingest")
    for reference in ("nobody", "abc", "0123456789abcdef", INGEST):
        code, _, err = _cli(capsys, "revoke", "--data-dir", str(tmp_path), reference)
        assert code == 2 and "no token in this data directory matches" in err
    code, _, err = _cli(capsys, "list", "--data-dir", str(tmp_path / "elsewhere"))
    assert code == 2 and "not an aggregator data directory" in err


# -- the server ----------------------------------------------------------------------------


def test_cli_token_works_at_once_on_a_running_server(
    capsys: pytest.CaptureFixture[str], client: Any, data_dir: Path
) -> None:
    ingest = _create(capsys, data_dir, "--role", "ingest")["token"]
    admin = _create(capsys, data_dir, "--role", "admin")["token"]
    assert post_reports(client, [make_report("visits", 1)], token=ingest).status_code == 200
    windows = client.get("/v1/windows", headers={"Authorization": f"Bearer {admin}"})
    assert windows.status_code == 200 and len(windows.get_json()["windows"]) == 1
    assert_problem(post_reports(client, [make_report("visits", 1)], token=admin), 403, "forbidden")
    assert_problem(client.get("/v1/windows", headers={"Authorization": f"Bearer {ingest}"}), 403,
             "forbidden")


def test_scoped_token_is_refused_for_another_metric_and_nothing_is_stored(
    capsys: pytest.CaptureFixture[str], client: Any, data_dir: Path
) -> None:
    token = _create(capsys, data_dir, "--role", "ingest", "--metric", "latency")["token"]
    assert post_reports(client, [make_report("latency", 5)], token=token).status_code == 200
    before = snapshot(data_dir)
    batch = [make_report("latency", 6), make_report("visits", 1), make_report("latency", 7)]
    assert_problem(post_reports(client, batch, token=token), 403, "forbidden", "batch.reports[1]",
             "'visits'", "['latency']", "nothing in this batch was stored")
    assert snapshot(data_dir) == before


def test_scope_is_checked_on_every_report_even_duplicates(
    capsys: pytest.CaptureFixture[str], client: Any, data_dir: Path
) -> None:
    token = _create(capsys, data_dir, "--role", "ingest", "--metric", "latency")["token"]
    stored = make_report("visits", 1)
    assert post_reports(client, [stored]).status_code == 200  # by an unscoped token
    before = snapshot(data_dir)
    assert_problem(post_reports(client, [make_report("latency", 1), stored], token=token), 403,
             "forbidden", "'visits'")
    assert snapshot(data_dir) == before


def test_revoked_token_is_401_from_the_next_request(
    capsys: pytest.CaptureFixture[str], client: Any, data_dir: Path
) -> None:
    created = _create(capsys, data_dir, "--role", "ingest", "--label", "leaked")
    assert post_reports(client, [make_report("visits", 1)],
                        token=created["token"]).status_code == 200
    before = snapshot(data_dir)
    completed = subprocess.run(  # another process, as an operator would run it
        [sys.executable, "-m", "blindsum.server.cli", "server", "token", "revoke",
         "--data-dir", str(data_dir), "leaked"],
        capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert_problem(post_reports(client, [make_report("visits", 1)], token=created["token"]), 401,
             "unauthorized", "revoked")
    assert snapshot(data_dir) == before


def test_environment_tokens_still_work_for_every_metric(client: Any) -> None:
    batch = [make_report("visits", 1), make_report("latency", 3), make_report("pages", 1.5)]
    assert post_reports(client, batch, token=INGEST).get_json()["accepted"] == 3
    response = client.get("/v1/windows", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200 and len(response.get_json()["windows"]) == 3


def test_environment_token_cannot_be_revoked_from_the_store(
    capsys: pytest.CaptureFixture[str], client: Any, data_dir: Path
) -> None:
    code, _, err = _cli(capsys, "revoke", "--data-dir", str(data_dir), INGEST)
    assert code == 2 and "BLINDSUM_INGEST_TOKENS" in err
    assert post_reports(client, [make_report("visits", 1)]).status_code == 200


def test_a_token_with_a_report_cap_is_refused_beyond_it_and_nothing_is_stored(
    capsys: pytest.CaptureFixture[str], client: Any, data_dir: Path
) -> None:
    created = _create(capsys, data_dir, "--role", "ingest", "--label", "one install",
                      "--max-reports-per-window", "2")
    token = created["token"]
    assert created["max_reports_per_window"] == 2
    first = make_report("latency", 5)
    assert post_reports(client, [first, make_report("latency", 6)], token=token
                        ).status_code == 200
    assert post_reports(client, [first], token=token).status_code == 200  # a retry: free
    before = snapshot(data_dir)
    assert_problem(post_reports(client, [make_report("visits", 1), make_report("latency", 7)],
                                token=token),
                   409, "report-cap-exceeded", "'one install'", "at most 2 report(s)",
                   "max_reports_per_window", "'latency'", "already has 2",
                   "nothing in this batch was stored")
    assert snapshot(data_dir) == before
    # other metrics and other tokens have their own counts
    assert post_reports(client, [make_report("visits", 1)], token=token).status_code == 200
    assert post_reports(client, [make_report("latency", 8)]).status_code == 200


@pytest.mark.parametrize(("args", "message"), [
    (("--role", "ingest", "--max-reports-per-window", "0"), "1..1000000000"),
    (("--role", "admin", "--max-reports-per-window", "3"), "only ingest tokens have a report"),
])
def test_a_bad_report_cap_is_refused(capsys: pytest.CaptureFixture[str], data_dir: Path,
                                     args: tuple[str, ...], message: str) -> None:
    code, _, err = _cli(capsys, "create", "--data-dir", str(data_dir), *args)
    assert code == 2 and message in err
