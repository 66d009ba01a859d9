"""The threshold key-holder's own account of a window (``server/keyholder/intake.py``).

In process: a real key-holder with a two-party key, batches forwarded as the server
forwards them, honest and malicious (a server that pads, scales or swaps reports, a
client whose proof is forged). Every refusal must leave the account unchanged.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from validity_kit import forge

from blindsum.server.keyholder import ledger
from blindsum.server.keyholder.service import Keyholder
from blindsum.shared.codec import ReleaseRequest, Report, WindowReports, report_ids_digest
from blindsum.shared.encoding import encode
from blindsum.shared.errors import (
    Conflict,
    InvalidCiphertext,
    InvalidInput,
    InvalidProof,
    ReleaseRefused,
    ReportCapExceeded,
)
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.policy import load_policies_toml
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.validity import ProofContext, proof_kind, prove_report

POLICIES = """
[metrics.taps]
kind = "count"
scheme = "paillier"
min_contributors = 2
max_contributors = 4
window_seconds = 60
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 100.0 }

[metrics.seconds]
kind = "sum"
scheme = "paillier"
lower = 0
upper = 100
min_contributors = 2
window_seconds = 60
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 100.0 }
"""
WINDOW = 60


class Holder:
    def __init__(self, root: Path) -> None:
        self.holder, _ = Keyholder.init(root / "kh", None, 2048, clock=lambda: 0.0,
                                        server_dir=root / "srv")
        self.holder.add_policies(load_policies_toml(POLICIES))
        self.holder.db.clock = time.time
        manifest = Manifest.verify(self.holder.db.latest_manifest(),
                                   self.holder.identity.public_key())
        self.manifest = manifest
        self.kid = manifest.active_key("paillier").key_id
        self.public = PaillierPublic.from_json(manifest.key(self.kid).public)

    def report(self, metric: str, value: Any, window: int = WINDOW) -> Report:
        policy = self.manifest.policy(metric)
        report_id = secrets.token_bytes(16)
        context = ProofContext(metric, policy.version, window, self.kid, report_id)
        blobs, proof = prove_report(self.public, proof_kind(policy), slot_spec(policy),
                                    encode(policy, value), context)
        return Report(report_id, metric, policy.version, self.kid, window, tuple(blobs),
                      proof.to_json())

    def forged(self, metric: str, slots: list[int], window: int = WINDOW) -> Report:
        policy = self.manifest.policy(metric)
        report_id = secrets.token_bytes(16)
        context = ProofContext(metric, policy.version, window, self.kid, report_id)
        blobs, proof = forge(self.public, proof_kind(policy), slot_spec(policy), slots,
                             context)
        return Report(report_id, metric, policy.version, self.kid, window, tuple(blobs),
                      proof.to_json())

    def send(self, metric: str, reports: list[Report], window: int = WINDOW) -> Any:
        return self.holder.intake().accept(WindowReports(
            metric, self.manifest.policy(metric).version, window, self.kid, tuple(reports)))

    def account(self, metric: str, window: int = WINDOW) -> Any:
        return self.holder.intake().account(self.holder.db.conn, metric, 1, window, self.kid)

    def request(self, metric: str, reports: list[Report], window: int = WINDOW,
                **changes: Any) -> ReleaseRequest:
        spec = slot_spec(self.manifest.policy(metric))
        aggregate = tuple(self.public.dump(self.public.add_many(
            [self.public.load(list(r.ciphertexts), spec) for r in reports])))
        fields: dict[str, Any] = dict(
            metric=metric, version=1, window=window, key_id=self.kid,
            report_count=len(reports),
            report_ids_digest=report_ids_digest([r.report_id for r in reports]),
            aggregate=aggregate)
        fields.update(changes)
        return ReleaseRequest(**fields)


@pytest.fixture(scope="module")
def kh(tmp_path_factory: pytest.TempPathFactory) -> Holder:
    return Holder(tmp_path_factory.mktemp("intake"))


def _window() -> int:
    """A fresh, already closed window per test (the module shares one key-holder)."""
    _window.start += 60  # type: ignore[attr-defined]
    return _window.start  # type: ignore[attr-defined, no-any-return]


_window.start = 600  # type: ignore[attr-defined]


def test_an_honest_window_is_summed_once_however_often_it_is_forwarded(kh: Holder) -> None:
    window = _window()
    reports = [kh.report("seconds", v, window) for v in (10, 20.5, 99)]
    first = kh.send("seconds", reports[:2], window)
    assert (first.accepted, first.duplicates, first.report_count) == (2, 0, 2)
    again = kh.send("seconds", reports, window)  # a retry re-forwards everything
    assert (again.accepted, again.duplicates, again.report_count) == (1, 2, 3)
    account = kh.account("seconds", window)
    assert account.report_count == 3
    assert account.report_ids_digest == report_ids_digest([r.report_id for r in reports])
    assert account.aggregate == kh.request("seconds", reports, window).aggregate


@pytest.mark.parametrize("slots,metric", [([2], "taps"), ([-1], "taps"), ([101], "seconds")])
def test_a_forged_report_is_refused_and_the_account_is_unchanged(kh: Holder, slots: list[int],
                                                                 metric: str) -> None:
    window = _window()
    kh.send(metric, [kh.report(metric, 1, window)], window)
    before = kh.account(metric, window)
    honest = kh.report(metric, 1, window)
    with pytest.raises(InvalidProof, match=r"report\(s\) \[1\]"):
        kh.send(metric, [honest, kh.forged(metric, slots, window)], window)
    assert kh.account(metric, window) == before  # not even the honest one went in


def test_a_report_without_its_proof_or_with_another_reports_proof_is_refused(
        kh: Holder) -> None:
    window = _window()
    good = kh.report("taps", 1, window)
    stripped = Report(good.report_id, "taps", 1, kh.kid, window, good.ciphertexts)
    with pytest.raises(InvalidProof, match="report 0 has no validity proof"):
        kh.send("taps", [stripped], window)
    other = kh.report("taps", 1, window)
    swapped = Report(secrets.token_bytes(16), "taps", 1, kh.kid, window, good.ciphertexts,
                     other.proof)
    with pytest.raises(InvalidProof):
        kh.send("taps", [swapped], window)
    replayed = Report(secrets.token_bytes(16), "taps", 1, kh.kid, window, good.ciphertexts,
                      good.proof)  # the same proof under a new id: bound to the old one
    with pytest.raises(InvalidProof):
        kh.send("taps", [replayed], window)
    assert kh.account("taps", window) is None


def test_a_scaled_victim_ciphertext_cannot_pose_as_many_reports(kh: Holder) -> None:
    """The server holds the public key: it could send Enc(10^6 * x) as one report."""
    window = _window()
    victim = kh.report("taps", 1, window)
    c = kh.public.load(list(victim.ciphertexts), slot_spec(kh.manifest.policy("taps")))[0]
    scaled = kh.public.dump([pow(int(c), 10**6, int(kh.public.nsquare))])
    with pytest.raises(InvalidProof):
        kh.send("taps", [Report(victim.report_id, "taps", 1, kh.kid, window, tuple(scaled),
                                victim.proof)], window)
    assert kh.account("taps", window) is None


def test_a_release_must_be_exactly_the_window_the_keyholder_summed(kh: Holder) -> None:
    window = _window()
    reports = [kh.report("taps", v, window) for v in (1, 0, 1)]
    kh.send("taps", reports, window)
    releaser = kh.holder.releaser()
    padded = [*reports, kh.report("taps", 0, window)]  # never forwarded
    lies = {
        "count": kh.request("taps", reports, window, report_count=4),
        "ids": kh.request("taps", reports, window,
                          report_ids_digest=report_ids_digest([r.report_id for r in padded])),
        "aggregate": kh.request("taps", reports[:2], window, report_count=3,
                                report_ids_digest=report_ids_digest(
                                    [r.report_id for r in reports])),
    }
    for claim, request in lies.items():
        with pytest.raises(ReleaseRefused):
            releaser.release(request)
        assert ledger.consumed(kh.holder.db.conn, "taps", 1, window, kh.kid) is None, claim
    assert releaser.release(kh.request("taps", reports, window)).created


def test_a_window_never_forwarded_is_not_released(kh: Holder) -> None:
    window = _window()
    reports = [kh.report("taps", 1, window) for _ in range(2)]
    with pytest.raises(ReleaseRefused, match="holds no reports"):
        kh.holder.releaser().release(kh.request("taps", reports, window))


def test_after_payment_only_reports_already_held_are_accepted(kh: Holder) -> None:
    window = _window()
    reports = [kh.report("taps", 1, window) for _ in range(2)]
    kh.send("taps", reports, window)
    kh.holder.releaser().release(kh.request("taps", reports, window))
    assert kh.send("taps", reports, window).accepted == 0  # a retry's forwarding
    with pytest.raises(Conflict, match="already paid for"):
        kh.send("taps", [kh.report("taps", 1, window)], window)
    assert kh.account("taps", window).report_count == 2


def test_a_window_cannot_hold_more_than_max_contributors(kh: Holder) -> None:
    window = _window()
    kh.send("taps", [kh.report("taps", 1, window) for _ in range(3)], window)
    with pytest.raises(ReportCapExceeded, match="above max_contributors 4"):
        kh.send("taps", [kh.report("taps", 1, window) for _ in range(2)], window)
    assert kh.account("taps", window).report_count == 3


def test_malformed_batches_are_refused_by_name(kh: Holder) -> None:
    window = _window()
    good = kh.report("taps", 1, window)
    with pytest.raises(InvalidInput, match="belongs to another window"):
        WindowReports.from_wire({**WindowReports("taps", 1, window + 60, kh.kid,
                                                 (good,)).to_wire()})
    short = Report(secrets.token_bytes(16), "taps", 1, kh.kid, window, (b"\x01" * 3,),
                   good.proof)
    with pytest.raises(InvalidCiphertext, match="report 0"):
        kh.send("taps", [short], window)
    with pytest.raises(ReleaseRefused, match="not registered"):
        kh.holder.intake().accept(WindowReports("nope", 1, window, kh.kid, (good,)))
    with pytest.raises(InvalidInput, match="proof must be an object"):
        Report.from_wire({**good.to_wire(), "proof": "yes"})
    assert kh.account("taps", window) is None


def test_only_threshold_keys_take_forwarded_reports(tmp_path: Path) -> None:
    holder, _ = Keyholder.init(tmp_path / "single", None, 2048)
    holder.add_policies(load_policies_toml(POLICIES))
    kid = Manifest.verify(holder.db.latest_manifest(),
                          holder.identity.public_key()).active_key("paillier").key_id
    report = Report(secrets.token_bytes(16), "taps", 1, kid, WINDOW, (b"\x01" * 512,))
    with pytest.raises(ReleaseRefused, match="not a threshold Paillier key"):
        holder.intake().accept(WindowReports("taps", 1, WINDOW, kid, (report,)))
