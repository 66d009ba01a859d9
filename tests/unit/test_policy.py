"""Metric policies: TOML an operator can read, validated field by field."""

from __future__ import annotations

import math

import pytest

from blindsum.shared.errors import InvalidPolicy
from blindsum.shared.policy import MetricPolicy, load_policies_toml

SUM_TOML = """
[metrics.session_seconds]
kind = "sum"
scheme = "paillier"
lower = -10
upper = 3600
precision = 0.5
min_contributors = 5
max_contributors = 1000
privacy = { mechanism = "gaussian", epsilon = 1.0, delta = 1e-7, budget_epsilon = 10 }
"""


def _policy(**changes: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "kind": "sum", "scheme": "paillier", "lower": 0, "upper": 10, "precision": 1,
        "privacy": {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 5.0},
    }
    raw.update(changes)
    return raw


def test_toml_policy_is_read_with_defaults_and_derived_slots() -> None:
    (policy,) = load_policies_toml(SUM_TOML)
    assert policy.name == "session_seconds"
    assert policy.version == 1 and policy.window_seconds == 3600
    assert policy.slot_count == 1
    assert policy.slot_max == 7220  # (3600 - -10) / 0.5
    assert policy.l1_sensitivity == 7220
    assert policy.privacy.delta == 1e-7


def test_policy_round_trips_through_its_json_form() -> None:
    (policy,) = load_policies_toml(SUM_TOML)
    assert MetricPolicy.from_mapping(policy.name, policy.to_json()) == policy


def test_histogram_sensitivity_is_two_buckets() -> None:
    raw = _policy(kind="histogram", buckets=[0, 1, 2, 3])
    for key in ("lower", "upper", "precision"):
        del raw[key]
    policy = MetricPolicy.from_mapping("h", raw)
    assert policy.slot_count == 3 and policy.slot_max == 1
    assert policy.l1_sensitivity == 2
    assert math.isclose(policy.l2_sensitivity, math.sqrt(2))


def test_vector_l2_sensitivity_scales_with_root_dimension() -> None:
    policy = MetricPolicy.from_mapping("v", _policy(kind="vector", dimension=16, upper=60,
                                                    scheme="ckks"))
    assert policy.l1_sensitivity == 960
    assert math.isclose(policy.l2_sensitivity, 240.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "median"}, "kind must be one of"),
        ({"scheme": "rsa"}, "scheme must be one of"),
        ({"upper": -1}, "upper"),
        ({"precision": 0.3}, "whole number of precision steps"),
        ({"precision": 0}, "precision must be positive"),
        ({"lower": float("nan")}, "finite"),
        ({"lower": "0"}, "must be a number"),
        ({"min_contributors": 0}, "min_contributors"),
        ({"min_contributors": 10, "max_contributors": 5}, "max_contributors"),
        ({"buckets": [1, 2, 3]}, "histogram metrics only"),
        ({"dimension": 4}, "vector metrics only"),
        ({"color": "red"}, "unknown fields"),
        ({"privacy": {"mechanism": "laplace", "epsilon": 0, "budget_epsilon": 1}}, "epsilon"),
        ({"privacy": {"mechanism": "laplace", "epsilon": 1, "delta": 1e-6,
                      "budget_epsilon": 1}}, "delta must be 0"),
        ({"privacy": {"mechanism": "gaussian", "epsilon": 1, "budget_epsilon": 1}}, "delta"),
        ({"privacy": {"mechanism": "laplace", "epsilon": 2, "budget_epsilon": 1}},
         "at least one release"),
        ({"version": True}, "version must be an integer"),
    ],
)
def test_invalid_policy_is_refused_naming_the_field(changes: dict, message: str) -> None:
    with pytest.raises(InvalidPolicy, match=message):
        MetricPolicy.from_mapping("m", _policy(**changes))


def test_bad_metric_name_is_refused() -> None:
    with pytest.raises(InvalidPolicy, match="must match"):
        MetricPolicy.from_mapping("Bad Name", _policy())


def test_histogram_edges_must_increase() -> None:
    with pytest.raises(InvalidPolicy, match="strictly increasing"):
        MetricPolicy.from_mapping("h", {"kind": "histogram", "scheme": "paillier",
                                        "buckets": [0, 2, 1],
                                        "privacy": {"mechanism": "laplace", "epsilon": 1,
                                                    "budget_epsilon": 1}})


def test_toml_syntax_error_is_reported() -> None:
    with pytest.raises(InvalidPolicy, match="not valid TOML"):
        load_policies_toml("[metrics.x\nkind=")


def test_file_without_metrics_is_refused() -> None:
    with pytest.raises(InvalidPolicy, match=r"no \[metrics\.NAME\]"):
        load_policies_toml("[metrics]\n")


def test_count_requires_integer_bounds() -> None:
    with pytest.raises(InvalidPolicy, match="a count has"):
        MetricPolicy.from_mapping("c", _policy(kind="count", lower=-1, upper=1))


def test_paillier_reports_are_proven_unless_the_policy_opts_out_explicitly() -> None:
    (default,) = load_policies_toml(SUM_TOML)
    assert default.validity == "proof" and default.proven
    opted_out = MetricPolicy.from_mapping("m", _policy(validity="none"))
    assert opted_out.validity == "none" and not opted_out.proven
    explicit = MetricPolicy.from_mapping("m", _policy(validity="proof"))
    assert explicit == MetricPolicy.from_mapping("m", _policy())


def test_ckks_trusts_its_clients_by_default_and_refuses_proofs() -> None:
    ckks = _policy(kind="vector", scheme="ckks", dimension=4)
    assert MetricPolicy.from_mapping("m", ckks).validity == "none"
    with pytest.raises(InvalidPolicy, match='validity = "proof" needs the paillier scheme'):
        MetricPolicy.from_mapping("m", {**ckks, "validity": "proof"})


@pytest.mark.parametrize("value", ["yes", True, 1, "", None])
def test_unknown_validity_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidPolicy, match=r"metric 'm': validity must be one of"):
        MetricPolicy.from_mapping("m", _policy(validity=value))


def test_validity_is_in_the_policy_json_so_the_manifest_signs_it() -> None:
    policy = MetricPolicy.from_mapping("m", _policy(validity="none"))
    assert policy.to_json()["validity"] == "none"
    assert MetricPolicy.from_mapping("m", policy.to_json()) == policy
    # a body stored before the field existed reads back with the scheme's default
    old = {k: v for k, v in MetricPolicy.from_mapping("m", _policy()).to_json().items()
           if k != "validity"}
    assert MetricPolicy.from_mapping("m", old).validity == "proof"
