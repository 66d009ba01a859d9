"""``GET /v1/published``: filters, pages, the derived view, exports, and the dashboard pages.

One published history (five hourly windows of a count, a sum and a histogram, released by
the real key-holder) is built per module; every test only reads it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aggregator_kit import RunningKeyholder, assert_problem, make_app, pinned, running_keyholder
from flask import Flask
from publication_kit import publish_history

from blindsum.server.aggregator.app import close_app
from blindsum.shared.signing import verify_document


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, list[int],
                                                                         RunningKeyholder]]:
    root = tmp_path_factory.mktemp("published")
    with running_keyholder(root) as keyholder:
        app = make_app(root / "server", keyholder)
        starts = publish_history(app.test_client(), app, keyholder)
        yield app, starts, keyholder
        close_app(app)


@pytest.fixture
def client(history: tuple[Flask, list[int], RunningKeyholder]) -> Any:
    return history[0].test_client()


@pytest.fixture
def starts(history: tuple[Flask, list[int], RunningKeyholder]) -> list[int]:
    return history[1]


def _results(client: Any, path: str) -> list[dict[str, Any]]:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["results"]


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- filters and pages ---------------------------------------------------------------------


def test_results_filter_by_metric_and_time_range(client: Any, starts: list[int]) -> None:
    everything = _results(client, "/v1/published")
    assert len(everything) == 15 and "next_cursor" not in client.get("/v1/published").get_json()
    pages = _results(client, "/v1/published?metric=pages")
    assert [r["window"] for r in pages] == starts
    assert _results(client, "/v1/published/pages") == pages
    middle = _results(client, f"/v1/published/pages?from={starts[1]}&to={starts[3]}")
    assert [r["window"] for r in middle] == starts[1:3]  # from inclusive, to exclusive
    by_date = _results(client, f"/v1/published?metric=pages&from={_iso(starts[1])}"
                               f"&to={_iso(starts[3])}")
    assert by_date == middle


def test_pages_cover_every_result_once_in_order(client: Any) -> None:
    everything = _results(client, "/v1/published")
    seen: list[dict[str, Any]] = []
    path = "/v1/published?limit=4"
    while True:
        body = client.get(path).get_json()
        seen.extend(body["results"])
        if "next_cursor" not in body:
            break
        path = f"/v1/published?limit=4&cursor={body['next_cursor']}"
    assert seen == everything and len(seen) == 15


@pytest.mark.parametrize("query,fragment", [
    ("?colour=red", "unknown query parameters ['colour']"),
    ("?limit=1&limit=2", "at most once (limit)"),
    ("?limit=0", "limit must be an integer from 1 to 1000"),
    ("?limit=1001", "limit must be"),
    ("?limit=ten", "limit must be"),
    ("?from=yesterday", "from must be unix seconds or an ISO 8601"),
    ("?to=99999999999999", "to must be unix seconds or an ISO 8601"),
    ("?from=1700000000&to=1600000000", "from (1700000000) must be before to"),
    ("?cursor=bm90IGEgY3Vyc29y", "cursor is not one this server issued"),
    ("?cursor=%00", "cursor is not one this server issued"),
    ("?metric=Not-A-Name", "metric must match"),
])
def test_bad_parameters_are_refused_by_name(client: Any, query: str, fragment: str) -> None:
    assert_problem(client.get("/v1/published" + query), 400, "invalid-input", fragment)


def test_a_cursor_is_bound_to_its_metric(client: Any) -> None:
    cursor = client.get("/v1/published?metric=latency&limit=1").get_json()["next_cursor"]
    assert_problem(client.get(f"/v1/published/pages?cursor={cursor}"), 400, "invalid-input",
                   "another metric")


def test_unknown_metrics_are_not_found(client: Any) -> None:
    assert_problem(client.get("/v1/published?metric=nosuch"), 404, "not-found", "nosuch")
    assert_problem(client.get("/v1/published/nosuch/export.csv"), 404, "not-found")
    assert_problem(client.get("/metrics/nosuch"), 404, "not-found")


# -- what a result carries ------------------------------------------------------------------


def test_histogram_is_shown_consistent_while_the_signed_values_stay_raw(client: Any) -> None:
    for result in _results(client, "/v1/published/pages"):
        signed = json.loads(result["document"]["payload"])
        assert result["value"] == signed["value"]  # the signed fields, unchanged
        assert result["noisy_value"] == signed["noisy_value"]  # the raw noisy values too
        derived = result["derived"]
        assert sum(derived["value"]) == result["report_count"]
        assert all(isinstance(c, float) and c >= 0 and c == int(c) for c in derived["value"])
        assert all(0 <= low <= high <= result["report_count"] for low, high in derived["ci"])
        assert derived["labels"] == ["< 1", "[1, 2)", "[2, 3)", "≥ 3"]
        for (low, high), (slow, shigh) in zip(derived["ci"], derived["simultaneous_ci"],
                                              strict=True):
            assert slow <= low and shigh >= high


def test_scalar_intervals_are_clipped_to_the_domain(client: Any) -> None:
    for result in _results(client, "/v1/published/visits"):
        low, high = result["derived"]["ci"]
        assert low >= 0 and high <= result["report_count"]  # visits: count with upper 1
        assert result["ci"][0] <= low


# -- exports ---------------------------------------------------------------------------------


def _export(client: Any, path: str) -> Any:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    return response


def test_csv_export_round_trips_the_json_export(client: Any, starts: list[int]) -> None:
    span = f"?from={starts[1]}&to={starts[4]}"
    rows = list(csv.DictReader(io.StringIO(
        _export(client, f"/v1/published/pages/export.csv{span}").get_data(as_text=True))))
    exported = _export(client, f"/v1/published/pages/export.json{span}").get_json()
    assert exported["from"] == starts[1] and exported["to"] == starts[4]
    results = exported["results"]
    assert [r["window"] for r in results] == starts[1:4]
    assert len(rows) == 4 * len(results)
    for result in results:
        payload = verify_document(result["document"], pinned(), "result")
        mine = [row for row in rows if int(row["window"]) == result["window"]]
        assert [float(row["noisy_value"]) for row in mine] == payload["noisy_value"]
        assert [float(row["value"]) for row in mine] == payload["value"]  # clamped, as signed
        assert [[float(row["ci_low"]), float(row["ci_high"])] for row in mine] == payload["ci"]
        assert [float(row["shown"]) for row in mine] == result["derived"]["value"]
        assert {row["mechanism"] for row in mine} == {payload["mechanism"]}
        assert {float(row["epsilon"]) for row in mine} == {payload["epsilon"]}
        assert {int(row["report_count"]) for row in mine} == {payload["report_count"]}


def test_scalar_csv_has_one_row_per_window(client: Any, starts: list[int]) -> None:
    text = _export(client, "/v1/published/latency/export.csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(row["window"]) for row in rows] == starts
    assert all(row["label"] == "sum" and row["slot"] == "0" for row in rows)
    json_rows = _export(client, "/v1/published/latency/export.json").get_json()["results"]
    assert [float(row["noisy_value"]) for row in rows] == [r["noisy_value"] for r in json_rows]


def _read_back(rows: list[dict[str, str]]) -> dict[str, Any]:
    """One window's CSV rows turned back into the JSON export's fields (slot lists)."""
    def number(text: str) -> float | None:
        return None if text == "" else float(text)

    first = rows[0]
    scalar = len(rows) == 1 and first["label"] in ("count", "sum", "mean")

    def column(name: str) -> Any:
        values = [number(row[name]) for row in rows]
        return values[0] if scalar else values

    def pairs(low: str, high: str) -> Any:
        values = [[number(row[low]), number(row[high])] for row in rows]
        return values[0] if scalar else values

    return {
        "metric": first["metric"], "version": int(first["version"]), "kid": first["kid"],
        "window": int(first["window"]), "window_seconds": int(first["window_seconds"]),
        "report_count": int(first["report_count"]), "mechanism": first["mechanism"],
        "epsilon": float(first["epsilon"]), "delta": float(first["delta"]),
        "rho": number(first["rho"]), "scale": float(first["scale"]),
        "released_at": float(first["released_at"]), "audit_seq": int(first["audit_seq"]),
        "noisy_value": column("noisy_value"), "value": column("value"),
        "ci": pairs("ci_low", "ci_high"),
        "derived": {"value": column("shown"), "ci": pairs("ci_low_clipped", "ci_high_clipped"),
                    "simultaneous_ci": pairs("simultaneous_low", "simultaneous_high"),
                    "labels": [row["label"] for row in rows],
                    "low_signal": [row["low_signal"] == "true" for row in rows]},
        "start": first["window_start_utc"], "slots": [int(row["slot"]) for row in rows],
    }


@pytest.mark.parametrize("metric", ["visits", "latency", "pages"])
def test_every_csv_column_reads_back_as_the_json_export_states_it(client: Any,
                                                                 metric: str) -> None:
    rows = list(csv.DictReader(io.StringIO(
        _export(client, f"/v1/published/{metric}/export.csv").get_data(as_text=True))))
    results = _export(client, f"/v1/published/{metric}/export.json").get_json()["results"]
    assert len({row["window"] for row in rows}) == len(results) == 5
    for result in results:
        back = _read_back([row for row in rows if int(row["window"]) == result["window"]])
        payload = verify_document(result["document"], pinned(), "result")
        for name in ("metric", "version", "kid", "window", "window_seconds", "report_count",
                     "mechanism", "epsilon", "delta", "rho", "scale", "released_at",
                     "audit_seq", "noisy_value", "value", "ci"):
            assert back[name] == payload[name], name
        derived = result["derived"]
        for name in ("value", "ci", "simultaneous_ci", "labels", "low_signal"):
            assert back["derived"][name] == derived[name], name
        assert back["start"] == _iso(result["window"])
        assert back["slots"] == list(range(len(derived["labels"])))


def test_exports_refuse_paging_parameters(client: Any) -> None:
    assert_problem(client.get("/v1/published/pages/export.csv?limit=3"), 400, "invalid-input",
                   "unknown query parameters ['limit']")


# -- dashboard --------------------------------------------------------------------------------


def test_index_lists_every_metric_with_state_budget_and_policy(client: Any) -> None:
    html = client.get("/").get_data(as_text=True)
    for name in ("visits", "latency", "pages", "embed"):
        assert f'<a href="/metrics/{name}"><code>{name}</code></a>' in html
    assert "nothing published yet" in html  # embed
    assert "collecting" in html and "95 releases left" in html  # 5 of 100 spent
    assert "k ≥ 2" in html and "laplace noise, ε 1 per hourly window" in html


def test_metric_page_has_a_labelled_chart_a_table_methodology_and_exports(
    client: Any, starts: list[int]
) -> None:
    html = client.get("/metrics/latency").get_data(as_text=True)
    assert 'role="img" aria-labelledby="series-t series-d"' in html
    assert "<title id=\"series-t\">latency: sum per window with its 95% interval</title>" in html
    assert html.count("<g class=\"point\">") == len(starts)
    assert "<caption>Every window (newest first)</caption>" in html
    for heading in ("What is measured", "Bounds and clipping", "Noise", "Privacy cost",
                    "Windows and minimum reports", "Privacy unit",
                    "What is kept, and for how long", "Trust", "How to verify a result"):
        assert f"<h3>{heading}</h3>" in html
    # the server's retention (the default, a day) is what the page states
    assert "kept for 1 day after its window is released or refused, then erased" in html
    assert 'href="/v1/published/latency/export.csv"' in html


def test_histogram_page_draws_windows_on_one_scale(client: Any) -> None:
    html = client.get("/metrics/pages").get_data(as_text=True)
    assert html.count('<svg class="chart"') == 5
    charts = [part.split("</svg>")[0] for part in html.split('<svg class="chart"')[1:]]
    # the y axis: each tick's label and height, identical on every window's chart
    axes = [re.findall(r'<text class="tick" x="\d+" y="([\d.]+)" text-anchor="end">([^<]+)<',
                       chart) for chart in charts]
    assert len(axes[0]) >= 3 and all(axis == axes[0] for axis in axes)
    assert "simultaneous 95% band" in html and "≥ 3" in html


def test_metric_page_range_form_filters_and_keeps_the_export_range(
    client: Any, starts: list[int]
) -> None:
    day = datetime.fromtimestamp(starts[0], UTC).strftime("%Y-%m-%d")
    html = client.get(f"/metrics/latency?from={day}&to=").get_data(as_text=True)
    assert f'value="{day}"' in html
    assert "export.csv?from=" in html
    assert_problem(client.get("/metrics/latency?from=soon"), 400, "invalid-input", "from must")


def test_budget_is_unknown_while_the_keyholder_is_down(tmp_path: Path) -> None:
    with running_keyholder(tmp_path) as keyholder:
        app = make_app(tmp_path / "server", keyholder)
        try:
            keyholder.stop()
            html = app.test_client().get("/").get_data(as_text=True)
        finally:
            close_app(app)
    assert "budget unknown (the key-holder did not answer)" in html



# -- one window, as `blindsum verify` reads it -------------------------------------------------


def test_each_window_links_to_its_result_and_that_result_verifies(
    client: Any, starts: list[int]
) -> None:
    from blindsum.shared.verification import verify_result

    html = client.get("/metrics/latency").get_data(as_text=True)
    for start in starts:
        assert f'href="/v1/published/latency/windows/{start}"' in html
    entry = client.get(f"/v1/published/latency/windows/{starts[2]}").get_json()
    listed = [r for r in _results(client, "/v1/published/latency") if r["window"] == starts[2]]
    assert listed == [entry]
    result = verify_result(entry, pinned())
    assert (result.metric, result.window, result.threshold) == ("latency", starts[2], False)
    assert result.to_json() == json.loads(entry["document"]["payload"])


def test_one_window_endpoint_refuses_what_it_cannot_answer(client: Any,
                                                           starts: list[int]) -> None:
    assert_problem(client.get(f"/v1/published/latency/windows/{starts[0] + 1}"), 404,
                   "not-found", "no published result for window")
    assert_problem(client.get(f"/v1/published/latency/windows/{2**41}"), 404, "not-found",
                   "no window starts")
    assert_problem(client.get(f"/v1/published/latency/windows/{starts[0]}?limit=1"), 400,
                   "invalid-input", "unknown query parameters")
    assert client.get("/v1/published/latency/windows/-5").status_code == 404
