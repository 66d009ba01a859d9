"""``blindsum published | windows | release`` against a real server on 127.0.0.1.

The server is the aggregator app with a five-window published history (``publication_kit``),
served over HTTP; the commands reach it only through its API.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aggregator_kit import ADMIN, make_app, make_report, post_reports, running_keyholder
from publication_kit import publish_history, serving

from blindsum.server import collector
from blindsum.server.aggregator.app import close_app
from blindsum.server.cli import main
from blindsum.server.processes import free_port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    root = tmp_path_factory.mktemp("collector")
    with running_keyholder(root) as keyholder:
        app = make_app(root / "server", keyholder)
        publish_history(app.test_client(), app, keyholder)
        with serving(app) as url:
            yield url, app
        close_app(app)


@pytest.fixture
def url(served: tuple[str, Any]) -> str:
    return served[0]


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every command runs in an empty folder, which must stay empty: nothing is written."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.delenv(collector.TOKEN_ENV, raising=False)
    yield workdir
    assert list(workdir.iterdir()) == []


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_published_json_follows_every_page(url: str, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector, "PAGE", 4)  # 15 results: four pages
    code, out, _ = run(capsys, "published", "--server", url, "--format", "json")
    assert code == 0
    direct = requests.get(f"{url}/v1/published", timeout=10).json()["results"]
    assert json.loads(out)["results"] == direct and len(direct) == 15


def test_published_table_shows_rounded_values_and_intervals(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "published", "--server", url, "--metric", "latency")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["METRIC", "WINDOW", "(UTC)"]
    assert len(lines) == 6 and all(line.startswith("latency") for line in lines[1:])
    assert all(" to " in line for line in lines[1:])


def test_published_csv_is_the_servers_export(url: str, served: tuple[str, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    windows = requests.get(f"{url}/v1/published/pages", timeout=10).json()["results"]
    start = windows[2]["window"]
    code, out, _ = run(capsys, "published", "--server", url, "--metric", "pages",
                       "--format", "csv", "--from", str(start))
    assert code == 0
    exported = requests.get(f"{url}/v1/published/pages/export.csv?from={start}",
                            timeout=10).text
    assert out == exported
    assert {int(row["window"]) for row in csv.DictReader(io.StringIO(out))} == {
        w["window"] for w in windows[2:]}


def test_published_csv_needs_a_metric(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "published", "--server", url, "--format", "csv")
    assert code == 2 and "give --metric" in err


def test_server_errors_are_reported_without_a_traceback(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "published", "--server", url, "--from", "someday")
    assert code == 2 and "from must be unix seconds or an ISO 8601" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "published", "--server", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "cannot reach the server" in err


def test_windows_needs_an_admin_token(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "windows", "--server", url)
    assert code == 2 and "an admin token is needed" in err
    code, _, err = run(capsys, "windows", "--server", url, "--token", "adm_wrong")
    assert code == 2 and "error:" in err and "adm_wrong" not in err


def test_windows_lists_states_with_the_token_from_the_environment(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(collector.TOKEN_ENV, ADMIN)
    code, out, err = run(capsys, "windows", "--server", url, "--state", "released", "--json")
    assert code == 0 and ADMIN not in out + err
    windows = json.loads(out)["windows"]
    assert len(windows) == 15 and {w["state"] for w in windows} == {"released"}
    code, out, _ = run(capsys, "windows", "--server", url, "--metric", "pages")
    assert code == 0 and len(out.splitlines()) == 6


def test_release_closes_an_open_window_through_the_api(
    url: str, served: tuple[str, Any], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    app = served[1]
    clock = app.extensions["blindsum.aggregator"].clock
    response = post_reports(app.test_client(),
                            [make_report("latency", v, now=clock()) for v in (5, 6, 7)])
    assert response.status_code == 200
    monkeypatch.setattr("sys.stdin", io.StringIO(ADMIN + "\n"))
    code, out, err = run(capsys, "release", "--server", url, "--token", "-",
                         "--metric", "latency")
    assert code == 0, err
    assert out.startswith("released latency v1 window ") and "(3 reports)" in out
    assert ADMIN not in out + err
