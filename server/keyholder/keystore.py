"""The key-holder's key store: ``blindsum.server.keystore``, shared with the server, which
seals its own threshold share the same way (the aggregator may not import this package)."""

from blindsum.server.keystore import FORMAT, SCRYPT_N, SCRYPT_P, SCRYPT_R, KeyStore

__all__ = ["FORMAT", "SCRYPT_N", "SCRYPT_P", "SCRYPT_R", "KeyStore"]
