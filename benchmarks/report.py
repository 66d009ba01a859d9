"""Tables of ratios: rich on the terminal, markdown for the README."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from blindsum.benchmarks.client_cost import LABELS, PIPELINES


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.3f} ms" if seconds < 0.01 else f"{seconds * 1000:,.1f} ms"


def _bytes(count: int) -> str:
    return f"{count:,} B" if count < 10_000 else f"{count / 1024:,.1f} KiB"


def _x(value: float) -> str:
    if value < 1:
        return f"{value:.2g}x"
    return f"{value:,.1f}x" if value < 100 else f"{value:,.0f}x"


def _measured(entry: dict[str, Any]) -> str:
    unit = entry["unit"]
    value = entry["measured"]
    if unit.startswith("x"):
        return f"{value:,.1f}{unit}" if value < 100 else f"{value:,.0f}{unit}"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "s":
        return f"{value:,.1f} s"
    return f"{value:,.0f} {unit}"


def _target(entry: dict[str, Any]) -> str:
    sign = ">=" if entry["higher_is_better"] else "<"
    unit = entry["unit"]
    value = entry["target"]
    if unit.startswith("x"):
        return f"{sign} {value:g}{unit}"
    if unit == "%":
        return f"{sign} {value:g}%"
    return f"{sign} {value:,.0f} {unit}"


def client_rows(results: dict[str, Any]) -> list[list[str]]:
    points = results["client_cost"]["points"]
    ours = points["ours_paillier"]
    rows = []
    for name in PIPELINES:
        row = [LABELS[name]]
        for count in ("1", "16"):
            p = points[name][count]
            row += [_ms(p["median_s"]), _bytes(p["bytes"]),
                    _x(p["median_s"] / ours[count]["median_s"]),
                    _x(p["bytes"] / ours[count]["bytes"])]
        rows.append(row)
    return rows


CLIENT_HEADERS = ["pipeline", "1 value: time", "bytes", "time vs ours", "bytes vs ours",
                  "16 values: time", "bytes", "time vs ours", "bytes vs ours"]


def ingest_rows(results: dict[str, Any]) -> list[list[str]]:
    ingest = results["ingest"]
    rows = []
    for batch in sorted(ingest["encrypted"], key=int):
        enc = ingest["encrypted"][batch]["reports_per_s"]
        plain = ingest["plaintext"][batch]["reports_per_s"]
        rows.append([f"{int(batch):,}", f"{enc:,.0f}", f"{plain:,.0f}",
                     _x(plain / enc),
                     f"{ingest['percent_of_compute_bound_one_core'][batch]:.1f}%",
                     f"{_cpu(ingest['encrypted'][batch])} / "
                     f"{_cpu(ingest['plaintext'][batch])}"])
    return rows


def _cpu(figures: dict[str, Any]) -> str:
    micros = figures.get("server_cpu_us_per_report")
    return "n/a" if micros is None else f"{micros:,.0f} µs"


INGEST_HEADERS = ["batch", "encrypted reports/s", "plaintext reports/s",
                  "plaintext / encrypted", "% of compute bound",
                  "server CPU per report (enc / plain)"]


def e2e_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for run in sorted(results["end_to_end"]["runs"], key=lambda r: r["clients"]):
        rows.append([f"{run['clients']:,}", f"{run['upload_s']:.2f} s",
                     f"{run['release_s']:.2f} s", f"{run['publish_s']:.3f} s",
                     f"{run['total_s']:.2f} s",
                     f"{run['client_encrypt_cpu_s']:.1f} s "
                     f"({run['client_encrypt_ms_per_report']:.2f} ms/report)",
                     "yes" if run["within_ci"] else "no"])
    return rows


E2E_HEADERS = ["clients", "upload", "release", "publish", "total", "client encryption (CPU)",
               "truth in 95% CI"]


def server_values_rows(results: dict[str, Any]) -> list[list[str]]:
    series = results["scaling"]["server_values_per_report"]
    rows = []
    for scheme in ("paillier", "ckks"):
        s = series[scheme]
        for k, rate, cts, size in zip(s["values"], s["reports_per_s"], s["ciphertexts_per_report"],
                                      s["bytes_per_report"], strict=True):
            rows.append([scheme, f"{k:,}", str(cts), _bytes(size), f"{rate:,.0f}",
                         f"{rate * k:,.0f}"])
    return rows


SERVER_VALUES_HEADERS = ["scheme", "values per report", "ciphertexts", "bytes per report",
                         "reports/s", "values/s"]


def profile_rows(results: dict[str, Any]) -> list[list[str]]:
    profile = results["ingest"]["profile"]
    if "error" in profile:
        return [["profile failed", profile["error"], ""]]
    total = profile["us_per_report_in_process"]
    rows = []
    for stage, micros in profile["stages_direct_us_per_report"].items():
        if micros is None:
            rows.append([stage, "not measured", ""])
        else:
            rows.append([stage, f"{micros:.1f}", f"{100 * micros / total:.0f}%"])
    rows.append(["whole ingest path in process (Flask test client, no sockets)",
                 f"{total:.1f}", "100%"])
    return rows


PROFILE_HEADERS = ["ingest stage (batch 1,000)", "us per report", "share"]


THRESHOLD_LABELS = {
    "single_key": "single-key decrypt (CRT, today)",
    "partial": "one partial c^(2Δd_i), no proof",
    "proof": "one proof (generation)",
    "partial_with_proof": "one partial + proof",
    "verify": "verify one partial's proof",
    "combine": "combine (verifies every proof)",
    "threshold": "threshold total: all partials + combine",
}


def threshold_rows(results: dict[str, Any]) -> list[list[str]]:
    figures = results["threshold"]
    ratios = figures["ratios"]
    rows = []
    for name, label in THRESHOLD_LABELS.items():
        point = figures["per_ciphertext"][name]
        relative = "1.0x" if name == "single_key" else _x(ratios[f"{name}_over_single_key"])
        rows.append([label, _ms(point["median_s"]), relative])
    rows.append(["critical path (parties in parallel): one partial + proof, combine",
                 _ms(figures["critical_path_s"]), _x(ratios["critical_path_over_single_key"])])
    keygen = figures["keygen"]
    rows.append([f"key ceremony (safe primes, {figures['parties']} shares), "
                 f"{keygen['ceremony']['repetitions']} run(s)",
                 f"{keygen['ceremony']['median_s']:,.1f} s",
                 f"{_x(ratios['ceremony_over_single_keygen'])} single-key keygen "
                 f"({keygen['single_keygen']['median_s']:,.2f} s)"])
    return rows + noise_proof_rows(figures)


def noise_proof_rows(figures: dict[str, Any]) -> list[list[str]]:
    """What the noise proofs add to a two-noise release (``benchmarks/noise_proofs.py``)."""
    proofs = figures.get("noise_proofs")
    if proofs is None:  # results written before the noise proofs
        return []
    timings = proofs["timings"]
    return [
        ["two-noise release (4-slot vector), no noise proofs",
         _ms(timings["release_without_proofs"]["median_s"]), "per release"],
        ["two-noise release with both noise proofs (prove + verify each)",
         _ms(timings["release_with_proofs"]["median_s"]),
         f"{_x(proofs['ratios']['with_over_without'])} the release without"],
        ["one noise proof: prove / verify",
         f"{_ms(timings['prove']['median_s'])} / {_ms(timings['verify']['median_s'])}",
         f"{proofs['proof_bytes']:,} B ({proofs['aux_ciphertexts']} aux ciphertexts)"],
    ]


THRESHOLD_HEADERS = ["per ciphertext", "median", "vs single-key"]


def validity_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, case in results["validity"]["kinds"].items():
        per, ratios = case["per_report"], case["ratios"]
        rows.append([
            f"{name} ({case['ciphertexts']} ciphertext(s))",
            _ms(per["encrypt"]["median_s"]),
            f"{_ms(per['prove']['median_s'])} ({_x(ratios['prove_over_encrypt'])})",
            f"{_ms(per['verify']['median_s'])} ({_x(ratios['verify_over_encrypt'])})",
            _ms(per["verify_each"]["median_s"]),
            _ms(per["batch_verify"]["median_s"]),
            f"{case['proof_bytes']:,} B ({_x(ratios['proof_bytes_over_ciphertext_bytes'])})",
            _report_size(case),
            _compact(case),
        ])
    return rows


def _compact(case: dict[str, Any]) -> str:
    if "compact_report_cbor_bytes" not in case:
        return "-"
    per = case["per_report"]
    return (f"{case['compact_report_cbor_bytes']:,} B; prove "
            f"{_ms(per['compact_prove']['median_s'])}, verify "
            f"{_ms(per['compact_verify']['median_s'])}")


def _report_size(case: dict[str, Any]) -> str:
    if "report_cbor_bytes" not in case:  # results from before wire sizes were measured
        return "-"
    text = f"{case['report_cbor_bytes']:,} B"
    prio3 = case.get("prio3")
    if prio3:
        text += f" ({_x(prio3['ours_over_prio3'])} {prio3['case']}'s {prio3['bytes']} B)"
    return text


VALIDITY_HEADERS = ["report kind", "encrypt, no proof", "encrypt + prove (vs encrypt)",
                    "verify (vs encrypt)", "verify each equation", "batched verify / report",
                    "proof size (vs ciphertexts)", "report, CBOR (vs Prio3)",
                    "compact form: report, prove, verify"]


def throughput_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, rate in results["validity"].get("throughput", {}).items():
        rows.append([name, f"{rate['batch']:,}",
                     f"{rate['one_process_reports_per_s']:,.0f}/s",
                     f"{rate['all_processes_reports_per_s']:,.0f}/s ({rate['processes']})",
                     f"{rate['unproven_load_reports_per_s']:,.0f}/s"])
    return rows


THROUGHPUT_HEADERS = ["report kind", "batch", "verify, one process",
                      "verify, all processes (count)", "unproven path: load + check"]


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    return [[t["description"], _target(t), _measured(t), t["measured_at"],
             "met" if t["met"] else "MISSED"] for t in results["targets"]]


TARGET_HEADERS = ["target", "goal", "measured", "at", ""]


def _table(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def render(results: dict[str, Any], console: Console) -> None:
    bits = results["client_cost"]["key_bits"]
    bound = results["ingest"]["compute_bound"]
    console.print(_table(f"Client cost per report (Paillier {bits}-bit; ratios: baseline / "
                         "ours Paillier)", CLIENT_HEADERS, client_rows(results)))
    console.print(_table(
        f"Server ingest over HTTP on loopback, durable (compute bound: "
        f"{bound['adds_per_s_one_core']:,.0f} adds/s on one core, "
        f"{bound['adds_per_s_all_cores']:,.0f} on {bound['cores']})",
        INGEST_HEADERS, ingest_rows(results)))
    console.print(_table("End to end: first report to published result (client encryption "
                         "excluded, shown apart)", E2E_HEADERS, e2e_rows(results)))
    console.print(_table("Server ingest vs values per report (HTTP, durable)",
                         SERVER_VALUES_HEADERS, server_values_rows(results)))
    console.print(_table("Where ingest time goes (each stage timed alone; share of the "
                         "in-process path)", PROFILE_HEADERS, profile_rows(results)))
    console.print(_table(f"Threshold decryption (Paillier {results['threshold']['key_bits']}"
                         f"-bit, {results['threshold']['parties']} parties)",
                         THRESHOLD_HEADERS, threshold_rows(results)))
    console.print(_table(f"Client validity proofs (Paillier {results['validity']['key_bits']}"
                         f"-bit, per report; batch of {results['validity']['batch']})",
                         VALIDITY_HEADERS, validity_rows(results)))
    console.print(_table("Validity proof verification throughput (batched, forked processes)",
                         THROUGHPUT_HEADERS, throughput_rows(results)))
    targets = _table("Targets", TARGET_HEADERS, target_rows(results))
    console.print(targets)
    if results["quick"]:
        console.print("[yellow]quick mode: reduced sizes; these figures check the benchmark, "
                      "not the targets[/yellow]")


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    parts = [
        f"Measured on {machine['cpu_model']}, {machine['logical_cores']} cores, "
        f"{machine['memory_gib']} GiB, {machine['python']}"
        f"{' (quick mode: reduced sizes)' if results['quick'] else ''}.",
        "",
        "**Targets**", "", _markdown(TARGET_HEADERS, target_rows(results)), "",
        "**Client cost per report** (ratios: baseline / ours Paillier)", "",
        _markdown(CLIENT_HEADERS, client_rows(results)), "",
        "**Server ingest** (HTTP on loopback, every acknowledged report durable)", "",
        _markdown(INGEST_HEADERS, ingest_rows(results)), "",
        "**End to end** (client encryption excluded, shown apart)", "",
        _markdown(E2E_HEADERS, e2e_rows(results)), "",
        "**Server ingest vs values per report**", "",
        _markdown(SERVER_VALUES_HEADERS, server_values_rows(results)), "",
        "**Where ingest time goes**", "",
        _markdown(PROFILE_HEADERS, profile_rows(results)), "",
        f"**Threshold decryption** (Paillier {results['threshold']['key_bits']}-bit, "
        f"{results['threshold']['parties']} parties, per ciphertext)", "",
        _markdown(THRESHOLD_HEADERS, threshold_rows(results)), "",
        f"**Client validity proofs** (Paillier {results['validity']['key_bits']}-bit, per "
        f"report; batch of {results['validity']['batch']})", "",
        _markdown(VALIDITY_HEADERS, validity_rows(results)), "",
        "**Validity proof verification throughput** (batched, forked processes)", "",
        _markdown(THROUGHPUT_HEADERS, throughput_rows(results)), "",
    ]
    return "\n".join(parts)
