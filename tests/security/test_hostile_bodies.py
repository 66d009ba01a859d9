"""Whatever bytes a client sends to ``POST /v1/reports`` or the key-holder's
``POST /v1/releases``, the answer is a 4xx problem document and nothing changes.

Bodies come from hypothesis. Most are near-valid: an honest message with one to three
fields made invalid (wrong types, huge integers, long strings, unknown metric, key or
version, closed or misaligned windows, ciphertexts that are empty, too short or long, zero,
at or above n^2, sharing a factor with n, random base64, python-paillier decimal pairs gone
wrong), and report batches mixing honest reports with a bad one, which must be refused as a
whole. The rest are random JSON and CBOR structures (with CBOR tags and undefined), and
random bytes under a JSON or CBOR content type. Requests carry the right token, so they
reach the parsers and validators behind authentication. Examples are bounded so the module
runs in about twenty seconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_kit import (
    PROBLEM_JSON,
    State,
    aggregate_of,
    call,
    keyholder_manifest,
    paillier_report,
    paillier_scheme,
    snapshot,
)

from blindsum.server.processes import Deployment
from blindsum.shared import codec

EXAMPLES = 1500
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# -- strategies ----------------------------------------------------------------------------

HUGE_INTS = st.one_of(st.integers(), st.integers(min_value=-(2**2100), max_value=2**2100),
                      st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**31, 2**40 + 1, -1, 0]))
LONG_TEXT = st.integers(min_value=100, max_value=200_000).map(lambda n: "a" * n)
TEXT = st.one_of(st.text(max_size=40), LONG_TEXT)
JSON_LEAVES = st.one_of(st.none(), st.booleans(), HUGE_INTS,
                        st.floats(allow_nan=False, allow_infinity=False), TEXT)
CBOR_LEAVES = st.one_of(JSON_LEAVES, st.binary(max_size=600),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([cbor2.undefined]))


def _nested(leaves: st.SearchStrategy[Any], cbor: bool) -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        containers = st.one_of(st.lists(children, max_size=6),
                               st.dictionaries(st.text(max_size=12), children, max_size=6))
        if cbor:
            tags = st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 3, 4, 5, 24, 25, 28, 29,
                                                             30, 35, 36, 37, 256, 258,
                                                             55799, 999_999]), children)
            containers = st.one_of(containers, tags)
        return containers

    return st.recursive(leaves, extend, max_leaves=25)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


DELETE = object()  # a mutation that removes the field
# Honest reports go to a metric whose window is open: if a batch holding a bad report were
# not refused as a whole, its honest reports would show in the windows snapshot.
HONEST_METRIC = "opened"


@dataclass(frozen=True)
class Target:
    """What the fuzz deployment accepts, so generated messages can be *almost* right."""

    paillier_kid: str
    ckks_kid: str
    n: int
    honest_cts: tuple[bytes, ...]  # honest encryptions for HONEST_METRIC
    honest_aggregate: bytes  # an honest aggregate of three "sec_strict" reports
    window_seconds: int

    def current_window(self) -> int:
        now = int(time.time())
        return now - now % self.window_seconds


def _decimal(value: int) -> list[Any]:
    return [str(value), 0]


def _bad_ciphertexts(target: Target) -> st.SearchStrategy[Any]:
    """Ciphertext lists no scheme may accept (each is refused for a stated reason)."""
    n, n2 = target.n, target.n * target.n
    size = (n2.bit_length() + 7) // 8
    one = [
        b"", b"\x00" * size, b"\xff" * size, n2.to_bytes(size, "big"), n.to_bytes(size, "big"),
        (2 * n).to_bytes(size, "big"), b"\x01" * (size - 1),
        b"\x01" * (size + 1), _decimal(0), _decimal(n2), _decimal(n2 + 1), _decimal(n),
        ["1" * 3000, 0], ["0", 1], ["0", True], ["0", 0.0], ["abc", 0],
        ["\u0661\u0662", 0], ["-5", 0], [12, 0], ["12"], [], ["12", 0, 0], None, 12, -1,
        1.5, {}, "not base64!", "=" * 8,
    ]
    singles = st.one_of(st.sampled_from(one),
                        st.binary(max_size=size - 1), st.binary(min_size=size + 1,
                                                                 max_size=size + 40),
                        st.binary(max_size=size - 1).map(_b64))
    return st.one_of(
        singles.map(lambda ct: [ct]),
        st.just([]),
        st.lists(st.sampled_from(target.honest_cts), min_size=2, max_size=3),
        st.just([target.honest_cts[0]] * 65),
        singles, st.binary(max_size=64),
        st.sampled_from(target.honest_cts).flatmap(
            lambda ct: singles.map(lambda bad: [ct, bad])),
    )


def _report_mutation(target: Target) -> st.SearchStrategy[tuple[str, Any]]:
    """One change that makes a report invalid, whatever else the report holds."""
    ws = target.window_seconds
    now_window = st.builds(target.current_window)
    return st.one_of(
        st.tuples(st.sampled_from(["id", "metric", "version", "kid", "window", "ct"]),
                  st.just(DELETE)),
        st.tuples(st.just("extra"), JSON_LEAVES),
        st.tuples(st.just("id"), st.one_of(
            st.binary(max_size=15), st.binary(min_size=17, max_size=64),
            st.binary(max_size=15).map(_b64), st.sampled_from([None, 16, [], "", "!" * 22]))),
        st.tuples(st.just("metric"), st.one_of(
            st.sampled_from(["zz_unknown", "Seconds", "seconds ", "", "1x", "a" * 65, None,
                             7, b"seconds", ["seconds"]]),
            st.from_regex(r"\Azz[a-z0-9_.-]{0,20}\Z"), LONG_TEXT)),
        st.tuples(st.just("version"), st.sampled_from(
            [0, 2, -1, 2**31, 2**64, 2**2100, "1", 1.0, 1.5, True, None, [1]])),
        st.tuples(st.just("kid"), st.one_of(
            st.sampled_from(["pai-unknown", "", "k" * 65, "kid with spaces", None, 1,
                             target.ckks_kid]), LONG_TEXT)),
        st.tuples(st.just("window"), st.one_of(
            now_window.map(lambda w: w + 1), now_window.map(lambda w: w - 5 * ws),
            now_window.map(lambda w: w + 7 * ws), now_window.map(float),
            st.sampled_from([0, -1, 2**40 + 1, 2**64, "now", True, None]))),
        st.tuples(st.just("ct"), _bad_ciphertexts(target)),
    )


def _honest_report(target: Target) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "id": st.binary(min_size=16, max_size=16),
        "metric": st.just(HONEST_METRIC),
        "version": st.just(1),
        "kid": st.just(target.paillier_kid),
        "window": st.builds(target.current_window),
        "ct": st.sampled_from(target.honest_cts).map(lambda ct: [ct]),
    })


def _mutated(base: st.SearchStrategy[dict[str, Any]],
             mutation: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def apply(message: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(message)
        for field, value in changes:
            if value is DELETE:
                out.pop(field, None)
            else:
                out[field] = value
        return out

    return st.builds(apply, base, st.lists(mutation, min_size=1, max_size=3))


def _unique_ids(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Distinct ids: a repeated id is a duplicate by design and is not validated again."""
    seen: set[bytes] = set()
    out = []
    for index, report in enumerate(reports):
        report_id = report.get("id")
        if isinstance(report_id, bytes) and len(report_id) == 16:
            while report_id in seen:
                report_id = hashlib.sha256(bytes([index]) + report_id).digest()[:16]
            seen.add(report_id)
            report = {**report, "id": report_id}
        out.append(report)
    return out


def _hostile_batches(target: Target) -> st.SearchStrategy[Any]:
    """Batches holding at least one invalid report; the others may be perfectly honest,
    so a batch that is not refused as a whole changes the state."""
    bad = _mutated(_honest_report(target), _report_mutation(target))
    good = _honest_report(target)
    reports = st.tuples(st.lists(good, max_size=3), bad, st.lists(good, max_size=2)).map(
        lambda parts: _unique_ids([*parts[0], parts[1], *parts[2]]))
    batch = reports.map(lambda items: {"v": 1, "reports": items})
    odd_batch = st.builds(lambda items, v: {"v": v, "reports": items},
                          st.lists(good, min_size=1, max_size=2),
                          # not 1.0 or true: see test_wire_version_must_be_the_integer_1
                          st.sampled_from([0, 2, "1", None, 1.5, [1]]))
    return st.one_of(batch, batch, batch, odd_batch,
                     st.lists(good, min_size=1, max_size=2))  # not wrapped in a batch


def _release_mutation(target: Target) -> st.SearchStrategy[tuple[str, Any]]:
    """One change the key-holder must refuse (an honest release of a closed window of three
    reports of ``sec_strict`` is granted without it)."""
    return st.one_of(
        st.tuples(st.sampled_from(["metric", "version", "window", "kid", "report_count",
                                   "report_ids_digest", "aggregate"]), st.just(DELETE)),
        st.tuples(st.just("extra"), JSON_LEAVES),
        st.tuples(st.just("v"), st.sampled_from([0, 2, "1", None, 1.5])),
        st.tuples(st.just("metric"), st.one_of(
            st.sampled_from(["zz_unknown", "", "Sec_strict", None, 1, b"sec_strict"]),
            LONG_TEXT)),
        st.tuples(st.just("version"), st.sampled_from([0, 2, -1, 2**31, 2**70, "1", None,
                                                       True])),
        st.tuples(st.just("window"), st.one_of(
            st.builds(target.current_window), st.builds(target.current_window).map(
                lambda w: w - 2 * target.window_seconds + 1),
            st.sampled_from([-1, 2**40 + 1, 2**64, "0", None, 1.0]))),
        st.tuples(st.just("kid"), st.sampled_from(["pai-unknown", "", None, 5,
                                                   target.ckks_kid, "x" * 65])),
        st.tuples(st.just("report_count"), st.sampled_from(
            [0, 1, 2, -3, 100_001, 10**9 + 1, 2**64, "3", 3.0, None, True])),
        st.tuples(st.just("report_ids_digest"), st.one_of(
            st.binary(max_size=31), st.binary(min_size=33, max_size=64),
            st.sampled_from([None, 5, "", "!" * 43]))),
        st.tuples(st.just("aggregate"), st.one_of(
            _bad_ciphertexts(target),
            # a random unit below n^2: it decrypts to a random residue, far outside the
            # slot layout (the *small* ones, such as 1, are honest encryptions of 0)
            st.binary(min_size=256, max_size=256).map(
                lambda raw: [(int.from_bytes(raw, "big") | 1 << 2047 | 1).to_bytes(
                    512, "big")]))),
        st.tuples(st.just("early"), st.sampled_from(["yes", 1, None, [], 0.0])),
    )


def _hostile_releases(target: Target) -> st.SearchStrategy[Any]:
    base = st.fixed_dictionaries({
        "v": st.just(1),
        "metric": st.just("sec_strict"),
        "version": st.just(1),
        "window": st.builds(target.current_window).map(lambda w: w - 2 * target.window_seconds),
        "kid": st.just(target.paillier_kid),
        "report_count": st.just(3),
        "report_ids_digest": st.binary(min_size=32, max_size=32),
        "aggregate": st.just([target.honest_aggregate]),
        "early": st.booleans(),
    })
    return _mutated(base, _release_mutation(target))


def _bodies(messages: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[bytes, str]]:
    """(body, content type): near-valid messages (mostly), random structures, raw bytes."""
    json_bodies = st.one_of(messages, messages, messages, _nested(JSON_LEAVES, cbor=False))
    cbor_bodies = st.one_of(messages, messages, messages, _nested(CBOR_LEAVES, cbor=True))
    raw = st.tuples(st.binary(min_size=1, max_size=2000),
                    st.sampled_from([codec.JSON, codec.CBOR]))
    return st.one_of(
        _encoded(json_bodies, codec.JSON).map(lambda body: (body, codec.JSON)),
        _encoded(cbor_bodies, codec.CBOR).map(lambda body: (body, codec.CBOR)),
        raw,
    )


def _encoded(values: st.SearchStrategy[Any], media: str) -> st.SearchStrategy[bytes]:
    if media == codec.CBOR:
        return values.map(cbor2.dumps)
    return values.map(lambda value: json.dumps(value, default=_b64).encode())


# -- the checks ----------------------------------------------------------------------------


def _assert_refused(response: requests.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers.get("Content-Type", "").startswith(PROBLEM_JSON), response.headers
    body = response.json()
    assert body["status"] == response.status_code and isinstance(body["detail"], str), body


@pytest.fixture(scope="module")
def target(fuzz_deployed: Deployment) -> Target:
    manifest = keyholder_manifest(fuzz_deployed)
    scheme = paillier_scheme(manifest)
    honest_policy, strict = manifest.policy(HONEST_METRIC), manifest.policy("sec_strict")
    assert honest_policy.window_seconds == strict.window_seconds
    honest = tuple(paillier_report(manifest, HONEST_METRIC, v).ciphertexts[0]
                   for v in (0, 1, 1, 0))
    (aggregate,) = aggregate_of(manifest, strict, [1, 1, 1])
    return Target(scheme.key_id, manifest.active_key("ckks").key_id, int(scheme.n), honest,
                  aggregate, honest_policy.window_seconds)


@pytest.fixture(scope="module")
def initial(fuzz_deployed: Deployment) -> State:
    return snapshot(fuzz_deployed)


def _reports_endpoint(dep: Deployment) -> tuple[str, str]:
    return f"{dep.server.url}/v1/reports", dep.ingest_token


def _releases_endpoint(dep: Deployment) -> tuple[str, str]:
    return f"{dep.keyholder.url}/v1/releases", dep.release_token


def test_hostile_report_bodies_get_a_4xx_problem_and_change_nothing(
    fuzz_deployed: Deployment, target: Target, initial: State,
) -> None:
    url, token = _reports_endpoint(fuzz_deployed)

    @FUZZ
    @given(_bodies(_hostile_batches(target)))
    def attack(body_and_media: tuple[bytes, str]) -> None:
        body, media = body_and_media
        _assert_refused(call("POST", url, token=token, data=body, media=media))

    attack()
    assert snapshot(fuzz_deployed) == initial


def test_hostile_release_bodies_get_a_4xx_problem_and_change_nothing(
    fuzz_deployed: Deployment, target: Target, initial: State,
) -> None:
    url, token = _releases_endpoint(fuzz_deployed)

    @FUZZ
    @given(_bodies(_hostile_releases(target)))
    def attack(body_and_media: tuple[bytes, str]) -> None:
        body, media = body_and_media
        _assert_refused(call("POST", url, token=token, data=body, media=media))

    attack()
    assert snapshot(fuzz_deployed) == initial


def _deep_bodies(depth: int, media: str) -> list[bytes]:
    """``{"v": [[..1..]]}``, ``{"reports": [[..1..]]}`` and ``[[..{}..]]``, encoded by hand
    (the encoders themselves would hit the recursion limit)."""
    if media == codec.JSON:
        nested = "[" * depth + "{}" + "]" * depth
        inner = "[" * depth + "1" + "]" * depth
        return [f'{{"v":{inner}}}'.encode(), f'{{"reports":{inner}}}'.encode(),
                nested.encode()]
    inner_cbor = b"\x81" * depth + b"\x01"
    return [b"\xa1\x61v" + inner_cbor, b"\xa1\x67reports" + inner_cbor,
            b"\x81" * depth + b"\xa0"]


@pytest.mark.parametrize("endpoint", [_reports_endpoint, _releases_endpoint],
                         ids=["reports", "releases"])
@pytest.mark.parametrize("media", [codec.JSON, codec.CBOR])
def test_deeply_nested_bodies_get_a_4xx_problem_and_change_nothing(
    fuzz_deployed: Deployment, initial: State, endpoint: Callable[[Deployment], tuple[str, str]],
    media: str,
) -> None:
    """Depths around the interpreter's recursion limit, where parsing succeeds but anything
    recursive done with the value afterwards (repr in an error message, hashing) might not,
    and far beyond it."""
    url, token = endpoint(fuzz_deployed)
    with requests.Session() as session:
        for depth in [*range(400, 1001, 3), 5_000, 100_000]:
            for body in _deep_bodies(depth, media):
                response = call("POST", url, token=token, data=body, media=media,
                                session=session)
                assert 400 <= response.status_code < 500, (depth, body[:12],
                                                           response.status_code,
                                                           response.text[:200])
                _assert_refused(response)
    assert snapshot(fuzz_deployed) == initial


@pytest.mark.parametrize("endpoint", [_reports_endpoint, _releases_endpoint],
                         ids=["reports", "releases"])
def test_cbor_map_keys_of_any_type_get_a_4xx_problem(
    fuzz_deployed: Deployment, initial: State, endpoint: Callable[[Deployment], tuple[str, str]],
) -> None:
    url, token = endpoint(fuzz_deployed)
    odd_keys: list[Any] = [1, b"v", 1.5, None, True, (1, 2), _deep_tuple(400), "v" * 100_000]
    for key in odd_keys:
        for body in ({key: 1}, {"v": 1, key: 1}, {"v": 1, "reports": [{key: 1}]}):
            response = call("POST", url, token=token, data=cbor2.dumps(body), media=codec.CBOR)
            _assert_refused(response)
    assert snapshot(fuzz_deployed) == initial


def _deep_tuple(depth: int) -> tuple[Any, ...]:
    value: tuple[Any, ...] = ()
    for _ in range(depth):
        value = (value,)
    return value


@pytest.mark.parametrize("version", [1.0, True], ids=["float", "bool"])
@pytest.mark.parametrize("endpoint", [_reports_endpoint, _releases_endpoint],
                         ids=["reports", "releases"])
def test_wire_version_must_be_the_integer_1(
    fuzz_deployed: Deployment, endpoint: Callable[[Deployment], tuple[str, str]],
    version: Any,
) -> None:
    """The codec is strict about types: 1.0 and true are not wire version 1.
    (Each message is otherwise empty, so nothing can be stored either way.)"""
    url, token = endpoint(fuzz_deployed)
    message = {"v": version, "reports": []} if url.endswith("/reports") else {"v": version}
    response = call("POST", url, token=token, data=json.dumps(message).encode(),
                    media=codec.JSON)
    _assert_refused(response)
    assert "unsupported version" in response.json()["detail"], response.json()
