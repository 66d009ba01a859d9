"""The noise in results published through two-party threshold decryption has the
distribution and scale the key-holder's statement claims, in both noise modes: the
key-holder's draw alone, or (``noise = "both"``) the sum of the key-holder's and the
server's independent draws, whose law is the convolution of the plan's pmf with itself.

Real releases of one fixed aggregate (25 releases of 24 slots: 600 samples per metric): the
key-holder's partial release (noise drawn, bounded, encrypted and folded in under
encryption), then the server's checks, partial, combination and post-processing. The
published raw noisy values minus the truth are compared with the stated mechanism and scale
(chi-square, p > 1e-6), and the 95% intervals must cover the truth as often as the claimed
noise makes them (at least 95%: ``coverage_kit``). Thresholds make a correct deployment
fail with probability ~1e-5.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from pathlib import Path

import numpy as np
import pytest
from coverage_kit import check_coverage, coverage_rates, noise_law
from scipy import stats

from blindsum.server.aggregator.keyholder_client import check_result
from blindsum.server.aggregator.store import Store, WindowKey
from blindsum.server.aggregator.threshold import ThresholdFinisher
from blindsum.server.keyholder.release import noise_plan
from blindsum.server.keyholder.service import Keyholder
from blindsum.server.keystore import KeyStore
from blindsum.server.noise import NoisePlan
from blindsum.shared.codec import ReleaseRequest, Report, WindowReports, report_ids_digest
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.policy import load_policies_toml
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.threshold.release import verify_published

pytestmark = pytest.mark.slow

# A threshold release with its noise proofs (one per party: a bit proof per noise bit of
# every slot) costs seconds on a busy machine: 25 wide releases give 600 samples per metric,
# enough for the chi-square tests (one draw against two is told apart at p < 1e-6) and the
# coverage check (4.5 standard errors: about +- 3.5%).
RELEASES = 25
DIMENSION = 24
POLICIES = f"""
[metrics.gauss_vec]
kind = "vector"
scheme = "paillier"
dimension = {DIMENSION}
lower = 0
upper = 1
min_contributors = 1
window_seconds = 60
validity = "none"  # about noise: reports are forwarded without proofs
privacy = {{ mechanism = "gaussian", epsilon = 1.0, delta = 1e-6, budget_epsilon = 1e9 }}

[metrics.laplace_vec]
kind = "vector"
scheme = "paillier"
dimension = {DIMENSION}
lower = 0
upper = 1
min_contributors = 1
window_seconds = 60
validity = "none"  # about noise: reports are forwarded without proofs
privacy = {{ mechanism = "laplace", epsilon = 1.0, budget_epsilon = 1e9 }}

[metrics.gauss_both]
kind = "vector"
scheme = "paillier"
dimension = {DIMENSION}
lower = 0
upper = 1
min_contributors = 1
window_seconds = 60
validity = "none"  # about noise: reports are forwarded without proofs
noise = "both"
privacy = {{ mechanism = "gaussian", epsilon = 1.0, delta = 1e-6, budget_epsilon = 1e9 }}

[metrics.laplace_both]
kind = "vector"
scheme = "paillier"
dimension = {DIMENSION}
lower = 0
upper = 1
min_contributors = 1
window_seconds = 60
validity = "none"  # about noise: reports are forwarded without proofs
noise = "both"
privacy = {{ mechanism = "laplace", epsilon = 1.0, budget_epsilon = 1e9 }}
"""
REPORTS = [[1, 0, 1, 1, 0, 0, 1, 0] * 3, [1, 1, 1, 0, 0, 0, 1, 1] * 3,
           [0, 0, 1, 0, 1, 0, 1, 0] * 3]


class TwoParties:
    def __init__(self, root: Path) -> None:
        self.holder, _ = Keyholder.init(root / "kh", None, 2048, clock=lambda: 0.0,
                                        server_dir=root / "srv")
        self.holder.add_policies(load_policies_toml(POLICIES))
        self.holder.db.clock = time.time
        self.pinned = self.holder.identity.public_key()
        self.manifest = Manifest.verify(self.holder.db.latest_manifest(), self.pinned)
        self.store = Store(root / "srv")
        self.finisher = ThresholdFinisher(KeyStore.open(root / "srv", None),
                                          lambda name, version: self.manifest.policy(name))


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> TwoParties:
    return TwoParties(tmp_path_factory.mktemp("threshold-stats"))


def _chi_square_p(noise: np.ndarray, plan: NoisePlan, parties: int) -> float:
    """Chi-square p-value of integer noise against the claimed pmf (bins pooled to >= 5)."""
    n = len(noise)
    k_max, pmf = noise_law(plan, parties)
    edges, probs, mass = [], [], 0.0
    for k in range(-k_max, k_max + 1):
        mass += float(pmf[k + k_max])
        if mass * n >= 5:
            edges.append(k)
            probs.append(mass)
            mass = 0.0
    probs[-1] += mass
    edges[-1] = k_max
    expected = np.array(probs) / math.fsum(probs) * n
    bins = np.searchsorted(np.array(edges), np.clip(noise, -k_max, k_max))
    observed = np.bincount(bins, minlength=len(edges))[: len(edges)]
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize("metric", ["gauss_vec", "laplace_vec", "gauss_both", "laplace_both"])
def test_threshold_published_noise_matches_the_claimed_distribution(parties: TwoParties,
                                                                    metric: str) -> None:
    policy = parties.manifest.policy(metric)
    key = parties.manifest.active_key("paillier")
    public = PaillierPublic.from_json(key.public)
    spec = slot_spec(policy)
    truth = [float(sum(column)) for column in zip(*REPORTS, strict=True)]
    blobs = [tuple(public.encrypt(encode(policy, r), spec)) for r in REPORTS]
    aggregate = tuple(public.dump(public.add_many([public.load(list(b), spec) for b in blobs])))
    ids = [secrets.token_bytes(16) for _ in REPORTS]
    digest = report_ids_digest(ids)
    releaser = parties.holder.releaser()
    noise: list[float] = []
    covered: list[bool] = []
    claims = set()
    for index in range(RELEASES):
        window = WindowKey(metric, policy.version, index * 60, key.key_id)
        # the same reports in every window, forwarded as the server forwards a window's
        parties.holder.intake().accept(WindowReports(metric, policy.version, index * 60,
                                                     key.key_id, tuple(
            Report(i, metric, policy.version, key.key_id, index * 60, b)
            for i, b in zip(ids, blobs, strict=True))))
        committed = parties.finisher.committed_noise(parties.store, window, time.time())
        request = ReleaseRequest(metric, policy.version, index * 60, key.key_id, len(REPORTS),
                                 digest, aggregate, server_noise=committed.ciphertexts,
                                 server_noise_proof=committed.proof)
        partial = check_result(releaser.release(request).document, parties.pinned, request)
        document, payload = parties.finisher.finish(request, partial)
        result = json.loads(payload)
        if index == 0:  # the offline check redoes every proof: once is enough here
            assert verify_published(document, parties.pinned) == result
        claims.add((result["mechanism"], result["scale"],
                    tuple(result.get("noise_parties", ()))))
        for noisy, want, (low, high) in zip(result["noisy_value"], truth, result["ci"],
                                            strict=True):
            noise.append(noisy - want)
            covered.append(low <= want <= high)
    plan = noise_plan(policy)
    assert claims == {(plan.mechanism, plan.scale, policy.noise_parties)}
    samples = np.array(noise)
    assert np.all(samples == np.round(samples))  # exact decoding: integer noise
    assert _chi_square_p(samples, plan, len(policy.noise_parties)) > 1e-6
    if policy.noise == "both":  # the test can tell one draw from two
        assert _chi_square_p(samples, plan, 1) < 1e-6
    draws = len(policy.noise_parties)
    check_coverage(covered, coverage_rates(noise_law(plan, draws),
                                           plan.half_width(0.05, draws), truth,
                                           float(len(REPORTS))))
    assert abs(samples.mean()) <= 6 * samples.std() / math.sqrt(len(samples))
