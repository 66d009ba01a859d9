"""Gauges the aggregator reads from its database at scrape time (the same in every worker)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from blindsum.server.aggregator.store import STATES, Store


class WindowStates:
    """``blindsum_windows{state}``: how many windows are open, sealed, released, refused."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        counts = self._store.window_counts()
        family = GaugeMetricFamily("blindsum_windows", "Windows by state", labels=["state"])
        for state in STATES:
            family.add_metric([state], counts.get(state, 0))
        yield family
