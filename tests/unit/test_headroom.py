"""Noise headroom: threshold-key layouts hold aggregate + noise + offset; single-key layouts
are unchanged; every party derives the same layout from the public policy."""

from __future__ import annotations

import math

import pytest

from blindsum.server.keyholder.release import noise_plan
from blindsum.shared.headroom import bound_scale, headroom, noise_bound, truncation_cost
from blindsum.shared.manifest import slot_spec
from blindsum.shared.packing import chunk_slots, pack, slot_width
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.threshold import combine, partial_decrypt
from blindsum.shared.threshold.ceremony import Ceremony, run_ceremony
from blindsum.shared.threshold.keys import ThresholdPublicKey
from blindsum.shared.threshold.release import decode_noised, encrypt_noise
from blindsum.shared.threshold.server_noise import fold_all

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


def _both(policy: MetricPolicy) -> MetricPolicy:
    return MetricPolicy.from_mapping(policy.name, {**policy.to_json(), "noise": "both"})


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: p.name)
def test_a_two_noise_layout_reserves_room_for_both_draws(ceremony: Ceremony,
                                                         policy: MetricPolicy) -> None:
    both = _both(policy)
    # each party's draw is bounded by the same B; the slot must hold sum + 2 draws + 2 offsets
    assert noise_bound(both) == noise_bound(policy)
    assert headroom(both) == 4 * noise_bound(policy) == 2 * headroom(policy)
    spec = slot_spec(both)
    width = ceremony.public.paillier.layout(spec)[0]
    assert spec.max_slot_sum + 4 * noise_bound(both) < 2**width
    assert truncation_cost(both) == truncation_cost(policy)  # per draw, unchanged


@pytest.mark.parametrize("extreme", ["all-high", "all-low", "mixed"])
def test_two_noise_decoding_is_exact_at_the_extremes(ceremony: Ceremony, extreme: str) -> None:
    """Every slot at its largest sum (or zero) with both draws at +B or -B decodes exactly:
    no carry between packed slots, whatever the signs."""
    policy = _both(next(p for p in _policies() if p.kind == "vector"))
    public = ceremony.public
    spec = slot_spec(policy)
    width, per = public.paillier.layout(spec)
    bound = noise_bound(policy)
    top = spec.max_slot_sum
    count = policy.slot_count
    sums = {"all-high": [top] * count, "all-low": [0] * count,
            "mixed": [top if i % 2 else 0 for i in range(count)]}[extreme]
    signs = {"all-high": [1] * count, "all-low": [-1] * count,
             "mixed": [(-1) ** i for i in range(count)]}[extreme]
    keyholder_noise = [s * bound for s in signs]
    server_noise = [-s * bound if extreme == "mixed" else s * bound for s in signs]
    aggregate = [public.paillier.encrypt_plaintext(pack(chunk, width))
                 for chunk in chunk_slots(sums, per)]
    noised = fold_all(public, aggregate, encrypt_noise(public, policy, server_noise),
                      encrypt_noise(public, policy, keyholder_noise))
    context = b"headroom-test"
    plaintexts = [combine(public, c, [partial_decrypt(share, c, context)
                                      for share in ceremony.shares], context)
                  for c in noised]
    expected = [s + k + v for s, k, v in zip(sums, keyholder_noise, server_noise, strict=True)]
    assert decode_noised(public, policy, plaintexts) == expected
