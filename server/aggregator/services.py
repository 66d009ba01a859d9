"""The parts of one aggregator process, built from its configuration and wired together once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from blindsum.server.aggregator.auth import Authenticator
from blindsum.server.aggregator.background import Ticker
from blindsum.server.aggregator.budget import BudgetSource
from blindsum.server.aggregator.config import AggregatorConfig
from blindsum.server.aggregator.ingest import Ingestor
from blindsum.server.aggregator.keyholder_client import KeyholderApi, KeyholderClient
from blindsum.server.aggregator.manifests import ManifestSource
from blindsum.server.aggregator.proofs import ProofCounter
from blindsum.server.aggregator.release import ReleaseDriver
from blindsum.server.aggregator.retention import SWEEP_INTERVAL_SECONDS, RetentionSweep
from blindsum.server.aggregator.store import Store
from blindsum.server.aggregator.threshold import PolicyLookup, ThresholdFinisher
from blindsum.server.aggregator.tokens import TokenBook, environment_records
from blindsum.server.keystore import KeyStore
from blindsum.server.observability import Telemetry
from blindsum.shared.policy import MetricPolicy


@dataclass
class Aggregator:
    """Store, tokens, manifest, ingest, release driver and background jobs of one worker."""

    config: AggregatorConfig
    store: Store
    keyholder: KeyholderApi
    manifests: ManifestSource
    ingestor: Ingestor
    releases: ReleaseDriver
    retention: RetentionSweep
    ticker: Ticker
    auth: Authenticator
    budget: BudgetSource
    telemetry: Telemetry
    clock: Callable[[], float] = time.time

    @classmethod
    def build(
        cls,
        config: AggregatorConfig,
        keyholder: KeyholderApi | None = None,
        clock: Callable[[], float] = time.time,
        telemetry: Telemetry | None = None,
    ) -> Aggregator:
        """Open the store and load the manifest (cached copy if the key-holder is down)."""
        telemetry = telemetry or Telemetry.build()
        store = Store(config.data_dir)
        if keyholder is None:
            keyholder = KeyholderClient(config.keyholder_url, config.keyholder_identity,
                                        config.release_token, config.ca_bundle)
        manifests = ManifestSource(store, keyholder, config.keyholder_identity, clock)
        manifests.start()
        finisher = ThresholdFinisher(KeyStore.open(config.data_dir, config.keystore_passphrase),
                                     _manifest_policy(manifests), lambda: manifests.loaded)
        releases = ReleaseDriver(store, keyholder, clock, finisher)

        def refresh_manifest() -> None:
            if not manifests.refresh():
                telemetry.upstream_errors.labels("manifest-refresh").inc()

        def release_due() -> None:
            telemetry.count_releases(releases.release_due())

        retention = RetentionSweep(store, config.report_retention_seconds, clock)
        jobs = [("manifest-refresh", config.manifest_refresh_seconds, refresh_manifest),
                ("retention", SWEEP_INTERVAL_SECONDS, retention.sweep)]
        if config.auto_release:
            jobs.append(("release-due", config.release_interval_seconds, release_due))
        return cls(
            config=config,
            store=store,
            keyholder=keyholder,
            manifests=manifests,
            ingestor=Ingestor(store, manifests, clock, _proof_counter(telemetry)),
            releases=releases,
            retention=retention,
            ticker=Ticker("blindsum-aggregator", jobs),
            auth=Authenticator(TokenBook(store), environment_records({
                "ingest": config.ingest_token_digests,
                "admin": config.admin_token_digests,
            })),
            budget=BudgetSource(config),
            telemetry=telemetry,
            clock=clock,
        )

    def close(self) -> None:
        """Stop the background thread, then release connections (idempotent)."""
        self.ticker.stop()
        self.keyholder.close()
        self.store.close()


def _proof_counter(telemetry: Telemetry) -> ProofCounter:
    def count(reason: str, reports: int) -> None:
        telemetry.refused_proofs.labels(reason).inc(reports)
    return count


def _manifest_policy(manifests: ManifestSource) -> PolicyLookup:
    """The manifest's policy of a metric at a version, if that is its current version."""
    def lookup(metric: str, version: int) -> MetricPolicy | None:
        if not manifests.loaded:
            return None
        policy = manifests.manifest().policies.get(metric)
        return policy if policy is not None and policy.version == version else None
    return lookup
