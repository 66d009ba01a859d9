"""An app with only phe, requests and cryptography makes proven reports (docs/INTEROP.md).

Step 5's code block is executed exactly as the page prints it (``phe_app.recipe_namespace``)
and its reports go to a two-party threshold deployment on loopback, whose layouts carry noise
headroom: the server verifies each proof at ingest, the key-holder again before it sums the
window itself, and the published results are what the values say.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from phe_app import (
    current_window,
    encode,
    metric_key_layout,
    post,
    public_key,
    recipe_namespace,
    release_and_fetch,
    verified_manifest,
)

from blindsum.server.processes import Deployment, deployment

POLICIES = Path(__file__).parent / "interop_proven_policies.toml"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("proven-interop"), [POLICIES],
                    paillier_bits=2048, threshold=True) as running:
        yield running


@pytest.fixture(scope="module")
def recipe() -> dict[str, Any]:
    return recipe_namespace()


def proven_reports(deployed: Deployment, recipe: dict[str, Any], metric: str,
                   values: list[float]) -> list[dict[str, Any]]:
    manifest = verified_manifest(deployed.server.url, deployed.identity)
    policy, key, layout = metric_key_layout(manifest, metric)
    assert layout["headroom"] > 0  # a threshold key: the naive width would be wrong
    prover = recipe["Prover"](public_key(key), layout)
    window = current_window(policy)
    return [recipe["proven_report"](prover, policy, key, encode(policy, v), window)
            for v in values]


def test_proven_counts_are_accepted_and_published(deployed, recipe) -> None:
    reports = proven_reports(deployed, recipe, "opened", [1, 0, 1, 1])
    answer = post(deployed.server.url, deployed.ingest_token, reports)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"v": 1, "accepted": 4, "duplicates": 0}
    result = release_and_fetch(deployed.server.url, deployed.admin_token, "opened")
    assert result["report_count"] == 4
    low, high = result["ci"]
    assert low - 3 * (high - low) <= 3 <= high + 3 * (high - low)


def test_proven_sums_and_histograms_are_accepted_and_published(deployed, recipe) -> None:
    values = [12.0, 250.0, 599.0, 1000.0]  # 1000 is clipped to 600 before proving
    sums = proven_reports(deployed, recipe, "seconds", values)
    histograms = proven_reports(deployed, recipe, "load_ms", [5, 150, 700, 9000])
    answer = post(deployed.server.url, deployed.ingest_token, sums + histograms)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 8
    result = release_and_fetch(deployed.server.url, deployed.admin_token, "seconds")
    assert result["report_count"] == 4
    low, high = result["ci"]
    truth = 12 + 250 + 599 + 600
    assert low - 3 * (high - low) <= truth <= high + 3 * (high - low)
    buckets = release_and_fetch(deployed.server.url, deployed.admin_token, "load_ms")
    assert buckets["report_count"] == 4 and len(buckets["value"]) == 4


def test_a_recipe_proof_moved_to_another_report_or_value_is_refused(deployed, recipe) -> None:
    one, two = proven_reports(deployed, recipe, "opened", [1, 0])
    swapped = dict(one, proof=two["proof"])  # a valid proof, but of another report
    answer = post(deployed.server.url, deployed.ingest_token, [swapped])
    assert answer.status_code == 400
    assert "batch.reports[0]" in answer.json()["detail"]
    renamed = json.loads(json.dumps(one))
    renamed["id"] = two["id"]  # the proof binds the report id
    assert post(deployed.server.url, deployed.ingest_token, [renamed]).status_code == 400
    stripped = {k: v for k, v in one.items() if k != "proof"}
    answer = post(deployed.server.url, deployed.ingest_token, [stripped])
    assert answer.status_code == 400 and "requires a validity proof" in answer.json()["detail"]
