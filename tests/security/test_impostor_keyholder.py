"""A key-holder with another identity can neither feed the server a manifest nor a result.

The impostor is the strongest one we can build: a copy of the real key-holder's data
directory (the same secret keys, policies and tokens) whose identity key was replaced, and
which re-signed its manifest under that identity. Only the pinned identity tells them
apart, so these tests show the pin is what protects the server.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from security_kit import (
    NO_RATE_LIMITS,
    TIMEOUT,
    call,
    keyholder_manifest,
    paillier_report,
    port_of,
    post_reports,
    problem,
    receipt,
    running,
    service_env,
    snapshot,
    wait_until,
)

from blindsum.server.keystore import KeyStore
from blindsum.server.processes import Deployment, cli, deployment, free_port
from blindsum.shared import codec
from blindsum.shared.errors import ManifestError
from blindsum.shared.signing import identity_string, parse_identity, verify_document

POLICIES = Path(__file__).parent.parent / "policies"
METRIC = "opened"


@dataclass(frozen=True)
class Impostor:
    data_dir: Path
    identity: str


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("signatures"),
                    [POLICIES / "paillier.toml"], server_env=NO_RATE_LIMITS) as dep:
        yield dep


@pytest.fixture(scope="module")
def impostor(real: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Impostor:
    """The real key-holder's data directory, copied, with a new identity key."""
    target = tmp_path_factory.mktemp("impostor") / "keyholder"
    shutil.copytree(real.keyholder_dir, target,
                    ignore=shutil.ignore_patterns("keyholder.db*"))
    source_uri = f"file:{real.keyholder_dir / 'keyholder.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(source_uri, uri=True)) as source, \
            contextlib.closing(sqlite3.connect(target / "keyholder.db")) as copy:
        source.backup(copy)
    passphrase = real.env["BLINDSUM_KEYSTORE_PASSPHRASE"]
    identity = Ed25519PrivateKey.generate()
    KeyStore.open(target, passphrase).write_identity(identity)
    # one more policy makes the impostor issue (and sign) a manifest of its own
    extra = target.parent / "extra.toml"
    extra.write_text('[metrics.impostor_extra]\nkind = "count"\nscheme = "paillier"\n'
                     'upper = 1\nmin_contributors = 3\nmax_contributors = 1000\n'
                     'privacy = { mechanism = "laplace", epsilon = 1.0, '
                     'budget_epsilon = 3.0 }\n')
    cli("keyholder", "policy", "add", "--data-dir", str(target), str(extra),
        env={"BLINDSUM_KEYSTORE_PASSPHRASE": passphrase})
    return Impostor(target, identity_string(identity.public_key()))


def _serve_keyholder(data_dir: Path, port: int, real: Deployment, name: str,
                     log_dir: Path):  # type: ignore[no-untyped-def]
    return running(name, ["keyholder", "serve", "--data-dir", str(data_dir), "--port",
                          str(port)], port, log_dir, service_env(real, passphrase=True))


def test_server_pinned_to_the_real_identity_refuses_an_impostor_keyholder(
    real: Deployment, impostor: Impostor, tmp_path: Path,
) -> None:
    manifest = keyholder_manifest(real)
    kh_port, srv_port = free_port(), free_port()
    with _serve_keyholder(impostor.data_dir, kh_port, real, "impostor", tmp_path) as fake:
        offered = requests.get(f"{fake.url}/v1/manifest", timeout=TIMEOUT).json()
        verify_document(offered, parse_identity(impostor.identity), "impostor manifest")
        with pytest.raises(ManifestError):
            verify_document(offered, parse_identity(real.identity), "impostor manifest")
        server_dir = tmp_path / "server"
        args = ["server", "serve", "--data-dir", str(server_dir), "--port", str(srv_port),
                "--keyholder-url", fake.url, "--keyholder-identity", real.identity]
        with running("pinned-server", args, srv_port, tmp_path,
                     service_env(real, passphrase=False), wait=False) as server:
            health: list[requests.Response] = []

            def answered() -> bool:
                with contextlib.suppress(requests.ConnectionError):
                    health.append(call("GET", f"{server.url}/healthz"))
                    return True
                return False

            assert wait_until(answered, 30), server.log_tail()
            assert health[-1].status_code == 503, health[-1].text
            assert "not signed by the pinned" in health[-1].json()["detail"]
            report = paillier_report(manifest, METRIC, 1)
            refused = call("POST", f"{server.url}/v1/reports", token=real.ingest_token,
                           data=codec.dumps({"v": 1, "reports": [report.to_wire()]}),
                           media=codec.JSON)
            assert refused.status_code == 502, refused.text
            assert problem(refused)["code"] == "upstream"
            relayed = call("GET", f"{server.url}/v1/manifest")
            assert relayed.status_code == 502 and "payload" not in relayed.json()
            windows = call("GET", f"{server.url}/v1/windows", token=real.admin_token)
            assert windows.status_code == 200 and windows.json()["windows"] == []
            assert call("GET", f"{server.url}/v1/published").json()["results"] == []


def test_result_signed_by_an_impostor_is_rejected_and_the_window_is_retried_later(
    real: Deployment, impostor: Impostor, tmp_path: Path,
) -> None:
    """Runs last in this module: it stops the real key-holder and restarts it at the end."""
    manifest = keyholder_manifest(real)
    assert receipt(post_reports(real, [paillier_report(manifest, METRIC, 1)
                                       for _ in range(3)])) == (3, 0)
    before = snapshot(real)
    (row,) = [w for w in before.windows if w["metric"] == METRIC]
    port = port_of(real.keyholder)
    real.keyholder.stop()
    release_body = codec.dumps({"metric": METRIC})
    with _serve_keyholder(impostor.data_dir, port, real, "impostor-on-real-port", tmp_path):
        answer = call("POST", f"{real.server.url}/v1/windows/release", token=real.admin_token,
                      data=release_body, media=codec.JSON, timeout=120)
        assert answer.status_code == 200, answer.text
        outcome = answer.json()
        assert outcome["released"] == [] and outcome["refused"] == [], outcome
        (failed,) = outcome["failed"]
        assert failed["code"] == "manifest-unverified", failed
        assert "not signed by the pinned key-holder identity" in failed["detail"]
        windows = call("GET", f"{real.server.url}/v1/windows", token=real.admin_token)
        (after,) = [w for w in windows.json()["windows"] if w["metric"] == METRIC]
        # Sealed, not re-opened: the request may have reached a real key-holder (a forger
        # in the middle), so the window is kept exactly as sent and retried later.
        assert (after["state"], after["report_count"]) == ("sealed", row["report_count"])
        assert call("GET", f"{real.server.url}/v1/published").json()["results"] == \
            before.published == []
    # The real key-holder, back on its port, releases the very same window once the failed
    # attempt's lease has lapsed.
    with _serve_keyholder(real.keyholder_dir, port, real, "keyholder-again", tmp_path):
        answers: list[requests.Response] = []

        def released() -> bool:
            answers.append(call("POST", f"{real.server.url}/v1/windows/release",
                                token=real.admin_token, data=release_body, media=codec.JSON,
                                timeout=120))
            return answers[-1].status_code == 200 and len(answers[-1].json()["released"]) == 1

        assert wait_until(released, 60, interval=2.0), answers[-1].text
        (result,) = call("GET", f"{real.server.url}/v1/published/{METRIC}").json()["results"]
        payload = verify_document(result["document"], parse_identity(real.identity), "result")
        assert payload["report_count"] == 3
        assert json.loads(result["document"]["payload"])["window"] == row["window"]
