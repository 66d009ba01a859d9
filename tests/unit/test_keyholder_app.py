"""The key-holder's HTTP surface, through Flask's test client (fast route checks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindsum.server.keyholder.app import create_app
from blindsum.server.keyholder.config import KeyholderConfig, load_config
from blindsum.server.keyholder.service import Keyholder
from blindsum.shared import codec
from blindsum.shared.errors import InvalidConfig
from blindsum.shared.manifest import Manifest


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, test_policies):  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("khapp") / "kh"
    holder, init = Keyholder.init(data_dir, "pass", paillier_bits=2048)
    holder.add_policies(test_policies)
    app = create_app(KeyholderConfig(data_dir, "pass", max_body_bytes=4096), holder)
    return app.test_client(), holder, init


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": codec.JSON}


def test_manifest_is_public_and_verifies(setup) -> None:
    client, holder, _ = setup
    response = client.get("/v1/manifest")
    assert response.status_code == 200
    manifest = Manifest.verify(response.get_json(), holder.identity.public_key())
    assert "seconds" in manifest.policies


def test_ckks_context_matches_the_manifest_digest(setup) -> None:
    import hashlib

    client, holder, _ = setup
    manifest = Manifest.verify(client.get("/v1/manifest").get_json(),
                               holder.identity.public_key())
    key = manifest.active_key("ckks")
    body = client.get(f"/v1/keys/{key.key_id}/context").data
    assert hashlib.sha256(body).hexdigest() == key.public["context_sha256"]
    missing = client.get("/v1/keys/nope/context")
    assert missing.status_code == 404 and missing.content_type == "application/problem+json"


@pytest.mark.parametrize("path", ["/v1/budget", "/v1/releases/seconds/1/0"])
def test_release_routes_need_the_release_token(setup, path: str) -> None:
    client, _, init = setup
    assert client.get(path).status_code == 401
    assert client.get(path, headers=auth("guess")).status_code == 401
    assert client.get(path, headers=auth(init.release_token)).status_code in (200, 404)


def test_release_without_token_is_401_and_changes_nothing(setup) -> None:
    client, holder, _ = setup
    before = holder.db.conn.execute("SELECT COUNT(*) FROM releases").fetchone()
    response = client.post("/v1/releases", data=b"{}", headers={"Content-Type": codec.JSON})
    assert response.status_code == 401
    assert response.get_json()["code"] == "unauthorized"
    assert holder.db.conn.execute("SELECT COUNT(*) FROM releases").fetchone() == before


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"{", 400, "not valid JSON"),
    (b'{"v":1}', 400, "release.metric is required"),
    (b"x" * 5000, 413, "exceeds"),
])
def test_bad_release_bodies_are_problems(setup, body: bytes, status: int, fragment: str) -> None:
    client, _, init = setup
    response = client.post("/v1/releases", data=body, headers=auth(init.release_token))
    assert response.status_code == status
    assert response.content_type == "application/problem+json"
    assert fragment in response.get_json()["detail"]


def test_unknown_routes_and_methods_are_problem_json(setup) -> None:
    client, _, _ = setup
    assert client.get("/nope").content_type == "application/problem+json"
    wrong = client.delete("/v1/manifest")
    assert wrong.status_code == 405 and wrong.content_type == "application/problem+json"


def test_openapi_describes_every_route(setup) -> None:
    client, _, _ = setup
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    described = set(document["paths"])
    routes = {str(rule).replace("<int:", "{").replace("<", "{").replace(">", "}")
              for rule in client.application.url_map.iter_rules()
              if rule.endpoint != "static"}
    assert routes - {"/openapi.json"} <= described | {"/openapi.json"}


def test_config_needs_a_data_dir(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="data directory"):
        load_config({}, env={})
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(InvalidConfig, match="passphrase file is empty"):
        load_config({"data_dir": str(tmp_path), "passphrase_file": str(empty)}, env={})
