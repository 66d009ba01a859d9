"""The aggregator's OpenAPI 3.0 description, written by hand to match docs/API.md."""

from __future__ import annotations

from typing import Any

from blindsum.server.http import with_request_line_limit
from blindsum.shared.codec import MAX_BATCH_REPORTS, MAX_CIPHERTEXTS, MAX_DECIMAL_DIGITS

JSON = "application/json"
CBOR = "application/cbor"
PROBLEM = "application/problem+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {JSON: {"schema": _ref(schema)}, CBOR: {"schema": _ref(schema)}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


_RATE_LIMITED = {"429": {
    **_problem("rate limit exceeded (per token, or per client address without a valid one)"),
    "headers": {"Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "integer", "minimum": 1}}},
}}
_AUTH_ERRORS = {
    "401": _problem("no bearer token, or an unknown or revoked one"),
    "403": _problem("a token of another role"),
    **_RATE_LIMITED,
}
_BYTES = {"type": "string", "format": "byte",
          "description": "base64url without padding in JSON; a byte string in CBOR"}
# python-paillier's own JSON form of a ciphertext, accepted in JSON (docs/INTEROP.md):
# [str(ciphertext), exponent], the exponent always 0 (OpenAPI 3.0 has no tuple schema).
_PHE_PAIR = {
    "type": "array", "minItems": 2, "maxItems": 2,
    "items": {"oneOf": [{"type": "string", "pattern": f"^[0-9]{{1,{MAX_DECIMAL_DIGITS}}}$"},
                        {"type": "integer", "enum": [0]}]},
    "description": '["<decimal ciphertext>", 0]: python-paillier\'s (ciphertext, exponent)',
}


def _derived_schema() -> dict[str, Any]:
    """The unsigned view a server derives from a result (``presentation.View.to_json``)."""
    return {
        "type": "object",
        "description": "computed by this server from the signed payload and the policy, not "
                       "signed: what the dashboard shows",
        "properties": {
            "value": {"description": "shown value: a histogram projected onto non-negative "
                                     "whole counts summing to report_count, other kinds "
                                     "clipped to their domain; rounded to rounding_step"},
            "ci": {"type": "array", "description": "per-slot 95% interval clipped to the "
                                                   "domain"},
            "simultaneous_ci": {"type": "array", "description": "95% band holding for every "
                                                                "slot at once (Bonferroni)"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "low_signal": {"type": "array", "items": {"type": "boolean"},
                           "description": "the interval's half-width reaches the value"},
            "rounding_step": {"type": "number"},
            "half_width_95": {"type": "number"},
            "simultaneous_half_width_95": {"type": "number", "nullable": True},
            "projected": {"type": "boolean"},
            "consistent": {"type": "boolean",
                           "description": "false: the key-holder flagged the aggregate as "
                                          "impossible for honest reports"},
        },
    }


def _published_schemas() -> dict[str, Any]:
    """Published results: the signed payload's fields, the document, the derived view."""
    result = {
        "type": "object",
        "description": "a key-holder-signed release result payload plus its signed document",
        "properties": {
            "type": {"type": "string", "enum": ["blindsum.release"]},
            "v": {"type": "integer"},
            "metric": {"type": "string"},
            "version": {"type": "integer"},
            "kind": {"type": "string",
                     "enum": ["count", "sum", "mean", "histogram", "vector"]},
            "scheme": {"type": "string", "enum": ["paillier", "ckks"]},
            "window": {"type": "integer"},
            "window_seconds": {"type": "integer"},
            "report_count": {"type": "integer"},
            "report_ids_digest": {"type": "string", "description": "hex SHA-256"},
            "value": {"oneOf": [{"type": "number"},
                                {"type": "array", "items": {"type": "number"}}]},
            "ci": {"type": "array", "description": "[low, high] or a list of such pairs"},
            "mechanism": {"type": "string"},
            "epsilon": {"type": "number"},
            "delta": {"type": "number"},
            "rho": {"type": "number"},
            "scale": {"type": "number"},
            "released_at": {"type": "number"},
            "audit_seq": {"type": "integer"},
            "noisy_value": {"description": "the unbiased noisy value before clamping (newer "
                                           "key-holders), same shape as value"},
            "consistent": {"type": "boolean"},
            "audit_head": {"type": "string"},
            "kid": {"type": "string"},
            "request_digest": {"type": "string", "description": "hex SHA-256"},
            "confidence": {"type": "number"},
            "threshold": {"type": "boolean",
                          "description": "decrypted by two parties with proven partial "
                                         "decryptions (check with blindsum verify)"},
            "noise_parties": {"type": "array", "items": {"type": "string",
                                                         "enum": ["keyholder", "server"]},
                              "description": "threshold results: who added an independent "
                                             "noise draw (the interval is for their sum)"},
            "document": _ref("SignedDocument"),
            "derived": {**_ref("Derived"), "nullable": True},
        },
    }
    return {
        "PublishedResult": result,
        "Derived": _derived_schema(),
        "Published": {"type": "object", "properties": {
            "results": {"type": "array", "items": _ref("PublishedResult")},
            "next_cursor": {"type": "string",
                            "description": "present when more results follow: pass it as "
                                           "cursor"}}},
        "Export": {"type": "object", "properties": {
            "metric": {"type": "string"},
            "from": {"type": "integer", "nullable": True},
            "to": {"type": "integer", "nullable": True},
            "results": {"type": "array", "items": _ref("PublishedResult")}}},
    }


def _schemas() -> dict[str, Any]:
    report = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "metric", "version", "kid", "window", "ct"],
        "properties": {
            "id": {**_BYTES, "description": "16 random bytes; a retry reuses them"},
            "metric": {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"},
            "version": {"type": "integer", "minimum": 1},
            "kid": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
            "window": {"type": "integer", "minimum": 0,
                       "description": "start of the report's window, unix seconds"},
            "ct": {"type": "array", "items": {"oneOf": [_BYTES, _PHE_PAIR]}, "minItems": 1,
                   "maxItems": MAX_CIPHERTEXTS},
            "proof": {"type": "object", "description": (
                'the report\'s validity proof (shared/validity/codec.py): required when the '
                'metric\'s policy has validity = "proof", refused when it has "none"')},
        },
    }
    outcome = {
        "type": "object",
        "properties": {
            "metric": {"type": "string"}, "version": {"type": "integer"},
            "window": {"type": "integer"}, "kid": {"type": "string"},
            "report_count": {"type": "integer"},
            "value": {"description": "released only"}, "ci": {"description": "released only"},
            "epsilon": {"type": "number", "description": "released only"},
            "code": {"type": "string", "description": "refused/failed only"},
            "detail": {"type": "string", "description": "refused/failed only"},
        },
    }
    window = {
        "type": "object",
        "properties": {
            "metric": {"type": "string"}, "version": {"type": "integer"},
            "window": {"type": "integer"}, "kid": {"type": "string"},
            "report_count": {"type": "integer"},
            "state": {"type": "string", "enum": ["open", "sealed", "released", "refused"]},
            "detail": {"type": "string", "nullable": True},
            "due_at": {"type": "number", "description": "when the window stops taking reports"},
        },
    }
    return {
        **_published_schemas(),
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": {"type": "string", "example": "urn:blindsum:error:invalid-input"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string", "description": "what is wrong and what to do"},
                "code": {"type": "string", "example": "invalid-ciphertext"},
            },
        },
        "SignedDocument": {
            "type": "object",
            "required": ["payload", "signer", "signature"],
            "properties": {
                "payload": {"type": "string", "description": "the exact JSON text signed"},
                "signer": {"type": "string", "example": "ed25519:..."},
                "signature": {"type": "string", "description": "Ed25519, base64url"},
            },
        },
        "Report": report,
        "ReportBatch": {
            "type": "object",
            "additionalProperties": False,
            "required": ["reports"],
            "properties": {
                "v": {"type": "integer", "enum": [1]},
                "reports": {"type": "array", "items": _ref("Report"), "minItems": 1,
                            "maxItems": MAX_BATCH_REPORTS},
            },
        },
        "BatchReceipt": {
            "type": "object",
            "required": ["v", "accepted", "duplicates"],
            "properties": {
                "v": {"type": "integer", "enum": [1]},
                "accepted": {"type": "integer", "description": "new reports, now durable"},
                "duplicates": {"type": "integer", "description": "ids seen before"},
            },
        },
        "Window": window,
        "Windows": {"type": "object", "properties": {
            "windows": {"type": "array", "items": _ref("Window")}}},
        "ReleaseFilter": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "metric": {"type": "string", "description": "omit: every metric"},
                "window": {"type": "integer", "description": "omit: every open window"},
            },
        },
        "AuditHeads": {"type": "object", "properties": {
            "heads": {"type": "array", "items": _ref("SignedDocument")}}},
        "ReleaseOutcome": outcome,
        "ReleaseOutcomes": {
            "type": "object",
            "properties": {
                "released": {"type": "array", "items": _ref("ReleaseOutcome")},
                "refused": {"type": "array", "items": _ref("ReleaseOutcome"),
                            "description": "the key-holder's policy said no"},
                "failed": {"type": "array", "items": _ref("ReleaseOutcome"),
                           "description": "not settled (key-holder unreachable, or being "
                                          "released by another worker); retried later"},
            },
        },
        "Health": {"type": "object", "properties": {
            "status": {"type": "string", "enum": ["ok", "no-manifest"]},
            "manifest_serial": {"type": "integer"}, "detail": {"type": "string"}}},
    }


_TIME = {"description": "unix seconds or an ISO 8601 date/time (UTC unless stated)",
         "schema": {"type": "string"}}
_RANGE = [
    {"name": "from", "in": "query", **_TIME,
     "description": "windows starting at or after this time; " + _TIME["description"]},
    {"name": "to", "in": "query", **_TIME,
     "description": "windows starting before this time; " + _TIME["description"]},
]
_PAGE = [
    {"name": "limit", "in": "query", "description": "results per page (default 100)",
     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    # No maxLength: a longer cursor is a 400 from the app, while a fuzzer's overlong one
    # would meet the WSGI server's request-line limit (an HTML 414) first.
    {"name": "cursor", "in": "query", "description": "next_cursor of the previous page "
                                                     "(at most 512 characters)",
     "schema": {"type": "string"}},
]
_METRIC_PATTERN = {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"}
_METRIC_QUERY = {"name": "metric", "in": "query", "schema": _METRIC_PATTERN}
_METRIC_PATH = {"name": "metric", "in": "path", "required": True, "schema": _METRIC_PATTERN}
_HTML = {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
_EXPORT_ERRORS = {"400": _problem("unknown, repeated or malformed parameter, or more than "
                                  "20,000 results in range"),
                  "404": _problem("unknown metric"), **_RATE_LIMITED}


def _published_paths() -> dict[str, Any]:
    published_ok = {"200": _body("Published", "released results, oldest window first"),
                    "400": _problem("unknown, repeated or malformed parameter"),
                    **_RATE_LIMITED}
    return {
        "/v1/published": {"get": {
            "summary": "Published (noisy, signed) results, by metric, window, version",
            "tags": ["published"],
            "parameters": [_METRIC_QUERY, *_RANGE, *_PAGE],
            "responses": {**published_ok, "404": _problem("unknown metric")},
        }},
        "/v1/published/{metric}": {"get": {
            "summary": "Published results of one metric", "tags": ["published"],
            "parameters": [_METRIC_PATH, *_RANGE, *_PAGE],
            "responses": {**published_ok, "404": _problem("unknown metric")},
        }},
        "/v1/published/{metric}/windows/{window}": {"get": {
            "summary": "One window's result, as `blindsum verify` reads it (newest version)",
            "tags": ["published"],
            "parameters": [_METRIC_PATH, {"name": "window", "in": "path", "required": True,
                                          "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": {"description": "the window's published result",
                                  "content": {JSON: {"schema": _ref("PublishedResult")}}},
                          "400": _problem("a query parameter was given (none are taken)"),
                          "404": _problem("unknown metric or no result for that window"),
                          **_RATE_LIMITED},
        }},
        "/v1/published/{metric}/export.csv": {"get": {
            "summary": "CSV of a metric's results in a time range, one row per slot",
            "tags": ["published"],
            "parameters": [_METRIC_PATH, *_RANGE],
            "responses": {"200": {"description": "CSV (header row first)",
                                  "content": {"text/csv": {"schema": {"type": "string"}}}},
                          **_EXPORT_ERRORS},
        }},
        "/v1/published/{metric}/export.json": {"get": {
            "summary": "JSON of a metric's results in a time range", "tags": ["published"],
            "parameters": [_METRIC_PATH, *_RANGE],
            "responses": {"200": {"description": "every result in range",
                                  "content": {JSON: {"schema": _ref("Export")}}},
                          **_EXPORT_ERRORS},
        }},
    }


def _paths() -> dict[str, Any]:
    return {
        **_published_paths(),
        "/v1/manifest": {"get": {
            "summary": "The key-holder's signed manifest, relayed unchanged",
            "tags": ["keys"],
            "responses": {"200": _body("SignedDocument", "signed manifest"),
                          "502": _problem("no verified manifest available"),
                          **_RATE_LIMITED},
        }},
        "/v1/keys/{kid}/context": {"get": {
            "summary": "CKKS public context bytes (check their SHA-256 against the manifest)",
            "tags": ["keys"],
            "parameters": [{"name": "kid", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "context bytes",
                        "content": {"application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}}}},
                "404": _problem("no CKKS key with this id"),
                "502": _problem("the key-holder's context does not match the manifest"),
                **_RATE_LIMITED,
            },
        }},
        "/v1/reports": {"post": {
            "summary": "Submit a batch of encrypted reports (all-or-nothing, idempotent ids)",
            "tags": ["reports"],
            "security": [{"ingestToken": []}],
            "requestBody": {"required": True, **_body("ReportBatch", "the batch")},
            "responses": {
                "200": _body("BatchReceipt", "every report of the batch is durable"),
                "400": _problem("malformed body or an invalid report (named by index): "
                                "unknown metric, stale version, closed window, bad "
                                "ciphertext or key id, an id repeated with other content"),
                **_AUTH_ERRORS,
                "403": _problem("a token of another role, or a report for a metric outside "
                                "the token's scope (named)"),
                "409": _problem("a window is sealed or would exceed max_contributors"),
                "413": _problem("body larger than the server accepts"),
                "415": _problem("Content-Type is not JSON or CBOR"),
                "502": _problem("no verified manifest available"),
            },
        }},
        "/v1/windows": {"get": {
            "summary": "Every window aggregate and its state", "tags": ["windows"],
            "security": [{"adminToken": []}],
            "parameters": [
                {"name": "metric", "in": "query",
                 "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"}},
                {"name": "state", "in": "query", "schema": {
                    "type": "string", "enum": ["open", "sealed", "released", "refused"]}},
                {"name": "window", "in": "query",
                 "schema": {"type": "integer", "minimum": 0, "maximum": 2**40}},
            ],
            "responses": {"200": _body("Windows", "windows"), **_AUTH_ERRORS,
                          "400": _problem("unknown, repeated or malformed filter")},
        }},
        "/v1/audit-heads": {"get": {
            "summary": "The key-holder's signed audit-chain heads this server kept",
            "tags": ["windows"],
            "security": [{"adminToken": []}],
            "responses": {"200": _body("AuditHeads", "signed heads, oldest first"),
                          **_AUTH_ERRORS, "400": _problem("query parameters given")},
        }},
        "/v1/windows/release": {"post": {
            "summary": "Release windows now (early if still open: the key-holder's policy "
                       "decides)",
            "tags": ["windows"],
            "security": [{"adminToken": []}],
            "requestBody": {"required": False, **_body("ReleaseFilter", "which windows")},
            "responses": {
                "200": _body("ReleaseOutcomes", "what happened to each window"),
                "400": _problem("malformed filter"), **_AUTH_ERRORS,
                "404": _problem("no reports for the named window"),
                "413": _problem("filter body over 4096 bytes"),
                "409": _problem("the named window was already released or refused"),
            },
        }},
        "/healthz": {"get": {
            "summary": "Liveness and readiness", "tags": ["meta"],
            "responses": {"200": _body("Health", "ready"),
                          "503": _body("Health", "no verified manifest yet"),
                          **_RATE_LIMITED},
        }},
        "/readyz": {"get": {
            "summary": "Readiness: store writable, key-holder reachable with our release "
                       "token, manifest fresh", "tags": ["meta"],
            "responses": {"200": {"description": "ready",
                                  "content": {JSON: {"schema": {"type": "object"}}}},
                          "503": _problem("a check failed; `checks` names each one"),
                          **_RATE_LIMITED},
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text exposition format)", "tags": ["meta"],
            "responses": {"200": {"description": "metrics", "content": {
                "text/plain": {"schema": {"type": "string"}}}}, **_RATE_LIMITED},
        }},
        "/openapi.json": {"get": {
            "summary": "This document", "tags": ["meta"],
            "responses": {"200": {"description": "OpenAPI 3.0",
                                  "content": {JSON: {"schema": {"type": "object"}}}},
                          **_RATE_LIMITED},
        }},
        "/": {"get": {
            "summary": "HTML dashboard: every metric, its latest value, state and budget",
            "tags": ["published"],
            "responses": {"200": _HTML, **_RATE_LIMITED},
        }},
        "/metrics/{metric}": {"get": {
            "summary": "HTML page of one metric: time series, bands, methodology, exports",
            "tags": ["published"],
            "parameters": [_METRIC_PATH, *_RANGE],
            "responses": {"200": _HTML, "400": _problem("malformed time range"),
                          "404": _problem("unknown metric"), **_RATE_LIMITED},
        }},
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of every aggregator endpoint."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "blindsum aggregator",
            "version": "1",
            "description": "Sums encrypted metric reports per window; never sees a plaintext "
                           "or a secret key. Errors are application/problem+json. Requests "
                           "are rate limited per token (per client address without a valid "
                           "token): 429 with Retry-After.",
        },
        "paths": with_request_line_limit(_paths()),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "ingestToken": {"type": "http", "scheme": "bearer",
                                "description": "app ingest token (ing_...), possibly scoped "
                                               "to some metrics"},
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "operator token (adm_...)"},
            },
        },
    }
