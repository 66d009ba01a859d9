"""`blindsum bench --quick`: every figure and target is present and consistent with the raw
measurements of the same run. Speed is never asserted, only the correctness of the figures.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blindsum.benchmarks import client_cost
from blindsum.benchmarks.client_cost import WINDOW
from blindsum.benchmarks.workload import client_policy, client_values
from blindsum.shared import codec
from blindsum.shared.codec import Report
from blindsum.shared.encoding import encode

TARGET_NAMES = {
    "client_speedup_1_value",
    "client_speedup_16_values",
    "wire_bytes_reduction_16_values",
    "ingest_reports_per_s",
    "ingest_percent_of_compute_bound",
    "end_to_end_100k_clients",
    "validity_prove_count",
    "validity_prove_histogram_7",
    "validity_prove_sum_12bit",
    "validity_bytes_count",
    "validity_bytes_histogram_7",
    "validity_bytes_sum_12bit",
    "validity_verify_count",
    "validity_verify_histogram_7",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One `blindsum bench --quick --json` run in its own process, shared by the checks."""
    output = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-m", "blindsum.server.cli", "bench", "--quick", "--json",
         "--output", str(output)],
        capture_output=True, text=True, timeout=420, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout), output


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.slow
def test_every_target_is_present_with_a_numeric_measurement(quick_run: Any) -> None:
    results, _ = quick_run
    entries = {t["name"]: t for t in results["targets"]}
    assert set(entries) == TARGET_NAMES
    for entry in entries.values():
        assert {"name", "target", "measured", "unit", "higher_is_better", "met"} <= set(entry)
        assert isinstance(entry["measured"], int | float) and math.isfinite(entry["measured"])
        assert entry["measured"] > 0
        if entry["higher_is_better"]:
            assert entry["met"] == (entry["measured"] >= entry["target"])
        else:
            assert entry["met"] == (entry["measured"] <= entry["target"])
    assert results["quick"] is True


@pytest.mark.slow
def test_client_ratios_are_the_ratios_of_the_raw_medians_and_byte_counts(quick_run: Any) -> None:
    results, _ = quick_run
    points = results["client_cost"]["points"]
    ratios = results["client_cost"]["ratios"]
    for count in ("1", "16"):
        ours = points["ours_paillier"][count]
        for other in ("naive_phe", "plain_tenseal", "ours_ckks", "plaintext"):
            theirs = points[other][count]
            assert _close(ratios[f"{other}_over_ours_paillier_time_{count}"],
                          theirs["median_s"] / ours["median_s"])
            assert _close(ratios[f"{other}_over_ours_paillier_bytes_{count}"],
                          theirs["bytes"] / ours["bytes"])
    entries = {t["name"]: t for t in results["targets"]}
    assert _close(entries["client_speedup_1_value"]["measured"],
                  points["naive_phe"]["1"]["median_s"] / points["ours_paillier"]["1"]["median_s"])
    assert _close(entries["client_speedup_16_values"]["measured"],
                  points["naive_phe"]["16"]["median_s"]
                  / points["ours_paillier"]["16"]["median_s"])
    assert _close(entries["wire_bytes_reduction_16_values"]["measured"],
                  points["naive_phe"]["16"]["bytes"] / points["ours_paillier"]["16"]["bytes"])
    for pipeline in points.values():
        for point in pipeline.values():
            assert point["p10_s"] <= point["median_s"] <= point["p90_s"]
            assert point["repetitions"] >= 2


@pytest.mark.slow
def test_byte_counts_match_the_serialised_reports(quick_run: Any) -> None:
    results, _ = quick_run
    points = results["client_cost"]["points"]
    bits = results["client_cost"]["key_bits"]
    ciphertext_bytes = 2 * bits // 8
    for count in (1, 16):
        # Our reports have fixed-length fields, so their CBOR size is known exactly.
        report = Report(b"\0" * 16, f"bench-paillier-{count}", 1, "pai-bench", WINDOW,
                        (b"\0" * ciphertext_bytes,))
        assert points["ours_paillier"][str(count)]["bytes"] == len(
            codec.dumps(report.to_wire(), codec.CBOR))
        plain = {"id": "A" * 22, "metric": f"bench-plain-{count}", "version": 1,
                 "window": WINDOW, "values": client_values(count, seed=count)}
        assert points["plaintext"][str(count)]["bytes"] == len(json.dumps(plain).encode())
        # phe's decimal strings vary by a few digits; each is at most len(str(2**6144)).
        digits = len(str(2 ** (2 * bits)))
        naive = points["naive_phe"][str(count)]["bytes"]
        assert count * (digits - 10) < naive < count * (digits + 12) + 200
    assert points["plain_tenseal"]["16"]["bytes"] > 300_000  # N = 8192, 3 data primes
    assert 60_000 < points["ours_ckks"]["16"]["bytes"] < 70_000  # one N = 4096 ciphertext


@pytest.mark.slow
def test_ingest_rates_and_percentages_follow_from_the_runs(quick_run: Any) -> None:
    results, _ = quick_run
    ingest = results["ingest"]
    bound = ingest["compute_bound"]["adds_per_s_one_core"]
    assert set(ingest["encrypted"]) == set(ingest["plaintext"]) == {"1", "100", "1000"}
    for mode in ("encrypted", "plaintext"):
        for figures in ingest[mode].values():
            for run in figures["runs"]:
                assert _close(run["reports_per_s"], run["reports"] / run["seconds"])
            rates = sorted(run["reports_per_s"] for run in figures["runs"])
            assert rates[0] <= figures["reports_per_s"] <= rates[-1]
    for batch, figures in ingest["encrypted"].items():
        assert _close(ingest["percent_of_compute_bound_one_core"][batch],
                      100 * figures["reports_per_s"] / bound)
        assert _close(ingest["plaintext_over_encrypted"][batch],
                      ingest["plaintext"][batch]["reports_per_s"] / figures["reports_per_s"])
    entries = {t["name"]: t for t in results["targets"]}
    assert _close(entries["ingest_reports_per_s"]["measured"],
                  ingest["encrypted"]["1000"]["reports_per_s"])
    assert _close(entries["ingest_percent_of_compute_bound"]["measured"],
                  ingest["percent_of_compute_bound_one_core"]["1000"])
    profile = ingest["profile"]
    assert abs(sum(profile["stages_percent"].values()) - 100) < 1
    assert profile["us_per_report_in_process"] > 0
    direct = profile["stages_direct_us_per_report"]
    assert all(v is None or v >= 0 for v in direct.values())
    assert direct["  of which gcd(c, n)"] <= direct[
        "ciphertext validation (PaillierPublic.load), total"]


@pytest.mark.slow
def test_end_to_end_runs_publish_every_report_near_the_truth(quick_run: Any) -> None:
    results, _ = quick_run
    runs = results["end_to_end"]["runs"]
    assert [r["clients"] for r in runs] == sorted(r["clients"] for r in runs)
    for run in runs:
        assert run["report_count"] == run["clients"]
        assert _close(run["total_s"], run["upload_s"] + run["release_s"] + run["publish_s"])
        assert run["client_encrypt_cpu_s"] > 0  # reported apart, not in total_s
        # Noise is at most a few standard errors: 5 half-widths (~10 sigma) means a bug.
        assert run["error_in_half_widths"] < 5
    largest = max(runs, key=lambda r: r["clients"])
    entry = next(t for t in results["targets"] if t["name"] == "end_to_end_100k_clients")
    assert _close(entry["measured"], largest["total_s"])
    series = results["scaling"]["clients"]
    assert series["clients"] == [r["clients"] for r in runs]


@pytest.mark.slow
def test_outputs_are_written_parseable_and_describe_the_machine(quick_run: Any) -> None:
    results, output = quick_run
    on_disk = json.loads((output / "results.json").read_text())
    assert on_disk["targets"] == results["targets"]
    assert (output / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    described = json.loads((output / "machine.json").read_text())
    for key in ("cpu_model", "logical_cores", "memory_gib", "python", "libraries"):
        assert described[key]
    for library in ("phe", "gmpy2", "tenseal"):
        assert described["libraries"][library]
    assert "| target |" in (output / "summary.md").read_text()
    series = results["scaling"]["values_per_report"]
    for pipeline in client_cost.PIPELINES:
        assert series[pipeline]["values"] == [1, 4, 16]
        assert len(series[pipeline]["median_s"]) == len(series[pipeline]["bytes"]) == 3


@pytest.mark.slow
def test_threshold_ratios_are_the_ratios_of_the_raw_medians(quick_run: Any) -> None:
    results, output = quick_run
    figures = results["threshold"]
    assert (figures["key_bits"], figures["parties"]) == (2048, 2)
    per = figures["per_ciphertext"]
    single = per["single_key"]["median_s"]
    for name, point in per.items():
        assert point["p10_s"] <= point["median_s"] <= point["p90_s"]
        if name != "single_key":
            assert _close(figures["ratios"][f"{name}_over_single_key"],
                          point["median_s"] / single)
    assert _close(figures["critical_path_s"],
                  per["partial_with_proof"]["median_s"] + per["combine"]["median_s"])
    keygen = figures["keygen"]
    assert _close(figures["ratios"]["ceremony_over_single_keygen"],
                  keygen["ceremony"]["median_s"] / keygen["single_keygen"]["median_s"])
    assert "**Threshold decryption**" in (output / "summary.md").read_text()


# -- in-process checks: the measured reports are real reports --------------------------------


@pytest.fixture(scope="module")
def keys() -> client_cost.Keys:
    return client_cost.make_keys(2048)


def test_each_pipeline_report_decrypts_to_its_values(keys: client_cost.Keys) -> None:
    from phe import paillier as phe

    from blindsum.shared.manifest import slot_spec
    from blindsum.shared.schemes.ckks import generate_ckks
    from blindsum.shared.schemes.paillier import PaillierSecret

    values = client_values(16, seed=3)
    policy = client_policy(16, "paillier")
    pipes = client_cost.pipelines(keys)

    ours = Report.from_wire(codec.loads(pipes["ours_paillier"].report(values), codec.CBOR))
    secret = PaillierSecret.from_phe(keys.phe_private, "pai-bench")
    assert len(ours.ciphertexts) == 1  # 16 values packed into one ciphertext
    assert secret.decrypt(ours.ciphertexts, slot_spec(policy)) == encode(policy, values)

    naive = json.loads(pipes["naive_phe"].report(values))
    assert len(naive["values"]) == 16
    decrypted = [keys.phe_private.decrypt(phe.EncryptedNumber(keys.phe_public, int(c), e))
                 for c, e in naive["values"]]
    assert decrypted == values

    ckks_secret = generate_ckks("ckks-bench")
    ckks_pipe = client_cost.OursPipeline("ours_ckks", ckks_secret.public)
    ckks_report = Report.from_wire(codec.loads(ckks_pipe.report(values), codec.CBOR))
    ckks_policy = client_policy(16, "ckks")
    assert ckks_secret.decrypt(ckks_report.ciphertexts, slot_spec(ckks_policy)) == values

    import tenseal as ts

    body = codec.loads(pipes["plain_tenseal"].report(values), codec.CBOR)
    vector = ts.ckks_vector_from(keys.tenseal_context, body["ct"][0])
    assert [round(v) for v in vector.decrypt()] == values

    assert json.loads(pipes["plaintext"].report(values))["values"] == values


def test_a_point_counts_the_bytes_of_the_report_it_produced(keys: client_cost.Keys) -> None:
    produced: list[bytes] = []

    class Recording:
        name = "plaintext"

        def report(self, values: Any) -> bytes:
            out = client_cost.PlaintextPipeline().report(values) + b" " * len(produced)
            produced.append(out)
            return out

    point = client_cost.measure_point(Recording(), [1, 2, 3], budget_s=0.01, min_repeat=3,
                                      max_repeat=5)
    assert point.bytes == len(produced[-1])
    assert len(point.timing.samples) == len(produced) - 1  # one warm-up, then the timed runs


def test_targets_compare_in_the_direction_of_the_goal() -> None:
    from blindsum.benchmarks.targets import TARGETS

    end_to_end = next(t for t in TARGETS if t.name == "end_to_end_100k_clients")
    fast = {"end_to_end": {"runs": [{"clients": 10, "total_s": 200.0},
                                    {"clients": 100_000, "total_s": 90.0}]}}
    entry = end_to_end.evaluate(fast)
    assert entry["measured"] == 90.0 and entry["met"] is True
    assert entry["measured_at"] == "100,000 clients"


def test_loglog_slope_recovers_the_exponent() -> None:
    from blindsum.benchmarks.scaling import loglog_slope

    xs = [1, 2, 4, 8, 16]
    assert loglog_slope(xs, [3 * x**1.0 for x in xs]) == pytest.approx(1.0)
    assert loglog_slope(xs, [5.0] * 5) == pytest.approx(0.0)
    assert loglog_slope([1], [1]) is None


def test_profile_stages_attribute_each_sample_to_its_innermost_stage() -> None:
    from types import SimpleNamespace

    from blindsum.benchmarks.ingest_profile import OTHER, attribute

    def frame(function: str, path: str, time: float, *children: Any) -> Any:
        return SimpleNamespace(function=function, file_path=path, time=time,
                               children=list(children))

    gcd = frame("gcd", "<built-in>", 3.0)
    load = frame("load", "/x/shared/schemes/paillier.py", 4.0, gcd)
    parse = frame("from_wire", "/x/shared/codec.py", 2.0)
    root = frame("post", "/x/routes.py", 10.0, load, parse)
    stages = attribute(root)
    assert sum(stages.values()) == pytest.approx(10.0)
    assert stages[OTHER] == pytest.approx(4.0)
    assert stages["ciphertext validation (PaillierPublic.load: bytes, range, gcd)"] == 4.0


def test_quick_runs_never_write_into_the_committed_results() -> None:
    from blindsum.benchmarks.runner import CHECKOUT_RESULTS, default_output

    folder = default_output(quick=True)
    try:
        assert folder.resolve() != CHECKOUT_RESULTS
        assert CHECKOUT_RESULTS not in folder.resolve().parents
    finally:
        folder.rmdir()


def test_upload_refuses_a_batch_that_is_not_fully_acknowledged() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from blindsum.benchmarks.http_load import Target, UploadError, upload

    class Receipts(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            count = int(self.rfile.read(length))
            # acknowledges one report fewer than a batch of three holds
            body = json.dumps({"v": 1, "accepted": min(count, 2), "duplicates": 0}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receipts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = Target(f"http://127.0.0.1:{server.server_address[1]}", "t", codec.JSON)
        result = upload(target, [(b"1", 1), (b"2", 2)], concurrency=2)
        assert (result.reports, result.accepted, result.requests) == (3, 3, 2)
        with pytest.raises(UploadError, match="acknowledged"):
            upload(target, [(b"3", 3)], concurrency=1)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_validity_ratios_are_the_ratios_of_the_raw_medians(quick_run: Any) -> None:
    results, output = quick_run
    figures = results["validity"]
    assert figures["key_bits"] == 2048
    assert set(figures["kinds"]) == {"count", "histogram_7", "histogram_40", "sum_12bit",
                                     "sum_0_3600", "vector_8x1000"}
    for case in figures["kinds"].values():
        # a whole report is its ciphertexts and proof plus framing, smaller in CBOR
        assert case["compact_report_cbor_bytes"] < case["report_cbor_bytes"]
        assert case["ciphertext_bytes"] + case["proof_bytes"] < case["report_cbor_bytes"] \
            < case["report_json_bytes"]
        if "prio3" in case:
            assert _close(case["prio3"]["ours_over_prio3"],
                          case["report_cbor_bytes"] / case["prio3"]["bytes"])
    for rate in figures["throughput"].values():
        assert rate["batch"] == 10 and rate["processes"] == 2
        assert 0 < rate["one_process_reports_per_s"] < rate["unproven_load_reports_per_s"]
        assert rate["all_processes_reports_per_s"] > 0
    for case in figures["kinds"].values():
        per, ratios = case["per_report"], case["ratios"]
        encrypt = per["encrypt"]["median_s"]
        assert _close(ratios["prove_over_encrypt"], per["prove"]["median_s"] / encrypt)
        assert _close(ratios["verify_over_encrypt"], per["verify"]["median_s"] / encrypt)
        assert _close(ratios["batch_verify_over_verify"],
                      per["batch_verify"]["median_s"] / per["verify"]["median_s"])
        assert case["proof_bytes"] > case["ciphertext_bytes"] > 0
    summary = (output / "summary.md").read_text()
    assert "**Client validity proofs**" in summary and "verification throughput" in summary
