"""The aggregator's public surface: health, manifest relay, contexts, OpenAPI, restarts.

The key-holder is the real one, served over HTTP (``aggregator_kit``); "down" means stopped.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aggregator_kit import (
    RunningKeyholder,
    ckks_kid,
    ckks_secret,
    copy_of,
    make_app,
    make_report,
    paillier_kid,
    post_reports,
)
from flask import Flask

from blindsum.server.aggregator.app import close_app
from blindsum.server.aggregator.openapi import openapi_document
from blindsum.server.aggregator.services import Aggregator
from blindsum.shared import codec
from blindsum.shared.codec import Report, ReportBatch
from blindsum.shared.policy import MetricPolicy


@pytest.fixture
def app(tmp_path: Path, keyholder: RunningKeyholder) -> Iterator[Flask]:
    app = make_app(tmp_path / "server", keyholder)
    yield app
    close_app(app)


def _service(app: Flask) -> Aggregator:
    return app.extensions["blindsum.aggregator"]


def _serial(keyholder: RunningKeyholder) -> int:
    return int(json.loads(keyholder.live.db.latest_manifest()["payload"])["serial"])


def test_healthz_is_ok_with_a_verified_manifest(client: Any,
                                                keyholder: RunningKeyholder) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "manifest_serial": _serial(keyholder)}


def test_manifest_is_relayed_unchanged(client: Any, keyholder: RunningKeyholder) -> None:
    response = client.get("/v1/manifest")
    assert response.status_code == 200
    assert response.get_json() == keyholder.live.db.latest_manifest()


def test_ckks_context_is_served_and_matches_the_signed_digest(client: Any) -> None:
    response = client.get(f"/v1/keys/{ckks_kid()}/context")
    assert response.status_code == 200
    assert response.content_type == "application/octet-stream"
    expected = ckks_secret().public.public_json()["context_sha256"]
    assert hashlib.sha256(response.get_data()).hexdigest() == expected


@pytest.mark.parametrize("which", ["paillier", "unknown"])
def test_context_of_a_key_without_one_is_404(client: Any, which: str) -> None:
    kid = paillier_kid() if which == "paillier" else "no-such-key"
    response = client.get(f"/v1/keys/{kid}/context")
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert kid in response.get_json()["detail"]


def test_unknown_path_and_wrong_method_are_problem_documents(client: Any) -> None:
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.content_type == "application/problem+json"
    assert missing.get_json()["code"] == "not-found"
    response = client.get("/v1/reports")
    assert response.status_code == 405
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "method-not-allowed"
    assert "POST" in response.headers["Allow"]
    assert client.delete("/v1/windows").status_code == 405


def test_published_metric_with_an_impossible_name_is_404(client: Any) -> None:
    response = client.get("/v1/published/" + "X" * 300)
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert "X" * 300 not in response.get_data(as_text=True)


def test_openapi_describes_every_route(app: Flask, client: Any) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.0")
    routes = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules() if rule.endpoint != "static"
    }
    assert routes == set(document["paths"])
    report_errors = document["paths"]["/v1/reports"]["post"]["responses"]
    assert {"200", "400", "401", "403", "409", "413", "415"} <= set(report_errors)
    problem = report_errors["400"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/Problem"}


def test_openapi_report_schema_admits_every_ciphertext_form_the_server_accepts() -> None:
    document = openapi_document()
    schema = {**document["components"]["schemas"]["ReportBatch"],
              "components": document["components"]}
    validator = jsonschema.Draft4Validator(schema)
    sdk_form = codec.loads(codec.dumps(ReportBatch((Report(
        secrets.token_bytes(16), "opened", 1, "k1", 0, (secrets.token_bytes(768),)),)).to_wire()))
    phe_form = json.loads(json.dumps(sdk_form))
    phe_form["reports"][0]["ct"] = [[str(7**900), 0]]
    for body in (sdk_form, phe_form):
        ReportBatch.from_wire(body)  # the server's own reader accepts it ...
        validator.validate(body)  # ... and so does the published schema
    phe_form["reports"][0]["ct"] = [["12", 0, 1]]
    assert not validator.is_valid(phe_form)


def test_server_starts_without_a_keyholder_from_its_cached_manifest(
    tmp_path: Path, keyholder: RunningKeyholder
) -> None:
    first = make_app(tmp_path / "server", keyholder)
    assert first.test_client().get(f"/v1/keys/{ckks_kid()}/context").status_code == 200
    close_app(first)  # caches the manifest and the CKKS context it used

    keyholder.stop()
    app = make_app(tmp_path / "server", keyholder)
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        batch = [make_report("latency", 3), make_report("embed", [1] * 8)]
        assert post_reports(client, batch).get_json()["accepted"] == 2
    finally:
        close_app(app)


def test_without_keyholder_or_cache_the_server_is_not_ready_until_it_can_fetch(
    tmp_path: Path, keyholder: RunningKeyholder
) -> None:
    keyholder.stop()
    app = make_app(tmp_path / "server", keyholder)
    try:
        client = app.test_client()
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.get_json()["status"] == "no-manifest"
        refused = post_reports(client, [make_report("latency", 1)])
        assert refused.status_code == 502 and refused.get_json()["code"] == "upstream"
        keyholder.start()
        _service(app).manifests.refresh()
        assert client.get("/healthz").status_code == 200
        assert post_reports(client, [make_report("latency", 1)]).status_code == 200
    finally:
        close_app(app)


def _extra_policy(name: str) -> list[MetricPolicy]:
    return [MetricPolicy.from_mapping(name, {
        "kind": "count", "scheme": "paillier", "window_seconds": 3600,
        "privacy": {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 10.0}})]


def test_an_older_manifest_never_replaces_a_newer_one(
    app: Flask, keyholder: RunningKeyholder, tmp_path: Path
) -> None:
    manifests = _service(app).manifests
    backup = copy_of(tmp_path)  # the key-holder's data as it is now
    keyholder.add_policies(_extra_policy("latency.extra"))  # signs a newer manifest
    newer = _serial(keyholder)
    assert manifests.refresh() and manifests.manifest().serial == newer
    keyholder.stop()
    keyholder.start(backup)  # restored from an old backup: serves a genuine older manifest
    assert not manifests.refresh()
    assert f"older than serial {newer}" in (manifests.last_error or "")
    assert manifests.manifest().serial == newer


def test_a_manifest_not_signed_by_the_pinned_identity_is_never_adopted(
    app: Flask, keyholder: RunningKeyholder, tmp_path: Path
) -> None:
    manifests = _service(app).manifests
    serial = manifests.manifest().serial
    keyholder.stop()
    keyholder.start(copy_of(tmp_path, impostor=True))  # same keys, another identity
    assert not manifests.refresh()
    assert "not signed by the pinned" in (manifests.last_error or "")
    assert manifests.manifest().serial == serial


def test_a_tampered_cached_manifest_is_ignored(tmp_path: Path,
                                              keyholder: RunningKeyholder) -> None:
    close_app(make_app(tmp_path / "server", keyholder))
    conn = sqlite3.connect(tmp_path / "server" / "aggregator.db")
    document = json.loads(conn.execute("SELECT document FROM manifest_cache").fetchone()[0])
    tampered = document["payload"].replace('"min_contributors":2', '"min_contributors":1')
    assert tampered != document["payload"]
    document["payload"] = tampered
    conn.execute("UPDATE manifest_cache SET document = ?", (json.dumps(document),))
    conn.commit()
    conn.close()
    keyholder.stop()
    app = make_app(tmp_path / "server", keyholder)
    try:
        assert app.test_client().get("/healthz").status_code == 503
    finally:
        close_app(app)


def test_aggregator_code_never_imports_secret_key_holders() -> None:
    import blindsum.server.aggregator as package

    forbidden = {"PaillierSecret", "CkksSecret", "SecretScheme", "generate_paillier",
                 "generate_ckks"}
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
                assert not forbidden & {alias.name for alias in node.names}, path.name
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                assert not module.startswith("blindsum.server.keyholder"), (path.name, module)
