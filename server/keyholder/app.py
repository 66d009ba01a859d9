"""The key-holder's Flask app factory and routes.

It serves the signed manifest and CKKS public contexts to anyone, and releases to the one
registered server (release token). It never accepts an individual report: the only
ciphertexts it decrypts arrive as a window aggregate with a report count of at least k.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask_limiter import Limiter, RateLimitExceeded

from blindsum.server.http import (
    install_error_handlers,
    rate_limited_handler,
    read_body,
    reply,
    require_token,
    token_digest,
)
from blindsum.server.keyholder import audit, ledger
from blindsum.server.keyholder.config import KeyholderConfig
from blindsum.server.keyholder.openapi import OPENAPI
from blindsum.server.keyholder.service import RELEASE_ROLE, Keyholder
from blindsum.shared.codec import KEY_ID_PATTERN, ReleaseRequest, WindowReports
from blindsum.shared.errors import InvalidInput, NotFound
from blindsum.shared.threshold.noise_proof import MAX_WIRE_ITEMS

public = Blueprint("public", __name__)
releases = Blueprint("releases", __name__)


def _holder() -> Keyholder:
    return current_app.extensions["blindsum.keyholder"]


def _require_server() -> None:
    require_token(_holder().db.token_digests(), RELEASE_ROLE)


@public.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok", role="keyholder")


@public.get("/openapi.json")
def openapi() -> Response:
    return jsonify(OPENAPI)


@public.get("/v1/manifest")
def manifest() -> Response:
    return jsonify(_holder().db.latest_manifest())


@public.get("/v1/keys/<kid>/context")
def context(kid: str) -> Response:
    key = _holder().db.key(kid)
    if key is None or key.context is None or key.status == "retired":
        raise NotFound(f"no CKKS public context for key {kid!r}")
    return Response(key.context, content_type="application/octet-stream")


@releases.post("/v1/releases")
def create_release() -> Response:
    _require_server()
    # a release is ~10 fields and <= 64 ciphertexts, and with noise = "both" the server's
    # noise proof (``noise_proof.MAX_WIRE_ITEMS`` bounds it)
    data, _ = read_body(max_items=256 + MAX_WIRE_ITEMS)
    release_request = ReleaseRequest.from_wire(data)
    # for the release log line (observe.py): which window, never its aggregate
    g.release_window = {"metric": release_request.metric, "version": release_request.version,
                        "window": release_request.window, "kid": release_request.key_id}
    answer = _holder().releaser().release(release_request)
    return reply(answer.document, status=201 if answer.created else 200)


# Proofs are deep JSON (a clause per bucket or bit, lists of group elements): the item cap
# is generous and the body's byte cap (``max_body_bytes``) is what bounds the work.
MAX_FORWARDED_ITEMS = 1_000_000


@releases.post("/v1/windows/reports")
def forward_reports() -> Response:
    """A threshold window's reports, forwarded by the server before it asks for the release:
    verified again here and summed into the key-holder's own account (``intake.py``)."""
    _require_server()
    data, _ = read_body(max_items=MAX_FORWARDED_ITEMS)
    receipt = _holder().intake().accept(WindowReports.from_wire(data))
    return reply(receipt.to_wire())


@releases.get("/v1/releases/<metric>/<int:version>/<int:window>")
def get_release(metric: str, version: int, window: int) -> Response:
    _require_server()
    key_id = request.args.get("kid")
    if key_id is not None and not KEY_ID_PATTERN.match(key_id):
        raise InvalidInput("kid must be a key id")
    document = _holder().releaser().stored(metric, version, window, key_id)
    if document is None:
        raise NotFound(f"window {window} of {metric!r} v{version} has not been released")
    return reply(document)


@releases.get("/v1/audit/head")
def audit_head() -> Response:
    """The audit chain's head, signed: the server keeps these to detect a rewritten log."""
    _require_server()
    holder = _holder()
    return jsonify(audit.signed_head(holder.db.conn, holder.identity))


@releases.get("/v1/budget")
def budget() -> Response:
    _require_server()
    holder = _holder()
    states = [ledger.budget(holder.db.conn, p).to_json() for p in holder.db.current_policies()]
    return jsonify(metrics=states)


def create_app(config: KeyholderConfig, holder: Keyholder | None = None) -> Flask:
    """Build the key-holder app; opens (and unlocks) the data directory unless given one."""
    app = Flask("blindsum.keyholder")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["blindsum.keyholder"] = holder or Keyholder.open(
        config.data_dir, config.passphrase
    )
    install_error_handlers(app)
    app.register_blueprint(public)
    app.register_blueprint(releases)
    if config.rate_limit_releases:
        _limit_releases(app, config.rate_limit_releases)
    return app


def _limit_releases(app: Flask, limit: str) -> None:
    """Per caller (its bearer token's digest, else its address), per worker, in memory."""

    def caller() -> str:
        header = request.headers.get("Authorization", "")
        return "token:" + token_digest(header) if header else f"addr:{request.remote_addr}"

    # moving-window: exact (at most ``limit`` in any interval of its length). The sliding
    # window counter weights the previous clock window's hits down, so 5/minute let six
    # releases through within a second across a minute boundary; one timestamp per allowed
    # release and caller (60 by default, one worker) is cheap here.
    limiter = Limiter(caller, storage_uri="memory://", strategy="moving-window",
                      headers_enabled=False)
    limiter.init_app(app)
    app.view_functions["releases.create_release"] = limiter.limit(limit)(create_release)
    app.register_error_handler(RateLimitExceeded, rate_limited_handler(limiter))
