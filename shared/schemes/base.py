"""The one interface both homomorphic schemes implement.

A metric report is a vector of non-negative integer *slots* (see ``blindsum.shared.encoding``).
A scheme turns slots into one or more ciphertexts (``encrypt``), checks ciphertexts that
arrive from the network (``load``), adds them (``add``), and, holding the secret key only,
turns an aggregate back into exact integer slot sums (``decrypt``).

``SlotSpec`` is everything a scheme needs to know about a metric to lay out its slots: how
many there are, the largest value one report may put in a slot, and the largest number of
reports a window may sum. Overflow is impossible by construction: a scheme refuses a spec
whose window maximum does not fit (``capacity_error``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class SlotSpec:
    """Shape of one metric's reports.

    Attributes:
        count: number of integer slots in a report (>= 1).
        max_value: largest value one report may put in any slot (>= 1).
        max_contributors: largest number of reports one window aggregate may hold (>= 1).
        headroom: extra range a slot needs above the window maximum (>= 0) when the key
            folds encrypted noise plus its offset into aggregates (threshold Paillier,
            ``blindsum.shared.headroom``). It describes the policy; a key whose
            ``noise_headroom`` is False lays out slots without it.
    """

    count: int
    max_value: int
    max_contributors: int
    headroom: int = 0

    @property
    def max_slot_sum(self) -> int:
        """Largest value any slot of a window aggregate can reach."""
        return self.max_value * self.max_contributors


def spec_error(spec: object) -> str | None:
    """Why ``spec`` is not a well-formed SlotSpec, or None."""
    if not isinstance(spec, SlotSpec):
        return "slot spec must be a SlotSpec"
    for field in ("count", "max_value", "max_contributors"):
        value = getattr(spec, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"slot spec {field} must be an integer >= 1"
    if isinstance(spec.headroom, bool) or not isinstance(spec.headroom, int) \
            or spec.headroom < 0:
        return "slot spec headroom must be an integer >= 0"
    return None


class PublicScheme(ABC):
    """What an SDK and the aggregator hold: a public key, never a secret."""

    name: ClassVar[str]
    key_id: str
    # True for keys whose aggregates get encrypted noise folded in before decryption
    # (threshold Paillier): their layouts reserve ``shared/headroom.py``'s headroom.
    noise_headroom: bool = False

    @abstractmethod
    def capacity_error(self, spec: SlotSpec) -> str | None:
        """Why ``spec`` cannot be carried safely under this key, or None if it can."""

    @abstractmethod
    def ciphertext_count(self, spec: SlotSpec) -> int:
        """How many ciphertexts one report (and one aggregate) of ``spec`` consists of."""

    @abstractmethod
    def encrypt(self, slots: Sequence[int], spec: SlotSpec) -> list[bytes]:
        """Encrypt one report's slots (each in ``0..spec.max_value``) to wire bytes."""

    @abstractmethod
    def load(self, blobs: Sequence[bytes], spec: SlotSpec) -> list[Any]:
        """Parse and validate wire ciphertexts; raise ``InvalidCiphertext`` naming the fault."""

    def load_deferred(self, blobs: Sequence[bytes], spec: SlotSpec) -> list[Any]:
        """Like ``load``, but may leave checks that ``first_invalid`` makes for a whole batch
        at once (the ingest hot path). Callers must call ``first_invalid`` before trusting
        the result."""
        return self.load(blobs, spec)

    def first_invalid(self, items: Sequence[list[Any]], total: list[Any]) -> int | None:
        """Position of the first item failing the checks ``load_deferred`` left, given the
        items' homomorphic sum ``total``; None if all pass."""
        return None

    @abstractmethod
    def add(self, left: list[Any], right: list[Any]) -> list[Any]:
        """Homomorphic sum of two loaded reports/aggregates of the same spec."""

    @abstractmethod
    def add_many(self, items: Sequence[list[Any]]) -> list[Any]:
        """Homomorphic sum of many loaded reports (one pass, the ingest hot path)."""

    @abstractmethod
    def dump(self, cts: list[Any]) -> list[bytes]:
        """Wire bytes of loaded ciphertexts (inverse of ``load``)."""

    @abstractmethod
    def public_json(self) -> dict[str, Any]:
        """The public key as a JSON object for the manifest (includes ``kid``)."""


class SecretScheme(ABC):
    """What only the key-holder holds."""

    name: ClassVar[str]
    key_id: str

    @property
    @abstractmethod
    def public(self) -> PublicScheme:
        """The matching public side."""

    @abstractmethod
    def decrypt(self, blobs: Sequence[bytes], spec: SlotSpec) -> list[int]:
        """Integer slot sums of an aggregate (exact for honest ones; CKKS rounds).

        Total on well-formed ciphertexts: it raises only for malformed blobs (a public
        property checked by ``load``), never because of what they decrypt to, so that no
        answer of the key-holder can depend on an exact plaintext except through noise.
        """

    @abstractmethod
    def to_storage(self) -> bytes:
        """The secret key as bytes for the key store (which seals them at rest)."""
