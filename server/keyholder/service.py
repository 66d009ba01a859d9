"""The key-holder as an object: its data directory opened, keys unlocked, ready to act.

The CLI's offline commands (``init``, ``policy add``, ``key rotate``) and the HTTP app both
go through ``Keyholder``, so there is one code path for every state change, each audited.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blindsum.server.http import token_digest
from blindsum.server.keyholder import audit, caps, ledger
from blindsum.server.keyholder.intake import Intake
from blindsum.server.keyholder.release import Releaser
from blindsum.server.keyholder.store import KeyholderDB, KeyRecord
from blindsum.server.keystore import KeyStore
from blindsum.shared.errors import InvalidConfig, InvalidPolicy, KeyStoreError
from blindsum.shared.manifest import KeyEntry, Manifest, Pause, slot_spec
from blindsum.shared.policy import MetricPolicy, UnitBudget, describe_period
from blindsum.shared.schemes.base import SecretScheme
from blindsum.shared.signing import identity_string
from blindsum.shared.threshold.keys import KeyShare
from blindsum.shared.threshold.release import KEYHOLDER_PARTY

DB_NAME = "keyholder.db"
RELEASE_ROLE = "release"


@dataclass(frozen=True)
class InitResult:
    identity: str
    release_token: str
    key_ids: tuple[str, ...]


@dataclass
class Keyholder:
    data_dir: Path
    db: KeyholderDB
    keystore: KeyStore
    identity: Ed25519PrivateKey
    _secrets: dict[str, SecretScheme | KeyShare] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, data_dir: Path, passphrase: str | None) -> Keyholder:
        """Open an initialised data directory (KeyStoreError if it is not one)."""
        if not (data_dir / DB_NAME).is_file():
            raise KeyStoreError(
                f"{data_dir} is not a key-holder data directory: run `blindsum keyholder init`"
            )
        keystore = KeyStore.open(data_dir, passphrase)
        identity = keystore.read_identity()
        return cls(data_dir, KeyholderDB(data_dir / DB_NAME), keystore, identity)

    @classmethod
    def init(
        cls, data_dir: Path, passphrase: str | None, paillier_bits: int = 3072,
        clock: Callable[[], float] = time.time, *, server_dir: Path | None = None,
        server_passphrase: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> tuple[Keyholder, InitResult]:
        """Create identity, one Paillier and one CKKS key, a release token, a manifest.

        With ``server_dir`` the Paillier key is a two-party threshold key: a ceremony runs
        in this process, this key-holder seals share 1, the server's data directory gets
        share 2 (its own key store, ``server_passphrase``), and the full secret is never
        written anywhere.
        """
        from blindsum.shared.schemes.ckks import generate_ckks
        from blindsum.shared.schemes.paillier import generate_paillier

        if (data_dir / DB_NAME).exists():
            raise InvalidConfig(f"{data_dir} already holds a key-holder; refusing to overwrite")
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keystore = KeyStore.open(data_dir, passphrase)
        identity = Ed25519PrivateKey.generate()
        keystore.write_identity(identity)
        holder = cls(data_dir, KeyholderDB(data_dir / DB_NAME, clock), keystore, identity)
        token = "rel_" + secrets.token_urlsafe(32)
        with holder.db.write() as conn:
            holder.db.add_token(conn, token_digest(token), RELEASE_ROLE, "aggregator server")
            audit.append(conn, "init", {"identity": identity_string(identity.public_key())})
        if server_dir is None:
            paillier_id = holder.add_key(generate_paillier(paillier_bits))
        else:
            paillier_id = holder.add_threshold_key(
                paillier_bits, KeyStore.open(server_dir, server_passphrase), progress)
        key_ids = (paillier_id, holder.add_key(generate_ckks()))
        return holder, InitResult(identity_string(identity.public_key()), token, key_ids)

    @property
    def identity_string(self) -> str:
        return identity_string(self.identity.public_key())

    def add_key(self, secret: SecretScheme) -> str:
        """Store a new key (secret in the key store first), make it active, re-sign."""
        self.keystore.write_scheme(secret)
        public = secret.public
        context = getattr(public, "context_bytes", None)
        with self.db.write() as conn:
            self.db.add_key(conn, KeyRecord(secret.key_id, secret.name, "active",
                                            public.public_json(), context))
            self._issue_manifest(conn)
        return secret.key_id

    def add_threshold_key(self, bits: int, server_keystore: KeyStore,
                          progress: Callable[[str], None] | None = None) -> str:
        """Run a two-party ceremony; seal share 1 here and share 2 in the server's store,
        then make the key active with its verification keys in the manifest."""
        from blindsum.shared.threshold import run_ceremony

        say = progress or (lambda _: None)
        say(f"key ceremony: generating a {bits}-bit key from safe primes "
            "(seconds to a minute)...")
        started = time.monotonic()
        ceremony = run_ceremony(bits, parties=2)
        say(f"key ceremony: done in {time.monotonic() - started:.1f} s; sealing the shares")
        public, (mine, theirs) = ceremony.public, ceremony.shares
        self.keystore.write_share(mine)
        server_keystore.write_share(theirs)
        del ceremony, mine, theirs  # the shares now live only in the two key stores
        with self.db.write() as conn:
            self.db.add_key(conn, KeyRecord(public.key_id, "paillier", "active",
                                            public.to_json(), None))
            audit.append(conn, "threshold-key-ceremony", {
                "kid": public.key_id, "parties": public.parties, "bits": bits,
                "ceremony": public.ceremony})
            self._issue_manifest(conn)
        return public.key_id

    def rotate(self, scheme: str, server_dir: Path | None = None,
               server_passphrase: str | None = None, threshold: bool = False,
               progress: Callable[[str], None] | None = None) -> str:
        """Start a new key epoch for ``scheme``; the previous active key stays accepted.

        A threshold Paillier key is replaced by a new ceremony whose second share is sealed
        in the server's key store (``server_dir``): the server reads a share by key id when
        it first needs one, so a running server releases windows under either key.
        ``threshold`` turns a single-key deployment's next Paillier key into a threshold
        key; once threshold, a deployment never rotates back to a single key (that would
        hand one party the whole key again).
        """
        from blindsum.shared.schemes.ckks import generate_ckks
        from blindsum.shared.schemes.paillier import PaillierPublic, generate_paillier

        if scheme not in ("paillier", "ckks"):
            raise InvalidConfig(f"unknown scheme {scheme!r}: expected paillier or ckks")
        active = [k for k in self.db.key_records() if k.scheme == scheme and k.status == "active"]
        split = threshold or (scheme == "paillier" and bool(active)
                              and "threshold" in active[0].public)
        if scheme == "ckks":
            if threshold or server_dir is not None:
                raise InvalidConfig("CKKS keys are single-key (TenSEAL has no threshold "
                                    "decryption): --threshold and --server-dir are for paillier")
            return self.add_key(generate_ckks())
        bits = PaillierPublic.from_json(active[0].public).n.bit_length() if active else 3072
        if not split:
            if server_dir is not None:
                raise InvalidConfig("--server-dir is only for a threshold key (--threshold)")
            return self.add_key(generate_paillier(bits))
        if server_dir is None:
            raise InvalidConfig(
                "a threshold key is rotated by a new key ceremony: give the server's data "
                "directory (--server-dir), where its new share is sealed")
        return self.add_threshold_key(bits, KeyStore.open(server_dir, server_passphrase),
                                      progress)

    def retire(self, key_id: str) -> None:
        """Stop accepting reports under a key. Its collected windows can still be released."""
        key = self.db.key(key_id)
        if key is None:
            raise InvalidConfig(f"no key {key_id!r}")
        if key.status == "active":
            raise InvalidConfig(
                f"key {key_id!r} is the active {key.scheme} key: rotate before retiring it"
            )
        if key.status == "retired":
            return
        with self.db.write() as conn:
            conn.execute("UPDATE keys SET status = 'retired' WHERE kid = ?", (key_id,))
            audit.append(conn, "key-retired", {"kid": key_id})
            self._issue_manifest(conn)

    def retire_policy(self, name: str) -> bool:
        """Stop a metric: out of the manifest (no more reports), no more releases."""
        with self.db.write() as conn:
            retired = self.db.retire_policy(conn, name)
            if retired:
                self._issue_manifest(conn)
        return retired

    def add_policies(self, policies: list[MetricPolicy], unit: UnitBudget | None = None,
                     *, raise_cap: bool = False) -> list[str]:
        """Register policies (and a per-device budget) atomically, all or none.

        Returns the names newly added. Refused (``InvalidPolicy``, nothing written) if a
        policy's renewing budget cannot pay for its period, the registered set would exceed
        the per-device budget, or a cap is raised without ``raise_cap`` (see ``caps``).
        """
        for policy in policies:
            self._check_capacity(policy)
            caps.check_metric_budget(policy)
        with self.db.write() as conn:
            raised = self._check_caps(conn, policies, unit, raise_cap)
            added = [p.name for p in policies if self.db.add_policy(conn, p)]
            for what in raised:
                audit.append(conn, "budget-cap-raised", {"what": what})
            stored = self.db.unit_budget(conn)
            if unit is not None and unit != stored:
                self.db.set_unit_budget(conn, unit, stored is not None and unit.raises(stored))
            if added:
                self._issue_manifest(conn)
        return added

    def _check_caps(self, conn: sqlite3.Connection, policies: list[MetricPolicy],
                    unit: UnitBudget | None, raise_cap: bool) -> list[str]:
        """Refuse raised caps (unless ``raise_cap``) and a set over the per-device budget;
        returns the raises the operator allowed, to be audited."""
        raised = []
        for policy in policies:
            before = self.db.latest_policy(policy.name, conn)
            if before is not None and before.version < policy.version:
                raised += [f"metric {policy.name!r} v{policy.version}: {r}"
                           for r in caps.raised_caps(before.privacy, policy.privacy)]
        stored = self.db.unit_budget(conn)
        if unit is not None and stored is not None and unit.raises(stored):
            raised.append(f"per-device budget {stored.to_json()} -> {unit.to_json()}")
        if raised and not raise_cap:
            raise InvalidPolicy(
                "caps only go down across versions: " + "; ".join(raised)
                + " (pass --raise-cap to raise them; the raise is audited)")
        in_force = unit or stored
        if in_force is not None:
            current = {p.name: p for p in self.db.current_policies(conn)}
            current.update({p.name: p for p in policies})
            caps.check_unit_budget(current.values(), in_force)
        return raised

    def _check_capacity(self, policy: MetricPolicy) -> None:
        """Refuse a policy whose largest window could overflow its scheme's plaintexts."""
        active = [k for k in self.db.key_records()
                  if k.scheme == policy.scheme and k.status == "active"]
        if not active:
            raise InvalidPolicy(f"metric {policy.name!r}: no active {policy.scheme} key")
        secret = self.secret_for(policy.scheme, active[0].key_id)
        if policy.noise == "both" and not isinstance(secret, KeyShare):
            raise InvalidPolicy(
                f'metric {policy.name!r}: noise = "both" needs a two-party threshold key '
                f"(blindsum keyholder init --threshold); key {active[0].key_id!r} is a "
                "single key, which only the key-holder can noise")
        public = secret.public.paillier if isinstance(secret, KeyShare) else secret.public
        problem = public.capacity_error(slot_spec(policy))
        if problem:
            raise InvalidPolicy(f"metric {policy.name!r} does not fit {policy.scheme}: {problem}")

    def _issue_manifest(self, conn: sqlite3.Connection) -> None:
        keys = [KeyEntry(k.scheme, k.key_id, k.status, k.public)
                for k in self.db.key_records(conn) if k.status != "retired"]
        policies = self.db.current_policies(conn)
        paused = _paused(conn, policies, time.time())
        serial = self.db.next_manifest_serial(conn)
        manifest = Manifest.issue(self.identity, serial, keys, policies, paused)
        self.db.store_manifest(conn, serial, dict(manifest.document))
        audit.append(conn, "manifest-issued", {
            "serial": serial, **({"paused": [p.metric for p in paused]} if paused else {})})

    def secret_for(self, scheme: str, key_id: str) -> SecretScheme | KeyShare:
        """The key's secret: a scheme secret, or this party's share of a threshold key."""
        with self._lock:
            secret = self._secrets.get(key_id)
            if secret is None:
                record = self.db.key(key_id)
                if record is not None and "threshold" in record.public:
                    secret = self.keystore.read_share(key_id, KEYHOLDER_PARTY)
                else:
                    secret = self.keystore.read_scheme(scheme, key_id)
                self._secrets[key_id] = secret
            return secret

    def releaser(self) -> Releaser:
        return Releaser(self.db, self.identity, self.secret_for, self.db.clock,
                        on_exhausted=self._issue_manifest, intake=self.intake())

    def intake(self) -> Intake:
        """The key-holder's own account of threshold windows (forwarded, verified reports)."""
        return Intake(self.db, self.secret_for)


def _paused(conn: sqlite3.Connection, policies: list[MetricPolicy], now: float) -> list[Pause]:
    """Metrics whose budget for the period holding ``now`` cannot pay another release."""
    paused = []
    for policy in policies:
        state = ledger.budget(conn, policy, at=now)
        if state.exhausted:
            renews = policy.privacy.budget_period
            period = f"per {describe_period(renews)}" if renews else "for its lifetime"
            paused.append(Pause(policy.name, (
                f"its privacy budget ({state.budget_epsilon:g}, {state.budget_delta:.3g}) "
                f"{period} is spent ({state.releases} releases, epsilon "
                f"{state.epsilon:.4g} by {state.accounting} composition)"), state.period_end))
    return paused
