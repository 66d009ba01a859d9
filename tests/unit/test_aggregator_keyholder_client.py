"""The server's HTTP client to the key-holder: pinned signatures, matching results, errors.

A small key-holder stand-in is served on localhost by werkzeug, so the real ``requests``
path (headers, bodies, status codes, problem documents) is exercised.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aggregator_kit import (
    CKKS_KID,
    HOUR,
    PAILLIER_KID,
    RELEASE,
    T0,
    FakeKeyholder,
    ckks_secret,
    identity_key,
    issue_manifest,
    make_config,
    make_report,
    paillier_secret,
    post_reports,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, Response, request
from werkzeug.serving import make_server

from blindsum.server.aggregator.app import close_app, create_app
from blindsum.server.aggregator.keyholder_client import KeyholderClient
from blindsum.server.aggregator.store import WindowKey
from blindsum.server.http import problem
from blindsum.shared import codec
from blindsum.shared.codec import ReleaseRequest
from blindsum.shared.errors import (
    AlreadyReleased,
    BudgetExhausted,
    ManifestError,
    ReleaseRefused,
    UpstreamError,
)
from blindsum.shared.manifest import slot_spec
from blindsum.shared.signing import identity_string, sign_document

WINDOW = T0 - T0 % HOUR
OTHER = Ed25519PrivateKey.generate()
PINNED = identity_string(identity_key().public_key())


@dataclass
class Behaviour:
    """How the stand-in answers; tests flip these."""

    mode: str = "ok"
    manifest_signer: Ed25519PrivateKey = field(default_factory=identity_key)
    seen: list[tuple[str, str, str]] = field(default_factory=list)


def _stand_in(behaviour: Behaviour, fake: FakeKeyholder) -> Flask:
    app = Flask("keyholder-stand-in")

    @app.get("/v1/manifest")
    def manifest() -> Any:
        return issue_manifest(signer=behaviour.manifest_signer).document

    @app.get("/v1/keys/<kid>/context")
    def context(kid: str) -> Response:
        return Response(fake.fetch_context(kid), mimetype="application/octet-stream")

    @app.post("/v1/releases")
    def release() -> Response:
        behaviour.seen.append((request.content_type or "",
                               request.headers.get("Authorization", ""),
                               request.headers.get("Accept", "")))
        wire = codec.loads(request.get_data(), codec.media_type(request.content_type))
        sent = ReleaseRequest.from_wire(wire)
        mode = behaviour.mode
        if mode in ("refuse", "budget", "already", "unauthorized", "boom"):
            status, code = {"refuse": (422, "release-refused"),
                            "budget": (422, "budget-exhausted"),
                            "already": (409, "already-released"),
                            "unauthorized": (401, "unauthorized"),
                            "boom": (500, "internal")}[mode]
            if mode == "already" and (sent.metric, sent.version, sent.window) not in fake.released:
                fake.release(sent)  # as if released at the key-holder before
            return problem(status, "no", f"stand-in says {mode}", code)
        result = fake.release(sent)
        payload = dict(result.payload)
        if mode == "mismatch":
            payload["report_count"] += 1
        signer = OTHER if mode == "wrong-signer" else identity_key()
        return Response(json.dumps(sign_document(signer, payload)), status=201,
                        mimetype="application/json")

    @app.get("/v1/releases/<metric>/<int:version>/<int:window>")
    def stored(metric: str, version: int, window: int) -> Response:
        result = fake.released.get((metric, version, window))
        if result is None:
            return problem(404, "Not found", "never released", "not-found")
        return Response(json.dumps(result.document), mimetype="application/json")

    return app


@pytest.fixture
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture
def fake() -> FakeKeyholder:
    return FakeKeyholder()


@pytest.fixture
def base_url(behaviour: Behaviour, fake: FakeKeyholder) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, _stand_in(behaviour, fake), threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def client(base_url: str) -> Iterator[KeyholderClient]:
    client = KeyholderClient(base_url, PINNED, RELEASE)
    yield client
    client.close()


def _request(fake: FakeKeyholder, count: int = 2) -> ReleaseRequest:
    """A closed window of ``count`` latency reports 0, 1, 2, ..."""
    fake.clock.now = WINDOW + 2 * HOUR
    reports = [make_report("latency", v) for v in range(count)]
    spec = slot_spec(fake.manifest.policy("latency"))
    key = paillier_secret().public
    aggregate = key.dump(key.add_many([key.load(r.ciphertexts, spec) for r in reports]))
    return ReleaseRequest("latency", 1, WINDOW, PAILLIER_KID, count,
                          codec.report_ids_digest([r.report_id for r in reports]),
                          tuple(aggregate))


# -- documents -----------------------------------------------------------------------------


def test_manifest_is_verified_against_the_pinned_identity(client: KeyholderClient) -> None:
    manifest = client.fetch_manifest()
    assert set(manifest.policies) == {"visits", "latency", "pages", "embed"}


def test_manifest_signed_by_another_identity_is_refused(client: KeyholderClient,
                                                        behaviour: Behaviour) -> None:
    behaviour.manifest_signer = OTHER
    with pytest.raises(ManifestError, match="not signed by the pinned"):
        client.fetch_manifest()


def test_ckks_context_bytes_are_fetched(client: KeyholderClient) -> None:
    assert client.fetch_context(CKKS_KID) == ckks_secret().public.context_bytes


# -- releases ------------------------------------------------------------------------------


def test_release_sends_cbor_with_the_release_token_and_verifies_the_result(
    client: KeyholderClient, fake: FakeKeyholder, behaviour: Behaviour
) -> None:
    result = client.release(_request(fake))
    assert result.payload["report_count"] == 2
    assert result.payload["value"] == 1  # 0 + 1
    assert behaviour.seen == [(codec.CBOR, f"Bearer {RELEASE}", codec.JSON)]


def test_result_signed_by_another_key_is_rejected(client: KeyholderClient,
                                                  fake: FakeKeyholder,
                                                  behaviour: Behaviour) -> None:
    behaviour.mode = "wrong-signer"
    with pytest.raises(ManifestError, match="not signed by the pinned"):
        client.release(_request(fake))


def test_result_for_other_reports_is_rejected(client: KeyholderClient, fake: FakeKeyholder,
                                              behaviour: Behaviour) -> None:
    behaviour.mode = "mismatch"
    with pytest.raises(ManifestError, match="report_count"):
        client.release(_request(fake))


def test_already_released_answers_with_the_stored_matching_result(
    client: KeyholderClient, fake: FakeKeyholder, behaviour: Behaviour
) -> None:
    behaviour.mode = "already"
    request = _request(fake)
    assert client.release(request).payload["report_ids_digest"] == \
        request.report_ids_digest.hex()


@pytest.mark.parametrize("mode, error, fragment", [
    ("refuse", ReleaseRefused, "stand-in says refuse"),
    ("budget", BudgetExhausted, "stand-in says budget"),
    ("unauthorized", UpstreamError, "401 unauthorized"),
    ("boom", UpstreamError, "500 internal"),
])
def test_problem_answers_map_to_our_errors(client: KeyholderClient, fake: FakeKeyholder,
                                           behaviour: Behaviour, mode: str,
                                           error: type[Exception], fragment: str) -> None:
    behaviour.mode = mode
    with pytest.raises(error, match=fragment) as caught:
        client.release(_request(fake))
    if mode == "unauthorized":
        assert type(caught.value) is UpstreamError  # never "you are unauthorized"


def test_already_released_with_other_reports_is_an_already_released_error(
    client: KeyholderClient, fake: FakeKeyholder, behaviour: Behaviour
) -> None:
    behaviour.mode = "already"
    client.release(_request(fake))  # the stand-in stores one release of the window
    with pytest.raises(AlreadyReleased, match="already released with other reports"):
        client.release(_request(fake, count=3))


def test_unreachable_keyholder_is_an_upstream_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = KeyholderClient(f"http://127.0.0.1:{port}", PINNED, RELEASE)
    with pytest.raises(UpstreamError, match="unreachable"):
        client.fetch_manifest()


# -- through the server --------------------------------------------------------------------


def test_server_stores_nothing_when_the_result_is_not_signed_by_the_keyholder(
    tmp_path: Path, base_url: str, fake: FakeKeyholder, behaviour: Behaviour
) -> None:
    fake.clock.now = T0
    config = make_config(tmp_path, keyholder_url=base_url)
    app = create_app(config, clock=fake.clock)
    try:
        client = app.test_client()
        reports = [make_report("latency", v) for v in (1, 2)]
        assert post_reports(client, reports).status_code == 200
        behaviour.mode = "wrong-signer"
        fake.clock.now = WINDOW + 2 * HOUR
        service = app.extensions["blindsum.aggregator"]
        [outcome] = service.releases.release_due()
        assert (outcome.status, outcome.code) == ("failed", "manifest-unverified")
        assert service.store.results() == []
        row = service.store.window(WindowKey("latency", 1, WINDOW, PAILLIER_KID))
        assert row.state == "sealed"  # retried later, never released on a forged result
        assert client.get("/v1/published").get_json() == {"results": []}
    finally:
        close_app(app)
