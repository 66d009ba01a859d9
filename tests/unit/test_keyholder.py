"""The key-holder's release rules, ledger, audit chain and key store, in process."""

from __future__ import annotations

import os
import secrets
import stat
import threading
import time
from pathlib import Path

import pytest

from blindsum.server.keyholder import accounting, audit, ledger
from blindsum.server.keyholder.cost import release_cost
from blindsum.server.keyholder.service import Keyholder
from blindsum.server.keystore import KeyStore
from blindsum.shared.codec import ReleaseRequest
from blindsum.shared.encoding import encode
from blindsum.shared.errors import (
    AlreadyReleased,
    BudgetExhausted,
    InvalidConfig,
    InvalidPolicy,
    KeyStoreError,
    ReleaseInProgress,
    ReleaseInterrupted,
    ReleaseRefused,
)
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.policy import MetricPolicy

PASS = "correct horse battery staple"


def registered_at_epoch() -> float:
    """Registration clock for these tests: policies and keys exist from 1970 on, so the
    windows below (0, 3600, ...) are inside the release horizon and long closed."""
    return 0.0


@pytest.fixture(scope="module")
def holder_dir(tmp_path_factory: pytest.TempPathFactory, test_policies) -> Path:
    data_dir = tmp_path_factory.mktemp("kh") / "data"
    holder, _ = Keyholder.init(data_dir, PASS, paillier_bits=2048,
                                  clock=registered_at_epoch)
    holder.add_policies(test_policies)
    return data_dir


@pytest.fixture
def holder(holder_dir: Path) -> Keyholder:
    return Keyholder.open(holder_dir, PASS)


def window_of(policy: MetricPolicy, now: float) -> int:
    return int(now) - int(now) % policy.window_seconds


def aggregate_request(holder: Keyholder, metric: str, values: list, *, window: int,
                      early: bool = True, count: int | None = None,
                      key_id: str | None = None) -> ReleaseRequest:
    manifest = Manifest.verify(holder.db.latest_manifest(), holder.identity.public_key())
    policy = manifest.policy(metric)
    key = manifest.key(key_id) if key_id else manifest.active_key(policy.scheme)
    scheme = holder.secret_for(policy.scheme, key.key_id).public
    spec = slot_spec(policy)
    loaded = [scheme.load(scheme.encrypt(encode(policy, v), spec), spec) for v in values]
    ids = [secrets.token_bytes(16) for _ in values]
    from blindsum.shared.codec import report_ids_digest

    return ReleaseRequest(metric, policy.version, window, key.key_id,
                          count if count is not None else len(values),
                          report_ids_digest(ids), tuple(scheme.dump(scheme.add_many(loaded))),
                          early)


def test_init_refuses_to_overwrite(holder_dir: Path) -> None:
    with pytest.raises(InvalidConfig, match="refusing to overwrite"):
        Keyholder.init(holder_dir, PASS)


def test_key_files_are_private_and_sealed(holder_dir: Path) -> None:
    files = list((holder_dir / "keys").iterdir())
    assert len(files) == 3  # identity, paillier, ckks
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert b'"sealed": true' in path.read_bytes()
    assert stat.S_IMODE((holder_dir / "keys").stat().st_mode) == 0o700


def test_wrong_passphrase_is_a_clear_error(holder_dir: Path) -> None:
    with pytest.raises(KeyStoreError, match="wrong key store passphrase"):
        Keyholder.open(holder_dir, "wrong")
    with pytest.raises(KeyStoreError, match="encrypted"):
        Keyholder.open(holder_dir, None)


def test_swapped_key_files_are_detected(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path, PASS)
    store.write("a.key", b"secret a")
    store.write("b.key", b"secret b")
    os.replace(tmp_path / "keys" / "a.key", tmp_path / "keys" / "b.key")
    with pytest.raises(KeyStoreError):
        store.read("b.key")


def test_release_publishes_a_noisy_value_with_ci(holder: Keyholder) -> None:
    values = [100, 200, 300, 400, 500]
    request = aggregate_request(holder, "seconds", values, window=0)
    document = holder.releaser().release(request).document
    from blindsum.shared.signing import verify_document

    payload = verify_document(document, holder.identity.public_key(), "result")
    assert payload["report_count"] == 5 and payload["metric"] == "seconds"
    low, high = payload["ci"]
    # the interval is around the noisy value, clipped to the domain [0, 5 * 600]
    assert 0 <= low <= payload["value"] <= high <= 3000
    assert payload["value"] == min(max(payload["noisy_value"], 0), 3000)
    assert payload["consistent"] is True
    assert payload["epsilon"] == 1.0 and payload["mechanism"] == "gaussian"


def test_the_same_request_again_gets_the_stored_result_and_pays_once(
    holder: Keyholder,
) -> None:
    request = aggregate_request(holder, "opened", [1, 1, 0], window=3600)
    first = holder.releaser().release(request)
    spent = ledger.budget(holder.db.conn, holder.db.policy("opened", 1)).spent_epsilon  # type: ignore[arg-type]
    again = holder.releaser().release(request)
    assert first.created and not again.created and again.document == first.document
    assert ledger.budget(holder.db.conn,  # type: ignore[arg-type]
                         holder.db.policy("opened", 1)).spent_epsilon == spent


def test_another_request_for_a_consumed_window_is_refused(holder: Keyholder) -> None:
    holder.releaser().release(aggregate_request(holder, "opened", [1, 1, 0], window=14400))
    with pytest.raises(AlreadyReleased, match="with other reports"):
        holder.releaser().release(aggregate_request(holder, "opened", [1, 1, 1],
                                                    window=14400))


def test_release_below_min_contributors_is_refused(holder: Keyholder) -> None:
    with pytest.raises(ReleaseRefused, match="needs at least 3"):
        holder.releaser().release(aggregate_request(holder, "opened", [1, 1], window=7200))


def test_open_window_is_refused_unless_policy_allows_early_release(holder: Keyholder) -> None:
    import time

    policy = holder.db.policy("strict", 1)
    assert policy is not None
    request = aggregate_request(holder, "strict", [1, 1, 1],
                                window=window_of(policy, time.time()))
    with pytest.raises(ReleaseRefused, match="forbids early release"):
        holder.releaser().release(request)


def test_an_aggregate_no_honest_reports_give_is_released_clamped_and_flagged(
    holder: Keyholder,
) -> None:
    # 300 histogram reports claimed as 3: every bucket decrypts far above what 3 can reach
    values = [5, 50, 700, 2000] * 75
    request = aggregate_request(holder, "load_ms", values, window=10800, count=3)
    document = holder.releaser().release(request).document
    from blindsum.shared.signing import verify_document

    payload = verify_document(document, holder.identity.public_key(), "result")
    assert payload["consistent"] is False
    assert all(0 <= v <= 3 for v in payload["value"])
    assert all(0 <= low <= high <= 3 for low, high in payload["ci"])


def test_budget_is_never_overspent_by_racing_releases(holder_dir: Path) -> None:
    # 'temp' (epsilon 1, delta 1e-7 per release; budget (3, 3e-7)) allows 3 releases under
    # basic composition and 8 in zCDP; twelve threads race for twelve windows.
    temp = Keyholder.open(holder_dir, PASS).db.policy("temp", 1)
    assert temp is not None
    allowed = accounting.releases_within(release_cost(temp).rho, 3.0, 3e-7)
    assert allowed == 8
    requests = [aggregate_request(Keyholder.open(holder_dir, PASS), "temp", [1.0, 2.0, 3.0],
                                  window=3600 * (100 + i)) for i in range(12)]
    outcomes: list[str] = []
    lock = threading.Lock()

    def race(request: ReleaseRequest) -> None:
        holder = Keyholder.open(holder_dir, PASS)
        try:
            holder.releaser().release(request)
            result = "released"
        except BudgetExhausted:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=race, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("released") == allowed and outcomes.count("refused") == 12 - allowed
    holder = Keyholder.open(holder_dir, PASS)
    state = ledger.budget(holder.db.conn, temp)
    assert state.releases == allowed and state.accounting == "zcdp"
    assert state.epsilon <= 3.0 and state.delta == 3e-7
    assert state.spent_epsilon == pytest.approx(allowed)  # what basic composition would say


def test_refusals_and_releases_are_in_an_intact_audit_chain(holder: Keyholder) -> None:
    events = [e.event for e in audit.entries(holder.db.conn)]
    assert "release" in events and "release-refused" in events
    assert audit.verify_chain(holder.db.conn) is None


def test_tampering_with_the_audit_log_is_detected(tmp_path: Path, test_policies) -> None:
    holder, _ = Keyholder.init(tmp_path / "kh", None, paillier_bits=2048,
                                  clock=registered_at_epoch)
    holder.add_policies(test_policies)
    holder.db.conn.execute("UPDATE audit SET detail = '{}' WHERE seq = 2")
    assert audit.verify_chain(holder.db.conn) == 2


def test_changing_a_registered_policy_needs_a_new_version(holder: Keyholder,
                                                          test_policies) -> None:
    original = next(p for p in test_policies if p.name == "seconds")
    changed = MetricPolicy.from_mapping("seconds", {**original.to_json(), "upper": 60})
    with pytest.raises(InvalidPolicy, match="bump its version"):
        holder.add_policies([changed])
    assert holder.add_policies([original]) == []


def test_ckks_release_rounds_and_noises(holder: Keyholder) -> None:
    values = [[float(i % 60)] * 8 for i in range(10)]
    request = aggregate_request(holder, "features", values, window=0)
    document = holder.releaser().release(request).document
    from blindsum.shared.signing import verify_document

    payload = verify_document(document, holder.identity.public_key(), "result")
    assert len(payload["value"]) == 8 and len(payload["ci"]) == 8
    assert all(isinstance(v, float) for v in payload["value"])


def test_spec_of_every_test_policy_fits_its_scheme(holder: Keyholder, test_policies) -> None:
    for policy in test_policies:
        key = "pai" if policy.scheme == "paillier" else "ckks"
        kid = next(k.key_id for k in holder.db.key_records() if k.key_id.startswith(key))
        scheme = holder.secret_for(policy.scheme, kid).public
        assert scheme.capacity_error(slot_spec(policy)) is None


def test_policy_that_could_overflow_its_scheme_is_refused(holder: Keyholder) -> None:
    huge = MetricPolicy.from_mapping("huge_vector", {
        "kind": "vector", "scheme": "ckks", "dimension": 4, "lower": 0, "upper": 1e6,
        "max_contributors": 10**9,
        "privacy": {"mechanism": "laplace", "epsilon": 1, "budget_epsilon": 1}})
    with pytest.raises(InvalidPolicy, match="does not fit ckks"):
        holder.add_policies([huge])
    assert holder.db.policy("huge_vector", 1) is None


def test_rotation_keeps_the_old_key_accepted_and_retire_drops_it(tmp_path: Path,
                                                                 test_policies) -> None:
    holder, init = Keyholder.init(tmp_path / "kh", None, paillier_bits=2048,
                                  clock=registered_at_epoch)
    holder.add_policies(test_policies)
    old = next(k for k in init.key_ids if k.startswith("pai"))
    new = holder.rotate("paillier")
    manifest = Manifest.verify(holder.db.latest_manifest(), holder.identity.public_key())
    assert manifest.active_key("paillier").key_id == new
    assert manifest.key(old).status == "accepted"
    # a window collected under the old key is still released, even once it is retired
    request = aggregate_request(holder, "opened", [1, 1, 1], window=0, key_id=old)
    assert aggregate_request(holder, "opened", [1, 1, 1], window=0).key_id == new
    with pytest.raises(InvalidConfig, match="rotate before retiring"):
        holder.retire(new)
    holder.retire(old)
    manifest = Manifest.verify(holder.db.latest_manifest(), holder.identity.public_key())
    assert old not in {k.key_id for k in manifest.keys}
    holder.releaser().release(request)


def test_a_window_split_by_rotation_is_released_once_per_key(tmp_path: Path,
                                                             test_policies) -> None:
    holder, init = Keyholder.init(tmp_path / "kh", None, paillier_bits=2048,
                                  clock=registered_at_epoch)
    holder.add_policies(test_policies)
    old = next(k for k in init.key_ids if k.startswith("pai"))
    holder.rotate("paillier")
    under_old = aggregate_request(holder, "opened", [1, 1, 1], window=0, key_id=old)
    under_new = aggregate_request(holder, "opened", [1, 0, 1, 1], window=0)
    first = holder.releaser().release(under_old).document
    holder.releaser().release(under_new)
    again = aggregate_request(holder, "opened", [1, 1, 1], window=0, key_id=old)
    with pytest.raises(AlreadyReleased, match="under key"):
        holder.releaser().release(again)
    assert holder.releaser().stored("opened", 1, 0, old) == first
    policy = holder.db.policy("opened", 1)
    assert ledger.budget(holder.db.conn, policy).spent_epsilon == pytest.approx(2.0)  # type: ignore[arg-type]


def test_a_retired_metric_leaves_the_manifest_and_is_never_released(
    tmp_path: Path, test_policies
) -> None:
    holder, _ = Keyholder.init(tmp_path / "kh", None, paillier_bits=2048,
                                  clock=registered_at_epoch)
    holder.add_policies(test_policies)
    request = aggregate_request(holder, "opened", [1, 1, 1], window=0)
    assert holder.retire_policy("opened") is True
    assert holder.retire_policy("opened") is False
    manifest = Manifest.verify(holder.db.latest_manifest(), holder.identity.public_key())
    assert "opened" not in manifest.policies and "seconds" in manifest.policies
    with pytest.raises(ReleaseRefused, match="retired"):
        holder.releaser().release(request)
    assert audit.entries(holder.db.conn)[-1].detail["reason"] == "release-refused"
    opened = next(p for p in test_policies if p.name == "opened")
    with pytest.raises(InvalidPolicy, match="was retired"):
        holder.add_policies([MetricPolicy.from_mapping("opened", {**opened.to_json(),
                                                                  "version": 2})])
    with pytest.raises(InvalidPolicy, match="no metric"):
        holder.retire_policy("never_registered")


class _CountingSecret:
    """The real secret key, counting decryptions (and failing them on request)."""

    def __init__(self, secret, fail: bool) -> None:  # type: ignore[no-untyped-def]
        self._secret, self._fail, self.decryptions = secret, fail, 0
        self.public = secret.public

    def decrypt(self, blobs, spec):  # type: ignore[no-untyped-def]
        self.decryptions += 1
        if self._fail:
            raise MemoryError("the process ran out of memory mid-release")
        return self._secret.decrypt(blobs, spec)


def _releaser_with(holder: Keyholder, counting: _CountingSecret):  # type: ignore[no-untyped-def]
    from blindsum.server.keyholder.release import Releaser

    return Releaser(holder.db, holder.identity, lambda scheme, kid: counting)  # type: ignore[arg-type,return-value]


def test_a_release_failing_after_payment_is_interrupted_for_good(holder: Keyholder) -> None:
    policy = holder.db.policy("opened", 1)
    request = aggregate_request(holder, "opened", [1, 1, 1], window=21600)
    counting = _CountingSecret(holder.secret_for("paillier", request.key_id), fail=True)
    spent = ledger.budget(holder.db.conn, policy).spent_epsilon  # type: ignore[arg-type]
    with pytest.raises(ReleaseInterrupted, match="never decrypted again"):
        _releaser_with(holder, counting).release(request)
    # paid, consumed, and the same request again is refused without a second decryption
    with pytest.raises(ReleaseInterrupted):
        _releaser_with(holder, counting).release(request)
    assert counting.decryptions == 1
    assert ledger.budget(holder.db.conn, policy).spent_epsilon == spent + 1.0  # type: ignore[arg-type]
    events = [e.event for e in audit.entries(holder.db.conn)][-3:]
    assert events == ["release-paid", "release-interrupted", "release-refused"]


def test_a_release_stuck_in_payment_is_in_progress_then_interrupted(holder: Keyholder) -> None:
    from blindsum.server.keyholder.release import PAID_LEASE_SECONDS, request_digest

    request = aggregate_request(holder, "opened", [1, 1, 1], window=25200)
    policy = holder.db.policy("opened", 1)
    assert policy is not None
    with holder.db.write() as conn:  # what a process that died after paying leaves behind
        ledger.pay(conn, metric="opened", version=1, window=25200, key_id=request.key_id,
                   report_count=3, report_ids_digest=request.report_ids_digest.hex(),
                   request_digest=request_digest(request), epsilon=1.0, delta=0.0, rho=0.5,
                   paid_seq=audit.append(conn, "release-paid", {
                       "metric": "opened", "version": 1, "window": 25200,
                       "kid": request.key_id, "request_digest": request_digest(request)}))
    counting = _CountingSecret(holder.secret_for("paillier", request.key_id), fail=False)
    with pytest.raises(ReleaseInProgress):
        _releaser_with(holder, counting).release(request)
    late = _releaser_with(holder, counting)
    late.clock = lambda: time.time() + PAID_LEASE_SECONDS + 1
    with pytest.raises(ReleaseInterrupted):
        late.release(request)
    assert counting.decryptions == 0


def test_the_horizon_bounds_releasable_windows(tmp_path: Path, test_policies) -> None:
    registered = 1_000 * 3600.0
    holder, _ = Keyholder.init(tmp_path / "kh", None, paillier_bits=2048,
                               clock=lambda: registered)
    holder.add_policies(test_policies)
    now = registered + 10 * 3600 + 1200
    holder.db.clock = lambda: now
    refused = {
        "ended before": aggregate_request(holder, "opened", [1, 1, 1],
                                          window=int(registered) - 3600, early=False),
        "has not started": aggregate_request(holder, "opened", [1, 1, 1],
                                             window=int(now) - 1200 + 3600),
        "still open": aggregate_request(holder, "opened", [1, 1, 1],
                                        window=int(now) - 1200, early=False),
    }
    for reason, request in refused.items():
        with pytest.raises(ReleaseRefused, match=reason):
            holder.releaser().release(request)
    # the window registration fell in, and the current one early, are releasable
    holder.releaser().release(aggregate_request(holder, "opened", [1, 1, 1],
                                                window=int(registered), early=False))
    holder.releaser().release(aggregate_request(holder, "opened", [1, 1, 1],
                                                window=int(now) - 1200, early=True))
    assert [e.event for e in audit.entries(holder.db.conn)].count("release-paid") == 2
