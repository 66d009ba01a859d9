"""Question 1: what one report costs a client, in time and in bytes on the wire.

Five pipelines encrypt (or not) the same values side by side, each as its users would:

- ``ours_paillier``: the SDK's path (clip, encode, pack every slot into one plaintext,
  Paillier 3072-bit with DJN short-exponent randomness, CBOR report as the SDK sends it);
- ``ours_ckks``: the SDK's CKKS path (N = 4096, one 2,048-slot ciphertext per report);
- ``naive_phe``: one default ``phe`` ``PaillierPublicKey.encrypt`` per value, serialised as
  python-paillier's docs do (``docs/serialisation.rst``, "Basic JSON Serialisation":
  ``[str(x.ciphertext()), x.exponent]`` per value in JSON); the public key itself is left
  out (the docs allow a key hash instead), so the baseline carries only the report fields;
- ``plain_tenseal``: ``ts.ckks_vector`` under the context of TenSEAL's README
  (N = 8192, ``[60, 40, 40, 60]``, Galois keys, scale 2**40), in the same CBOR envelope;
- ``plaintext``: the values as JSON numbers in a JSON report.

Every pipeline's report carries the same fields (random 16-byte id, metric, version, key
id, window; the plaintext one has no key id) so byte counts differ only by what carries the
values. A report's bytes are
``len()`` of the serialised report produced during the run, not a formula.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import tenseal as ts
from phe import paillier as phe

from blindsum.benchmarks.timing import Timing, measure, ratio
from blindsum.benchmarks.workload import client_policy, client_values
from blindsum.shared import codec
from blindsum.shared.codec import Report
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import slot_spec
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import PublicScheme
from blindsum.shared.schemes.ckks import CkksPublic, generate_ckks
from blindsum.shared.schemes.paillier import PaillierPublic

PIPELINES = ("ours_paillier", "ours_ckks", "naive_phe", "plain_tenseal", "plaintext")
LABELS = {
    "ours_paillier": "ours: Paillier 3072 packed (DJN)",
    "ours_ckks": "ours: CKKS N=4096",
    "naive_phe": "naive phe.encrypt per value",
    "plain_tenseal": "plain TenSEAL (README context)",
    "plaintext": "plaintext JSON numbers",
}
WINDOW = 1_764_075_600  # a fixed window start: the report's CBOR int is always 5 bytes


class Pipeline(Protocol):
    name: str

    def report(self, values: Sequence[int]) -> bytes:
        """One client report of ``values`` as the bytes it sends."""


def _metadata(metric: str, key_id: str) -> dict[str, Any]:
    return {"id": secrets.token_bytes(codec.REPORT_ID_BYTES), "metric": metric, "version": 1,
            "kid": key_id, "window": WINDOW}


class OursPipeline:
    """The SDK's record path for one scheme, up to the bytes the SDK uploads (CBOR)."""

    def __init__(self, name: str, scheme: PublicScheme, media: str = codec.CBOR) -> None:
        self.name = name
        self.scheme = scheme
        self.media = media
        self._policies: dict[int, MetricPolicy] = {}

    def policy(self, count: int) -> MetricPolicy:
        if count not in self._policies:
            self._policies[count] = client_policy(count, self.scheme.name)
        return self._policies[count]

    def report(self, values: Sequence[int]) -> bytes:
        policy = self.policy(len(values))
        value: Any = values[0] if len(values) == 1 else list(values)
        cts = self.scheme.encrypt(encode(policy, value), slot_spec(policy))
        report = Report(secrets.token_bytes(codec.REPORT_ID_BYTES), policy.name,
                        policy.version, self.scheme.key_id, WINDOW, tuple(cts))
        return codec.dumps(report.to_wire(), self.media)


class NaivePhePipeline:
    name = "naive_phe"

    def __init__(self, public_key: phe.PaillierPublicKey) -> None:
        self.public_key = public_key

    def report(self, values: Sequence[int]) -> bytes:
        encrypted = [self.public_key.encrypt(v) for v in values]
        body = _metadata(f"bench-paillier-{len(values)}", "pai-bench")
        body["id"] = codec.b64encode(body["id"])
        body["values"] = [(str(x.ciphertext()), x.exponent) for x in encrypted]
        return json.dumps(body).encode()


class PlainTensealPipeline:
    name = "plain_tenseal"

    def __init__(self, context: ts.Context) -> None:
        self.context = context

    def report(self, values: Sequence[int]) -> bytes:
        vector = ts.ckks_vector(self.context, [float(v) for v in values])
        body = _metadata(f"bench-ckks-{len(values)}", "ckks-bench")
        body["ct"] = [vector.serialize()]
        return codec.dumps(body, codec.CBOR)


class PlaintextPipeline:
    name = "plaintext"

    def report(self, values: Sequence[int]) -> bytes:
        body = _metadata(f"bench-plain-{len(values)}", "")
        body["id"] = codec.b64encode(body["id"])
        del body["kid"]  # no key: nothing is encrypted
        body["values"] = list(values)
        return json.dumps(body).encode()


def tenseal_readme_context() -> ts.Context:
    """The CKKS context TenSEAL's README builds, as a user would copy it."""
    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192,
                         coeff_mod_bit_sizes=[60, 40, 40, 60])
    context.generate_galois_keys()
    context.global_scale = 2**40
    return context


@dataclass
class Keys:
    """Everything the five pipelines need, and what building it cost (one-off setup)."""

    phe_public: phe.PaillierPublicKey
    phe_private: phe.PaillierPrivateKey
    paillier: PaillierPublic
    ckks: CkksPublic
    tenseal_context: ts.Context
    setup_seconds: dict[str, float] = field(default_factory=dict)


def make_keys(bits: int = 3072) -> Keys:
    """Fresh keys; the Paillier fixed-base table is built here so no report pays for it."""
    setup: dict[str, float] = {}
    started = time.perf_counter()
    phe_public, phe_private = phe.generate_paillier_keypair(n_length=bits)
    setup["paillier_keygen_s"] = time.perf_counter() - started
    paillier = PaillierPublic.from_phe(phe_public, "pai-bench")
    started = time.perf_counter()
    paillier.precompute()
    setup["paillier_fixed_base_table_s"] = time.perf_counter() - started
    started = time.perf_counter()
    ckks = generate_ckks("ckks-bench").public
    setup["ckks_keygen_s"] = time.perf_counter() - started
    started = time.perf_counter()
    context = tenseal_readme_context()
    setup["tenseal_readme_context_s"] = time.perf_counter() - started
    return Keys(phe_public, phe_private, paillier, ckks, context, setup)


def pipelines(keys: Keys) -> dict[str, Pipeline]:
    return {
        "ours_paillier": OursPipeline("ours_paillier", keys.paillier),
        "ours_ckks": OursPipeline("ours_ckks", keys.ckks),
        "naive_phe": NaivePhePipeline(keys.phe_public),
        "plain_tenseal": PlainTensealPipeline(keys.tenseal_context),
        "plaintext": PlaintextPipeline(),
    }


@dataclass(frozen=True)
class Point:
    """One pipeline at one report size: its time per report and its bytes per report."""

    pipeline: str
    values: int
    timing: Timing
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"values": self.values, **self.timing.to_json(), "bytes": self.bytes}


def measure_point(pipeline: Pipeline, values: Sequence[int], budget_s: float,
                  min_repeat: int, max_repeat: int) -> Point:
    """Time ``pipeline.report(values)``: one warm-up, then as many runs as fit ``budget_s``."""
    sample: list[bytes] = []

    def once() -> None:
        sample[:] = [pipeline.report(values)]

    started = time.perf_counter()
    once()  # warm-up; also sizes the repetitions
    first = time.perf_counter() - started
    repeat = max(min_repeat, min(max_repeat, int(budget_s / max(first, 1e-9))))
    timing = measure(once, repeat=repeat, warmup=0)
    return Point(pipeline.name, len(values), timing, len(sample[0]))


@dataclass(frozen=True)
class ClientCostConfig:
    values_per_report: tuple[int, ...]
    budget_s: float
    min_repeat: int
    max_repeat: int
    key_bits: int = 3072


def run(config: ClientCostConfig, keys: Keys,
        on_point: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Every pipeline at every report size; the raw points and the headline ratios."""
    chosen = pipelines(keys)
    points: dict[str, dict[str, Any]] = {name: {} for name in PIPELINES}
    for count in config.values_per_report:
        values = client_values(count, seed=count)
        for name in PIPELINES:
            point = measure_point(chosen[name], values, config.budget_s, config.min_repeat,
                                  config.max_repeat)
            points[name][str(count)] = point.to_json()
            if on_point:
                on_point(name, count)
    result: dict[str, Any] = {
        "key_bits": config.key_bits,
        "wire": {"ours": "CBOR (SDK default)", "naive_phe": "JSON, phe docs",
                 "plain_tenseal": "CBOR envelope, TenSEAL serialize()",
                 "plaintext": "JSON numbers"},
        "labels": LABELS,
        "setup_seconds": keys.setup_seconds,
        "points": points,
    }
    result["ratios"] = headline_ratios(points)
    return result


def headline_ratios(points: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Speed-ups and byte savings of ours over each baseline for 1 and 16 values."""
    out: dict[str, float] = {}
    for count in ("1", "16"):
        if count not in points["ours_paillier"]:
            continue
        ours = points["ours_paillier"][count]
        for other in ("naive_phe", "plain_tenseal", "ours_ckks", "plaintext"):
            theirs = points[other][count]
            out[f"{other}_over_ours_paillier_time_{count}"] = ratio(theirs["median_s"],
                                                                    ours["median_s"])
            out[f"{other}_over_ours_paillier_bytes_{count}"] = ratio(theirs["bytes"],
                                                                     ours["bytes"])
        ckks = points["ours_ckks"][count]
        out[f"plain_tenseal_over_ours_ckks_time_{count}"] = ratio(
            points["plain_tenseal"][count]["median_s"], ckks["median_s"])
        out[f"plain_tenseal_over_ours_ckks_bytes_{count}"] = ratio(
            points["plain_tenseal"][count]["bytes"], ckks["bytes"])
    return out
