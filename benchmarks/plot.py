"""The PNG: four panels, one per scaling question, from one run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: CI and servers

import matplotlib.pyplot as plt

from blindsum.benchmarks.client_cost import LABELS, PIPELINES

STYLE = {
    "ours_paillier": {"color": "#1b7837", "marker": "o"},
    "ours_ckks": {"color": "#5aae61", "marker": "s"},
    "naive_phe": {"color": "#b2182b", "marker": "v"},
    "plain_tenseal": {"color": "#ef8a62", "marker": "^"},
    "plaintext": {"color": "#4d4d4d", "marker": "x"},
}


def _client_panels(axes: Any, series: dict[str, Any]) -> None:
    time_ax, bytes_ax = axes
    for name in PIPELINES:
        s = series[name]
        time_ax.plot(s["values"], [1000 * t for t in s["median_s"]], label=LABELS[name],
                     **STYLE[name])
        bytes_ax.plot(s["values"], s["bytes"], label=LABELS[name], **STYLE[name])
    time_ax.set(xscale="log", yscale="log", xlabel="values per report",
                ylabel="client time per report (ms, median)",
                title="Client cost vs values per report")
    bytes_ax.set(xscale="log", yscale="log", xlabel="values per report",
                 ylabel="bytes per report on the wire", title="Wire size vs values per report")
    time_ax.legend(fontsize=7)
    bytes_ax.legend(fontsize=7)


def _ingest_panel(ax: Any, series: dict[str, Any], results: dict[str, Any]) -> None:
    bound = results["ingest"]["compute_bound"]["adds_per_s_one_core"]
    ax.plot(series["batch_size"], series["encrypted_reports_per_s"], marker="o",
            color=STYLE["ours_paillier"]["color"], label="encrypted (Paillier 3072)")
    ax.plot(series["batch_size"], series["plaintext_reports_per_s"], marker="x",
            color=STYLE["plaintext"]["color"], label="plaintext pipeline")
    ax.axhline(bound, linestyle=":", color="black", label="compute bound (1 core)")
    ax.axhline(0.25 * bound, linestyle="--", color="grey", label="25% of compute bound")
    ax.axhline(20_000, linestyle="-.", color="#b2182b", label="target 20,000/s")
    ax.set(xscale="log", yscale="log", xlabel="reports per HTTP batch",
           ylabel="reports/s (durable, loopback)", title="Server ingest vs batch size")
    ax.legend(fontsize=7)


def _clients_panel(ax: Any, series: dict[str, Any]) -> None:
    xs = series["clients"]
    ax.plot(xs, series["total_s"], marker="o", color="black",
            label="total (upload + release + publish)")
    ax.plot(xs, series["upload_s"], marker=".", color=STYLE["ours_paillier"]["color"],
            label="upload")
    ax.plot(xs, [r + p for r, p in zip(series["release_s"], series["publish_s"], strict=True)],
            marker=".", color=STYLE["plain_tenseal"]["color"], label="release + publish")
    ax.plot(xs, series["client_encrypt_cpu_s"], linestyle="--", marker=".",
            color=STYLE["ours_ckks"]["color"], label="client encryption (CPU, excluded)")
    ax.axhline(120, linestyle="-.", color="#b2182b", label="target 120 s at 100k")
    ax.set(xscale="log", yscale="log", xlabel="simulated clients",
           ylabel="seconds", title="End to end vs number of clients")
    ax.legend(fontsize=7)


def _server_values_panel(ax: Any, series: dict[str, Any]) -> None:
    for scheme, style in (("paillier", STYLE["ours_paillier"]), ("ckks", STYLE["ours_ckks"])):
        s = series[scheme]
        ax.plot(s["values"], s["reports_per_s"], label=f"ours: {scheme}", **style)
        for x, y, cts in zip(s["values"], s["reports_per_s"], s["ciphertexts_per_report"],
                             strict=True):
            ax.annotate(f"{cts} ct", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=style["color"])
    ax.set(xscale="log", yscale="log", xlabel="values per report",
           ylabel="reports/s (durable, loopback)",
           title="Server ingest vs values per report")
    ax.legend(fontsize=7)


def _targets_panel(ax: Any, entries: list[dict[str, Any]]) -> None:
    names, scores, colours = [], [], []
    for entry in entries:
        score = (entry["measured"] / entry["target"] if entry["higher_is_better"]
                 else entry["target"] / entry["measured"])
        names.append(entry["name"].replace("_", " "))
        scores.append(score)
        colours.append(STYLE["ours_paillier"]["color"] if entry["met"] else "#b2182b")
    ax.barh(names, scores, color=colours)
    ax.axvline(1.0, color="black", linestyle="--")
    ax.set(xscale="log", xlabel="measured / target (>1 is met; lower-is-better inverted)",
           title="Targets")
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()


def render(results: dict[str, Any], path: Path) -> Path:
    scaling = results["scaling"]
    figure, axes = plt.subplots(2, 3, figsize=(18, 9.5))
    _client_panels((axes[0][0], axes[0][1]), scaling["values_per_report"])
    _server_values_panel(axes[0][2], scaling["server_values_per_report"])
    _ingest_panel(axes[1][0], scaling["batch_size"], results)
    _clients_panel(axes[1][1], scaling["clients"])
    _targets_panel(axes[1][2], results["targets"])
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
    machine = results["machine"]
    figure.suptitle(f"blindsum benchmarks{' (quick)' if results['quick'] else ''}: "
                    f"{machine['cpu_model']}, {machine['logical_cores']} cores, "
                    f"{machine['python']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
