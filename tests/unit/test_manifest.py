"""The signed manifest: verified against a pinned identity, or refused."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.shared.errors import InvalidCiphertext, InvalidInput, ManifestError, NotFound
from blindsum.shared.manifest import Keyring, Manifest
from blindsum.shared.signing import identity_string, parse_identity, sign_document


def test_manifest_verifies_against_the_pinned_identity(manifest, identity) -> None:
    again = Manifest.verify(json.loads(json.dumps(manifest.document)), identity.public_key())
    assert again.policies == manifest.policies
    assert again.active_key("paillier").key_id == "pai-test"


def test_manifest_signed_by_another_identity_is_rejected(manifest) -> None:
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ManifestError, match="not signed by the pinned"):
        Manifest.verify(manifest.document, stranger)


def test_tampered_manifest_is_rejected(manifest, identity) -> None:
    document = dict(manifest.document)
    document["payload"] = document["payload"].replace('"upper":600', '"upper":6')
    assert document["payload"] != manifest.document["payload"]
    with pytest.raises(ManifestError):
        Manifest.verify(document, identity.public_key())


def test_signed_garbage_is_not_a_manifest(identity) -> None:
    with pytest.raises(ManifestError, match="not a version-1"):
        Manifest.verify(sign_document(identity, {"type": "other"}), identity.public_key())


@pytest.mark.parametrize("document", [None, [], {"payload": 1}, {"payload": "{}"}])
def test_malformed_documents_are_rejected(document, identity) -> None:
    with pytest.raises(ManifestError):
        Manifest.verify(document, identity.public_key())


def test_identity_string_round_trips(identity) -> None:
    text = identity_string(identity.public_key())
    assert text.startswith("ed25519:")
    assert identity_string(parse_identity(text)) == text


@pytest.mark.parametrize("text", ["", "ed25519:", "rsa:AAAA", "ed25519:" + "A" * 40])
def test_bad_identity_strings_are_rejected(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_identity(text)


def test_keyring_checks_ckks_context_against_the_manifest(manifest, ckks_secret) -> None:
    good = Keyring(manifest, lambda kid: ckks_secret.public.context_bytes)
    assert good.scheme("ckks-test").key_id == "ckks-test"
    bad = Keyring(manifest, lambda kid: ckks_secret.public.context_bytes + b"x")
    with pytest.raises(ManifestError, match="does not match the signed manifest"):
        bad.scheme("ckks-test")


def test_report_key_must_exist_and_match_the_scheme(manifest) -> None:
    keyring = Keyring(manifest)
    policy = manifest.policy("seconds")
    assert keyring.check_report_key(policy, "pai-test").key_id == "pai-test"
    with pytest.raises(InvalidCiphertext, match="unknown or retired"):
        keyring.check_report_key(policy, "pai-gone")
    with pytest.raises(InvalidCiphertext, match="uses paillier"):
        keyring.check_report_key(policy, "ckks-test")
    with pytest.raises(NotFound, match="nope"):
        manifest.policy("nope")


def test_a_paused_metric_round_trips_and_refuses_records_until_its_pause_ends(
    manifest, identity
) -> None:
    from blindsum.shared.errors import MetricPaused
    from blindsum.shared.manifest import Pause

    name = next(iter(manifest.policies))
    paused = Manifest.issue(identity, manifest.serial + 1, list(manifest.keys),
                            list(manifest.policies.values()),
                            [Pause(name, "its privacy budget is spent", 86_400 * 2)])
    again = Manifest.verify(paused.document, identity.public_key())
    assert again.paused == {name: Pause(name, "its privacy budget is spent", 86_400 * 2)}
    with pytest.raises(MetricPaused, match=r"paused until 1970-01-03T00:00:00Z: its privacy"):
        again.check_not_paused(name, 86_400 * 2 - 1)
    again.check_not_paused(name, 86_400 * 2)  # the next period has a whole budget again
    manifest.check_not_paused(name, 0)  # nothing is paused in a manifest without the field
    assert "paused" not in json.loads(manifest.document["payload"])  # the v1 form, unchanged


def test_manifest_lists_each_paillier_metric_layout_as_the_key_computes_it(manifest) -> None:
    from blindsum.shared.manifest import slot_spec
    from blindsum.shared.schemes.paillier import PaillierPublic

    listed = json.loads(manifest.document["payload"])["layouts"]
    public = PaillierPublic.from_json(manifest.active_key("paillier").public)
    paillier = [p for p in manifest.policies.values() if p.scheme == "paillier"]
    assert paillier and len(listed) == len(paillier)
    for entry in listed:
        policy = manifest.policy(entry["metric"])
        spec = slot_spec(policy)
        assert (entry["width"], entry["per"]) == public.layout(spec)
        assert (entry["slots"], entry["slot_max"], entry["max_contributors"],
                entry["headroom"]) == (spec.count, spec.max_value, spec.max_contributors,
                                       spec.headroom)
        assert entry["exponent_bits"] == public.exponent_bits
        assert (entry["kid"], entry["version"]) == ("pai-test", policy.version)


def test_a_signed_manifest_whose_layout_disagrees_with_its_key_is_rejected(manifest,
                                                                           identity) -> None:
    payload = json.loads(manifest.document["payload"])
    payload["layouts"][0]["width"] += 1  # signed by the right identity, but wrong
    with pytest.raises(ManifestError, match="layouts do not match"):
        Manifest.verify(sign_document(identity, payload), identity.public_key())
    del payload["layouts"]  # an older manifest without layouts still verifies
    assert Manifest.verify(sign_document(identity, payload), identity.public_key()).policies
