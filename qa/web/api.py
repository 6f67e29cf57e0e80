"""HTTP: the JSON API and the pages, with every error answered as JSON."""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
from urllib.parse import unquote_to_bytes

from flask import Blueprint, Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import __version__
from ..search import filters
from ..errors import BadRequest, Forbidden, IndexBusy, IndexLocked, IngestError, NotFound, QAError, Unauthorized
from ..ingest.articles import article_from_json
from .metrics import count_answer
from .openapi import spec
from ..search.searcher import validate
from .service import get_service

log = logging.getLogger(__name__)
api = Blueprint("api", __name__)
admin = Blueprint("admin", __name__)  # registered only when an admin token is configured

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
MAX_ARTICLE_BODY = 4 * 1024 * 1024  # POST /api/articles may carry a long article; searches stay at MAX_CONTENT_LENGTH
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def error_body(code: str, message: str, status: int):
    return jsonify({"error": {"code": code, "message": message}}), status


def run_search(q, k, source=None, from_=None, to=None, sort=None) -> dict:
    """Validate, search and shape the API answer."""
    svc = get_service()
    if isinstance(q, str):
        # Checked before validate() strips, so a body the schema calls too long is refused, not trimmed.
        if len(q) > svc.cfg.max_query_chars:
            raise BadRequest(f"the query is too long ({len(q)} characters; at most {svc.cfg.max_query_chars})",
                             code="query_too_long")
        if _SURROGATE.search(q):  # lone surrogates from a JSON body are not text
            raise BadRequest("q is not valid Unicode text", code="invalid_query")
    q, k = validate(q, k, svc.cfg)
    where, sort = filters.parse(source, from_, to, sort)
    searcher = svc.searcher()
    g.generation = searcher.index.generation
    t0 = time.perf_counter()
    with searcher.index.reading():  # every query of this search sees the same database state
        got = searcher.ask(q, k, where, sort)
    took = (time.perf_counter() - t0) * 1000
    count_answer(got.answer)
    return {"query": q, "took_ms": round(took, 2), **got.to_dict()}


def _body_bytes() -> bytes:
    """The request body, refused with 413 past the size limit whether or not it came with a Content-Length."""
    limit = request.max_content_length
    if request.content_length is not None or limit is None:
        return request.get_data(cache=False)  # werkzeug checks Content-Length against the limit first
    # Chunked: no length up front, and werkzeug stops quietly at the limit, so
    # read one byte past it ourselves to tell "too large" from "just fits".
    stream, chunks, size = request.environ["wsgi.input"], [], 0
    while size <= limit and (chunk := stream.read(min(65536, limit + 1 - size))):
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


def json_body() -> object:
    """The request's JSON body, or a 415/400 error that says what to send."""
    if not request.is_json:
        raise QAError("send JSON with Content-Type: application/json", code="unsupported_media_type", status=415)
    try:
        body = json.loads(_body_bytes())
    except (ValueError, RecursionError):  # RecursionError: nesting deep enough to exhaust the parser's stack
        body = None
    if body is None:
        raise BadRequest("the request body is not valid JSON", code="invalid_json")
    return body


@api.get("/api/search")
def search_get():
    args = request.args
    sources = args.getlist("source")
    return jsonify(run_search(args.get("q"), args.get("k"), sources or None, args.get("from"), args.get("to"),
                              args.get("sort")))


@api.post("/api/search")
def search_post():
    body = json_body()
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object like {\"q\": \"...\", \"k\": 5}", code="invalid_json")
    return jsonify(run_search(body.get("q"), body.get("k"), body.get("source"), body.get("from"), body.get("to"),
                              body.get("sort")))


@api.get("/api/articles/<article_id>")
def article_json(article_id: str):
    searcher = get_service().searcher()
    g.generation = searcher.index.generation
    art = searcher.index.article(article_id)
    if art is None:
        raise NotFound(f"no article with id {article_id!r}", code="article_not_found")
    return jsonify(art)


@api.get("/healthz")
def healthz():
    return jsonify({"status": "ok", "version": __version__})


@api.get("/readyz")
def readyz():
    svc = get_service()
    if not svc.ready:
        return error_body("not_ready", "the index is still loading", 503)
    idx = svc.searcher().index
    body = {"status": "ready", "generation": idx.generation, "articles": idx.article_count,
            "passages": idx.passage_count, "model": idx.manifest.get("model")}
    if svc.reload_error:  # still serving, but from an older snapshot
        body["reload_error"] = svc.reload_error
    return jsonify(body)


@api.get("/openapi.json")
def openapi():
    return jsonify(spec(request.host_url.rstrip("/"), admin=admin_token() is not None))


# --- writes (admin token only) ------------------------------------------------------

def admin_token() -> str | None:
    """The configured admin token, or None when writes are switched off."""
    token = current_app.config.get("ADMIN_TOKEN")
    if token is None or token == "":
        return None
    if not isinstance(token, str):  # from_prefixed_env parsed QA_ADMIN_TOKEN as JSON (e.g. digits)
        token = os.environ.get("QA_ADMIN_TOKEN") or str(token)
    return token


@admin.before_request
def require_token():
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("this needs the admin token: send Authorization: Bearer <token>")
    if not hmac.compare_digest(given.strip().encode(), admin_token().encode()):
        raise Forbidden("the admin token is wrong")


@admin.post("/api/articles")
def add_article():
    request.max_content_length = MAX_ARTICLE_BODY
    try:
        article = article_from_json(json_body(), "request body")
    except IngestError as e:
        raise BadRequest(e.message.removeprefix("request body: "), code="invalid_article") from None
    result = get_service().add(article)
    status = 201 if result["status"] == "added" else 200
    return jsonify(result), status, {"Location": f"/api/articles/{result['id']}"}


@admin.delete("/api/articles/<article_id>")
def delete_article(article_id: str):
    generation = get_service().delete(article_id)
    if generation is None:
        raise NotFound(f"no article with id {article_id!r}", code="article_not_found")
    return jsonify({"id": article_id, "status": "deleted", "generation": generation})


# --- every request and response ---------------------------------------------------------

def _check_encoding():
    """Refuse a path or query string that is not UTF-8 (werkzeug would quietly turn it into U+FFFD)."""
    # REQUEST_URI is the request line's target as sent (latin-1 per PEP 3333), before any decoding.
    uri = request.environ.get("REQUEST_URI") or request.environ.get("RAW_URI")
    if uri is None:
        uri = request.environ.get("PATH_INFO", "") + "?" + request.environ.get("QUERY_STRING", "")
    try:
        unquote_to_bytes(uri.encode("latin-1").replace(b"+", b" ")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise BadRequest("the URL is not valid UTF-8 (after percent-decoding)", code="invalid_encoding") from None


def _set_headers(resp):
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if "generation" in g:  # which snapshot answered, for clients that compare answers
        resp.headers["X-Index-Generation"] = str(g.generation)
    return resp


def _http_error(e: HTTPException):
    code = (e.name or "error").lower().replace(" ", "_")
    message = e.description or e.name
    if e.code == 404 and request.path.startswith("/articles/"):
        code = "article_not_found"
    elif e.code == 404:
        message = f"no such page: {request.path}"
    elif e.code == 405:
        message = f"{request.method} is not allowed on {request.path}"
    elif e.code == 413:
        message = f"the request body is too large (at most {request.max_content_length} bytes)"
    resp, status = error_body(code, message, e.code or 500)
    if e.code == 405 and hasattr(e, "valid_methods") and e.valid_methods:
        resp.headers["Allow"] = ", ".join(e.valid_methods)
    return resp, status


def _qa_error(e: QAError):
    resp, status = error_body(e.code, e.message, e.status)
    if isinstance(e, Unauthorized):
        resp.headers["WWW-Authenticate"] = 'Bearer realm="qa"'
    elif isinstance(e, (IndexLocked, IndexBusy)):
        resp.headers["Retry-After"] = "5"
    return resp, status


def _unexpected(e: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_body("internal_error", "something went wrong on our side; the error was logged", 500)


def init_app(app: Flask) -> None:
    """Register the JSON API, the admin writes (with a token), and the hooks every request passes."""
    from . import alerts  # noqa: F401 - its routes (/api/alerts, /alerts/ID.atom) join these blueprints
    app.register_blueprint(api)
    with app.app_context():
        if admin_token() is not None:
            app.register_blueprint(admin)
    app.before_request(_check_encoding)
    app.after_request(_set_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(QAError, _qa_error)
    app.register_error_handler(Exception, _unexpected)
