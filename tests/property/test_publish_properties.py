"""Publishing noisy slot sums: whatever the (possibly forged) sums, the published value lies
in the metric's domain, inside its interval, and every step is finite."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from blindsum.shared.encoding import publish
from blindsum.shared.policy import MetricPolicy

PRIVACY = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 5.0}
POLICIES = [
    MetricPolicy.from_mapping("c", {"kind": "count", "scheme": "paillier", "upper": 1,
                                    "privacy": PRIVACY}),
    MetricPolicy.from_mapping("m", {"kind": "mean", "scheme": "paillier", "lower": -20,
                                    "upper": 60, "precision": 0.1, "privacy": PRIVACY}),
    MetricPolicy.from_mapping("h", {"kind": "histogram", "scheme": "paillier",
                                    "buckets": [0, 1, 2, 3], "privacy": PRIVACY}),
]
# forged aggregates decrypt to anything a 3072-bit plaintext can hold, of either sign
huge = st.integers(min_value=-(2**3071), max_value=2**3071)


def _flat(x: object) -> list[float]:
    return list(x) if isinstance(x, list) else [x]  # type: ignore[list-item]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(POLICIES), st.integers(1, 10**6), st.data())
def test_published_values_stay_in_the_domain_and_in_their_interval(policy, count, data):
    noisy = data.draw(st.lists(st.one_of(huge, st.integers(-5 * count, 5 * count)),
                               min_size=policy.slot_count, max_size=policy.slot_count))
    result = publish(policy, noisy, count, half_width=3.0, tail_width=30.0)
    ceiling = count * policy.slot_max
    low_end = policy.lower if policy.kind in ("mean",) else 0.0
    high_end = policy.upper if policy.kind == "mean" else float(ceiling) * (
        policy.precision if policy.kind == "sum" else 1)
    cis = result.ci if isinstance(result.ci, list) else [result.ci]
    for value, noisy_value, (low, high) in zip(_flat(result.value), _flat(result.noisy_value),
                                               cis, strict=True):
        assert math.isfinite(value) and math.isfinite(noisy_value)
        assert low_end - 1e-9 <= low <= value <= high <= high_end + 1e-6
    if any(s < -30 or s > ceiling + 30 for s in noisy):
        assert result.consistent is False


def test_honest_noisy_sums_are_consistent_and_unclamped_inside_the_domain() -> None:
    count = POLICIES[0]
    result = publish(count, [40], 100, half_width=3.0, tail_width=30.0)
    assert result.consistent and result.value == result.noisy_value == 40.0
    assert result.ci == (37.0, 43.0)
    hist = POLICIES[2]
    result = publish(hist, [50, -2, 52], 100, half_width=3.0, tail_width=30.0)
    assert result.consistent and result.value == [50.0, 0.0, 52.0]
    assert result.noisy_value == [50.0, -2.0, 52.0] and result.ci[1] == (0.0, 1.0)
