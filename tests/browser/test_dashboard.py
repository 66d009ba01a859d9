"""The dashboard in real headless Chromium, at 1280 px and 390 px, with JavaScript off.

Each page must render the values the API publishes, with its charts, labels, methodology
and export links, keep every table cell on screen, raise no console error, and be usable
from the keyboard. Screenshots go to the artifact folder (``BLINDSUM_BROWSER_ARTIFACTS``,
default build/browser); ``make screenshots`` also copies the top of the desktop metric page
to docs/dashboard.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import requests
from publication_kit import WINDOWS

from blindsum.server.aggregator.rounding import format_number

DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard.png"


def _width(page: Any) -> int:
    return int(page.viewport_size["width"])


def _assert_on_screen(page: Any) -> None:
    """Nothing is wider than the viewport, and every table cell lies inside it."""
    width = _width(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for cell in page.locator("td").all():
        box = cell.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (
            cell.inner_text()[:60], box)


def _shot(page: Any, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}-{_width(page)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _published(url: str, metric: str) -> list[dict[str, Any]]:
    return requests.get(f"{url}/v1/published/{metric}", timeout=10).json()["results"]


def test_index_lists_every_metric_with_every_column_on_screen(
    page: Any, dashboard_url: str, artifacts: Path
) -> None:
    page.goto(dashboard_url + "/")
    assert page.title() == "blindsum: published results"
    rows = page.locator("table.stack tbody tr")
    assert rows.count() == 6  # proven and weekly_installs have nothing published yet
    for name in ("embed", "latency", "pages", "proven", "visits", "weekly_installs"):
        link = page.get_by_role("link", name=name, exact=True)
        assert link.is_visible() and link.get_attribute("href") == f"/metrics/{name}"
    for column in ("latest value", "trend", "state", "budget", "policy"):
        assert page.locator(f'td[data-label="{column}"]').first.is_visible()
    assert page.get_by_text("95 releases left").count() == 4
    _assert_on_screen(page)
    _shot(page, artifacts, "index")


def _assert_series_matches_the_api(page: Any, url: str, metric: str) -> list[str]:
    """The window table states each published value and interval as the API derives them,
    and flags exactly the windows the API calls low-signal; returns the values shown."""
    newest_first = list(reversed(_published(url, metric)))
    values = page.locator('td[data-label="value"]').all_inner_texts()
    intervals = page.locator('td[data-label="95% interval"]').all_inner_texts()
    notes = page.locator('td[data-label="note"]').all_inner_texts()
    assert len(values) == len(newest_first) == WINDOWS
    for result, value, interval, note in zip(newest_first, values, intervals, notes,
                                             strict=True):
        derived = result["derived"]
        step = derived["rounding_step"]
        assert value == format_number(derived["value"], step)
        low, high = derived["ci"]
        assert interval == f"{format_number(low, step)} to {format_number(high, step)}"
        assert low >= 0  # counts, and sums of values in [0, 1000], are never negative
        assert ("low signal" in note) == derived["low_signal"][0]
    flagged = sum(r["derived"]["low_signal"][0] for r in newest_first)
    warning = page.get_by_text(f"Low signal: in {flagged} of {WINDOWS} windows")
    assert warning.count() == (1 if flagged else 0)
    return values


def test_metric_page_shows_the_published_values_band_and_methodology(
    page: Any, dashboard_url: str, artifacts: Path
) -> None:
    page.goto(dashboard_url + "/metrics/latency")
    chart = page.get_by_role("img", name="latency: sum per window with its 95% interval")
    assert chart.is_visible()
    assert page.locator("svg.chart g.point").count() == WINDOWS
    assert page.locator("svg.chart polygon.band").count() == 1
    values = _assert_series_matches_the_api(page, dashboard_url, "latency")
    tooltips = page.locator("svg.chart g.point title").all_text_contents()
    assert any(values[0] in tip for tip in tooltips)
    for heading in ("Methodology", "Bounds and clipping", "Privacy cost", "Trust",
                    "How to verify a result"):
        assert page.get_by_role("heading", name=heading, exact=True).is_visible()
    _assert_on_screen(page)
    _shot(page, artifacts, "latency")
    if _width(page) == 1280:
        # the README's picture: the top of a metric page, as a reader first sees it
        first_screen = artifacts / "latency-1280-top.png"
        page.screenshot(path=str(first_screen))
        if os.environ.get("BLINDSUM_UPDATE_SCREENSHOTS"):
            shutil.copyfile(first_screen, DOCS_SCREENSHOT)


def test_count_page_shows_the_published_counts_and_band(page: Any, dashboard_url: str,
                                                       artifacts: Path) -> None:
    page.goto(dashboard_url + "/metrics/visits")
    assert page.get_by_role("img", name="visits: count per window with its 95% interval"
                            ).is_visible()
    assert page.locator("svg.chart g.point").count() == WINDOWS
    _assert_series_matches_the_api(page, dashboard_url, "visits")
    assert page.get_by_role("heading", name="Methodology", exact=True).is_visible()
    _assert_on_screen(page)
    _shot(page, artifacts, "visits")


def test_a_metric_with_nothing_published_says_so_and_still_explains_itself(
    page: Any, dashboard_url: str
) -> None:
    page.goto(dashboard_url + "/metrics/proven")
    assert page.get_by_text("Nothing published in this range yet.").is_visible()
    assert page.locator("svg.chart").count() == 0
    assert page.get_by_text("Every report is proven valid").is_visible()
    assert page.get_by_role("heading", name="How to verify a result", exact=True).is_visible()
    _assert_on_screen(page)


def test_export_links_download_the_metrics_csv_and_json(page: Any, dashboard_url: str) -> None:
    page.goto(dashboard_url + "/metrics/latency")
    csv_link = page.get_by_role("link", name="CSV", exact=True)
    json_link = page.get_by_role("link", name="JSON", exact=True)
    assert csv_link.is_visible() and json_link.is_visible()
    csv_answer = page.request.get(dashboard_url + csv_link.get_attribute("href"))
    assert csv_answer.ok and csv_answer.headers["content-type"].startswith("text/csv")
    assert csv_answer.text().splitlines()[0].startswith("metric,version,kid,window,")
    assert len(csv_answer.text().splitlines()) == 1 + WINDOWS
    json_answer = page.request.get(dashboard_url + json_link.get_attribute("href"))
    assert json_answer.ok and len(json_answer.json()["results"]) == WINDOWS


def _assert_slot_intervals_match_the_api(page: Any, derived: dict[str, Any]) -> None:
    """The newest window's per-slot intervals and simultaneous bands, as the API states them."""
    step = derived["rounding_step"]

    def text(pair: list[float]) -> str:
        return f"{format_number(pair[0], step)} to {format_number(pair[1], step)}"

    per_slot = page.locator('td[data-label="95% per slot"]').all_inner_texts()
    bands = page.locator('td[data-label="simultaneous band"]').all_inner_texts()
    assert per_slot == [text(pair) for pair in derived["ci"]]
    assert bands == [text(pair) for pair in derived["simultaneous_ci"]]
    notes = page.locator('td[data-label="note"]').all_inner_texts()[:len(per_slot)]
    assert [("low signal" in note) for note in notes] == derived["low_signal"]


def test_histogram_page_labels_buckets_and_shows_consistent_counts(
    page: Any, dashboard_url: str, artifacts: Path
) -> None:
    page.goto(dashboard_url + "/metrics/pages")
    charts = page.locator("svg.chart")
    assert charts.count() == WINDOWS
    for index in range(WINDOWS):
        assert charts.nth(index).locator("g.slot").count() == 4
    assert page.get_by_role("img", name="pages, window").count() == WINDOWS
    for label in ("< 1", "[1, 2)", "[2, 3)", "≥ 3"):
        assert page.locator("svg.chart text.tick", has_text=label).count() == WINDOWS
    newest = _published(dashboard_url, "pages")[-1]
    shown = page.locator('td[data-label="value"]').all_inner_texts()
    assert [float(v) for v in shown] == newest["derived"]["value"]
    assert sum(float(v) for v in shown) == newest["report_count"]
    raw = page.locator('td[data-label="raw noisy"]').all_inner_texts()
    assert [float(v) for v in raw] == newest["noisy_value"]
    _assert_slot_intervals_match_the_api(page, newest["derived"])
    headers = page.locator("th").all_text_contents()
    assert "95% interval (per slot)" in headers and "simultaneous 95% band" in headers
    _assert_on_screen(page)
    _shot(page, artifacts, "pages")


def test_vector_page_draws_every_coordinate(page: Any, dashboard_url: str,
                                            artifacts: Path) -> None:
    page.goto(dashboard_url + "/metrics/embed")
    assert page.locator("svg.chart").first.locator("g.slot").count() == 8
    assert page.locator("svg.chart").count() == WINDOWS
    derived = _published(dashboard_url, "embed")[-1]["derived"]
    shown = page.locator('td[data-label="value"]').all_inner_texts()
    assert shown == [format_number(v, derived["rounding_step"]) for v in derived["value"]]
    _assert_slot_intervals_match_the_api(page, derived)
    # CKKS: the weaker promise, in the policy summary and in the methodology's trust section
    assert page.get_by_text("trusts its clients").first.is_visible()
    assert page.get_by_text("Reports are encrypted on the device with CKKS").is_visible()
    _assert_on_screen(page)
    _shot(page, artifacts, "embed")


def test_keyboard_skips_to_the_content_and_reaches_the_metric_links(
    page: Any, dashboard_url: str
) -> None:
    page.goto(dashboard_url + "/")
    page.keyboard.press("Tab")
    assert page.locator(":focus").inner_text() == "Skip to content"
    assert page.locator(":focus").is_visible()  # shown when focused, hidden otherwise
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    assert page.locator(":focus").get_attribute("id") == "main"  # focus moved past the header
    names = []
    for _ in range(5):
        page.keyboard.press("Tab")
        names.append(page.locator(":focus").inner_text())
    assert names == ["embed", "latency", "pages", "proven", "visits"]


def test_charts_and_tables_have_accessible_names(page: Any, dashboard_url: str) -> None:
    page.goto(dashboard_url + "/metrics/latency")
    assert page.locator("html").get_attribute("lang") == "en"
    for chart in page.locator("svg.chart").all():
        ids = (chart.get_attribute("aria-labelledby") or "").split()
        assert len(ids) == 2
        assert all(page.locator(f"#{i}").text_content() for i in ids)
    assert page.locator("table caption").count() >= 1
    assert page.locator("th[scope=col]").count() >= 6
    assert page.get_by_role("form", name="time range").is_visible()
