"""Sealed secrets on disk: identity key, scheme secret keys and threshold key shares.

Each secret is one file under ``<data_dir>/keys/``, created 0600 in a 0700 folder, written
atomically (temp file + rename + fsync). With a passphrase (the operator supplies it through
``BLINDSUM_KEYSTORE_PASSPHRASE`` or a passphrase file) every file is sealed with AES-256-GCM
under a key derived by scrypt (n=2**15, r=8, p=1: ~50 ms, 32 MiB, so a stolen disk costs an
attacker that much per guess); the file name is bound in as associated data so files cannot
be swapped. Without a passphrase the files are plain and the CLI warns loudly.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from blindsum.shared.codec import b64decode, b64encode
from blindsum.shared.errors import BlindsumError, KeyStoreError
from blindsum.shared.schemes.base import SecretScheme

if TYPE_CHECKING:
    from blindsum.shared.threshold.keys import KeyShare

FORMAT = "blindsum-keystore-1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


@dataclass(frozen=True)
class KeyStore:
    """Reads and writes the secret files of one key-holder data directory."""

    directory: Path
    passphrase: bytes | None

    @classmethod
    def open(cls, data_dir: Path, passphrase: str | None) -> KeyStore:
        directory = data_dir / "keys"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(directory, passphrase.encode() if passphrase else None)

    # -- sealing ---------------------------------------------------------------------------

    def _derive(self, salt: bytes) -> bytes:
        assert self.passphrase is not None
        return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(
            self.passphrase
        )

    def write(self, name: str, secret: bytes) -> None:
        if self.passphrase is None:
            envelope: dict[str, Any] = {"format": FORMAT, "sealed": False,
                                        "data": b64encode(secret)}
        else:
            salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
            sealed = AESGCM(self._derive(salt)).encrypt(nonce, secret, name.encode())
            envelope = {"format": FORMAT, "sealed": True, "kdf": "scrypt",
                        "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64encode(salt),
                        "nonce": b64encode(nonce), "data": b64encode(sealed)}
        path = self.directory / name
        temp = path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(envelope, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)

    def read(self, name: str) -> bytes:
        path = self.directory / name
        try:
            envelope = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeyStoreError(f"key file {name!r} is missing from {self.directory}") from None
        except (OSError, ValueError):
            raise KeyStoreError(f"key file {name!r} is unreadable or corrupt") from None
        if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
            raise KeyStoreError(f"key file {name!r} is not a {FORMAT} file")
        try:
            data = b64decode(envelope["data"], "data")
            if not envelope.get("sealed"):
                return data
            if self.passphrase is None:
                raise KeyStoreError(
                    "the key store is encrypted: set BLINDSUM_KEYSTORE_PASSPHRASE "
                    "or pass --passphrase-file"
                )
            key = self._derive(b64decode(envelope["salt"], "salt"))
            return AESGCM(key).decrypt(b64decode(envelope["nonce"], "nonce"), data,
                                       name.encode())
        except InvalidTag:
            raise KeyStoreError(
                "wrong key store passphrase (or the key file was tampered with)"
            ) from None
        except KeyStoreError:
            raise
        except (KeyError, BlindsumError, ValueError):
            raise KeyStoreError(f"key file {name!r} is corrupt") from None

    # -- typed secrets ---------------------------------------------------------------------

    def write_identity(self, key: Ed25519PrivateKey) -> None:
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        self.write("identity.key", raw)

    def read_identity(self) -> Ed25519PrivateKey:
        raw = self.read("identity.key")
        if len(raw) != 32:
            raise KeyStoreError("identity key file is corrupt")
        return Ed25519PrivateKey.from_private_bytes(raw)

    def write_scheme(self, secret: SecretScheme) -> None:
        self.write(f"{secret.key_id}.key", secret.to_storage())

    def read_scheme(self, scheme: str, key_id: str) -> SecretScheme:
        data = self.read(f"{key_id}.key")
        if scheme == "paillier":
            from blindsum.shared.schemes.paillier import PaillierSecret

            return PaillierSecret.from_json(json.loads(data))
        from blindsum.shared.schemes.ckks import CkksSecret

        return CkksSecret.from_bytes(data, key_id)


    def write_share(self, share: KeyShare) -> None:
        """One party's threshold key share (``KeyShare.storage_name``), sealed like a key."""
        self.write(share.storage_name, share.to_storage())

    def read_share(self, key_id: str, index: int) -> KeyShare:
        """Party ``index``'s share of threshold key ``key_id``; ``KeyStoreError`` if it is
        missing, corrupt, or stored under another key id or party."""
        # Imported here, like the scheme secrets: a key-holder without shares never loads it.
        from blindsum.shared.threshold.keys import KeyShare, share_storage_name

        share = KeyShare.from_storage(self.read(share_storage_name(key_id, index)))
        if share.key_id != key_id or share.index != index:
            raise KeyStoreError(f"key file for {key_id!r} party {index} holds another share")
        return share
