"""OpenAPI 3 description of the key-holder's endpoints (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

from blindsum.server.http import with_request_line_limit

_PROBLEM = {"description": "Error", "content": {"application/problem+json": {
    "schema": {"$ref": "#/components/schemas/Problem"}}}}
_SIGNED = {"content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/SignedDocument"}}}}
_BEARER = [{"bearer": []}]
_B64 = {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "blindsum key-holder", "version": "1",
             "description": "Holds secret keys; releases noisy window aggregates."},
    "paths": {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {
            "description": "ok", "content": {"application/json": {"schema": {
                "type": "object"}}}}}}},
        "/readyz": {"get": {"summary": "Readiness: data directory writable "
                                       "(added by `blindsum keyholder serve`)",
                            "responses": {"200": {"description": "ready", "content": {
                                "application/json": {"schema": {"type": "object"}}}},
                                "503": _PROBLEM}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (added by `blindsum keyholder "
                                        "serve`)",
                             "responses": {"200": {"description": "metrics", "content": {
                                 "text/plain": {"schema": {"type": "string"}}}}}}},
        "/v1/manifest": {"get": {"summary": "Signed manifest of public keys and policies",
                                 "responses": {"200": {"description": "manifest", **_SIGNED}}}},
        "/v1/keys/{kid}/context": {"get": {
            "summary": "CKKS public context bytes (digest in the manifest)",
            "parameters": [{"name": "kid", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "context", "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}},
                          "404": _PROBLEM}}},
        "/v1/releases": {"post": {
            "summary": "Release one closed window's aggregate (paid and consumed before it is "
                       "decrypted; the same request again gets the stored result)",
            "security": _BEARER,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Release"}},
                "application/cbor": {"schema": {"$ref": "#/components/schemas/Release"}}}},
            "responses": {"201": {"description": "signed release result", **_SIGNED},
                          "200": {"description": "the stored result of this same request",
                                  **_SIGNED},
                          "400": _PROBLEM, "401": _PROBLEM, "403": _PROBLEM,
                          "409": _PROBLEM, "413": _PROBLEM, "415": _PROBLEM,
                          "422": _PROBLEM, "429": _PROBLEM}}},
        "/v1/windows/reports": {"post": {
            "summary": "A threshold window's reports, forwarded by the server before it asks "
                       "for the release: every proof is verified again, each report id "
                       "counted once, and only this sum is ever released",
            "security": _BEARER,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Forwarded"}},
                "application/cbor": {"schema": {"$ref": "#/components/schemas/Forwarded"}}}},
            "responses": {"200": {"description": "the window's account after this batch",
                                  "content": {"application/json": {"schema": {
                                      "$ref": "#/components/schemas/IntakeReceipt"}}}},
                          "400": _PROBLEM, "401": _PROBLEM, "403": _PROBLEM,
                          "409": _PROBLEM, "413": _PROBLEM, "415": _PROBLEM,
                          "422": _PROBLEM, "429": _PROBLEM}}},
        "/v1/releases/{metric}/{version}/{window}": {"get": {
            "summary": "A past release's signed result",
            "security": _BEARER,
            "parameters": [
                {"name": "metric", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "version", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 0}},
                {"name": "window", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 0}},
                {"name": "kid", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}}],
            "responses": {"200": {"description": "signed release result", **_SIGNED},
                          "400": _PROBLEM, "401": _PROBLEM, "403": _PROBLEM,
                          "404": _PROBLEM}}},
        "/v1/audit/head": {"get": {
            "summary": "The audit chain's head, signed with the key-holder's identity",
            "security": _BEARER,
            "responses": {"200": {"description": "signed audit head", **_SIGNED},
                          "401": _PROBLEM, "403": _PROBLEM}}},
        "/v1/budget": {"get": {
            "summary": "Privacy budget per metric", "security": _BEARER,
            "responses": {"200": {"description": "budgets", "content": {"application/json": {
                "schema": {"type": "object"}}}}, "401": _PROBLEM, "403": _PROBLEM}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Problem": {"type": "object", "required": ["title", "status", "detail", "code"],
                        "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                       "status": {"type": "integer"},
                                       "detail": {"type": "string"},
                                       "code": {"type": "string"}}},
            "SignedDocument": {"type": "object",
                               "required": ["payload", "signer", "signature"],
                               "properties": {"payload": {"type": "string"},
                                              "signer": {"type": "string"},
                                              "signature": _B64}},
            "Forwarded": {"type": "object", "additionalProperties": False,
                          "required": ["metric", "version", "window", "kid", "reports"],
                          "properties": {
                              "v": {"type": "integer", "enum": [1]},
                              "metric": {"type": "string",
                                         "pattern": "^[a-z][a-z0-9_.-]{0,63}$"},
                              "version": {"type": "integer", "minimum": 1},
                              "window": {"type": "integer", "minimum": 0},
                              "kid": {"type": "string"},
                              "reports": {"type": "array", "minItems": 1, "maxItems": 500,
                                          "items": {"type": "object", "description":
                                                    "a report as the SDK sends it, with "
                                                    "its validity proof"}}}},
            "IntakeReceipt": {"type": "object", "properties": {
                "v": {"type": "integer"}, "accepted": {"type": "integer"},
                "duplicates": {"type": "integer"}, "report_count": {"type": "integer"}}},
            "Release": {"type": "object", "additionalProperties": False,
                        "required": ["metric", "version", "window", "kid", "report_count",
                                     "report_ids_digest", "aggregate"],
                        "properties": {
                            "v": {"type": "integer", "enum": [1]},
                            "metric": {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"},
                            "version": {"type": "integer", "minimum": 1},
                            "window": {"type": "integer", "minimum": 0},
                            "kid": {"type": "string"},
                            "report_count": {"type": "integer", "minimum": 1},
                            "report_ids_digest": _B64,
                            "aggregate": {"type": "array", "items": _B64, "minItems": 1,
                                          "maxItems": 64},
                            "early": {"type": "boolean"},
                            "server_noise": {"type": "array", "items": _B64, "minItems": 1,
                                             "maxItems": 64,
                                             "description": "the server's encrypted noise "
                                             "(noise = \"both\" threshold policies)"},
                            "server_noise_proof": {
                                "type": "object",
                                "description": "its proof of range and knowledge "
                                "(a validity proof of kind \"slots\", "
                                "shared/threshold/noise_proof.py)"}}},
        },
    },
}
with_request_line_limit(OPENAPI["paths"])
