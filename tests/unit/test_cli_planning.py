"""`blindsum explore`, `keyholder policy check` and the preview of `policy add`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from blindsum.server.cli import main
from blindsum.server.keyholder.release import noise_plan
from blindsum.server.keyholder.service import DB_NAME
from blindsum.server.keyholder.store import KeyholderDB
from blindsum.shared.policy import load_policies_toml

DEMO = Path(__file__).resolve().parents[2] / "server" / "demo_paillier.toml"

ONE = """
[metrics.minutes]
kind = "sum"
scheme = "paillier"
lower = 0
upper = 60
min_contributors = 20
window_seconds = 86400
privacy = { mechanism = "gaussian", epsilon = 1.0, delta = 1e-7, budget_epsilon = 5.0 }
"""
LOUD = """
[metrics.loud]
kind = "count"
scheme = "paillier"
min_contributors = 20
privacy = { mechanism = "laplace", epsilon = 5.0, budget_epsilon = 50.0 }
"""
BAD_POLICY = """
[metrics.bad]
kind = "sum"
scheme = "paillier"
lower = 5
upper = 1
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 2.0 }
"""

HOURLY = """
[budget]
epsilon = 30
delta = 0
period = "day"

[metrics.hourly]
kind = "count"
scheme = "paillier"
upper = 1
window_seconds = 3600
min_contributors = 20
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 24.0, budget_period = "day" }
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def in_empty_dir(tmp_path: Path):
    """Run in an empty working directory, to check that a command writes nothing there."""
    work = tmp_path / "cwd"
    work.mkdir()
    before = Path.cwd()
    os.chdir(work)
    yield work
    os.chdir(before)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_policy_check_previews_every_demo_metric(capsys, in_empty_dir: Path) -> None:
    code, out, _ = run(capsys, "keyholder", "policy", "check", str(DEMO))
    assert code == 0
    for name in ("app_opened", "session_seconds", "battery_temp_c", "screen_load_ms"):
        assert name in out
    assert "4 metric(s) valid" in out and "warning (privacy)" in out
    assert list(in_empty_dir.iterdir()) == []  # no data dir, nothing registered or written


def test_policy_check_json_states_the_real_noise_plan(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "keyholder", "policy", "check", write(tmp_path, "p.toml", ONE),
                       "--contributors", "500", "--json")
    assert code == 0
    (item,) = json.loads(out)["metrics"]
    policy = load_policies_toml(ONE)[0]
    plan = noise_plan(policy)
    assert item["scale"] == plan.scale and item["contributors"] == 500
    assert item["half_width_95"] == plan.half_width(0.05)  # a sum of precision 1
    assert item["basic_releases"] == 5 and item["releases_per_day"] == 1
    assert item["warnings"] == []


def test_policy_check_warns_and_strict_fails(capsys, tmp_path: Path) -> None:
    path = write(tmp_path, "loud.toml", LOUD)
    code, out, _ = run(capsys, "keyholder", "policy", "check", path)
    assert code == 0
    assert "epsilon 5 per release is above 2" in out and "budget_epsilon 50" in out
    assert run(capsys, "keyholder", "policy", "check", path, "--strict")[0] == 1
    assert run(capsys, "keyholder", "policy", "check", write(tmp_path, "p.toml", ONE),
               "--contributors", "500", "--strict")[0] == 0


@pytest.mark.parametrize(("text", "words"), [
    (None, "cannot read policy file"),
    ("[metrics.x\nkind=", "not valid TOML"),
    (BAD_POLICY, "metric 'bad'"),
    ("[other]\n", "unknown top-level keys"),
])
def test_policy_check_refuses_bad_files_with_exit_2(capsys, tmp_path: Path, text, words,
                                                    in_empty_dir: Path) -> None:
    path = str(tmp_path / "missing.toml") if text is None else write(tmp_path, "p.toml", text)
    code, out, err = run(capsys, "keyholder", "policy", "check", path)
    assert code == 2 and words in err and "Traceback" not in err and out == ""
    assert list(in_empty_dir.iterdir()) == []


@pytest.mark.parametrize(("change", "words"), [
    (("budget_epsilon = 24.0", "budget_epsilon = 20.0"),
     "cannot pay for the 24 windows in one: they cost epsilon 24 at delta 0 (basic), 4 (20%) "
     "over 20"),
    (("epsilon = 30", "epsilon = 20"),
     "exceed the per-device budget (20, 0) per day: in one period they cost epsilon 24 at "
     "delta 0 (basic), 4 (20%) over 20 [hourly 24 x epsilon 1]"),
])
def test_policy_check_refuses_the_budgets_policy_add_would_refuse(
    capsys, tmp_path: Path, change: tuple[str, str], words: str, in_empty_dir: Path
) -> None:
    path = write(tmp_path, "p.toml", HOURLY.replace(*change, 1))
    code, out, err = run(capsys, "keyholder", "policy", "check", path)
    assert code == 2 and words in err and out == ""
    assert list(in_empty_dir.iterdir()) == []


def test_policy_check_states_what_a_period_spends_of_the_per_device_budget(
    capsys, tmp_path: Path
) -> None:
    path = write(tmp_path, "p.toml", HOURLY)
    code, out, _ = run(capsys, "keyholder", "policy", "check", path)
    assert code == 0
    assert ("per-device budget (30, 0) per day: 1 metric(s), 24 releases in one period cost "
            "epsilon 24 at delta 0 (basic), 80% of it") in out
    code, out, _ = run(capsys, "keyholder", "policy", "check", path, "--json")
    answer = json.loads(out)
    (warning,) = answer["metrics"][0]["warnings"]  # a renewing budget is judged per period
    assert warning["message"] == "budget_epsilon 24 is above 10: little privacy is left every day"
    use = answer["unit_budget"]
    assert use["spent_epsilon"] == pytest.approx(24.0)  # sums rounded up: an upper bound
    assert {k: v for k, v in use.items() if k != "spent_epsilon"} == {
        "epsilon": 30.0, "delta": 0.0, "period": 86400, "metrics": 1, "releases": 24,
        "accounting": "basic", "spent_delta": 0.0}


def test_policy_add_states_what_the_registered_set_spends_of_the_per_device_budget(
    capsys, tmp_path: Path
) -> None:
    data_dir = tmp_path / "kh"
    assert main(["keyholder", "init", "--data-dir", str(data_dir), "--paillier-bits", "2048",
                 "--json"]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "keyholder", "policy", "add", "--data-dir", str(data_dir),
                       write(tmp_path, "hourly.toml", HOURLY))
    assert code == 0 and "added: hourly" in out
    assert "per-device budget (30, 0) per day: 1 metric(s)" in out and "80% of it" in out
    # the budget stays in force: a later file without [budget] is counted against it
    more = (HOURLY.split("[metrics.hourly]")[1].replace("epsilon = 1.0", "epsilon = 0.25")
            .replace("budget_epsilon = 24.0", "budget_epsilon = 6.0"))
    code, out, _ = run(capsys, "keyholder", "policy", "add", "--data-dir", str(data_dir),
                       write(tmp_path, "more.toml", "[metrics.more]" + more), "--json")
    assert code == 0
    use = json.loads(out)["unit_budget"]
    assert (use["metrics"], use["releases"]) == (2, 48)
    assert use["spent_epsilon"] == pytest.approx(30.0)


@pytest.fixture(scope="module")
def keyholder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("cli-planning") / "kh"
    assert main(["keyholder", "init", "--data-dir", str(data_dir), "--paillier-bits", "2048",
                 "--json"]) == 0
    return data_dir


def test_policy_add_prints_the_preview_then_registers(capsys, keyholder_dir: Path,
                                                       tmp_path: Path) -> None:
    code, out, _ = run(capsys, "keyholder", "policy", "add", "--data-dir", str(keyholder_dir),
                       write(tmp_path, "loud.toml", LOUD))
    assert code == 0
    assert "One release" in out and "The budget over time" in out
    assert "warning (privacy): loud" in out and "added: loud" in out
    names = [p.name for p in KeyholderDB(keyholder_dir / DB_NAME).current_policies()]
    assert "loud" in names


def test_policy_add_json_is_the_preview(capsys, keyholder_dir: Path, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "keyholder", "policy", "add", "--data-dir", str(keyholder_dir),
                       write(tmp_path, "one.toml", ONE), "--json")
    assert code == 0
    assert [m["metric"] for m in json.loads(out)["metrics"]] == ["minutes"]


def test_policy_add_of_a_bad_file_registers_nothing(capsys, keyholder_dir: Path,
                                                     tmp_path: Path) -> None:
    before = KeyholderDB(keyholder_dir / DB_NAME).current_policies()
    code, out, err = run(capsys, "keyholder", "policy", "add", "--data-dir",
                         str(keyholder_dir), write(tmp_path, "bad.toml", ONE + BAD_POLICY))
    assert code == 2 and "metric 'bad'" in err and out == ""
    assert KeyholderDB(keyholder_dir / DB_NAME).current_policies() == before


def test_explore_json_and_plots(capsys, tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    code, out, _ = run(capsys, "explore", write(tmp_path, "p.toml", ONE), "--epsilon", "0.5",
                       "--contributors", "20", "--contributors", "2000", "--plots", str(plots),
                       "--json")
    assert code == 0
    result = json.loads(out)
    (metric,) = result["metrics"]
    assert {row["epsilon"] for row in metric["rows"]} == {0.5, 1.0}
    assert {row["contributors"] for row in metric["rows"]} == {20, 2000}
    assert result["plots"] == [str(plots / "minutes.png")]
    assert (plots / "minutes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explore_prints_tables_and_simulates_a_sample(capsys, tmp_path: Path) -> None:
    sample = write(tmp_path, "s.csv", "metric,value\n" + "".join(
        f"minutes,{v}\n" for v in [10, 30, 90, 45] * 10))
    code, out, _ = run(capsys, "explore", write(tmp_path, "p.toml", ONE), "--epsilon", "1",
                       "--sample", sample, "--releases", "20", "--no-plots")
    assert code == 0
    assert "minutes (sum, gaussian" in out and "releases the budget" in out
    assert "Simulated releases" in out and "-300" in out  # 10 values of 90 clipped to 60
    assert not (tmp_path / "explore-plots").exists()


def test_explore_varies_bounds_and_window(capsys, tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", ONE)
    args = ("--epsilon", "1", "--contributors", "20", "--no-plots", "--json")
    base = json.loads(run(capsys, "explore", path, *args)[1])["metrics"][0]
    wide = json.loads(run(capsys, "explore", path, "--upper", "120", "--window-seconds",
                          "3600", *args)[1])["metrics"][0]
    assert wide["rows"][0]["half_width"] > base["rows"][0]["half_width"]
    assert (base["lifetimes"][0]["releases_per_day"],
            wide["lifetimes"][0]["releases_per_day"]) == (1, 24)


@pytest.mark.parametrize(("extra", "words"), [
    (["--metric", "nope"], "no metric ['nope']"),
    (["--upper", "-1"], "upper"),
    (["--sample", "/nonexistent.csv"], "cannot read sample file"),
    (["--sample", "BADSAMPLE"], "sample line 2"),
    (["--epsilon", "0"], "epsilon must be in (0, 100]"),
    (["--contributors", "x"], "positive integer"),
])
def test_explore_refuses_bad_input_with_exit_2_and_writes_nothing(
        capsys, tmp_path: Path, extra: list[str], words: str) -> None:
    bad_sample = write(tmp_path, "bad.csv", "metric,value\nminutes,lots\n")
    extra = [bad_sample if e == "BADSAMPLE" else e for e in extra]
    plots = tmp_path / "plots"
    code, out, err = run(capsys, "explore", write(tmp_path, "p.toml", ONE), "--epsilon", "1",
                         "--plots", str(plots), *extra)
    assert code == 2 and words in err and "Traceback" not in err and out == ""
    assert not plots.exists()


def test_explore_of_a_missing_policy_file(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "explore", str(tmp_path / "none.toml"))
    assert code == 2 and "cannot read policy file" in err


def test_explore_into_an_unwritable_place_is_a_clear_error(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run(capsys, "explore", write(tmp_path, "p.toml", ONE), "--epsilon", "1",
                       "--plots", str(blocker / "plots"))
    assert code == 2 and "cannot write the plot" in err and "Traceback" not in err
