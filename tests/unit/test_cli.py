"""The `blindsum` command: clear errors, no tracebacks, nothing half-done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blindsum.server.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def keyholder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("cli") / "kh"
    assert main(["keyholder", "init", "--data-dir", str(data_dir), "--paillier-bits", "2048",
                 "--json"]) == 0
    return data_dir


def test_key_list_shows_one_active_key_per_scheme(keyholder_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "keyholder", "key", "list", "--data-dir", str(keyholder_dir))
    assert code == 0
    lines = out.strip().splitlines()
    assert {line.split("\t")[1] for line in lines} == {"paillier", "ckks"}
    assert all(line.endswith("active") for line in lines)


def test_init_twice_is_refused(keyholder_dir: Path, capsys) -> None:
    code, _, err = run(capsys, "keyholder", "init", "--data-dir", str(keyholder_dir))
    assert code == 2 and "refusing to overwrite" in err and "Traceback" not in err


def test_bad_policy_file_is_refused_whole(keyholder_dir: Path, tmp_path: Path, capsys) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text("""
[metrics.good]
kind = "count"
scheme = "paillier"
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 2.0 }

[metrics.bad]
kind = "sum"
scheme = "paillier"
lower = 5
upper = 1
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 2.0 }
""")
    code, _, err = run(capsys, "keyholder", "policy", "add", "--data-dir", str(keyholder_dir),
                       str(policy))
    assert code == 2 and "metric 'bad'" in err and "upper" in err
    from blindsum.server.keyholder.service import DB_NAME
    from blindsum.server.keyholder.store import KeyholderDB

    assert KeyholderDB(keyholder_dir / DB_NAME).current_policies() == []


def test_missing_policy_file_is_a_clear_error(keyholder_dir: Path, capsys) -> None:
    code, _, err = run(capsys, "keyholder", "policy", "add", "--data-dir", str(keyholder_dir),
                       "/nonexistent/p.toml")
    assert code == 2 and "cannot read policy file" in err


def test_audit_log_verifies(keyholder_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "keyholder", "audit", "--data-dir", str(keyholder_dir))
    assert code == 0 and "intact" in out


@pytest.mark.parametrize("argv", [
    ["keyholder", "serve", "--data-dir", "/tmp/x", "--port", "99999"],
    ["keyholder", "serve", "--data-dir", "/tmp/x", "--port", "http"],
    ["keyholder", "init", "--data-dir", "/tmp/x", "--paillier-bits", "1024"],
    ["server", "serve", "--workers", "0"],
    ["frobnicate"],
])
def test_bad_arguments_exit_2_with_a_message(argv: list[str], capsys) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and "error" in err and "Traceback" not in err


def test_serving_a_directory_that_is_not_a_keyholder_fails_clearly(tmp_path: Path,
                                                                   capsys) -> None:
    code, _, err = run(capsys, "keyholder", "serve", "--data-dir", str(tmp_path), "--port",
                       "8799")
    assert code == 2 and "not a key-holder data directory" in err


def test_init_json_output_is_machine_readable(tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "keyholder", "init", "--data-dir", str(tmp_path / "k"),
                       "--paillier-bits", "2048", "--json")
    data = json.loads(out)
    assert code == 0 and data["identity"].startswith("ed25519:")
    assert data["release_token"].startswith("rel_")


def test_retiring_an_unknown_metric_is_a_clear_error(keyholder_dir: Path, capsys) -> None:
    code, _, err = run(capsys, "keyholder", "policy", "retire", "--data-dir",
                       str(keyholder_dir), "nope")
    assert code == 2 and "no metric 'nope'" in err


def test_budget_lists_every_metric_with_what_is_left(keyholder_dir: Path, tmp_path: Path,
                                                      capsys) -> None:
    policy = tmp_path / "b.toml"
    policy.write_text("""
[metrics.budgeted]
kind = "count"
scheme = "paillier"
privacy = { mechanism = "laplace", epsilon = 0.5, budget_epsilon = 2.0 }
""")
    assert run(capsys, "keyholder", "policy", "add", "--data-dir", str(keyholder_dir),
               str(policy))[0] == 0
    code, out, _ = run(capsys, "keyholder", "budget", "--data-dir", str(keyholder_dir),
                       "--json")
    (state,) = [m for m in json.loads(out)["metrics"] if m["metric"] == "budgeted"]
    assert code == 0 and state["remaining_epsilon"] == 2.0 and state["releases"] == 0
    # a laplace budget without a delta stays pure: basic composition, no zCDP conversion
    assert state["budget_delta"] == 0 and state["spent_rho"] == 0
    assert state["accounting"] == "basic" and state["epsilon_zcdp"] is None
    code, out, _ = run(capsys, "keyholder", "budget", "--data-dir", str(keyholder_dir))
    assert code == 0 and "budgeted" in out


@pytest.mark.parametrize("make_dir", [True, False], ids=["empty", "missing"])
def test_audit_refuses_a_directory_that_is_not_initialised_and_creates_nothing(
    tmp_path: Path, capsys, make_dir: bool,
) -> None:
    data_dir = tmp_path / "kh"
    if make_dir:
        data_dir.mkdir()
    code, out, err = run(capsys, "keyholder", "audit", "--data-dir", str(data_dir))
    assert code == 2 and "not a key-holder data directory" in err
    assert "Traceback" not in err and "intact" not in out
    assert (list(data_dir.iterdir()) == []) if make_dir else not data_dir.exists()


READ_ONLY_COMMANDS = [
    (["keyholder", "budget"], "not a key-holder data directory"),
    (["keyholder", "key", "list"], "not a key-holder data directory"),
    (["keyholder", "backup", "--to", "{tmp}/copy"], "not a data directory"),
    (["server", "token", "list"], "not an aggregator data directory"),
    (["server", "gc"], "not an aggregator data directory"),
    (["server", "backup", "--to", "{tmp}/copy"], "not a data directory"),
]


@pytest.mark.parametrize("make_dir", [True, False], ids=["empty", "missing"])
@pytest.mark.parametrize(("argv", "message"), READ_ONLY_COMMANDS,
                         ids=[" ".join(argv[:3]) for argv, _ in READ_ONLY_COMMANDS])
def test_read_only_commands_refuse_a_directory_that_is_not_initialised_and_create_nothing(
    tmp_path: Path, capsys, make_dir: bool, argv: list[str], message: str,
) -> None:
    data_dir = tmp_path / "data"
    if make_dir:
        data_dir.mkdir()
    args = [arg.format(tmp=tmp_path) for arg in argv]
    code, _, err = run(capsys, *args, "--data-dir", str(data_dir))
    assert code == 2 and message in err and "Traceback" not in err
    assert (list(data_dir.iterdir()) == []) if make_dir else not data_dir.exists()
    assert not (tmp_path / "copy").exists()


def test_keyholder_files_are_private_to_the_service_account(keyholder_dir: Path) -> None:
    assert keyholder_dir.stat().st_mode & 0o777 == 0o700
    for path in keyholder_dir.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_serving_tightens_an_open_data_directory(tmp_path: Path) -> None:
    from blindsum.server.datadir import prepare_data_dir

    data_dir = tmp_path / "srv"
    data_dir.mkdir(mode=0o755)
    (data_dir / "aggregator.db").write_bytes(b"")
    (data_dir / "aggregator.db").chmod(0o644)
    prepare_data_dir(data_dir, "server data directory")
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert (data_dir / "aggregator.db").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == ["aggregator.db"]


def test_policy_add_refuses_a_set_over_the_per_device_budget(keyholder_dir: Path,
                                                             tmp_path: Path, capsys) -> None:
    policy = tmp_path / "unit.toml"
    policy.write_text("""
[budget]
epsilon = 20
period = "day"

[metrics.unit_hourly]
kind = "count"
scheme = "paillier"
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 24.0, budget_period = "day" }
""")
    code, _, err = run(capsys, "keyholder", "policy", "add", "--data-dir", str(keyholder_dir),
                       str(policy))
    # the metrics registered before count too: the budget covers all of them
    assert code == 2 and "per-device budget (20, 0) per day" in err and "over 20 [" in err
    assert "unit_hourly 24 x epsilon 1" in err
    _, out, _ = run(capsys, "keyholder", "budget", "--data-dir", str(keyholder_dir), "--json")
    assert "unit_hourly" not in out
