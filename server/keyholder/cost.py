"""What one release of a policy costs: its noise plan and the spend the ledger books.

Both the release path and the ledger's migration ask this module, so a release is booked at
exactly the cost its noise was calibrated to.
"""

from __future__ import annotations

from blindsum.server.keyholder.accounting import Spend, release_spend
from blindsum.server.keyholder.noise import NoisePlan, plan_noise
from blindsum.shared.policy import MetricPolicy


def noise_plan(policy: MetricPolicy) -> NoisePlan:
    """The noise a policy's releases get, calibrated from its bounds and privacy settings."""
    return plan_noise(
        policy.privacy.mechanism,
        policy.privacy.epsilon,
        policy.privacy.delta,
        policy.l1_sensitivity,
        policy.l2_sensitivity,
        policy.slot_count,
    )


def release_cost(policy: MetricPolicy) -> Spend:
    """The spend of one release of ``policy``: its (epsilon, delta) and its zCDP rho."""
    plan = noise_plan(policy)
    return release_spend(plan.epsilon, plan.delta, plan.rho)
