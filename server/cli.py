"""The ``blindsum`` command: key-holder, server, demo and benchmarks under one entry point."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from blindsum.shared.errors import BlindsumError, InvalidConfig, InvalidInput, UpstreamError

if TYPE_CHECKING:
    from blindsum.server.keyholder.service import Keyholder

if TYPE_CHECKING:
    from flask import Flask

    from blindsum.server.aggregator.config import AggregatorConfig
    from blindsum.server.aggregator.store import Store
    from blindsum.server.aggregator.tokens import TokenBook
    from blindsum.server.backup import BackupResult
    from blindsum.server.keyholder.config import KeyholderConfig
    from blindsum.server.worker import ConnectionLimits


STOP_WITH_PARENT = "BLINDSUM_STOP_WITH_PARENT"

# Read by `keyholder init --threshold` (sealing the server's share) and by the server.
SERVER_PASSPHRASE_ENV = "BLINDSUM_SERVER_KEYSTORE_PASSPHRASE"


def stop_with_parent(parent_pid: str) -> None:
    """Ask Linux for SIGTERM when the process that started us dies (even by SIGKILL).

    Services started by ``blindsum demo`` and the tests would otherwise outlive a killed
    parent, orphaned. If the parent is already gone, exit at once.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if str(os.getppid()) != parent_pid:
        sys.exit(0)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {port}")
    return port


def _nonnegative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _keyholder_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"data_dir": args.data_dir, "passphrase_file": args.passphrase_file}


def cmd_keyholder_init(args: argparse.Namespace) -> int:
    from blindsum.server.keyholder.config import load_config
    from blindsum.server.keyholder.service import Keyholder

    config = load_config(_keyholder_overrides(args))
    if config.passphrase is None:
        print("warning: no key store passphrase (BLINDSUM_KEYSTORE_PASSPHRASE or "
              "--passphrase-file): secret keys are stored unencrypted", file=sys.stderr)
    server_dir = None
    if args.threshold:
        if args.server_dir is None:
            raise InvalidConfig("--threshold needs --server-dir (the server's data directory, "
                                "where its key share is sealed)")
        server_dir = args.server_dir
    elif args.server_dir is not None:
        raise InvalidConfig("--server-dir is only for --threshold")
    server_passphrase = os.environ.get(SERVER_PASSPHRASE_ENV) or None
    if server_dir is not None and server_passphrase is None:
        print(f"warning: no server key store passphrase ({SERVER_PASSPHRASE_ENV}): the "
              "server's key share is stored unencrypted", file=sys.stderr)
    from blindsum.server.datadir import private_files

    with private_files():
        _, result = Keyholder.init(
            config.data_dir, config.passphrase, args.paillier_bits, server_dir=server_dir,
            server_passphrase=server_passphrase,
            progress=lambda line: print(line, file=sys.stderr, flush=True))
    out = {"identity": result.identity, "release_token": result.release_token,
           "keys": list(result.key_ids), "data_dir": str(config.data_dir)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"key-holder initialised in {config.data_dir}")
        print(f"identity (pin this in SDKs and the server): {result.identity}")
        print(f"release token for the server (shown once): {result.release_token}")
        print(f"keys: {', '.join(result.key_ids)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a published result offline against the pinned key-holder identity."""
    from blindsum.shared.signing import parse_identity
    from blindsum.shared.verification import verify_result

    try:
        document = json.loads(Path(args.result).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {args.result} as JSON: {exc}") from None
    result = verify_result(document, parse_identity(args.identity))
    if args.json:
        print(json.dumps({"verified": True, "threshold": result.threshold,
                          "payload": result.to_json()}))
    else:
        how = ("both partial decryptions proven, signed by the pinned key-holder"
               if result.threshold else "signed by the pinned key-holder")
        noise = " + ".join(result.noise_parties or ("keyholder",))
        print(f"verified: {result.metric} v{result.version} window {result.window} = "
              f"{result.value} ({how}; noise by {noise})")
    return 0


def cmd_keyholder_policy_add(args: argparse.Namespace) -> int:
    from blindsum.server.keyholder.config import load_config
    from blindsum.server.keyholder.service import Keyholder
    from blindsum.server.planning.commands import check_budgets, previews, read_text, show_previews
    from blindsum.shared.policy import load_policies_toml, load_unit_budget_toml

    config = load_config(_keyholder_overrides(args))
    text = read_text(args.file, "policy file")
    policies, unit = load_policies_toml(text), load_unit_budget_toml(text)
    # The preview is computed before anything is registered: a policy that cannot be
    # calibrated fails here and nothing is written.
    items = previews(policies, args.contributors)
    holder = Keyholder.open(config.data_dir, config.passphrase)
    added = holder.add_policies(policies, unit, raise_cap=args.raise_cap)
    unchanged = [p.name for p in policies if p.name not in added]
    # what every registered metric now spends of the per-device budget in force
    in_force = holder.db.unit_budget()
    use = None if in_force is None else check_budgets(holder.db.current_policies(), in_force)
    show_previews(items, as_json=args.json, use=use)
    if not args.json:
        print(f"added: {', '.join(added) or 'none'}; already registered: "
              f"{', '.join(unchanged) or 'none'}")
    return 0


def cmd_keyholder_policy_check(args: argparse.Namespace) -> int:
    from blindsum.server.planning.commands import cmd_policy_check

    return cmd_policy_check(args)


def cmd_keyholder_policy_retire(args: argparse.Namespace) -> int:
    retired = _open_keyholder(args).retire_policy(args.metric)
    print(f"metric {args.metric} " + ("retired" if retired else "was already retired"))
    return 0


def cmd_keyholder_budget(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from blindsum.server.keyholder import ledger
    from blindsum.server.keyholder.config import load_config
    from blindsum.server.keyholder.service import DB_NAME
    from blindsum.server.keyholder.store import KeyholderDB

    config = load_config(_keyholder_overrides(args))
    if not (config.data_dir / DB_NAME).is_file():
        raise InvalidConfig(f"{config.data_dir} is not a key-holder data directory")
    db = KeyholderDB(config.data_dir / DB_NAME)
    states = [ledger.budget(db.conn, policy) for policy in db.current_policies()]
    if args.json:
        print(json.dumps({"metrics": [state.to_json() for state in states]}))
        return 0
    table = Table(title="Privacy budget: epsilon spent, at delta up to the budget's")
    for column in ("metric", "releases", "spent", "delta", "accounting", "budget", "left"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for state in states:
        table.add_row(state.metric, str(state.releases), f"{state.epsilon:.4g}",
                      f"{state.delta:.3g}", state.accounting,
                      f"({state.budget_epsilon:g}, {state.budget_delta:.3g})",
                      f"{state.remaining_epsilon:.4g}")
    table.caption = ("the tighter of basic composition (epsilons add) and zCDP (rho adds, "
                     "converted once by OpenDP at the budget's delta)")
    Console().print(table)
    return 0


def cmd_keyholder_audit(args: argparse.Namespace) -> int:
    from blindsum.server.keyholder import audit, ledger
    from blindsum.server.keyholder.config import load_config
    from blindsum.server.keyholder.service import DB_NAME, Keyholder
    from blindsum.server.keyholder.store import KeyholderDB
    from blindsum.shared.signing import parse_identity

    config = load_config(_keyholder_overrides(args))
    if not (config.data_dir / DB_NAME).is_file():
        raise InvalidConfig(f"{config.data_dir} is not a key-holder data directory "
                            f"(no {DB_NAME})")
    if args.identity:
        identity = parse_identity(args.identity)
    else:
        identity = Keyholder.open(config.data_dir, config.passphrase).identity.public_key()
    heads = _server_audit_heads(args) if args.server_url else []
    db = KeyholderDB(config.data_dir / DB_NAME)
    report = audit.verify(db.conn, identity, ledger.rows(db.conn), heads)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0 if report.intact else 1
    for problem in report.problems:
        print(f"audit: {problem}", file=sys.stderr)
    for row in report.to_json()["metrics"]:
        print(f"  {row['metric']}: {row['releases']} released, {row['refusals']} refused, "
              f"{row['interrupted']} interrupted")
    where = f", {len(heads)} from the server" if args.server_url else ""
    if not report.intact:
        print(f"audit log BROKEN: {len(report.problems)} problem(s) in {report.entries} "
              f"entries", file=sys.stderr)
        return 1
    print(f"audit log intact: {report.entries} entries, {report.signed_heads} signed heads "
          f"checked{where}")
    return 0


def _server_audit_heads(args: argparse.Namespace) -> list[object]:
    """The signed audit heads the server kept (its admin API, never its database)."""
    import requests

    token = os.environ.get("BLINDSUM_ADMIN_TOKEN")
    if not token:
        raise InvalidConfig("set BLINDSUM_ADMIN_TOKEN to read the server's audit heads")
    url = args.server_url.rstrip("/") + "/v1/audit-heads"
    try:
        response = requests.get(url, headers={"Authorization": f"Bearer {token}"},
                                verify=args.ca_bundle or True, timeout=30)
    except requests.RequestException as exc:
        raise UpstreamError(f"server at {args.server_url} is unreachable "
                            f"({type(exc).__name__})") from None
    if response.status_code != 200:
        raise UpstreamError(f"server answered {response.status_code} for its audit heads")
    try:
        heads = response.json()["heads"]
    except (ValueError, KeyError, TypeError):
        raise UpstreamError("the server's audit heads are not a JSON list") from None
    if not isinstance(heads, list):
        raise UpstreamError("the server's audit heads are not a JSON list")
    return heads


def _open_keyholder(args: argparse.Namespace) -> Keyholder:
    from blindsum.server.keyholder.config import load_config
    from blindsum.server.keyholder.service import Keyholder

    config = load_config(_keyholder_overrides(args))
    return Keyholder.open(config.data_dir, config.passphrase)


def cmd_keyholder_key_list(args: argparse.Namespace) -> int:
    for key in _open_keyholder(args).db.key_records():
        print(f"{key.key_id}\t{key.scheme}\t{key.status}")
    return 0


def cmd_keyholder_key_rotate(args: argparse.Namespace) -> int:
    from blindsum.server.datadir import private_files

    server_passphrase = os.environ.get(SERVER_PASSPHRASE_ENV) or None
    if args.server_dir is not None and server_passphrase is None:
        print(f"warning: no server key store passphrase ({SERVER_PASSPHRASE_ENV}): the "
              "server's key share is stored unencrypted", file=sys.stderr)
    with private_files():
        key_id = _open_keyholder(args).rotate(
            args.scheme, server_dir=args.server_dir, server_passphrase=server_passphrase,
            threshold=args.threshold,
            progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"new active {args.scheme} key: {key_id} (the previous one is still accepted)")
    return 0


def cmd_keyholder_key_retire(args: argparse.Namespace) -> int:
    _open_keyholder(args).retire(args.key_id)
    print(f"key {args.key_id} retired: reports under it are refused from the next manifest")
    return 0


def _limits(args: argparse.Namespace) -> ConnectionLimits:
    from blindsum.server.worker import ConnectionLimits

    return ConnectionLimits(per_address=args.max_connections_per_address)


def _keyholder_app(config: KeyholderConfig) -> Flask:
    # imported in the worker, after gevent has patched the standard library
    from blindsum.server.keyholder.app import create_app
    from blindsum.server.keyholder.observe import instrument

    return instrument(create_app(config))


def _server_app(config: AggregatorConfig) -> Flask:
    from blindsum.server.aggregator.app import create_app

    return create_app(config)


def cmd_keyholder_serve(args: argparse.Namespace) -> int:
    from blindsum.server.datadir import prepare_data_dir
    from blindsum.server.keyholder.config import load_config
    from blindsum.server.keyholder.service import DB_NAME, Keyholder
    from blindsum.server.wsgi import serve

    config = load_config(_keyholder_overrides(args))
    if not (config.data_dir / DB_NAME).is_file():
        raise InvalidConfig(f"{config.data_dir} is not a key-holder data directory "
                            "(run `blindsum keyholder init` first)")
    prepare_data_dir(config.data_dir, "key-holder data directory")
    holder = Keyholder.open(config.data_dir, config.passphrase)  # fail fast: wrong passphrase
    # No worker runs yet, so a window left paid by a killed process is not being released.
    interrupted = holder.releaser().settle_abandoned()
    if interrupted:
        print(f"{interrupted} release(s) paid for by a stopped process are interrupted for "
              "good (never decrypted again)", file=sys.stderr)
    # One worker: the key-holder's work is small and its secrets stay in one process.
    serve(functools.partial(_keyholder_app, config), args.host, args.port, workers=1,
          limits=_limits(args), certfile=args.tls_cert, keyfile=args.tls_key,
          log_file=args.log_file, name="blindsum-keyholder")
    return 0


def cmd_server_serve(args: argparse.Namespace) -> int:
    from blindsum.server.aggregator.config import load_config
    from blindsum.server.datadir import prepare_data_dir
    from blindsum.server.wsgi import serve

    overrides = {key: value for key, value in {
        "data_dir": args.data_dir,
        "keyholder_url": args.keyholder_url,
        "keyholder_identity": args.keyholder_identity,
        "ca_bundle": args.ca_bundle,
    }.items() if value is not None}
    config = load_config(overrides)
    prepare_data_dir(config.data_dir, "server data directory")
    _release_stale_claims(config.data_dir)
    serve(functools.partial(_server_app, config), args.host, args.port, workers=args.workers,
          limits=_limits(args), certfile=args.tls_cert, keyfile=args.tls_key,
          log_file=args.log_file, name="blindsum-server")
    return 0


def _release_stale_claims(data_dir: Path) -> None:
    """Before any worker runs: windows a killed server was releasing are retried at once."""
    import time

    from blindsum.server.aggregator.store import DB_NAME, Store

    if not (data_dir / DB_NAME).is_file():
        return  # a first start: nothing was ever claimed
    store = Store(data_dir)
    try:
        with store.transaction() as tx:
            dropped = tx.release_claims(time.time())
    finally:
        store.close()
    if dropped:
        print(f"{dropped} window(s) a stopped server was releasing are retried now (the "
              "key-holder answers them from its stored results)", file=sys.stderr)


def _token_book(data_dir: Path, create: bool = False) -> TokenBook:
    from blindsum.server.aggregator.store import DB_NAME, Store
    from blindsum.server.aggregator.tokens import TokenBook

    if not create and not (data_dir / DB_NAME).is_file():
        raise InvalidConfig(f"{data_dir} is not an aggregator data directory (no {DB_NAME})")
    return TokenBook(Store(data_dir))


def _open_store(data_dir: Path) -> Store:
    from blindsum.server.aggregator.store import DB_NAME, Store

    if not (data_dir / DB_NAME).is_file():  # a maintenance command never creates a store
        raise InvalidConfig(f"{data_dir} is not an aggregator data directory (no {DB_NAME})")
    return Store(data_dir)


def _report_backup(result: BackupResult) -> None:
    print(f"backup written to {result.destination}: database {result.database_bytes} bytes, "
          f"{result.files} file(s)")


def cmd_server_backup(args: argparse.Namespace) -> int:
    from blindsum.server.aggregator.store import DB_NAME
    from blindsum.server.backup import backup_data_dir

    _report_backup(backup_data_dir(args.data_dir, args.to, DB_NAME))
    return 0


def cmd_keyholder_backup(args: argparse.Namespace) -> int:
    from blindsum.server.backup import backup_data_dir
    from blindsum.server.keyholder.service import DB_NAME

    _report_backup(backup_data_dir(args.data_dir, args.to, DB_NAME, extra_dirs=("keys",)))
    return 0


def cmd_server_gc(args: argparse.Namespace) -> int:
    from blindsum.server.aggregator.retention import RetentionSweep

    store = _open_store(args.data_dir)
    erased = RetentionSweep(store, args.retention_seconds).sweep(max_batches=1_000_000)
    print(f"erased the ciphertexts of {erased} reports of windows released or refused more "
          f"than {args.retention_seconds:g} s ago (their ids are kept)")
    return 0


def _when(seconds: float | None) -> str:
    import time

    return "-" if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def cmd_server_token_create(args: argparse.Namespace) -> int:
    token, record = _token_book(args.data_dir, create=True).create(
        args.role, args.label, args.metric or None, args.max_reports_per_window)
    metrics = None if record.metrics is None else sorted(record.metrics)
    if args.json:
        print(json.dumps({"token": token, "role": record.role, "label": record.label,
                          "metrics": metrics,
                          "max_reports_per_window": record.max_reports_per_window}))
        return 0
    scope = "every metric" if metrics is None else ", ".join(metrics)
    if record.max_reports_per_window is not None:
        scope += f", at most {record.max_reports_per_window} report(s) per window"
    print(f"created {record.role} token {record.label!r} (digest {record.digest[:12]}) for "
          f"{scope}; it is shown once, store it now:", file=sys.stderr)
    print(token)
    return 0


def cmd_server_token_revoke(args: argparse.Namespace) -> int:
    # "-" reads the reference from stdin, so a token need not appear in process arguments.
    reference = sys.stdin.readline().strip() if args.token == "-" else args.token
    record, revoked = _token_book(args.data_dir).revoke(reference)
    state = ("revoked: every worker refuses it from its next request" if revoked
             else "was already revoked")
    print(f"{record.role} token {record.label!r} (digest {record.digest[:12]}) {state}")
    return 0


def cmd_server_token_list(args: argparse.Namespace) -> int:
    records = _token_book(args.data_dir).all()
    if args.json:
        print(json.dumps([r.to_json() for r in records]))
        return 0
    rows = [("LABEL", "ROLE", "METRICS", "CREATED", "REVOKED", "DIGEST")]
    rows += [(r.label, r.role, "*" if r.metrics is None else ",".join(sorted(r.metrics)),
              _when(r.created_at), _when(r.revoked_at), r.digest[:12]) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from blindsum.server.demo import run_demo

    return run_demo(clients=args.clients, scheme=args.scheme, as_json=args.json,
                    keep_serving=args.serve, paillier_bits=args.paillier_bits,
                    tls=not args.no_tls, threshold=not args.single_key)


def cmd_bench(args: argparse.Namespace) -> int:
    from blindsum.benchmarks.runner import run_benchmarks

    return run_benchmarks(quick=args.quick, as_json=args.json, output=args.output)


def _token_parsers(srv: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    token = srv.add_parser("token", help="bearer tokens of apps and operators (stored hashed)")
    actions = token.add_subparsers(dest="token_action", required=True)
    create = actions.add_parser("create", help="make a token and print it once")
    create.add_argument("--data-dir", required=True, type=Path)
    create.add_argument("--role", required=True, choices=("ingest", "admin"))
    create.add_argument("--label", help="a name for operators (default: role-digestprefix)")
    create.add_argument("--metric", action="append", metavar="NAME",
                        help="an ingest token may report only these metrics (repeatable; "
                             "default: every metric)")
    create.add_argument("--max-reports-per-window", type=int, metavar="N",
                        help="an ingest token may send at most N reports per window of each "
                             "metric (default: no cap); the excess is refused with 409")
    create.add_argument("--json", action="store_true",
                        help='print {"token", "role", "label", "metrics", '
                             '"max_reports_per_window"}')
    create.set_defaults(handler=cmd_server_token_create)
    revoke = actions.add_parser("revoke", help="refuse a token from the next request on")
    revoke.add_argument("--data-dir", required=True, type=Path)
    revoke.add_argument("token", metavar="TOKEN_OR_LABEL_OR_DIGEST_PREFIX",
                        help="the token, its label, or >= 8 hex digits of its digest; "
                             "'-' reads it from stdin")
    revoke.set_defaults(handler=cmd_server_token_revoke)
    listing = actions.add_parser("list", help="every token (labels and digests, never tokens)")
    listing.add_argument("--data-dir", required=True, type=Path)
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=cmd_server_token_list)


def build_parser() -> argparse.ArgumentParser:
    from blindsum.server.planning.arguments import (
        add_explore_parser,
        add_preview_arguments,
        positive_int,
    )

    parser = argparse.ArgumentParser(
        prog="blindsum",
        description="Privacy-preserving metrics: encrypted aggregation with DP releases.",
    )
    roles = parser.add_subparsers(dest="command", required=True)

    keyholder = roles.add_parser("keyholder", help="the key-holder (secret keys, releases)")
    kh = keyholder.add_subparsers(dest="action", required=True)

    def kh_common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data-dir", required=True, type=Path)
        sub.add_argument("--passphrase-file", type=Path,
                         help="file holding the key store passphrase "
                              "(or set BLINDSUM_KEYSTORE_PASSPHRASE)")

    init = kh.add_parser("init", help="create identity, keys and a release token")
    kh_common(init)
    init.add_argument("--paillier-bits", type=int, choices=(2048, 3072, 4096), default=3072)
    init.add_argument("--json", action="store_true", help="print the result as JSON")
    init.add_argument("--threshold", action="store_true",
                      help="make the Paillier key a two-party threshold key (a key ceremony: "
                           "no single party can decrypt)")
    init.add_argument("--server-dir", type=Path,
                      help="with --threshold: the server's data directory, where its share "
                           f"is sealed (passphrase in {SERVER_PASSPHRASE_ENV})")
    init.set_defaults(handler=cmd_keyholder_init)

    policy = kh.add_parser("policy", help="manage metric policies")
    policy_actions = policy.add_subparsers(dest="policy_action", required=True)
    add = policy_actions.add_parser("add", help="register the policies of a TOML file")
    kh_common(add)
    add.add_argument("file", help="policy TOML file ([metrics.NAME] tables, optional "
                                  "[budget] per device per period)")
    add.add_argument("--raise-cap", action="store_true",
                     help="allow a version (or [budget]) that raises a budget cap; audited")
    add_preview_arguments(add)
    add.set_defaults(handler=cmd_keyholder_policy_add)

    check = policy_actions.add_parser(
        "check", help="validate a policy file and preview its noise, accuracy and budget "
                      "(registers nothing, needs no data directory)")
    check.add_argument("file", help="policy TOML file ([metrics.NAME] tables)")
    add_preview_arguments(check)
    check.add_argument("--strict", action="store_true", help="exit 1 if there are warnings")
    check.set_defaults(handler=cmd_keyholder_policy_check)

    retire_policy = policy_actions.add_parser(
        "retire", help="retire a metric: no more reports, no more releases")
    kh_common(retire_policy)
    retire_policy.add_argument("metric")
    retire_policy.set_defaults(handler=cmd_keyholder_policy_retire)

    budget_cmd = kh.add_parser("budget", help="privacy budget spent and left, per metric")
    kh_common(budget_cmd)
    budget_cmd.add_argument("--json", action="store_true", help="print JSON")
    budget_cmd.set_defaults(handler=cmd_keyholder_budget)

    audit_cmd = kh.add_parser(
        "audit", help="verify the audit log, the ledger and the signed heads against each other")
    kh_common(audit_cmd)
    audit_cmd.add_argument("--identity", help="the key-holder's pinned identity (ed25519:...); "
                           "default: read from the key store (needs the passphrase)")
    audit_cmd.add_argument("--server-url", help="also check the signed heads this server kept "
                           "(admin token in BLINDSUM_ADMIN_TOKEN)")
    audit_cmd.add_argument("--ca-bundle", help="CA bundle to verify the server's TLS certificate")
    audit_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    audit_cmd.set_defaults(handler=cmd_keyholder_audit)

    kh_backup = kh.add_parser("backup", help="consistent copy of the data directory (ledger, "
                                             "audit log, key files), safe while serving")
    kh_backup.add_argument("--data-dir", required=True, type=Path)
    kh_backup.add_argument("--to", required=True, type=Path,
                           help="new (or empty) directory for the copy")
    kh_backup.set_defaults(handler=cmd_keyholder_backup)

    key = kh.add_parser("key", help="key epochs: list, rotate, retire")
    key_actions = key.add_subparsers(dest="key_action", required=True)
    key_list = key_actions.add_parser("list", help="every key with its status")
    kh_common(key_list)
    key_list.set_defaults(handler=cmd_keyholder_key_list)
    rotate = key_actions.add_parser("rotate", help="new active key; the old one stays accepted")
    kh_common(rotate)
    rotate.add_argument("--scheme", choices=("paillier", "ckks"), required=True)
    rotate.add_argument("--threshold", action="store_true",
                        help="make the new Paillier key a two-party threshold key (implied "
                             "when the active one is)")
    rotate.add_argument("--server-dir", type=Path,
                        help="for a threshold key: the server's data directory, where its "
                             "new share is sealed")
    rotate.set_defaults(handler=cmd_keyholder_key_rotate)
    retire = key_actions.add_parser("retire", help="refuse new reports under a key")
    kh_common(retire)
    retire.add_argument("key_id")
    retire.set_defaults(handler=cmd_keyholder_key_retire)

    def tls(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
        sub.add_argument("--tls-key", help="PEM private key for --tls-cert")
        sub.add_argument("--max-connections-per-address", type=_count, default=64,
                         metavar="N",
                         help="connections one client address may hold per worker "
                              "(default 64; 0 = no cap, e.g. behind a reverse proxy)")
        sub.add_argument("--log-file", type=Path,
                         help="append JSON log lines to this file (default: stderr)")

    kh_serve = kh.add_parser("serve", help="serve the key-holder API (gunicorn)")
    kh_common(kh_serve)
    kh_serve.add_argument("--host", default="127.0.0.1")
    kh_serve.add_argument("--port", type=_port, default=8701)
    tls(kh_serve)
    kh_serve.set_defaults(handler=cmd_keyholder_serve)

    server = roles.add_parser("server", help="the aggregator server (ciphertexts only)")
    srv = server.add_subparsers(dest="action", required=True)
    srv_serve = srv.add_parser(
        "serve", help="serve the aggregator API (gunicorn); tokens come from `server token "
                      "create` and the environment"
    )
    srv_serve.add_argument("--data-dir", type=Path)
    srv_serve.add_argument("--keyholder-url")
    srv_serve.add_argument("--keyholder-identity")
    srv_serve.add_argument("--host", default="127.0.0.1")
    srv_serve.add_argument("--port", type=_port, default=8700)
    srv_serve.add_argument("--workers", type=positive_int, default=2)
    srv_serve.add_argument("--ca-bundle",
                           help="CA file that verifies the key-holder's TLS certificate "
                                "(or set BLINDSUM_CA_BUNDLE; default: the system CAs)")
    tls(srv_serve)
    srv_serve.set_defaults(handler=cmd_server_serve)
    _token_parsers(srv)
    srv_backup = srv.add_parser("backup", help="consistent copy of the data directory, "
                                               "safe while serving")
    srv_backup.add_argument("--data-dir", required=True, type=Path)
    srv_backup.add_argument("--to", required=True, type=Path,
                            help="new (or empty) directory for the copy")
    srv_backup.set_defaults(handler=cmd_server_backup)
    gc = srv.add_parser("gc", help="erase the raw reports of settled windows now "
                                   "(the server also does it in the background)")
    gc.add_argument("--data-dir", required=True, type=Path)
    gc.add_argument("--retention-seconds", type=_nonnegative_seconds, default=86_400.0,
                    help="keep reports this long after their window was released or "
                         "refused (default 86400)")
    gc.set_defaults(handler=cmd_server_gc)

    demo = roles.add_parser("demo", help="run both services and simulate app installs")
    demo.add_argument("--clients", type=positive_int, default=200,
                      help="simulated app installs (default 200: each proves its Paillier "
                           "reports, ~0.2 s per install at 3072 bits)")
    demo.add_argument("--scheme", choices=("paillier", "ckks", "both"), default="both")
    demo.add_argument("--json", action="store_true", help="print one JSON object at the end")
    demo.add_argument("--serve", action="store_true",
                      help="keep both services running after the release until SIGINT/SIGTERM")
    demo.add_argument("--paillier-bits", type=int, choices=(2048, 3072, 4096), default=3072)
    demo.add_argument("--no-tls", action="store_true",
                      help="plain HTTP on loopback (default: HTTPS with a private CA)")
    demo.add_argument("--single-key", action="store_true",
                      help="one key-holder holds the whole Paillier key (default: a two-party "
                           "threshold key shared by the key-holder and the server)")
    demo.set_defaults(handler=cmd_demo)

    verify = roles.add_parser(
        "verify", help="check a published result offline (signature; for a threshold result "
                   "also both parties' proofs and the value)")
    verify.add_argument("result", help="a published result JSON file (GET /v1/published entry "
                                       "or its document)")
    verify.add_argument("--identity", required=True,
                        help="the key-holder's pinned identity (ed25519:...)")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(handler=cmd_verify)

    add_explore_parser(roles)
    from blindsum.server.collector import add_parsers

    add_parsers(roles)

    bench = roles.add_parser("bench", help="benchmarks: ratios against baselines, side by side")
    bench.add_argument("--quick", action="store_true",
                       help="small sizes: checks the figures, not the speed (CI)")
    bench.add_argument("--json", action="store_true", help="print one JSON object at the end")
    bench.add_argument("--output", type=Path, default=None,
                       help="folder for results JSON and the PNG plot "
                            "(default benchmarks/results/ in the checkout, or ./bench-results)")
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parent = os.environ.pop(STOP_WITH_PARENT, None)
    if parent:
        stop_with_parent(parent)
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BlindsumError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


SERVE_COMMANDS = (("server", "serve"), ("keyholder", "serve"))


def run() -> int:
    """The command-line entry point (``blindsum``, ``python -m blindsum.server.cli``).

    The ``serve`` commands run gevent workers (``server/worker.py``): the standard library is
    made cooperative here, before anything imports ``ssl`` or sockets. Patching only in each
    worker, after the fork, leaves the modules the master already imported unpatched (building
    this parser imports the SDK, hence urllib3's ssl), and the server's TLS calls to the
    key-holder then fail with RecursionError. ``main`` itself never patches: tests call it
    in-process.
    """
    argv = sys.argv[1:]
    if tuple(argv[:2]) in SERVE_COMMANDS:
        from gevent import monkey

        monkey.patch_all()
    return main(argv)


if __name__ == "__main__":
    sys.exit(run())
