"""A two-party threshold release: the key-holder's signed partial release, the server's
combination, and the published document anyone can check offline.

Flow (key-holder K is party 1, the server S party 2, as ``run_ceremony`` deals them):

1. K pays, draws its noise ``z`` (each slot within ``[-B, B]``, ``shared/headroom.py``),
   encrypts ``z + B`` packed like a report (``E``), folds it in (``C = A·E``) and signs a
   *partial release*: ``E``, ``C``, its partial decryption of each ``C`` with proof, the
   noise plan and the policy. It stores that document before answering, so a retry gets the
   same one (no second draw, no second debit). K never decrypts anything.
2. S checks the signature, that the release is for its own request, that ``C = A·E`` for
   its own aggregate ``A`` (so K's partials are of the ciphertext S expects), every proof of
   K, then computes its own partials, combines, subtracts ``B`` per slot and post-processes
   with ``encoding.publish`` exactly as a single-key release does.
3. The published document carries K's signed statement, S's partials with proofs and the
   noisy slot sums: ``verify_published`` re-checks all of it against a pinned identity.

Context of every proof: metric, version, window, key id and the request digest (which
hashes each aggregate ciphertext), so a partial made for another window or another set of
reports fails to verify.

With a ``noise = "both"`` policy the server's encrypted noise ``E_S`` is part of the request
and ``C = A·E_S·E_K``; ``server_noise.py`` has the order and the argument.

Every noise ciphertext carries its party's proof that it encrypts, per slot, a value in
``[0, 2B]`` that the party knows (``noise_proof.py``): K's in its signed statement
(``noise_proof``), which S verifies before it computes any partial; S's in its request
(``noise = "both"``), which K verifies before paying and signs with its statement
(``server_noise_proof``). ``verify_published`` checks both offline. So K can no longer pass
``E = c_target·A^-1`` (a decryption oracle) or ``E_S^-1·Enc(2B)`` (cancelling S's noise):
either needs a proof of a plaintext K does not know.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..codec import RELEASE_RESULT_TYPE, ReleaseResult, b64decode, b64encode
from ..encoding import Published, publish, published_values
from ..errors import BlindsumError, InvalidInput, InvalidProof
from ..headroom import noise_bound, noise_offset
from ..manifest import slot_spec
from ..packing import chunk_slots, pack
from ..policy import MetricPolicy
from ..schemes.base import SlotSpec
from ..schemes.paillier import signed_fields
from ..signing import verify_document
from .decryption import PartialDecryption, combine, verify_partial
from .keys import ThresholdPublicKey
from .noise_proof import KEYHOLDER, SERVER, noise_context, verify_noise
from .server_noise import check_folded

Mpz = Any  # gmpy2.mpz; gmpy2 ships no stubs.

PARTIAL_TYPE = "blindsum.partial-release"
RESULT_TYPE = RELEASE_RESULT_TYPE
PUBLISHED_FORMAT = "blindsum-threshold-release-1"
KEYHOLDER_PARTY, SERVER_PARTY = 1, 2

def decryption_context(metric: str, version: int, window: int, key_id: str,
                       request_digest: str) -> bytes:
    """The bytes every partial of one release is bound to."""
    return json.dumps([PUBLISHED_FORMAT, metric, version, window, key_id, request_digest],
                      separators=(",", ":")).encode()


def encrypt_noise(public: ThresholdPublicKey, policy: MetricPolicy,
                  noise: Sequence[int]) -> list[Mpz]:
    """``E``: ``noise + B`` per slot, packed like a report, one ciphertext per plaintext."""
    bound = noise_bound(policy)
    if len(noise) != policy.slot_count or any(abs(z) > bound for z in noise):
        raise InvalidInput(f"noise must be {policy.slot_count} integers within +-{bound}")
    width, per = public.paillier.layout(slot_spec(policy))
    shifted = [int(z) + bound for z in noise]
    return [public.paillier.encrypt_plaintext(pack(chunk, width))
            for chunk in chunk_slots(shifted, per)]


def fold(public: ThresholdPublicKey, aggregate: Sequence[Mpz], noise: Sequence[Mpz]
         ) -> list[Mpz]:
    """``C = A·E`` ciphertext by ciphertext: the aggregate with the noise added."""
    nsq = public.nsquare
    return [gmpy2.mpz(a) * e % nsq for a, e in zip(aggregate, noise, strict=True)]


def decode_noised(public: ThresholdPublicKey, policy: MetricPolicy,
                  plaintexts: Sequence[int]) -> list[int]:
    """Noisy slot sums of the noised plaintexts: unpack, then subtract the offset ``B``.

    Total, like ``PaillierSecret.decrypt``: whatever the plaintexts, ``slot_count``
    integers (a forged report shows up as an out-of-range noisy value, never a refusal).
    """
    width, per = public.paillier.layout(slot_spec(policy))
    n, bound = int(public.n), noise_offset(policy)
    sums: list[int] = []
    for m, chunk in zip(plaintexts, chunk_slots(range(policy.slot_count), per), strict=True):
        lifted = int(m) - n if m > n // 2 else int(m)
        sums.extend(signed_fields(lifted, width, len(chunk)))
    return [s - bound for s in sums]


@dataclass(frozen=True)
class PartialRelease:
    """The key-holder's signed statement, parsed and shape-checked (not the proofs)."""

    payload: dict[str, Any]
    public: ThresholdPublicKey
    policy: MetricPolicy
    noise: tuple[Mpz, ...]
    noised: tuple[Mpz, ...]
    partials: tuple[PartialDecryption, ...]
    half_width: float
    tail_width: float
    # ``noise = "both"`` only (else empty): the aggregate and the server's noise ciphertexts
    # K folded in, with the bytes the request digest hashed
    aggregate: tuple[Mpz, ...] = ()
    server_noise: tuple[Mpz, ...] = ()
    blobs: tuple[tuple[bytes, ...], tuple[bytes, ...]] = ((), ())

    @property
    def context(self) -> bytes:
        p = self.payload
        return decryption_context(p["metric"], p["version"], p["window"], p["kid"],
                                  p["request_digest"])

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> PartialRelease:
        """Parse a verified statement payload; ``InvalidProof`` naming what is wrong."""
        where = "partial release"
        if payload.get("type") != PARTIAL_TYPE or payload.get("v") != 1:
            raise InvalidProof(f"{where}: not a {PARTIAL_TYPE} v1 statement")
        try:
            public = ThresholdPublicKey.from_json(payload.get("public"))
            policy = MetricPolicy.from_mapping(str(payload.get("metric")),
                                               payload.get("policy") or {})
        except BlindsumError as exc:
            raise InvalidProof(f"{where}: {exc.detail}") from None
        if public.key_id != payload.get("kid") or policy.version != payload.get("version"):
            raise InvalidProof(f"{where}: key or policy version does not match its fields")
        if payload.get("noise_bound") != noise_bound(policy):
            raise InvalidProof(f"{where}: noise_bound is not the policy's {noise_bound(policy)}")
        spec = slot_spec(policy)
        noise = _ciphertexts(public, spec, payload.get("noise"), f"{where} noise")
        noised = _ciphertexts(public, spec, payload.get("noised"), f"{where} noised")
        partials = _partials(payload.get("partials"), len(noised), f"{where} partials")
        widths = [payload.get("half_width_95"), payload.get("tail_width")]
        if not all(isinstance(w, int | float) and not isinstance(w, bool) and w >= 0
                   for w in widths):
            raise InvalidProof(f"{where}: half_width_95 and tail_width must be numbers >= 0")
        parties = payload.get("noise_parties", ["keyholder"])  # older statements: absent
        if parties != list(policy.noise_parties):
            raise InvalidProof(f"{where}: noise_parties {parties!r} are not its policy's "
                               f"{list(policy.noise_parties)}")
        if policy.noise != "both":
            if "server_noise" in payload:
                raise InvalidProof(f"{where}: server noise under a key-holder-noise policy")
            return cls(dict(payload), public, policy, noise, noised, partials,
                       float(widths[0]), float(widths[1]))
        aggregate, aggregate_blobs = _ciphertexts_and_bytes(
            public, spec, payload.get("aggregate"), f"{where} aggregate")
        server_noise, noise_blobs = _ciphertexts_and_bytes(
            public, spec, payload.get("server_noise"), f"{where} server_noise")
        return cls(dict(payload), public, policy, noise, noised, partials,
                   float(widths[0]), float(widths[1]), aggregate, server_noise,
                   (aggregate_blobs, noise_blobs))

    def check_public(self) -> None:
        """The checks that need no aggregate of one's own: each party's noise proof (bound
        to this release and that party), and for two-noise statements ``C = A·E_S·E_K`` for
        the statement's own ``A`` and ``E_S``, which its request digest binds
        (``server_noise.check_folded``).

        Raises:
            InvalidProof: a noise proof is missing or fails, or the fold does not hold.
        """
        p, policy = self.payload, self.policy
        digest, window = p.get("request_digest"), p.get("window")
        if not isinstance(digest, str) or not digest or isinstance(window, bool) \
                or not isinstance(window, int):
            raise InvalidProof("partial release: request_digest and window are required")
        if policy.noise == "both":
            check_folded(self.public, p, self.aggregate, self.server_noise,
                         *self.blobs, self.noise, self.noised)
            verify_noise(self.public, policy, self.server_noise, p.get("server_noise_proof"),
                         noise_context(policy, window, self.public.key_id, SERVER),
                         "the server")
        verify_noise(self.public, policy, self.noise, p.get("noise_proof"),
                     noise_context(policy, window, self.public.key_id, KEYHOLDER, digest),
                     "the key-holder")

    def check_for(self, aggregate: Sequence[Mpz], public: ThresholdPublicKey) -> None:
        """The server's checks before it decrypts anything: the statement is under our key,
        ``C = A·E`` for *our* aggregate, both noise proofs hold, and every partial of K
        proves out.

        Raises:
            InvalidProof: any of these fails (nothing may then be decrypted or published).
        """
        if self.public != public:
            raise InvalidProof("partial release is under another threshold key")
        if self.policy.noise == "both":
            if list(self.aggregate) != list(aggregate):
                raise InvalidProof("the partial release folds another aggregate than ours")
        elif fold(public, aggregate, self.noise) != list(self.noised):
            raise InvalidProof("the noised ciphertexts are not our aggregate times the "
                               "key-holder's noise ciphertexts")
        self.check_public()
        for c, partial in zip(self.noised, self.partials, strict=True):
            if partial.index != KEYHOLDER_PARTY:
                raise InvalidProof(f"partial release holds a partial of party {partial.index}")
            verify_partial(public, c, partial, self.context)

    def finish(self, own: Sequence[PartialDecryption]) -> tuple[list[int], Published]:
        """Combine (every proof verified again), decode and post-process.

        Raises:
            InvalidProof: a partial fails its proof.
        """
        plaintexts = [combine(self.public, c, [mine, theirs], self.context)
                      for c, mine, theirs in zip(self.noised, own, self.partials, strict=True)]
        noisy = decode_noised(self.public, self.policy, plaintexts)
        result = publish(self.policy, noisy, self.payload["report_count"], self.half_width,
                         self.tail_width)
        return noisy, result


def published_payload(statement: PartialRelease, result: Published) -> dict[str, Any]:
    """The published result's payload: a single-key result's fields, plus ``threshold``."""
    signed = statement.payload
    value, noisy, ci = published_values(result)
    draft = ReleaseResult(
        metric=signed.get("metric"), version=signed.get("version"), kind=signed.get("kind"),
        scheme=signed.get("scheme"), window=signed.get("window"),
        window_seconds=signed.get("window_seconds"), key_id=signed.get("kid"),
        report_count=signed.get("report_count"), report_ids_digest=signed.get("report_ids_digest"),
        request_digest=signed.get("request_digest"), value=value, noisy_value=noisy, ci=ci,
        confidence=0.95, consistent=result.consistent, mechanism=signed.get("mechanism"),
        epsilon=signed.get("epsilon"), delta=signed.get("delta"), rho=signed.get("rho"),
        scale=signed.get("scale"), released_at=signed.get("released_at"),
        audit_seq=signed.get("audit_seq"), audit_head=signed.get("audit_head"), threshold=True,
        # statements made before the field existed have none, and their documents verify
        noise_parties=tuple(signed.get("noise_parties") or ()),
    ).to_json()
    try:  # the statement's fields are the key-holder's word: check their types and ranges
        ReleaseResult.from_json(draft)
    except InvalidInput as exc:
        raise InvalidProof(f"the key-holder's statement: {exc.detail}") from None
    return draft


def published_document(statement_document: Mapping[str, str], statement: PartialRelease,
                       own: Sequence[PartialDecryption], noisy: Sequence[int],
                       result: Published) -> dict[str, Any]:
    """What the server stores and serves: enough for ``verify_published``, offline."""
    return {
        "format": PUBLISHED_FORMAT,
        "statement": dict(statement_document),
        "server_partials": [p.to_json() for p in own],
        "noisy_slots": [int(s) for s in noisy],
        "payload": json.dumps(published_payload(statement, result), sort_keys=True,
                              separators=(",", ":"), allow_nan=False),
    }


def verify_published(document: object, pinned: Ed25519PublicKey) -> dict[str, Any]:
    """Check a published threshold result offline and return its payload.

    Checks the key-holder's signature (pinned identity), each party's noise proof, every
    partial's proof, that the partials combine to the noisy slot sums shown, and that the
    published value, interval and flags are exactly the post-processing of those sums.

    Raises:
        ManifestError: the statement is not signed by ``pinned``.
        InvalidProof: anything else does not check out.
    """
    if not isinstance(document, Mapping) or document.get("format") != PUBLISHED_FORMAT:
        raise InvalidProof(f"not a {PUBLISHED_FORMAT} document")
    statement = PartialRelease.from_payload(
        verify_document(document.get("statement"), pinned, "key-holder statement"))
    statement.check_public()
    count = len(statement.noised)
    own = _partials(document.get("server_partials"), count, "server partials")
    if any(p.index != SERVER_PARTY for p in own):
        raise InvalidProof("server partials must all be of the server's party")
    noisy, result = statement.finish(own)
    if document.get("noisy_slots") != noisy:
        raise InvalidProof("the noisy slot sums are not the decryption of the noised aggregate")
    try:
        payload = json.loads(str(document.get("payload")))
    except ValueError:
        raise InvalidProof("published payload is not JSON") from None
    expected = json.loads(json.dumps(published_payload(statement, result)))
    if payload != expected:
        changed = sorted(k for k in set(payload) | set(expected)
                         if payload.get(k) != expected.get(k))
        raise InvalidProof(f"published fields {changed} are not what the proofs establish")
    return dict(payload)


def _ciphertexts(public: ThresholdPublicKey, spec: SlotSpec, raw: object, where: str
                 ) -> tuple[Mpz, ...]:
    count = public.paillier.ciphertext_count(spec)
    if not isinstance(raw, list) or len(raw) != count:
        raise InvalidProof(f"{where} must list {count} ciphertexts")
    try:
        return tuple(public.paillier.load([b64decode(item, where) for item in raw], spec))
    except InvalidInput as exc:
        raise InvalidProof(f"{where}: {exc.detail}") from None


def _ciphertexts_and_bytes(public: ThresholdPublicKey, spec: SlotSpec, raw: object,
                           where: str) -> tuple[tuple[Mpz, ...], tuple[bytes, ...]]:
    cts = _ciphertexts(public, spec, raw, where)
    return cts, tuple(b64decode(item, where) for item in raw)  # type: ignore[union-attr]


def dump_ciphertexts(public: ThresholdPublicKey, cts: Sequence[Mpz]) -> list[str]:
    """Ciphertexts as the statement carries them (base64url of the scheme's bytes)."""
    return [b64encode(blob) for blob in public.paillier.dump(list(cts))]


def _partials(raw: object, count: int, where: str) -> tuple[PartialDecryption, ...]:
    if not isinstance(raw, list) or len(raw) != count:
        raise InvalidProof(f"{where} must list {count} partial decryptions")
    return tuple(PartialDecryption.from_json(item) for item in raw)
