"""Schemathesis drives every operation each service describes at ``GET /openapi.json``.

Schemathesis's Python API is used directly (``openapi.from_url``, one hypothesis strategy
per operation and generation mode, ``Case.call`` and ``Case.validate_response``): its
pytest plugin (``from_fixture(...).parametrize()``) fails under pytest 9.2 (it sets
``Function._nodeid``, which pytest 9 no longer has).

Cases are generated from the documents themselves, valid ones and invalid ones (negative
mode), and sent to the running services with the token each operation requires (none for
public ones). Every answer must not be a server error, must have a documented status and
content type, and must match the response schema the document declares for its status.
The number of cases per operation is bounded, so the module runs in seconds.

State is compared at the end without each window's ``detail``: the admin token may ask for
releases, and the one open window (``sec_strict``) may not be released early, so such a
request reaches the key-holder, is refused there and leaves only its reason behind.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from security_kit import State, bearer, record_error, snapshot

from blindsum.server.aggregator.openapi import openapi_document
from blindsum.server.keyholder.openapi import OPENAPI as KEYHOLDER_OPENAPI
from blindsum.server.processes import Deployment

CASES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
BOUNDED = settings(max_examples=CASES_PER_OPERATION, deadline=None,
                   suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def before_fuzzing(fuzz_deployed: Deployment) -> State:
    return snapshot(fuzz_deployed)


@pytest.fixture(scope="module")
def schemas(fuzz_deployed: Deployment, before_fuzzing: State) -> dict[str, Any]:
    """Each service's OpenAPI document, loaded by schemathesis from the running service."""
    return {
        "server": schemathesis.openapi.from_url(f"{fuzz_deployed.server.url}/openapi.json"),
        "keyholder": schemathesis.openapi.from_url(
            f"{fuzz_deployed.keyholder.url}/openapi.json"),
    }


def _token_for(dep: Deployment, service: str, case: schemathesis.Case) -> str | None:
    """The credential an operation's rightful caller holds (None for public operations)."""
    if service == "keyholder":
        return dep.release_token if case.operation.definition.raw.get("security") else None
    if case.path == "/v1/reports":
        return dep.ingest_token
    if case.path.startswith("/v1/windows"):
        return dep.admin_token
    return None


def _exercise(dep: Deployment, service: str, case: schemathesis.Case) -> None:
    base = dep.server.url if service == "server" else dep.keyholder.url
    headers = bearer(_token_for(dep, service, case))
    response = case.call(base_url=base, headers=headers, timeout=60)
    if response.status_code >= 400:
        record_error(f"schemathesis {case.method} {case.path}", response.status_code,
                     response.text)
    case.validate_response(response, checks=CHECKS, headers=headers)


def _operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in document["paths"].items()
            for method in item]


# Collected from the documents the code serves; the running services' own documents are
# checked against these lists, and fuzzed from what they serve.
OPERATIONS = ([("server", *op) for op in _operations(openapi_document())]
              + [("keyholder", *op) for op in _operations(KEYHOLDER_OPENAPI)])


def _served(dep: Deployment, service: str) -> dict[str, Any]:
    base = dep.server.url if service == "server" else dep.keyholder.url
    response = requests.get(f"{base}/openapi.json", timeout=30)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


@pytest.mark.parametrize("service", ["server", "keyholder"])
def test_services_describe_the_operations_under_test(
    fuzz_deployed: Deployment, service: str,
) -> None:
    served = sorted(_operations(_served(fuzz_deployed, service)))
    assert served == sorted((m, p) for s, m, p in OPERATIONS if s == service)


@pytest.mark.parametrize(("service", "method", "path"), OPERATIONS,
                         ids=[f"{s}:{m} {p}" for s, m, p in OPERATIONS])
def test_operation_answers_as_documented_and_never_fails(
    fuzz_deployed: Deployment, schemas: dict[str, Any], before_fuzzing: State,
    service: str, method: str, path: str,
) -> None:
    operation = schemas[service][path][method]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @BOUNDED
        @given(operation.as_strategy(generation_mode=mode))
        def exercise(case: schemathesis.Case) -> None:
            _exercise(fuzz_deployed, service, case)

        try:
            exercise()
        except Unsatisfiable:
            # nothing to make invalid: no body, no parameters, or only free-form strings
            if mode is not GenerationMode.NEGATIVE:
                raise


def test_openapi_fuzzing_changed_nothing(fuzz_deployed: Deployment,
                                         before_fuzzing: State) -> None:
    after = snapshot(fuzz_deployed).stable()
    if any(w["due_at"] <= time.time() for w in before_fuzzing.windows):
        # The fixture's windows are the current hour's: once the hour turns they are due,
        # and a fuzzed release call with the operator's token releases them legitimately.
        pytest.skip("a fixture window became due while fuzzing (an hour boundary)")
    assert after == before_fuzzing.stable()
