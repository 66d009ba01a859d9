"""The key-holder's answers reveal nothing but noisy values: attacks on the release path.

Each attack runs against the live deployment, as the party who would mount it: a server
holding the release token (or anyone who stole it) crafting aggregates from a stored
victim report, or a client with an ingest token sending reports no honest SDK would.
Before releases paid first, these were oracles: a refusal (and its detail) depended on the
decrypted plaintext, was free and could be repeated; now every decryption is debited and
consumes its window, and nothing after decryption can refuse.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time

import pytest
import tenseal as ts
from security_kit import (
    call,
    closed_window,
    keyholder_manifest,
    paillier_report,
    paillier_scheme,
    post_release,
    post_reports,
    problem,
    receipt,
    snapshot,
)

from blindsum.server.aggregator.store import unpack_blobs
from blindsum.server.processes import Deployment
from blindsum.shared import codec
from blindsum.shared.codec import ReleaseRequest, Report
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import Manifest
from blindsum.shared.schemes.ckks import SCALE_BITS, SLOTS, CkksPublic
from blindsum.shared.signing import parse_identity, verify_document

ORACLE, COUNT, HIST, CKKS, HORIZON = (
    "sec_oracle", "sec_clamp_count", "sec_clamp_hist", "sec_ckks_round", "sec_horizon")


def _budget(dep: Deployment, metric: str) -> dict[str, float]:
    (row,) = [m for m in snapshot(dep).budget if m["metric"] == metric]
    return row


def _payload(dep: Deployment, answer) -> dict:  # type: ignore[no-untyped-def]
    return verify_document(answer.json(), parse_identity(dep.identity), "release result")


def _stored_ciphertext(dep: Deployment, report_id: bytes) -> bytes:
    """A stored report's ciphertext, read from the server's database: the server has it."""
    uri = f"file:{dep.server_dir / 'aggregator.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        (blob,) = conn.execute("SELECT ciphertexts FROM reports WHERE report_id = ?",
                               (report_id,)).fetchone()
    (ciphertext,) = unpack_blobs(blob)
    return ciphertext


def _shifted(manifest: Manifest, ciphertext: bytes, metric: str, shift: int) -> bytes:
    """``c * Enc(shift)``: the victim's plaintext plus ``shift`` (mod n), as a server would."""
    scheme = paillier_scheme(manifest)
    policy = manifest.policy(metric)
    from blindsum.shared.manifest import slot_spec

    spec = slot_spec(policy)
    (victim,) = scheme.load([ciphertext], spec)
    offset = scheme.encrypt_plaintext(shift % scheme.n)
    (total,) = scheme.dump([victim * offset % scheme.nsquare])
    return total


def _request(manifest: Manifest, metric: str, window: int, aggregate: tuple[bytes, ...],
             count: int, *, early: bool) -> ReleaseRequest:
    policy = manifest.policy(metric)
    kid = manifest.active_key(policy.scheme).key_id
    return ReleaseRequest(metric, policy.version, window, kid, count,
                          secrets.token_bytes(32), aggregate, early=early)


def test_the_bisection_oracle_gets_one_paid_noisy_answer_per_window(
    deployed: Deployment,
) -> None:
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(ORACLE)
    victim = paillier_report(manifest, ORACLE, 1234)
    assert receipt(post_reports(deployed, [victim])) == (1, 0)
    stolen = _stored_ciphertext(deployed, victim.report_id)
    spent = _budget(deployed, ORACLE)["spent_epsilon"]
    # Each probe shifts the victim's value by t and claims k reports. Before, the answer
    # was "inconsistent" (t < -v), "outside the slot layout" or a release: free bits.
    probes = [(-1000, 1), (-2000, 2), (1_000_000, 3), (-1, 4)]
    statuses = []
    for shift, windows_ago in probes:
        window = closed_window(policy, windows_ago)
        body = _request(manifest, ORACLE, window, (_shifted(manifest, stolen, ORACLE, shift),),
                        policy.min_contributors, early=False)
        answer = post_release(deployed, body)
        statuses.append(answer.status_code)
        payload = _payload(deployed, answer)
        assert 0 <= payload["value"] <= policy.min_contributors * 3600
        # the second probe of the same window is refused on public grounds, for free
        again = _request(manifest, ORACLE, window,
                         (_shifted(manifest, stolen, ORACLE, shift + 1),),
                         policy.min_contributors, early=False)
        refused = post_release(deployed, again)
        assert refused.status_code == 409, refused.text
        detail = problem(refused)
        assert detail["code"] == "already-released"
        assert detail["detail"] == (f"window {window} of {ORACLE!r} v1 under key "
                                    f"{body.key_id!r} was already released with other reports")
    assert statuses == [201] * len(probes)
    # every decryption was paid for, none of the refusals was
    after = _budget(deployed, ORACLE)
    assert after["spent_epsilon"] == spent + len(probes) * policy.privacy.epsilon


def test_a_repeated_request_gets_the_same_noisy_answer_not_a_fresh_draw(
    deployed: Deployment,
) -> None:
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(ORACLE)
    report = paillier_report(manifest, ORACLE, 10)
    aggregate = (_shifted(manifest, report.ciphertexts[0], ORACLE, 20),)  # type: ignore[arg-type]
    body = _request(manifest, ORACLE, closed_window(policy, 6), aggregate, 3, early=False)
    spent = _budget(deployed, ORACLE)["spent_epsilon"]
    first = post_release(deployed, body)
    answers = [post_release(deployed, body) for _ in range(5)]
    assert first.status_code == 201 and {a.status_code for a in answers} == {200}
    assert all(a.json() == first.json() for a in answers)  # averaging gains nothing
    assert _budget(deployed, ORACLE)["spent_epsilon"] == spent + policy.privacy.epsilon


def _malicious(manifest: Manifest, metric: str, plaintext: int) -> Report:
    """A report whose ciphertext an honest SDK would never send (no proofs yet)."""
    honest = paillier_report(manifest, metric, 0)
    scheme = paillier_scheme(manifest)
    forged = scheme.dump([scheme.encrypt_plaintext(plaintext % scheme.n)])
    return Report(honest.report_id, honest.metric, honest.version, honest.key_id,
                  honest.window, tuple(forged))


def _release_now(dep: Deployment, metric: str) -> dict:  # type: ignore[type-arg]
    answer = call("POST", f"{dep.server.url}/v1/windows/release", token=dep.admin_token,
                  data=codec.dumps({"metric": metric}), media=codec.JSON, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize(("metric", "forged"), [
    (COUNT, -1000),          # a negative count: the honest sum is below 1000
    ("sec_clamp_over", 1000),  # far over range
    (HIST, 1 | (1 << 40)),   # two buckets set at once (any slot width below 40 bits)
])
def test_an_invalid_client_report_never_blocks_a_window(
    deployed: Deployment, metric: str, forged: int,
) -> None:
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(metric)
    honest = [paillier_report(manifest, metric, 1) for _ in range(3)]
    assert receipt(post_reports(deployed, [*honest, _malicious(manifest, metric, forged)])) \
        == (4, 0)
    outcome = _release_now(deployed, metric)
    assert outcome["refused"] == [] and outcome["failed"] == [], outcome
    (released,) = outcome["released"]
    results = call("GET", f"{deployed.server.url}/v1/published/{metric}").json()["results"]
    payload = verify_document(results[-1]["document"], parse_identity(deployed.identity),
                              "result")
    assert payload["report_count"] == 4 == released["report_count"]
    values = payload["value"] if isinstance(payload["value"], list) else [payload["value"]]
    assert all(0 <= v <= 4 * policy.slot_max for v in values), payload


def _ckks_public(dep: Deployment, manifest: Manifest) -> CkksPublic:
    entry = manifest.active_key("ckks")
    context = call("GET", f"{dep.keyholder.url}/v1/keys/{entry.key_id}/context").content
    return CkksPublic.from_context_bytes(context, entry.key_id)


def test_a_ckks_aggregate_at_a_rounding_boundary_is_answered_once_with_noise(
    deployed: Deployment,
) -> None:
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(CKKS)
    public = _ckks_public(deployed, manifest)
    # k + 1/2 in every slot: rounding is decided by the secret-key-dependent error, the
    # Li-Micciancio channel, and a tolerance check would have refused it for free.
    crafted = ts.ckks_vector(public._context, [2.5] * SLOTS, scale=2.0**SCALE_BITS)
    aggregate = (crafted.serialize(),)
    public.load(list(aggregate), _spec(manifest, CKKS))  # a well-formed ciphertext
    spent = _budget(deployed, CKKS)["spent_epsilon"]
    window = policy.window_start(time.time())
    answer = post_release(deployed, _request(manifest, CKKS, window, aggregate, 3, early=True))
    assert answer.status_code == 201, answer.text
    payload = _payload(deployed, answer)
    # integers plus integer noise: no fraction of the raw decryption leaves the key-holder
    assert all(float(v).is_integer() for v in payload["noisy_value"]), payload
    again = post_release(deployed, _request(manifest, CKKS, window, aggregate, 3, early=True))
    assert again.status_code == 409 and problem(again)["code"] == "already-released"
    assert _budget(deployed, CKKS)["spent_epsilon"] == spent + policy.privacy.epsilon


def test_an_invalid_ckks_client_report_never_blocks_a_window(deployed: Deployment) -> None:
    """A fraction, a negative and a huge slot in one report: the key-holder used to refuse
    the window on its 0.25 rounding tolerance or range check; now it rounds, noises, clamps."""
    metric = "sec_clamp_ckks"
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(metric)
    public = _ckks_public(deployed, manifest)
    spec = _spec(manifest, metric)
    window = policy.window_start(time.time())
    kid = public.key_id
    honest = [Report(secrets.token_bytes(16), metric, policy.version, kid, window,
                     tuple(public.encrypt(encode(policy, [1.0] * 4), spec)))
              for _ in range(3)]
    slots = [2.5, -1000.5, 1e6 + 0.5, 0.5] + [0.0] * (SLOTS - 4)
    forged = ts.ckks_vector(public._context, slots, scale=2.0**SCALE_BITS).serialize()
    cheat = Report(secrets.token_bytes(16), metric, policy.version, kid, window, (forged,))
    assert receipt(post_reports(deployed, [*honest, cheat])) == (4, 0)
    outcome = _release_now(deployed, metric)
    assert outcome["refused"] == [] and outcome["failed"] == [], outcome
    (released,) = outcome["released"]
    results = call("GET", f"{deployed.server.url}/v1/published/{metric}").json()["results"]
    payload = verify_document(results[-1]["document"], parse_identity(deployed.identity),
                              "result")
    assert payload["report_count"] == 4 == released["report_count"]
    assert all(0 <= v <= 4 * policy.upper for v in payload["value"]), payload
    assert all(float(v).is_integer() for v in payload["noisy_value"]), payload
    # slots of -1000 and 10^6 lie far beyond the noise's 1e-9 tail: flagged, from the noisy
    # value alone
    assert payload["consistent"] is False, payload


def _spec(manifest: Manifest, metric: str):  # type: ignore[no-untyped-def]
    from blindsum.shared.manifest import slot_spec

    return slot_spec(manifest.policy(metric))


@pytest.mark.parametrize(("window_of", "reason"), [
    (lambda policy, now: 0, "ended before version 1"),                        # 1970
    (lambda policy, now: 2**40 - 2**40 % 3600, "has not started yet"),        # year 36812
    (lambda policy, now: policy.window_start(now) - 3 * 86400, "ended before"),  # pre-registration
])
def test_a_window_outside_the_horizon_is_refused_before_decryption(
    deployed: Deployment, window_of, reason: str,  # type: ignore[no-untyped-def]
) -> None:
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(HORIZON)
    report = paillier_report(manifest, HORIZON, 1)
    before = _budget(deployed, HORIZON)
    body = _request(manifest, HORIZON, window_of(policy, time.time()),
                    tuple(report.ciphertexts), 1, early=True)  # type: ignore[arg-type]
    answer = post_release(deployed, body)
    assert answer.status_code == 422, answer.text
    assert problem(answer)["code"] == "release-refused"
    assert reason in problem(answer)["detail"]
    assert _budget(deployed, HORIZON) == before  # nothing paid, so nothing decrypted


def test_early_release_is_only_for_a_window_still_collecting(deployed: Deployment) -> None:
    manifest = keyholder_manifest(deployed)
    policy = manifest.policy(HORIZON)
    report = paillier_report(manifest, HORIZON, 1)
    ahead = policy.window_start(time.time()) + policy.window_seconds
    answer = post_release(deployed, _request(manifest, HORIZON, ahead,
                                             tuple(report.ciphertexts), 1,  # type: ignore[arg-type]
                                             early=True))
    assert answer.status_code == 422 and "has not started" in problem(answer)["detail"]
