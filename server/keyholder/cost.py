"""What one release of a policy costs: its noise plan and the spend the ledger books.

Both the release path and the ledger's migration ask this module, so a release is booked at
exactly the cost its noise was calibrated to.
"""

from __future__ import annotations

from blindsum.server.keyholder.accounting import Spend, release_spend
from blindsum.server.noise import noise_plan
from blindsum.shared.policy import MetricPolicy

__all__ = ["noise_plan", "release_cost"]


def release_cost(policy: MetricPolicy) -> Spend:
    """The spend of one release of ``policy``: its (epsilon, delta) and its zCDP rho."""
    plan = noise_plan(policy)
    return release_spend(plan.epsilon, plan.delta, plan.rho)
