"""Aggregator configuration: one typed value from the environment, CLI overrides winning."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.server.aggregator.config import MIB, AggregatorConfig, load_config
from blindsum.server.http import token_digest
from blindsum.shared.errors import InvalidConfig
from blindsum.shared.signing import identity_string

IDENTITY = identity_string(Ed25519PrivateKey.generate().public_key())
ENV = {
    "BLINDSUM_SERVER_DATA_DIR": "/var/lib/blindsum",
    "BLINDSUM_KEYHOLDER_URL": "https://keyholder.example:8443/",
    "BLINDSUM_KEYHOLDER_IDENTITY": IDENTITY,
    "BLINDSUM_INGEST_TOKENS": "app-one, app-two,,",
    "BLINDSUM_ADMIN_TOKENS": "operator",
    "BLINDSUM_RELEASE_TOKEN": "server-release",
}


def test_loads_every_field_from_the_environment() -> None:
    config = load_config(env=ENV)
    assert config == AggregatorConfig(
        data_dir=Path("/var/lib/blindsum"),
        keyholder_url="https://keyholder.example:8443",
        keyholder_identity=IDENTITY,
        ingest_token_digests=(token_digest("app-one"), token_digest("app-two")),
        admin_token_digests=(token_digest("operator"),),
        release_token="server-release",
    )
    assert config.auto_release is True
    assert config.max_body_bytes == 64 * MIB
    assert (config.rate_limit_ingest, config.rate_limit_admin) == ("600/minute", "120/minute")


def test_environment_tokens_are_kept_as_digests_only() -> None:
    config = load_config(env=ENV)
    assert "app-one" not in repr(config) and "operator" not in repr(config)


def test_tokens_from_the_environment_are_optional() -> None:
    env = {k: v for k, v in ENV.items() if not k.endswith(("INGEST_TOKENS", "ADMIN_TOKENS"))}
    config = load_config(env=env)
    assert config.ingest_token_digests == () and config.admin_token_digests == ()


def test_rate_limits_come_from_the_environment_and_off_disables_one() -> None:
    config = load_config(env={**ENV, "BLINDSUM_RATE_LIMIT_INGEST": "10/second;500/hour",
                              "BLINDSUM_RATE_LIMIT_ADMIN": "off",
                              "BLINDSUM_RATE_LIMIT_PUBLIC": "100 per minute",
                              "BLINDSUM_RATE_LIMIT_AUTH_FAILURES": "5/minute"})
    assert config.rate_limit_ingest == "10/second;500/hour"
    assert config.rate_limit_admin is None
    assert config.rate_limit_public == "100 per minute"
    assert config.rate_limit_auth_failures == "5/minute"


def test_overrides_win_over_the_environment_and_none_means_not_given() -> None:
    config = load_config(
        {"data_dir": "/srv/data", "auto_release": "false", "release_interval_seconds": "0.5",
         "keyholder_url": None, "ingest_tokens": ["a", "b"], "max_body_bytes": 2048},
        env=ENV,
    )
    assert config.data_dir == Path("/srv/data")
    assert config.auto_release is False
    assert config.release_interval_seconds == 0.5
    assert config.keyholder_url == "https://keyholder.example:8443"
    assert config.ingest_token_digests == (token_digest("a"), token_digest("b"))
    assert config.max_body_bytes == 2048


@pytest.mark.parametrize("variable, field", [
    ("BLINDSUM_SERVER_DATA_DIR", "data_dir"),
    ("BLINDSUM_KEYHOLDER_URL", "keyholder_url"),
    ("BLINDSUM_KEYHOLDER_IDENTITY", "keyholder_identity"),
    ("BLINDSUM_RELEASE_TOKEN", "release_token"),
])
def test_missing_required_field_is_named(variable: str, field: str) -> None:
    env = {k: v for k, v in ENV.items() if k != variable}
    with pytest.raises(InvalidConfig, match=f"{field} is required.*{variable}"):
        load_config(env=env)


@pytest.mark.parametrize("variable, value, fragment", [
    ("BLINDSUM_KEYHOLDER_URL", "ftp://keyholder", "keyholder_url"),
    ("BLINDSUM_KEYHOLDER_URL", "keyholder:8443", "http:// or https://"),
    ("BLINDSUM_KEYHOLDER_URL", "https://k/?x=1", "query"),
    ("BLINDSUM_KEYHOLDER_IDENTITY", "ed25519:short", "keyholder_identity"),
    ("BLINDSUM_KEYHOLDER_IDENTITY", "rsa:abc", "must start with 'ed25519:'"),
    ("BLINDSUM_INGEST_TOKENS", " , ", "ingest_tokens"),
    ("BLINDSUM_ADMIN_TOKENS", "has space", "admin_tokens"),
    ("BLINDSUM_AUTO_RELEASE", "maybe", "auto_release"),
    ("BLINDSUM_CA_BUNDLE", "/nonexistent/ca.pem", "ca_bundle"),
    ("BLINDSUM_RATE_LIMIT_INGEST", "lots", "rate_limit_ingest"),
    ("BLINDSUM_RATE_LIMIT_ADMIN", "0/minute", "rate_limit_admin"),
    ("BLINDSUM_MAX_BODY_BYTES", "12", "max_body_bytes"),
])
def test_invalid_environment_value_is_named(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(InvalidConfig, match=fragment) as caught:
        load_config(env={**ENV, variable: value})
    assert variable in caught.value.detail


@pytest.mark.parametrize("field, value", [
    ("release_interval_seconds", 0),
    ("release_interval_seconds", "soon"),
    ("manifest_refresh_seconds", -1),
    ("max_body_bytes", 10),
    ("max_body_bytes", True),
])
def test_invalid_override_is_named_with_its_flag(field: str, value: object) -> None:
    flag = "--" + field.replace("_", "-")
    with pytest.raises(InvalidConfig, match=f"{field} \\({flag}\\)"):
        load_config({field: value}, env=ENV)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(InvalidConfig, match="unknown aggregator settings"):
        load_config({"colour": "blue"}, env=ENV)


@pytest.mark.parametrize("changes", [
    {"BLINDSUM_ADMIN_TOKENS": "app-two"},
    {"BLINDSUM_RELEASE_TOKEN": "operator"},
])
def test_roles_must_not_share_a_token(changes: dict[str, str]) -> None:
    with pytest.raises(InvalidConfig, match="must not share a token"):
        load_config(env={**ENV, **changes})


def test_auto_release_accepts_the_usual_spellings() -> None:
    for text, value in [("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False)]:
        assert load_config(env={**ENV, "BLINDSUM_AUTO_RELEASE": text}).auto_release is value


def test_serve_passes_ca_bundle_to_the_configuration(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import blindsum.server.aggregator.config as config_module
    import blindsum.server.wsgi as wsgi
    from blindsum.server.cli import main

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    loaded: list[AggregatorConfig] = []

    def load(overrides: dict[str, object] | None = None) -> AggregatorConfig:
        loaded.append(load_config(overrides, env=ENV))
        return loaded[-1]

    monkeypatch.setattr(config_module, "load_config", load)
    monkeypatch.setattr(wsgi, "serve", lambda *args, **kwargs: None)
    assert main(["server", "serve", "--ca-bundle", str(ca), "--data-dir", str(tmp_path)]) == 0
    assert [c.ca_bundle for c in loaded] == [str(ca)]
    assert main(["server", "serve", "--ca-bundle", str(tmp_path / "missing.pem")]) == 2


def test_manifest_refresh_interval_comes_from_the_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from blindsum.server.aggregator.config import load_config

    env = {"BLINDSUM_SERVER_DATA_DIR": str(tmp_path),
           "BLINDSUM_KEYHOLDER_URL": "http://127.0.0.1:1",
           "BLINDSUM_KEYHOLDER_IDENTITY": "ed25519:" + "A" * 43,
           "BLINDSUM_RELEASE_TOKEN": "rel_x",
           "BLINDSUM_MANIFEST_REFRESH_SECONDS": "2.5"}
    assert load_config(env=env).manifest_refresh_seconds == 2.5
    import pytest

    from blindsum.shared.errors import InvalidConfig

    with pytest.raises(InvalidConfig, match=r"0\.\.86400"):
        load_config(env={**env, "BLINDSUM_MANIFEST_REFRESH_SECONDS": "soon"})
