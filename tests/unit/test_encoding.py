"""Encoding: clipping, fixed point with offsets, one-hot histograms, decoding."""

from __future__ import annotations

import pytest

from blindsum.shared.encoding import clipped_value, decode, encode
from blindsum.shared.errors import InvalidInput
from blindsum.shared.policy import MetricPolicy

PRIVACY = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 5.0}


def policy(kind: str, **extra: object) -> MetricPolicy:
    raw: dict[str, object] = {"kind": kind, "scheme": "paillier", "privacy": PRIVACY}
    raw.update(extra)
    return MetricPolicy.from_mapping("m", raw)


def test_sum_with_negative_bounds_uses_an_offset() -> None:
    temp = policy("mean", lower=-20, upper=60, precision=0.1)
    assert encode(temp, -20) == [0]
    assert encode(temp, 0) == [200]
    assert encode(temp, 60) == [800]


def test_values_outside_bounds_are_clipped() -> None:
    temp = policy("sum", lower=-20, upper=60, precision=0.1)
    assert encode(temp, -1e9) == [0]
    assert encode(temp, 1e9) == [800]
    assert clipped_value(temp, 75.0) == pytest.approx(60.0)


def test_histogram_is_one_hot_with_outer_buckets_clipping() -> None:
    hist = policy("histogram", buckets=[0, 10, 20, 30])
    assert encode(hist, 15) == [0, 1, 0]
    assert encode(hist, 10) == [0, 1, 0]
    assert encode(hist, -5) == [1, 0, 0]
    assert encode(hist, 30) == [0, 0, 1]


def test_vector_encodes_each_coordinate() -> None:
    vec = policy("vector", dimension=3, lower=0, upper=10, precision=0.5)
    assert encode(vec, [0, 5, 99]) == [0, 10, 20]


@pytest.mark.parametrize("value", ["3", None, float("nan"), float("inf"), True, b"1", [1]])
def test_scalar_metric_rejects_values_of_the_wrong_type(value: object) -> None:
    with pytest.raises(InvalidInput):
        encode(policy("sum", lower=0, upper=10), value)


def test_vector_of_wrong_length_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="needs 3 numbers, got 2"):
        encode(policy("vector", dimension=3, lower=0, upper=1), [0, 1])


def test_count_rejects_fractions() -> None:
    with pytest.raises(InvalidInput, match="whole numbers"):
        encode(policy("count", upper=5), 1.5)


def test_decode_undoes_the_offset_with_the_report_count() -> None:
    temp = policy("sum", lower=-20, upper=60, precision=0.1)
    reports = [-20.0, 0.0, 10.5]
    slot_sum = sum(encode(temp, v)[0] for v in reports)
    decoded = decode(temp, [slot_sum], len(reports), half_width=10)
    assert decoded.value == pytest.approx(sum(reports))
    assert decoded.ci == pytest.approx((sum(reports) - 1.0, sum(reports) + 1.0))


def test_decode_mean_divides_by_the_report_count() -> None:
    temp = policy("mean", lower=-20, upper=60, precision=0.1)
    reports = [-20.0, 0.0, 10.5, 33.3]
    slot_sum = sum(encode(temp, v)[0] for v in reports)
    decoded = decode(temp, [slot_sum], len(reports), half_width=4)
    assert decoded.value == pytest.approx(sum(reports) / 4)
    low, high = decoded.ci  # type: ignore[misc]
    assert high - low == pytest.approx(2 * 4 * 0.1 / 4)


def test_decode_refuses_wrong_slot_count() -> None:
    with pytest.raises(InvalidInput, match="has 3 slots"):
        decode(policy("histogram", buckets=[0, 1, 2, 3]), [1, 2], 3, 1.0)
