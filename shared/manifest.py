"""The signed manifest: public keys (with key ids) and metric policies.

The key-holder issues it; SDKs and the server accept it only if it verifies against the
pinned key-holder identity, so neither a server nor the network can swap in its own key or
loosen a policy. CKKS public contexts are too large to inline (~130 KB), so the manifest
carries their SHA-256 and the context bytes travel separately, checked against that digest.

For every Paillier key and Paillier metric the manifest also states the report layout
(``layouts``: slot width, slots per plaintext, the noise headroom a threshold key reserves,
and the randomiser exponent length a validity proof is bounded by). The SDK computes the
same figures itself; they are there for apps that build reports without it
(docs/INTEROP.md), and ``verify`` refuses a manifest whose layouts disagree with its keys and
policies, so the two can never drift apart.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blindsum.shared.errors import (
    BlindsumError,
    InvalidCiphertext,
    ManifestError,
    MetricPaused,
    NotFound,
)
from blindsum.shared.headroom import headroom
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import PublicScheme, SlotSpec
from blindsum.shared.signing import sign_document, verify_document

MANIFEST_TYPE = "blindsum.manifest"
KEY_STATUSES = ("active", "accepted")


@dataclass(frozen=True)
class KeyEntry:
    """One public key as the manifest lists it."""

    scheme: str
    key_id: str
    status: str
    public: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "kid": self.key_id, "status": self.status,
                "public": self.public}


@dataclass(frozen=True)
class Pause:
    """A metric the key-holder can release no more of until ``until`` (None: ever)."""

    metric: str
    reason: str
    until: int | None

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "reason": self.reason, "until": self.until}

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Layout:
    """How reports of one metric are laid out under one Paillier key (see the module doc).

    ``fields()`` is the tuple a validity proof's transcript binds (statements.spec_fields).
    """

    metric: str
    version: int
    key_id: str
    slots: int
    slot_max: int
    max_contributors: int
    headroom: int
    width: int
    per: int
    exponent_bits: int

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "version": self.version, "kid": self.key_id,
                "slots": self.slots, "slot_max": self.slot_max,
                "max_contributors": self.max_contributors, "headroom": self.headroom,
                "width": self.width, "per": self.per, "exponent_bits": self.exponent_bits}

    def fields(self) -> tuple[int, ...]:
        return (self.slots, self.slot_max, self.max_contributors, self.headroom, self.width,
                self.per)


def layouts(keys: list[KeyEntry] | tuple[KeyEntry, ...],
            policies: Mapping[str, MetricPolicy] | list[MetricPolicy]) -> list[Layout]:
    """Every (Paillier key, Paillier metric) layout that fits, in key then metric order."""
    from blindsum.shared.schemes.paillier import PaillierPublic

    listed = list(policies.values()) if isinstance(policies, Mapping) else list(policies)
    out = []
    for entry in keys:
        if entry.scheme != "paillier":
            continue
        public = PaillierPublic.from_json(entry.public)
        for policy in listed:
            if policy.scheme != "paillier":
                continue
            spec = slot_spec(policy)
            if public.capacity_error(spec):
                continue  # e.g. an old key too small for a new policy: no report can use it
            width, per = public.layout(spec)
            out.append(Layout(policy.name, policy.version, entry.key_id, spec.count,
                              spec.max_value, spec.max_contributors, spec.headroom, width,
                              per, public.exponent_bits))
    return out


@dataclass(frozen=True)
class Manifest:
    """A verified manifest. Build with ``Manifest.verify`` (or ``issue`` at the key-holder)."""

    serial: int
    issued_at: int
    keys: tuple[KeyEntry, ...]
    policies: Mapping[str, MetricPolicy]
    document: Mapping[str, str] = field(compare=False, repr=False)
    paused: Mapping[str, Pause] = field(default_factory=dict)

    def check_not_paused(self, metric: str, now: float) -> None:
        """Raise ``MetricPaused`` (with the reason and until when) if ``metric`` is paused."""
        pause = self.paused.get(metric)
        if pause is not None and pause.active(now):
            until = ("for good" if pause.until is None else
                     "until " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pause.until)))
            raise MetricPaused(f"metric {metric!r} is paused {until}: {pause.reason}; "
                               "nothing recorded now could be published")

    def policy(self, name: str) -> MetricPolicy:
        """The current policy of a metric. Raises NotFound naming the metric."""
        try:
            return self.policies[name]
        except KeyError:
            raise NotFound(f"metric {name!r} is not in the manifest") from None

    def active_key(self, scheme: str) -> KeyEntry:
        for entry in self.keys:
            if entry.scheme == scheme and entry.status == "active":
                return entry
        raise NotFound(f"the manifest has no active {scheme} key")

    def key(self, key_id: str) -> KeyEntry:
        for entry in self.keys:
            if entry.key_id == key_id:
                return entry
        raise NotFound(f"key id {key_id!r} is not in the manifest")

    @classmethod
    def issue(
        cls,
        identity: Ed25519PrivateKey,
        serial: int,
        keys: list[KeyEntry],
        policies: list[MetricPolicy],
        paused: list[Pause] | tuple[Pause, ...] = (),
    ) -> Manifest:
        payload: dict[str, Any] = {
            "type": MANIFEST_TYPE,
            "v": 1,
            "serial": serial,
            "issued_at": int(time.time()),
            "keys": [k.to_json() for k in keys],
            "policies": [p.to_json() for p in policies],
            "layouts": [layout.to_json() for layout in layouts(keys, policies)],
        }
        if paused:  # absent when nothing is paused: older SDKs read such manifests as before
            payload["paused"] = [p.to_json() for p in paused]
        return cls.verify(sign_document(identity, payload), identity.public_key())

    @classmethod
    def verify(cls, document: Any, pinned: Ed25519PublicKey) -> Manifest:
        """Verify a signed manifest document and parse it.

        Raises:
            ManifestError: bad signature, wrong type, or contents that do not parse.
        """
        body = verify_document(document, pinned, "manifest")
        if body.get("type") != MANIFEST_TYPE or body.get("v") != 1:
            raise ManifestError("document is not a version-1 blindsum manifest")
        try:
            keys = tuple(_key_entry(raw) for raw in body["keys"])
            policies = {}
            for raw in body["policies"]:
                policy = MetricPolicy.from_mapping(raw["name"], raw)
                policies[policy.name] = policy
            paused = {}
            for raw in body.get("paused", []):
                until = raw["until"]
                if until is not None and (isinstance(until, bool) or not isinstance(until, int)):
                    raise ValueError(f"paused metric {raw['metric']!r} has a bad until")
                paused[str(raw["metric"])] = Pause(str(raw["metric"]), str(raw["reason"]), until)
            if "layouts" in body:  # absent from manifests issued before layouts were listed
                _check_layouts(body["layouts"], layouts(keys, policies))
            return cls(int(body["serial"]), int(body["issued_at"]), keys, policies, document,
                       paused)
        except (KeyError, TypeError, ValueError, BlindsumError) as exc:
            raise ManifestError(f"manifest contents are invalid: {exc}") from None


def _check_layouts(listed: Any, expected: list[Layout]) -> None:
    if listed != [layout.to_json() for layout in expected]:
        raise ValueError("its layouts do not match its keys and policies")


def _key_entry(raw: Any) -> KeyEntry:
    if not isinstance(raw, Mapping) or raw.get("status") not in KEY_STATUSES:
        raise ValueError("key entry needs scheme, kid, status (active|accepted) and public")
    if raw.get("scheme") not in ("paillier", "ckks") or not isinstance(raw.get("public"), dict):
        raise ValueError(f"key entry has unknown scheme {raw.get('scheme')!r}")
    return KeyEntry(raw["scheme"], str(raw["kid"]), raw["status"], raw["public"])


def slot_spec(policy: MetricPolicy) -> SlotSpec:
    """The slot layout a policy implies (shared by SDK, server and key-holder). Its noise
    headroom is derived from the public policy alone, so every party agrees on it; only a
    threshold key's layout uses it."""
    return SlotSpec(policy.slot_count, policy.slot_max, policy.max_contributors,
                    headroom(policy))


ContextFetcher = Callable[[str], bytes]


class Keyring:
    """Public scheme objects for a verified manifest, built lazily and cached by key id.

    ``fetch_context(key_id)`` returns a CKKS public context's bytes from wherever the caller
    gets them (HTTP for the SDK and server); the bytes are accepted only if their SHA-256
    matches the signed manifest.
    """

    def __init__(self, manifest: Manifest, fetch_context: ContextFetcher | None = None) -> None:
        self.manifest = manifest
        self._fetch_context = fetch_context
        self._schemes: dict[str, PublicScheme] = {}

    def scheme(self, key_id: str) -> PublicScheme:
        cached = self._schemes.get(key_id)
        if cached is None:
            cached = self._schemes[key_id] = self._build(self.manifest.key(key_id))
        return cached

    def scheme_for(self, policy: MetricPolicy) -> PublicScheme:
        return self.scheme(self.manifest.active_key(policy.scheme).key_id)

    def _build(self, entry: KeyEntry) -> PublicScheme:
        if entry.scheme == "paillier":
            from blindsum.shared.schemes.paillier import PaillierPublic

            return PaillierPublic.from_json(entry.public)
        from blindsum.shared.schemes.ckks import CkksPublic

        if self._fetch_context is None:
            raise ManifestError("no way to fetch the CKKS public context")
        data = self._fetch_context(entry.key_id)
        expected = entry.public.get("context_sha256")
        if hashlib.sha256(data).hexdigest() != expected:
            raise ManifestError(
                f"CKKS context for key {entry.key_id!r} does not match the signed manifest"
            )
        return CkksPublic.from_context_bytes(data, entry.key_id)

    def check_report_key(self, policy: MetricPolicy, key_id: str) -> PublicScheme:
        """The scheme a report under ``key_id`` must use, or InvalidCiphertext naming why."""
        try:
            entry = self.manifest.key(key_id)
        except NotFound:
            raise InvalidCiphertext(f"key id {key_id!r} is unknown or retired") from None
        if entry.scheme != policy.scheme:
            raise InvalidCiphertext(
                f"metric {policy.name!r} uses {policy.scheme}, key {key_id!r} is {entry.scheme}"
            )
        return self.scheme(key_id)
