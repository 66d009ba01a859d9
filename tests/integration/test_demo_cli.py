"""`blindsum demo` as a user runs it: real processes, JSON output, --serve lifecycle."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from blindsum.client import Client
from blindsum.server.aggregator.rounding import format_number

DEMO = [sys.executable, "-m", "blindsum.server.cli", "demo", "--paillier-bits", "2048"]


def test_demo_json_reports_every_metric_with_truth_and_interval() -> None:
    completed = subprocess.run([*DEMO, "--clients", "60", "--json"], capture_output=True,
                               text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = json.loads(completed.stdout)
    names = {m["name"] for m in out["metrics"]}
    assert {"app_opened", "session_seconds", "battery_temp_c", "screen_load_ms",
            "feature_minutes", "request_latency_ms", "crash_free_mean"} <= names
    kinds = {m["kind"] for m in out["metrics"]}
    assert kinds == {"count", "sum", "mean", "histogram", "vector"}
    for metric in out["metrics"]:
        assert metric["published"] is not None, metric["name"]
        assert metric["scheme"] in {"paillier", "ckks"}
        assert metric["epsilon"] > 0
        # checked offline against the pinned identity; Paillier runs two-party by default
        assert metric["verified"] == ("proofs" if metric["scheme"] == "paillier"
                                      else "signature")
        if isinstance(metric["truth"], list):
            assert len(metric["ci"]) == len(metric["truth"]) == len(metric["published"])
            assert all(len(pair) == 2 and pair[0] <= pair[1] for pair in metric["ci"])
        else:
            low, high = metric["ci"]
            assert low <= metric["published"] <= high
        # the table shows what the dashboard shows: rounded to the noise, consistent counts
        step, shown = metric["rounding_step"], metric["shown"]
        for value in shown if isinstance(shown, list) else [shown]:
            assert value == pytest.approx(round(value / step) * step, abs=1e-9)
        if metric["kind"] == "histogram":
            assert sum(shown) == metric["report_count"] and min(shown) >= 0


def test_demo_scheme_flag_limits_the_metrics() -> None:
    completed = subprocess.run([*DEMO, "--clients", "25", "--json", "--scheme", "ckks"],
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert {m["scheme"] for m in json.loads(completed.stdout)["metrics"]} == {"ckks"}


def test_demo_single_key_flag_runs_without_the_threshold_key() -> None:
    completed = subprocess.run([*DEMO, "--clients", "25", "--json", "--scheme", "paillier",
                                "--single-key"],
                               capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    metrics = json.loads(completed.stdout)["metrics"]
    assert metrics and {m["verified"] for m in metrics} == {"signature"}
    assert "single-key" in completed.stderr


@pytest.mark.parametrize("argument", [["--clients", "0"], ["--scheme", "rsa"],
                                      ["--clients", "many"]])
def test_demo_rejects_bad_arguments(argument: list[str]) -> None:
    completed = subprocess.run([*DEMO, *argument], capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 2
    assert "error" in completed.stderr


def _assert_metric_page(server_url: str, verify: str, result: dict[str, Any]) -> None:
    """A demo metric's page (count, sum, mean or histogram, two-party threshold key) shows
    its one published window as the API derives it, says how to verify the proofs, and
    states the threshold trust mode in its methodology."""
    name, derived = result["metric"], result["derived"]
    page = requests.get(f"{server_url}/metrics/{name}", timeout=10, verify=verify)
    assert page.status_code == 200, name
    html = page.text
    step = derived["rounding_step"]
    values = re.findall(r'<td data-label="value" class="num">([^<]*)</td>', html)
    if result["kind"] in ("count", "sum", "mean"):
        assert f"{name}: {result['kind']} per window with its 95% interval" in html
        assert values == [format_number(derived["value"], step)], name
        low, high = derived["ci"]
        assert f"{format_number(low, step)} to {format_number(high, step)}" in html
    else:  # the histogram's consistent counts, bucket by bucket
        assert values == [format_number(v, step) for v in derived["value"]], name
        assert sum(derived["value"]) == result["report_count"]
    assert ">signature + proofs</a>" in html  # the demo's default: a threshold key
    assert "two-party threshold key" in html and "proofs of partial decryption" in html


def test_demo_serve_keeps_services_up_until_sigterm() -> None:
    process = subprocess.Popen([*DEMO, "--clients", "25", "--serve", "--scheme", "paillier"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    try:
        assert process.stdout is not None
        line = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("{"):
                break
        info = json.loads(line)
        for key in ("server_url", "keyholder_url", "keyholder_identity", "credentials_file",
                    "keyholder_data_dir", "server_data_dir"):
            assert key in info
        credentials = Path(info["credentials_file"])
        assert credentials.stat().st_mode & 0o777 == 0o600
        tokens = json.loads(credentials.read_text())
        assert {"ingest_token", "admin_token", "release_token"} <= set(tokens)
        assert not any(token in line for token in tokens.values())  # not on stdout
        assert info["server_url"].startswith("https://")  # TLS is the demo's default
        assert process.stdout.readline().startswith(f"dashboard: {info['server_url']}/ ")
        assert "Ctrl-C or SIGTERM" in process.stdout.readline()
        verify = info["ca_bundle"]
        dashboard = requests.get(info["dashboard_url"], timeout=10, verify=verify)
        assert dashboard.status_code == 200 and "/metrics/session_seconds" in dashboard.text
        assert requests.get(f"{info['server_url']}/healthz", timeout=10,
                            verify=verify).status_code == 200
        results = requests.get(f"{info['server_url']}/v1/published", timeout=10,
                               verify=verify).json()
        assert len(results["results"]) == 4
        for result in results["results"]:
            _assert_metric_page(info["server_url"], verify, result)
        assert {w["metric"] for w in info["released_windows"]} == {
            "app_opened", "session_seconds", "battery_temp_c", "screen_load_ms"}
        # the demo left a window open for outside clients, and says which
        (left_open,) = info["open_for_outside_clients"]
        assert left_open["metric"] == "outside_seconds" and left_open["validity"] == "none"
        with Client(info["server_url"], tokens["ingest_token"], info["keyholder_identity"],
                    verify=verify, limits_path=None) as outside:
            outside.record("outside_seconds", 30)
            assert outside.flush().accepted == 1
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        with pytest.raises(requests.ConnectionError):  # the CA is gone with the demo's files
            requests.get(f"{info['server_url']}/healthz", timeout=5, verify=False)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_services_stop_when_the_demo_is_killed_outright() -> None:
    process = subprocess.Popen([*DEMO, "--clients", "20", "--serve", "--scheme", "paillier",
                                "--no-tls"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not line.startswith("{"):
            line = process.stdout.readline()
        info = json.loads(line)
        assert requests.get(f"{info['server_url']}/healthz", timeout=10).status_code == 200
    finally:
        process.kill()  # SIGKILL: the demo gets no chance to stop its services
        process.wait()
    deadline = time.monotonic() + 30
    stopped = set()
    while time.monotonic() < deadline and len(stopped) < 2:
        for url in (info["server_url"], info["keyholder_url"]):
            try:
                requests.get(f"{url}/healthz", timeout=2)
            except requests.ConnectionError:
                stopped.add(url)
        time.sleep(0.2)
    assert len(stopped) == 2, "a service outlived the demo that started it"
