"""The server's half of a threshold release: check the key-holder's partial release, add
our partial, combine, publish.

The server holds share 2 of the threshold key (sealed in its own key store, written by the
ceremony) and partially decrypts only a ciphertext it has checked: ``C = A·E`` for its own
aggregate ``A`` of the request it sent, with every proof of the key-holder verified first
(``shared/threshold/release.py``). It learns the noisy slot sums only, and publishes them
with both parties' partials so anyone can re-check the value offline.

With a ``noise = "both"`` policy the server also draws its own noise, once per window,
before the first request for it: ``committed_noise`` encrypts it and stores only the
ciphertexts (the plaintext is dropped), so every retry sends the same request and the
server learns no more than the public (``shared/threshold/server_noise.py``). It proves,
with the draw, that ``E_S`` encrypts a value in ``[0, 2B]`` per slot that it knows
(``shared/threshold/noise_proof.py``), stores the proof with ``E_S`` and sends both; and it
computes no partial before the key-holder's own noise proof has verified.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blindsum.server.aggregator.keyholder_client import VerifiedResult
from blindsum.server.aggregator.store import Store, WindowKey
from blindsum.server.keystore import KeyStore
from blindsum.server.noise import bounded_noise, noise_plan
from blindsum.shared.codec import ReleaseRequest, release_digest
from blindsum.shared.errors import InvalidProof, KeyStoreError, UpstreamError
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.threshold.decryption import partial_decrypt
from blindsum.shared.threshold.keys import KeyShare
from blindsum.shared.threshold.noise_proof import SERVER, noise_context, prove_noise
from blindsum.shared.threshold.release import (
    SERVER_PARTY,
    PartialRelease,
    published_document,
)

PolicyLookup = Callable[[str, int], MetricPolicy | None]


@dataclass(frozen=True)
class ServerNoise:
    """What a request carries of our noise: ``E_S`` and its proof (both empty/None when the
    policy has the key-holder alone add noise)."""

    ciphertexts: tuple[bytes, ...] = ()
    proof: dict[str, Any] | None = None


class ThresholdFinisher:
    """Turns a verified partial release into a published document (thread-safe)."""

    def __init__(self, keystore: KeyStore, policy_for: PolicyLookup | None = None,
                 manifest_loaded: Callable[[], bool] | None = None) -> None:
        self._keystore = keystore
        self._policy_for = policy_for
        self._manifest_loaded = manifest_loaded
        self._shares: dict[str, KeyShare] = {}
        self._lock = threading.Lock()

    def share(self, key_id: str) -> KeyShare:
        """Our share of ``key_id`` (``KeyStoreError`` if this server holds none)."""
        with self._lock:
            share = self._shares.get(key_id)
            if share is None:
                share = self._shares[key_id] = self._keystore.read_share(key_id, SERVER_PARTY)
            return share

    def holds_share(self, key_id: str) -> bool:
        """Whether ``key_id`` is a threshold key this server holds a share of."""
        try:
            self.share(key_id)
        except KeyStoreError:
            return False
        return True

    def committed_noise(self, store: Store, key: WindowKey, now: float) -> ServerNoise:
        """Our encrypted noise for ``key``'s release and its proof: the stored ones, or a
        fresh draw stored before it is returned (empty unless the manifest's policy says
        ``noise = "both"``).

        Raises:
            KeyStoreError: the policy needs our noise but we hold no share of the key.
        """
        stored = store.server_noise(key)
        if stored is not None:
            # a retry: the same ciphertexts and proof, never a second draw (noise drawn
            # before proofs existed has none, and the key-holder refuses it publicly)
            return ServerNoise(stored, store.server_noise_proof(key))
        policy = self._policy_for(key.metric, key.version) if self._policy_for else None
        if policy is None and self._manifest_loaded is not None and not self._manifest_loaded():
            # we cannot tell yet whether this window needs our noise: retry, never guess
            raise UpstreamError("the manifest is not loaded yet: cannot tell whether "
                                f"{key.describe()} needs the server's noise")
        if policy is None or policy.noise != "both":
            # (a window of a superseded policy version is sent without: if that version
            # wanted server noise the key-holder refuses it publicly, before paying)
            return ServerNoise()
        public = self.share(key.key_id).public
        context = noise_context(policy, key.window, key.key_id, SERVER)
        noise, proof = prove_noise(public, policy, bounded_noise(noise_plan(policy), policy),
                                   context)
        return ServerNoise(*store.keep_server_noise(key, public.paillier.dump(noise), proof,
                                                    now))

    def finish(self, request: ReleaseRequest, result: VerifiedResult
               ) -> tuple[dict[str, Any], str]:
        """The published document and its payload text.

        Raises:
            InvalidProof: the statement is not for our request, our aggregate or our key, a
                proof fails (a partial, or either party's noise proof), or its policy is not
                the manifest's (nothing is published).
            KeyStoreError: we hold no share of the key.
        """
        statement = PartialRelease.from_payload(result.payload)
        if statement.payload.get("request_digest") != release_digest(request):
            raise InvalidProof("the partial release is bound to another request")
        expected = self._policy_for(request.metric, request.version) \
            if self._policy_for else None
        if expected is not None and expected != statement.policy:
            raise InvalidProof("the partial release's policy is not the manifest's")
        share = self.share(request.key_id)
        public = share.public
        aggregate = public.paillier.load(list(request.aggregate),
                                         slot_spec(statement.policy))
        statement.check_for(aggregate, public)
        context = statement.context
        own = [partial_decrypt(share, c, context) for c in statement.noised]
        noisy, published = statement.finish(own)
        document = published_document(result.document, statement, own, noisy, published)
        return document, document["payload"]
