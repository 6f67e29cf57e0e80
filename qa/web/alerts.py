"""Standing questions over HTTP: /api/alerts (admin token: they can call webhooks) and each one's public
Atom feed, /alerts/ID.atom. The work is qa/alerts'; the new articles are read by the Service as it
publishes them."""

from __future__ import annotations

from flask import Response, g, jsonify, request

from .. import alerts
from ..errors import BadRequest, NotFound
from .api import admin, api, json_body
from .service import get_service


@admin.post("/api/alerts")
def create_alert():
    body = json_body()
    if not isinstance(body, dict):
        raise BadRequest('the request body must be a JSON object like {"q": "...", "webhook": "https://..."}',
                         code="invalid_json")
    svc = get_service()
    searcher = svc.searcher()
    g.generation = searcher.index.generation
    alert = alerts.create(svc.index_dir, body.get("q"), body.get("source"), body.get("from"), body.get("to"),
                          body.get("webhook"), svc.cfg, searcher.embedder)
    return jsonify(alert.to_dict()), 201, {"Location": f"/alerts/{alert.id}.atom"}


@admin.get("/api/alerts")
def list_alerts():
    return jsonify({"alerts": [a.to_dict() for a in alerts.AlertStore(get_service().index_dir).alerts()]})


@admin.delete("/api/alerts/<alert_id>")
def delete_alert(alert_id: str):
    if not alerts.AlertStore(get_service().index_dir).delete(alert_id):
        raise NotFound(f"no standing question with id {alert_id!r}", code="alert_not_found")
    return "", 204


@api.get("/alerts/<alert_id>.atom")
def alert_feed(alert_id: str):
    store = alerts.AlertStore(get_service().index_dir)
    alert = store.get(alert_id)
    body = alerts.atom(alert, store.entries(alert.id), request.host_url)
    return Response(body, 200, {"Content-Type": alerts.feed.CONTENT_TYPE, "Cache-Control": "no-cache"})
