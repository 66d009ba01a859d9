"""docs/notebooks/published.ipynb runs, top to bottom, against a real server (so it never rots).

The server is the aggregator app with a five-window history served on 127.0.0.1; the
notebook runs in its own Jupyter kernel (nbclient) and reads the settings it documents
from the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests
from aggregator_kit import make_app, running_keyholder, template
from nbclient import NotebookClient
from publication_kit import WINDOWS, publish_history, serving

from blindsum.server.aggregator.app import close_app

NOTEBOOK = Path(__file__).parents[2] / "docs" / "notebooks" / "published.ipynb"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("notebook")
    with running_keyholder(root) as keyholder:
        app = make_app(root / "server", keyholder)
        publish_history(app.test_client(), app, keyholder, metrics=("latency",))
        with serving(app) as url:
            yield url
        close_app(app)


def _execute(workdir: Path) -> list[str]:
    """Each code cell's whole stdout, one string per cell that printed anything.

    A kernel may flush one print() as several stream messages (the text, then its newline),
    so a cell's stdout is the concatenation of all its stdout stream outputs.
    """
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    printed = ["".join("".join(output.get("text", "")) for output in cell.get("outputs", [])
                       if output.get("output_type") == "stream"
                       and output.get("name") == "stdout")
               for cell in notebook.cells if cell.cell_type == "code"]
    return [text for text in printed if text]


def test_notebook_loads_verifies_and_plots_a_metric_from_the_server(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figure = tmp_path / "latency.png"
    monkeypatch.setenv("BLINDSUM_SERVER_URL", server_url)
    monkeypatch.setenv("BLINDSUM_METRIC", "latency")
    monkeypatch.setenv("BLINDSUM_IDENTITY", template().identity)
    monkeypatch.setenv("BLINDSUM_FIGURE", str(figure))
    monkeypatch.delenv("BLINDSUM_EXPORT", raising=False)
    printed = _execute(tmp_path)
    assert f"{WINDOWS} published windows of latency\n" in printed
    assert f"signatures verified: {WINDOWS} of {WINDOWS}\n" in printed
    assert printed[-1].startswith(f"windows: {WINDOWS}, verified: {WINDOWS}, "
                                  "total reports: 20, privacy spent: epsilon 5")
    # the band drawn is the dashboard's: every window's interval as the server derives it
    served = requests.get(f"{server_url}/v1/published/latency", timeout=10).json()["results"]
    lows, highs = zip(*(r["derived"]["ci"] for r in served), strict=True)
    assert printed[-1].endswith(f"95% band drawn over {WINDOWS} windows, from {min(lows):g} "
                                f"to {max(highs):g}\n")
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_notebook_reads_a_saved_json_export(server_url: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    export: Any = requests.get(f"{server_url}/v1/published/latency/export.json", timeout=10)
    saved = tmp_path / "latency.json"
    saved.write_bytes(export.content)
    monkeypatch.setenv("BLINDSUM_EXPORT", str(saved))
    monkeypatch.setenv("BLINDSUM_SERVER_URL", "http://127.0.0.1:9")  # never contacted
    for name in ("BLINDSUM_IDENTITY", "BLINDSUM_FIGURE"):
        monkeypatch.delenv(name, raising=False)
    printed = _execute(tmp_path)
    assert f"signatures verified: 0 of {WINDOWS}\n" in printed
    assert printed[-1].startswith(f"windows: {WINDOWS}, verified: 0")
