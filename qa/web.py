"""HTTP: the JSON API and the pages, with every error answered as JSON."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from flask import Blueprint, Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from . import __version__
from .errors import BadRequest, NotFound, QAError
from .openapi import spec
from .search import validate
from .service import get_service

log = logging.getLogger(__name__)
api = Blueprint("api", __name__)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def error_body(code: str, message: str, status: int):
    return jsonify({"error": {"code": code, "message": message}}), status


def run_search(q, k) -> dict:
    """Validate, search and shape the API answer."""
    svc = get_service()
    q, k = validate(q, k, svc.cfg)
    t0 = time.perf_counter()
    hits = svc.searcher().search(q, k)
    took = (time.perf_counter() - t0) * 1000
    return {"query": q, "took_ms": round(took, 2), "results": [asdict(h) for h in hits]}


@api.get("/api/search")
def search_get():
    return jsonify(run_search(request.args.get("q"), request.args.get("k")))


@api.post("/api/search")
def search_post():
    if not request.is_json:
        raise QAError("send the query as JSON with Content-Type: application/json, e.g. {\"q\": \"...\", \"k\": 5}",
                      code="unsupported_media_type", status=415)
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("the request body is not valid JSON", code="invalid_json")
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object like {\"q\": \"...\", \"k\": 5}", code="invalid_json")
    return jsonify(run_search(body.get("q"), body.get("k")))


@api.get("/api/articles/<article_id>")
def article_json(article_id: str):
    art = get_service().searcher().index.article(article_id)
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
    return jsonify({"status": "ready", "generation": idx.generation, "articles": idx.article_count,
                    "passages": idx.passage_count, "model": idx.manifest.get("model")})


@api.get("/openapi.json")
def openapi():
    return jsonify(spec(request.host_url.rstrip("/")))


def _set_headers(resp):
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
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
    return error_body(e.code, e.message, e.status)


def _unexpected(e: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_body("internal_error", "something went wrong on our side; the error was logged", 500)


def init_app(app: Flask) -> None:
    from .pages import pages

    app.register_blueprint(api)
    app.register_blueprint(pages)
    app.after_request(_set_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(QAError, _qa_error)
    app.register_error_handler(Exception, _unexpected)
