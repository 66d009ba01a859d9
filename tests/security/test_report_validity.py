"""Cheating clients against a running server: no invalid value enters a proven aggregate.

Claim (SECURITY.md): a client cannot put an invalid value into a Paillier aggregate of a
metric with ``validity = "proof"``. Each attack posts, to the real server, a batch holding
one honest report and one cheat: a count encrypting 2 or -1 (n - 1) whose proof the real
prover made on that false statement (``validity_kit.forge``, in the batched and the compact
wire form), a histogram with two hot
buckets, a sum above its bound, an honest proof replayed under another report id, window
or metric, a report stripped of its proof, and a proof attached to a ``validity = "none"``
metric. Each is refused with 400 ``invalid-proof`` naming the cheat, and nothing is stored:
the window's report count (GET /v1/windows) and the server's reports table are unchanged.
An honest batch afterwards is accepted and stored with its proofs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import sqlite3
from collections.abc import Callable

import pytest
import requests
from security_kit import (
    keyholder_manifest,
    paillier_report,
    paillier_scheme,
    post_reports,
    problem,
    receipt,
    windows_of,
)
from validity_kit import forge

from blindsum.server.processes import Deployment
from blindsum.shared import codec
from blindsum.shared.codec import Report
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.validity import ProofContext, proof_kind

COUNT, OTHER, HIST, SUM, UNPROVEN = ("sec_valid_count", "sec_valid_other", "sec_valid_hist",
                                     "sec_valid_sum", "sec_unproven")


@pytest.fixture(scope="module")
def manifest(deployed: Deployment) -> Manifest:
    return keyholder_manifest(deployed)


def _forged(manifest: Manifest, metric: str, slots: list[int],
            form: str = "batched") -> Report:
    """A report of ``slots`` (a false statement) with a proof the real prover forged, in
    either wire form (the server verifies both for any proven metric)."""
    policy = manifest.policy(metric)
    public = paillier_scheme(manifest)
    report = paillier_report(manifest, metric, 0)
    context = ProofContext(metric, policy.version, report.window, public.key_id,
                           report.report_id)
    cts, proof = forge(public, proof_kind(policy), slot_spec(policy), slots, context,
                       form=form)
    return dataclasses.replace(report, ciphertexts=tuple(cts), proof=proof.to_json())


def _width(manifest: Manifest, metric: str) -> int:
    """Bits per packed slot: a value of 2^width carries into the next slot."""
    public = PaillierPublic.from_json(manifest.active_key("paillier").public)
    return public.layout(slot_spec(manifest.policy(metric)))[0]


def _stored_ids(dep: Deployment) -> set[bytes]:
    uri = f"file:{dep.server_dir / 'aggregator.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT report_id FROM reports")}


def _counts(dep: Deployment) -> dict[tuple[str, int], int]:
    return {(w["metric"], w["window"]): w["report_count"]
            for metric in (COUNT, OTHER, HIST, SUM, UNPROVEN)
            for w in windows_of(dep, metric)}


def _replayed(manifest: Manifest, change: str) -> Report:
    honest = paillier_report(manifest, COUNT, 1)
    if change == "report id":
        return dataclasses.replace(honest, report_id=secrets.token_bytes(16))
    if change == "window":
        seconds = manifest.policy(COUNT).window_seconds
        return dataclasses.replace(honest, window=honest.window - seconds)
    return dataclasses.replace(honest, metric=OTHER)


CHEATS: dict[str, Callable[[Manifest], Report]] = {
    "count encrypting 2": lambda m: _forged(m, COUNT, [2]),
    "count encrypting -1": lambda m: _forged(m, COUNT, [-1]),
    "count encrypting 1000": lambda m: _forged(m, COUNT, [1000]),
    "histogram with a negative bucket": lambda m: _forged(m, HIST, [-1, 1, 1, 0]),
    "histogram with no bucket set": lambda m: _forged(m, HIST, [0, 0, 0, 0]),
    "histogram slot overflowing into its neighbour": lambda m: _forged(
        m, HIST, [(1 << _width(m, HIST)) + 1, 0, 0, 0]),
    "sum below zero": lambda m: _forged(m, SUM, [-5]),
    "histogram with two buckets": lambda m: _forged(m, HIST, [0, 1, 1, 0]),
    "sum above its bound": lambda m: _forged(m, SUM, [101]),
    "compact proof of a count encrypting 2": lambda m: _forged(m, COUNT, [2], "compact"),
    "compact proof of a histogram with two buckets": lambda m: _forged(
        m, HIST, [0, 1, 1, 0], "compact"),
    "compact proof of a sum above its bound": lambda m: _forged(m, SUM, [101], "compact"),
    "proof replayed under another report id": lambda m: _replayed(m, "report id"),
    "proof replayed under another window": lambda m: _replayed(m, "window"),
    "proof replayed under another metric": lambda m: _replayed(m, "metric"),
    "proof stripped": lambda m: dataclasses.replace(paillier_report(m, COUNT, 1), proof=None),
    "proof on a validity = none metric": lambda m: dataclasses.replace(
        paillier_report(m, UNPROVEN, 1), proof=paillier_report(m, COUNT, 1).proof),
}
EXPECTED = {
    "proof stripped": "requires a validity proof",
    "proof on a validity = none metric": 'has validity = "none" and takes no proof',
}


@pytest.mark.parametrize("media", [codec.JSON, codec.CBOR])
@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_cheating_client_is_refused_and_nothing_is_stored(
    deployed: Deployment, manifest: Manifest, cheat: str, media: str
) -> None:
    before_ids, before_counts = _stored_ids(deployed), _counts(deployed)
    honest = paillier_report(manifest, COUNT, 1)
    response = post_reports(deployed, [honest, CHEATS[cheat](manifest)], media=media)
    assert response.status_code == 400, response.text[:500]
    body = problem(response)
    assert body["code"] == "invalid-proof", body
    assert body["detail"].startswith("batch.reports[1]"), body["detail"]
    assert EXPECTED.get(cheat, "does not verify") in body["detail"], body["detail"]
    assert _stored_ids(deployed) == before_ids
    assert _counts(deployed) == before_counts


def test_honest_batch_after_the_cheats_is_accepted_with_its_proofs(
    deployed: Deployment, manifest: Manifest
) -> None:
    for cheat in ("count encrypting 2", "proof stripped"):
        assert post_reports(deployed, [CHEATS[cheat](manifest)]).status_code == 400
    reports = [paillier_report(manifest, COUNT, 1), paillier_report(manifest, HIST, 2.5),
               paillier_report(manifest, SUM, 42), paillier_report(manifest, UNPROVEN, 1)]
    assert receipt(post_reports(deployed, reports)) == (4, 0)
    uri = f"file:{deployed.server_dir / 'aggregator.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        stored = dict(conn.execute(
            "SELECT report_id, proof FROM reports WHERE report_id IN (?, ?, ?, ?)",
            [r.report_id for r in reports]).fetchall())
    assert stored[reports[3].report_id] is None  # validity = "none": no proof to keep
    for report in reports[:3]:
        assert codec.loads(stored[report.report_id].encode()) == report.proof


def test_refused_proofs_are_counted_in_metrics(deployed: Deployment,
                                               manifest: Manifest) -> None:
    def refused(reason: str) -> float:
        text = deployed_metrics(deployed)
        line = f'blindsum_refused_proofs_total{{reason="{reason}"}}'
        return sum(float(row.split()[-1]) for row in text.splitlines()
                   if row.startswith(line))

    before = {reason: refused(reason) for reason in ("invalid", "missing")}
    post_reports(deployed, [CHEATS["count encrypting 2"](manifest)])
    post_reports(deployed, [CHEATS["proof stripped"](manifest)])
    assert refused("invalid") == before["invalid"] + 1
    assert refused("missing") == before["missing"] + 1


def deployed_metrics(dep: Deployment) -> str:
    response = requests.get(f"{dep.server.url}/metrics", verify=dep.verify, timeout=30)
    assert response.status_code == 200
    return response.text
