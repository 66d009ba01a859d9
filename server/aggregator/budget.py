"""The key-holder's privacy budget as the dashboard shows it (``GET /v1/budget``).

The key-holder answers with the release token, so only the server can ask; the dashboard is
public, so each worker asks at most once per ``TTL_SECONDS`` whatever the traffic, and a
failure is remembered for as long (a down key-holder costs a page one short timeout, not
one per view). Spending depends only on how many releases happened, never on a value.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from blindsum.server.aggregator.config import AggregatorConfig

TTL_SECONDS = 30.0
TIMEOUT = (2.0, 4.0)  # connect, read: a page waits at most this for the ledger
log = logging.getLogger("blindsum.aggregator.budget")


@dataclass(frozen=True)
class Budget:
    """One metric's budget at the key-holder, for its current period (or its lifetime).

    ``spent_epsilon`` is what the releases so far are certified at: the key-holder's
    ``epsilon``, the tighter of basic composition and the zCDP total converted once
    (``accounting`` says which). An older key-holder that states only the basic sum is read
    as ``basic``.
    """

    metric: str
    budget_epsilon: float
    spent_epsilon: float
    remaining_epsilon: float
    releases: int
    # the key-holder's own count (its zCDP ledger admits more than epsilons adding up)
    left: int | None = None
    accounting: str = "basic"

    def releases_left(self, epsilon: float) -> int:
        """Releases of ``epsilon`` each the remaining budget can still pay for."""
        if self.left is not None:
            return self.left
        if epsilon <= 0:
            return 0
        # the ledger's own tolerance: ten releases of 0.1 fit a budget of 1.0
        return max(math.floor(self.remaining_epsilon / epsilon * (1 + 1e-9) + 1e-9), 0)


def parse_budgets(body: object) -> dict[str, Budget] | None:
    """The budgets of a key-holder's ``GET /v1/budget`` answer; None if it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("metrics"), list):
        return None
    out = {}
    for item in body["metrics"]:
        try:
            # "epsilon" is the certified spend; "spent_epsilon" only adds the epsilons up
            # (942 for a zCDP budget of 48 that is spent), so it is the fallback only
            certified = item.get("epsilon")
            budget = Budget(str(item["metric"]), float(item["budget_epsilon"]),
                            float(item["spent_epsilon"] if certified is None else certified),
                            float(item["remaining_epsilon"]), int(item["releases"]),
                            None if item.get("releases_left") is None
                            else int(item["releases_left"]),
                            "basic" if certified is None else str(item.get("accounting")))
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        out[budget.metric] = budget
    return out


class BudgetSource:
    """Cached budget states from the key-holder; thread-safe; never raises."""

    def __init__(self, config: AggregatorConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._url = config.keyholder_url.rstrip("/") + "/v1/budget"
        self._token = config.release_token
        self._verify: str | bool = config.ca_bundle or True
        self._clock = clock
        self._lock = threading.Lock()
        self._fetched_at = -math.inf
        self._states: dict[str, Budget] | None = None

    def states(self) -> dict[str, Budget] | None:
        """Budget per metric name, or None if the key-holder did not answer lately."""
        with self._lock:
            if self._clock() - self._fetched_at >= TTL_SECONDS:
                self._states = self._fetch()
                self._fetched_at = self._clock()
            return self._states

    def _fetch(self) -> dict[str, Budget] | None:
        try:
            response = requests.get(self._url, timeout=TIMEOUT, verify=self._verify,
                                    headers={"Authorization": f"Bearer {self._token}",
                                             "Accept": "application/json"})
        except requests.RequestException as exc:
            log.warning("budget unavailable: the key-holder is unreachable (%s)",
                        type(exc).__name__)
            return None
        if response.status_code != 200:
            log.warning("budget unavailable: the key-holder answered %d", response.status_code)
            return None
        try:
            states = parse_budgets(json.loads(response.content))
        except ValueError:
            states = None
        if states is None:
            log.warning("budget unavailable: the key-holder's answer is not a budget list")
        return states
