"""Question: what threshold decryption costs against today's single-key decryption.

At the deployment size (3072-bit ``n``, two parties) and per ciphertext of a release:

- ``single_key``: ``PaillierSecret.decrypt_plaintext`` (CRT with ``p`` and ``q``), today's path;
- ``partial``: one party's ``c^(2Δ·d_i) mod n^2`` alone (a ~6,300-bit exponent, no CRT: no
  party knows the factors; constant-time ``mpz_powm_sec``, as ``partial_decrypt`` does);
- ``partial_with_proof``: ``partial_decrypt`` (the partial plus its Chaum-Pedersen proof);
- ``proof``: the proof's own cost, timed as ``proof.prove`` on the same statement;
- ``verify``: ``verify_partial`` for one partial;
- ``combine``: ``combine`` for all partials (it verifies every proof first);
- ``threshold``: every party's ``partial_decrypt`` then ``combine``, in one process: the
  whole release cost per ciphertext. The parties run on different machines in a deployment,
  so ``critical_path`` (one ``partial_with_proof`` plus ``combine``) is the wall-clock cost.

``noise_proofs``: what each party's noise proof adds to a two-noise release
(``benchmarks/noise_proofs.py`` says what each figure covers), under the same key.

Key generation: ``run_ceremony`` (two safe primes, the sharing, verification keys) against
``generate_paillier`` (phe's ordinary primes). Safe primes are rarer, so the ceremony's time
varies a lot from run to run; every sample is kept. Every timed decryption is first checked to
return the encrypted value, so the figures are for a working path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blindsum.benchmarks import noise_proofs
from blindsum.benchmarks.timing import Timing, measure, ratio
from blindsum.shared.schemes.paillier import generate_paillier
from blindsum.shared.threshold import Ceremony, combine, partial_decrypt, run_ceremony
from blindsum.shared.threshold import decryption as threshold_decryption
from blindsum.shared.threshold import proof as eqlog
from blindsum.shared.threshold.keys import KeyShare, secret_powmod

CONTEXT = b"bench;metric=latency;version=1;window=1764075600"
PLAINTEXT = 123_456_789


@dataclass(frozen=True)
class ThresholdConfig:
    key_bits: int = 3072
    parties: int = 2
    repeat: int = 10
    ceremony_repeat: int = 3
    noise_proof_repeat: int = 3  # a proven release takes seconds: fewer samples


def _timed(operation: Callable[[], object]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = operation()
    return time.perf_counter() - started, out


def _keys(config: ThresholdConfig) -> tuple[dict[str, Any], Ceremony, Any]:
    """Ceremonies and single-key generations, timed; the last of each is kept for use."""
    ceremonies, keygens = [], []
    ceremony = secret = None
    for _ in range(config.ceremony_repeat):
        elapsed, ceremony = _timed(lambda: run_ceremony(config.key_bits, config.parties))
        ceremonies.append(elapsed)
        elapsed, secret = _timed(lambda: generate_paillier(config.key_bits))
        keygens.append(elapsed)
    assert ceremony is not None and secret is not None
    figures = {"ceremony": Timing(tuple(ceremonies)).to_json(),
               "single_keygen": Timing(tuple(keygens)).to_json()}
    return figures, ceremony, secret


def _proof_only(share: KeyShare, c: Any) -> Callable[[], object]:
    public = share.public
    value = secret_powmod(c, 2 * public.delta * share.share, public.nsquare)
    statement = threshold_decryption._statement(public, c, share.index, value)
    transcript = threshold_decryption._transcript(public, share.index, c, value, CONTEXT)
    bits = threshold_decryption._witness_bits(public)
    witness = public.delta * share.share
    return lambda: eqlog.prove(statement, witness, bits, public.nsquare, transcript)


def run(config: ThresholdConfig) -> dict[str, Any]:
    """Every figure named in the module docstring, with ratios to the single-key decrypt."""
    keygen, ceremony, secret = _keys(config)
    public, shares = ceremony.public, ceremony.shares
    c = public.paillier.encrypt_plaintext(PLAINTEXT)
    single_c = secret.public.encrypt_plaintext(PLAINTEXT)
    partials = [partial_decrypt(s, c, CONTEXT) for s in shares]
    if combine(public, c, partials, CONTEXT) != PLAINTEXT \
            or secret.decrypt_plaintext(single_c) != PLAINTEXT:
        raise RuntimeError("a measured decryption path does not decrypt")

    def threshold() -> int:
        return combine(public, c, [partial_decrypt(s, c, CONTEXT) for s in shares], CONTEXT)

    first = shares[0]
    repeat = config.repeat
    ops: dict[str, Timing] = {
        "single_key": measure(lambda: secret.decrypt_plaintext(single_c), repeat=repeat),
        "partial": measure(lambda: secret_powmod(c, 2 * public.delta * first.share,
                                                 public.nsquare), repeat=repeat),
        "partial_with_proof": measure(lambda: partial_decrypt(first, c, CONTEXT),
                                      repeat=repeat),
        "proof": measure(_proof_only(first, c), repeat=repeat),
        "verify": measure(lambda: threshold_decryption.verify_partial(
            public, c, partials[0], CONTEXT), repeat=repeat),
        "combine": measure(lambda: combine(public, c, partials, CONTEXT), repeat=repeat),
        "threshold": measure(threshold, repeat=repeat),
    }
    per_ciphertext = {name: timing.to_json() for name, timing in ops.items()}
    critical = ops["partial_with_proof"].median + ops["combine"].median
    single = ops["single_key"].median
    return {
        "key_bits": config.key_bits,
        "parties": config.parties,
        "keygen": keygen,
        "per_ciphertext": per_ciphertext,
        "critical_path_s": critical,
        "ratios": {
            **{f"{name}_over_single_key": ratio(timing.median, single)
               for name, timing in ops.items() if name != "single_key"},
            "critical_path_over_single_key": ratio(critical, single),
            "ceremony_over_single_keygen": ratio(keygen["ceremony"]["median_s"],
                                                 keygen["single_keygen"]["median_s"]),
        },
        "noise_proofs": noise_proofs.run(ceremony, config.noise_proof_repeat),
    }
