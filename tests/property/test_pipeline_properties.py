"""encode -> encrypt -> add -> decrypt -> decode equals the clipped sum, for any values."""

from __future__ import annotations

import math

import gmpy2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blindsum.shared.encoding import clipped_value, decode, encode
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy

PRIVACY = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 1.0}
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

bounds = st.tuples(st.integers(-10_000, 10_000), st.integers(1, 5_000)).map(
    lambda lw: (lw[0], lw[0] + lw[1])
)
precisions = st.sampled_from([1.0, 0.5, 0.25, 0.1, 0.01])
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def _sum_policy(kind: str, low: int, high: int, precision: float, scheme: str,
                max_contributors: int = 1000) -> MetricPolicy:
    return MetricPolicy.from_mapping("p", {
        "kind": kind, "scheme": scheme, "lower": low, "upper": high, "precision": precision,
        "max_contributors": max_contributors, "min_contributors": 1, "privacy": PRIVACY})


def _roundtrip(secret, policy: MetricPolicy, reports: list) -> list[int]:  # type: ignore[no-untyped-def]
    public, spec = secret.public, slot_spec(policy)
    loaded = [public.load(public.encrypt(encode(policy, v), spec), spec) for v in reports]
    return secret.decrypt(public.dump(public.add_many(loaded)), spec)


@SETTINGS
@given(bounds, precisions, st.lists(values, min_size=1, max_size=12),
       st.sampled_from(["sum", "mean"]))
def test_paillier_sum_and_mean_equal_the_clipped_truth(
    paillier_secret, lowhigh, precision, reports, kind
) -> None:
    low, high = lowhigh
    if (high - low) / precision > 2**40 or not float((high - low) / precision).is_integer():
        return
    policy = _sum_policy(kind, low, high, precision, "paillier")
    slot_sums = _roundtrip(paillier_secret, policy, reports)
    decoded = decode(policy, slot_sums, len(reports), half_width=0)
    truth = sum(clipped_value(policy, v) for v in reports)  # type: ignore[misc]
    if kind == "mean":
        truth /= len(reports)
    assert math.isclose(decoded.value, truth, rel_tol=1e-9, abs_tol=1e-6)  # type: ignore[arg-type]


@SETTINGS
@given(st.lists(st.floats(-50, 6000, allow_nan=False), min_size=1, max_size=20))
def test_histograms_count_every_report_once(paillier_secret, ckks_secret, reports) -> None:
    for secret, scheme in ((paillier_secret, "paillier"), (ckks_secret, "ckks")):
        policy = MetricPolicy.from_mapping("h", {
            "kind": "histogram", "scheme": scheme, "buckets": [0, 10, 100, 1000, 5000],
            "min_contributors": 1, "privacy": PRIVACY})
        counts = _roundtrip(secret, policy, reports)
        expected = [sum(col) for col in zip(*(encode(policy, v) for v in reports), strict=True)]
        assert counts == expected and sum(counts) == len(reports)


@SETTINGS
@given(st.lists(st.lists(st.floats(-100, 100, allow_nan=False), min_size=6, max_size=6),
                min_size=1, max_size=8))
def test_ckks_vectors_sum_exactly_after_rounding(ckks_secret, reports) -> None:
    policy = MetricPolicy.from_mapping("v", {
        "kind": "vector", "scheme": "ckks", "dimension": 6, "lower": -50, "upper": 50,
        "precision": 0.5, "min_contributors": 1, "privacy": PRIVACY})
    slot_sums = _roundtrip(ckks_secret, policy, reports)
    expected = [sum(col) for col in zip(*(encode(policy, v) for v in reports), strict=True)]
    assert slot_sums == expected


def test_largest_paillier_window_decrypts_exactly(paillier_secret) -> None:
    """A million reports all at the upper bound (the policy's maximum window): no overflow."""
    contributors = 1_000_000
    policy = _sum_policy("sum", -20, 60, 0.1, "paillier", max_contributors=contributors)
    public, spec = paillier_secret.public, slot_spec(policy)
    top = public.load(public.encrypt(encode(policy, 1e9), spec), spec)
    # c^k is the homomorphic sum of k copies: the whole window in one exponentiation
    aggregate = [gmpy2.powmod(c, contributors, public.nsquare) for c in top]
    slot_sums = paillier_secret.decrypt(public.dump(aggregate), spec)
    assert slot_sums == [policy.slot_max * contributors]
    decoded = decode(policy, slot_sums, contributors, half_width=0)
    assert math.isclose(decoded.value, 60.0 * contributors, rel_tol=1e-12)  # type: ignore[arg-type]


def test_largest_ckks_window_decrypts_exactly(ckks_secret) -> None:
    """Every report of a full window at the upper bound, independently encrypted.

    (CKKS errors of independent encryptions add like a random walk; copies of one
    ciphertext would add linearly, which honest reports never do.)
    """
    contributors = 1024
    policy = MetricPolicy.from_mapping("v", {
        "kind": "vector", "scheme": "ckks", "dimension": 4, "lower": -50, "upper": 50,
        "precision": 0.01, "min_contributors": 1, "max_contributors": contributors,
        "privacy": PRIVACY})
    public, spec = ckks_secret.public, slot_spec(policy)
    reports = [public.load(public.encrypt(encode(policy, [1e9] * 4), spec), spec)
               for _ in range(contributors)]
    slot_sums = ckks_secret.decrypt(public.dump(public.add_many(reports)), spec)
    assert slot_sums == [policy.slot_max * contributors] * 4
