"""The noise in *published results* has the distribution and scale the key-holder claims.

Hundreds of real releases (decrypt -> noise -> ledger -> signed result) of one fixed
aggregate through ``Releaser``; the published values minus the truth are compared with the
mechanism and scale each result states, and the stated 95% intervals must cover the truth
as often as the claimed noise makes them (at least 95%: ``coverage_kit``). Thresholds make a
correct key-holder fail with probability ~1e-5.
"""

from __future__ import annotations

import math
import secrets
import time

import numpy as np
import pytest
from coverage_kit import check_coverage, coverage_rates, noise_law
from scipy import stats

from blindsum.server.keyholder.release import noise_plan
from blindsum.server.keyholder.service import Keyholder
from blindsum.shared.codec import ReleaseRequest, report_ids_digest
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.policy import load_policies_toml
from blindsum.shared.signing import verify_document

pytestmark = pytest.mark.slow

RELEASES = 600
DIMENSION = 8
REPORTS = [[1, 0, 1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0, 1, 1], [0, 0, 1, 0, 1, 0, 1, 0]]
TRUTH = [float(sum(column)) for column in zip(*REPORTS, strict=True)]
POLICIES = f"""
[metrics.gauss_vec]
kind = "vector"
scheme = "paillier"
dimension = {DIMENSION}
lower = 0
upper = 1
min_contributors = 1
window_seconds = 60
privacy = {{ mechanism = "gaussian", epsilon = 1.0, delta = 1e-6, budget_epsilon = 1e9 }}

[metrics.laplace_vec]
kind = "vector"
scheme = "ckks"
dimension = {DIMENSION}
lower = 0
upper = 1
min_contributors = 1
window_seconds = 60
privacy = {{ mechanism = "laplace", epsilon = 1.0, budget_epsilon = 1e9 }}
"""


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> Keyholder:
    # registered in 1970, so the windows 0, 60, 120... below are in the release horizon
    holder, _ = Keyholder.init(tmp_path_factory.mktemp("stats") / "kh", None, 2048,
                               clock=lambda: 0.0)
    holder.add_policies(load_policies_toml(POLICIES))
    holder.db.clock = time.time  # and released now, long after those windows closed
    return holder


def noise_samples(holder: Keyholder, metric: str) -> tuple[np.ndarray, list[bool], float, str]:
    manifest = Manifest.verify(holder.db.latest_manifest(), holder.identity.public_key())
    policy = manifest.policy(metric)
    key = manifest.active_key(policy.scheme)
    public = holder.secret_for(policy.scheme, key.key_id).public
    spec = slot_spec(policy)
    reports, truth = REPORTS, TRUTH
    aggregate = tuple(public.dump(public.add_many(
        [public.load(public.encrypt(encode(policy, r), spec), spec) for r in reports])))
    digest = report_ids_digest([secrets.token_bytes(16) for _ in reports])
    releaser = holder.releaser()
    noise: list[float] = []
    covered: list[bool] = []
    scales, mechanisms = set(), set()
    for index in range(RELEASES):
        document = releaser.release(ReleaseRequest(metric, policy.version, index * 60,
                                                   key.key_id, len(reports), digest,
                                                   aggregate)).document
        result = verify_document(document, holder.identity.public_key(), "result")
        scales.add(result["scale"])
        mechanisms.add(result["mechanism"])
        # the raw noisy value is what carries the claimed noise (``value`` is clamped to
        # the domain); the interval, clipped to the domain, must still cover the truth
        for noisy, value, want, (low, high) in zip(result["noisy_value"], result["value"],
                                                    truth, result["ci"], strict=True):
            noise.append(noisy - want)
            covered.append(low <= want <= high)
            assert value == min(max(noisy, 0.0), float(len(reports))) and low <= value <= high
    assert len(scales) == 1 and len(mechanisms) == 1  # every release states the same claim
    return np.array(noise), covered, scales.pop(), mechanisms.pop()


@pytest.mark.parametrize("metric", ["gauss_vec", "laplace_vec"])
def test_published_noise_matches_the_claimed_distribution(holder: Keyholder, metric) -> None:
    noise, covered, scale, mechanism = noise_samples(holder, metric)
    policy = holder.db.policy(metric, 1)
    assert policy is not None
    plan = noise_plan(policy)
    assert (mechanism, scale) == (plan.mechanism, plan.scale)
    assert np.all(noise == np.round(noise))  # integer noise on integer sums
    # chi-square against the claimed pmf, bins pooled to expect >= 5 each
    n = len(noise)
    k_max = int(60 * scale) + 60
    edges, probs, mass = [], [], 0.0
    for k in range(-k_max, k_max + 1):
        mass += plan.pmf(k)
        if mass * n >= 5:
            edges.append(k)
            probs.append(mass)
            mass = 0.0
    probs[-1] += mass
    edges[-1] = k_max
    expected = np.array(probs) / math.fsum(probs) * n
    bins = np.searchsorted(np.array(edges), np.clip(noise, -k_max, k_max))
    observed = np.bincount(bins, minlength=len(edges))[: len(edges)]
    p_value = stats.chisquare(observed, expected).pvalue
    assert p_value > 1e-6, (metric, p_value)
    check_coverage(covered, coverage_rates(noise_law(plan, 1), plan.half_width(0.05), TRUTH,
                                           float(len(REPORTS))))
    assert abs(noise.mean()) <= 6 * noise.std() / math.sqrt(n)
