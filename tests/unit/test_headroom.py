"""Noise headroom: threshold-key layouts hold aggregate + noise + offset; single-key layouts
are unchanged; every party derives the same layout from the public policy."""

from __future__ import annotations

import math

import pytest

from blindsum.server.keyholder.release import noise_plan
from blindsum.shared.headroom import bound_scale, headroom, noise_bound, truncation_cost
from blindsum.shared.manifest import slot_spec
from blindsum.shared.packing import slot_width
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.threshold.ceremony import Ceremony, run_ceremony
from blindsum.shared.threshold.keys import ThresholdPublicKey

PRIVACY = [
    {"mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-7, "budget_epsilon": 10.0},
    {"mechanism": "gaussian", "epsilon": 0.1, "delta": 1e-10, "budget_epsilon": 10.0},
    {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 10.0},
    {"mechanism": "laplace", "epsilon": 0.05, "budget_epsilon": 10.0},
]
SHAPES = [
    {"kind": "count", "upper": 1},
    {"kind": "sum", "lower": 0, "upper": 600},
    {"kind": "histogram", "buckets": [0, 1, 2, 3, 4]},
    {"kind": "vector", "lower": 0, "upper": 60, "dimension": 16},
]


def _policies() -> list[MetricPolicy]:
    return [MetricPolicy.from_mapping(f"m{i}{j}", {**shape, "scheme": "paillier", "version": 1,
                                                    "min_contributors": 2,
                                                    "max_contributors": 10_000,
                                                    "privacy": privacy})
            for i, shape in enumerate(SHAPES) for j, privacy in enumerate(PRIVACY)]


@pytest.fixture(scope="module")
def ceremony() -> Ceremony:
    return run_ceremony(2048, parties=2, key_id="tpai-room")


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: p.name)
def test_the_bound_covers_the_plan_and_its_tail_is_negligible(policy: MetricPolicy) -> None:
    plan = noise_plan(policy)
    assert plan.scale <= bound_scale(policy)  # the key-holder's public check passes
    bound = noise_bound(policy)
    # P(|noise| > B) <= 2^-64 per slot under the plan's own (smaller) scale
    if plan.mechanism == "laplace":
        tail = 2 * math.exp(-bound / plan.scale)
    else:
        tail = 2 * math.exp(-bound**2 / (2 * plan.scale**2))
    assert tail <= 2.0**-64
    epsilon, delta = truncation_cost(policy)
    assert epsilon - policy.privacy.epsilon < 1e-15
    assert delta - policy.privacy.delta < 1e-15


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: p.name)
def test_threshold_layouts_hold_the_noised_maximum_and_single_key_ones_do_not_change(
        ceremony: Ceremony, policy: MetricPolicy) -> None:
    spec = slot_spec(policy)
    single = PaillierPublic(ceremony.public.n, "pai-single")
    sdk = PaillierPublic.from_json(ceremony.public.to_json())  # what the SDK reads
    keyholder = ThresholdPublicKey.from_json(ceremony.public.to_json()).paillier
    assert single.layout(spec)[0] == slot_width(spec.max_slot_sum)
    width = slot_width(spec.max_slot_sum + headroom(policy))
    assert sdk.layout(spec) == keyholder.layout(spec) == ceremony.public.paillier.layout(spec)
    assert sdk.layout(spec)[0] == width
    assert spec.max_slot_sum + 2 * noise_bound(policy) < 2**width
