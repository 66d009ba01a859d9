"""Keys and cheating provers for the validity-proof tests.

Keys come from fixed seeds through ``gmpy2.next_prime`` (deterministic and ~10x faster than
``generate_paillier``); 2048 bits is the smallest modulus ``PaillierPublic`` accepts.
A cheater runs the real prover (``sigma.prove``) on a false statement with the witnesses it
would naturally use, or builds aux ciphertexts of its choice: everything an adversary without
the factors can do short of breaking the hash.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from typing import Any

import gmpy2

from blindsum.shared.schemes.base import SlotSpec
from blindsum.shared.schemes.paillier import PaillierSecret
from blindsum.shared.validity import ProofContext, ReportProof, SlotLayout, sigma, statements
from blindsum.shared.validity.slots import SLOTS_KIND, slot_clauses

CONTEXT = ProofContext("latency", 3, 1_764_075_600, "kid-a", bytes(range(16)))


@cache
def seeded_secret(bits: int = 2048, seed: int = 7, key_id: str = "kid-a") -> PaillierSecret:
    rng = random.Random(seed)
    half = bits // 2
    primes = [int(gmpy2.next_prime(rng.getrandbits(half) | (3 << (half - 2))))
              for _ in range(2)]
    return PaillierSecret(primes[0], primes[1], key_id)


def forge(public: Any, kind: str, spec: SlotSpec, slots: Sequence[int],
          context: ProofContext = CONTEXT, aux_values: Sequence[int] | None = None,
          form: str = "batched") -> tuple[list[bytes], ReportProof]:
    """A cheater's report: ``slots`` packed as given (negative and oversized values wrap mod
    n, as a hostile client's would), aux ciphertexts of ``aux_values`` (default: the bits of
    each slot clamped to the range), and the prover run with the natural witnesses, in the
    batched or the compact wire form."""
    n = int(public.n)
    width, per = public.layout(spec)
    chunks = [slots[i:i + per] for i in range(0, len(slots), per)]
    plaintexts = [sum(v << (width * j) for j, v in enumerate(chunk)) % n for chunk in chunks]
    enc = [public.encrypt_plaintext_with_exponent(m) for m in plaintexts]
    cts, exps = [c for c, _ in enc], [a for _, a in enc]
    plan = statements.aux_plan(public, kind, spec)
    if aux_values is None:
        aux_values = []
        for place, values in plan:
            clamped = min(max(slots[place.index], 0), spec.max_value)
            patterns = statements.digit_patterns(clamped, spec.max_value)
            aux_values.append(values[patterns[len(aux_values) % len(patterns)]] * place.scale)
    aux_enc = [public.encrypt_plaintext_with_exponent(v % n) for v in aux_values]
    aux, aux_exps = [b for b, _ in aux_enc], [a for _, a in aux_enc]
    clauses = statements.clauses(public, kind, spec, cts, aux)
    if kind == "count" and not statements.is_range_kind(kind, spec):
        witnesses = [sigma.Witness(1 if slots[0] else 0, (exps[0],))]
    elif kind == "histogram":
        hot = next((i for i, v in enumerate(slots) if v), 0)
        witnesses = [sigma.Witness(hot, tuple(exps))]
    else:
        witnesses = [sigma.Witness(_branch(values, place.scale, v), (a,))
                     for (place, values), v, a in zip(plan, aux_values, aux_exps, strict=True)]
        for k, a in enumerate(exps):
            mine = sum(x for (p, _), x in zip(plan, aux_exps, strict=True) if p.chunk == k)
            witnesses.append(sigma.Witness(0, (a - mine,)))
    transcript = statements.transcript(public, kind, statements.spec_fields(public, spec),
                                       context, cts, aux)
    proofs = sigma.prove(public, clauses, witnesses, transcript)
    if form == "compact":
        return public.dump(cts), ReportProof(kind, public.byte_length, tuple(map(int, aux)),
                                             sigma.compact(public, proofs, transcript),
                                             "compact")
    return public.dump(cts), ReportProof(kind, public.byte_length, tuple(map(int, aux)), proofs)


def _branch(values: Sequence[int], scale: int, plaintext: int) -> int:
    """The branch a cheater claims for an aux plaintext: its own value if the digit allows
    it, else the first (a false claim either way for an out-of-range slot)."""
    for index, value in enumerate(values):
        if value * scale == plaintext:
            return index
    return 0


def forge_slots(public: Any, layout: SlotLayout, slots: Sequence[int],
          aux_values: Sequence[int] | None = None, context: ProofContext = CONTEXT
          ) -> tuple[list[Any], ReportProof]:
    """A cheater's ciphertexts: ``slots`` packed as given (mod n, so a negative slot wraps),
    aux ciphertexts of ``aux_values`` (default: the bits of each slot clamped to the range)
    and the real prover run with the witnesses it would naturally use."""
    n = int(public.n)
    chunks = [slots[i:i + layout.per] for i in range(0, len(slots), layout.per)]
    plaintexts = [sum(v << (layout.width * j) for j, v in enumerate(c)) % n for c in chunks]
    enc = [public.encrypt_plaintext_with_exponent(m) for m in plaintexts]
    plan = layout.aux_plan()
    if aux_values is None:
        aux_values = []
        for place, values in plan:
            clamped = min(max(slots[place.index], 0), layout.max_value)
            patterns = statements.digit_patterns(clamped, layout.max_value)
            aux_values.append(values[patterns[len(aux_values) % len(patterns)]] * place.scale)
    aux_enc = [public.encrypt_plaintext_with_exponent(v % n) for v in aux_values]
    cts, aux = [c for c, _ in enc], [b for b, _ in aux_enc]
    witnesses = [sigma.Witness(_branch(values, place.scale, v), (a,))
                 for (place, values), v, (_, a) in zip(plan, aux_values, aux_enc, strict=True)]
    for k, (_, a) in enumerate(enc):
        mine = sum(x for (place, _), (_, x) in zip(plan, aux_enc, strict=True)
                   if place.chunk == k)
        witnesses.append(sigma.Witness(0, (a - mine,)))
    clauses = slot_clauses(public, layout, cts, aux)
    transcript = statements.transcript(public, SLOTS_KIND, layout.fields(), context, cts, aux)
    proofs = sigma.prove(public, clauses, witnesses, transcript)
    return cts, ReportProof(SLOTS_KIND, public.byte_length, tuple(int(b) for b in aux), proofs)
