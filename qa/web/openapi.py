"""The OpenAPI description of the JSON API (the contract in DESIGN.md, section 3)."""

from __future__ import annotations

from .. import __version__

_nullable_str = {"type": "string", "nullable": True}

_error = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

_span = {
    "type": "object",
    "required": ["start", "end"],
    "properties": {"start": {"type": "integer", "minimum": 0}, "end": {"type": "integer", "minimum": 0}},
}

_citation = {
    "type": "object",
    "required": ["article_id", "title", "url", "source", "published", "start", "end", "href"],
    "properties": {
        "article_id": {"type": "string"},
        "title": {"type": "string"},
        "url": _nullable_str,
        "source": _nullable_str,
        "published": _nullable_str,
        "start": {"type": "integer", "minimum": 0, "description": "offset into the article's text"},
        "end": {"type": "integer", "minimum": 0},
        "href": {"type": "string"},
    },
}

_copy = {
    "type": "object",
    "required": ["article_id", "title", "source", "published", "href"],
    "properties": {"article_id": {"type": "string"}, "title": {"type": "string"}, "source": _nullable_str,
                   "published": _nullable_str, "href": {"type": "string"}},
}

_answer = {
    "type": "object",
    "nullable": True,
    "description": "the sentence(s) that answer the question; null when nothing in the collection answers it",
    "required": ["text", "confidence", "passage_id", "citation"],
    "properties": {
        "text": {"type": "string", "description": "one or two whole sentences: article.text[citation.start:citation.end]"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1,
                       "description": "of answers given with confidence about c, about c hold a right answer"},
        "passage_id": {"type": "integer"},
        "citation": {"$ref": "#/components/schemas/Citation"},
        "newer": {"$ref": "#/components/schemas/Newer"},
        "span": {"type": "object", "nullable": True, "required": ["start", "end"],
                 "description": "offsets into text of the words that answer (a name, a date, a number, a short "
                                "phrase), shown in bold; null when no short span fits",
                 "properties": {"start": {"type": "integer", "minimum": 0}, "end": {"type": "integer", "minimum": 0}}},
    },
}

# Standing questions (qa/alerts; docs/alerts.md).
_newer = {
    "type": "object",
    "nullable": True,
    "description": "a newer article among the best results that answers differently (another name or number); "
                   "null when none does",
    "required": ["text", "passage_id", "citation"],
    "properties": {"text": {"type": "string"}, "passage_id": {"type": "integer"},
                   "citation": {"$ref": "#/components/schemas/Citation"}},
}

_alert = {
    "type": "object",
    "required": ["id", "q", "feed", "created", "source", "from", "to", "webhook", "entries"],
    "properties": {
        "id": {"type": "string"},
        "q": {"type": "string"},
        "feed": {"type": "string", "description": "/alerts/ID.atom: one entry per new article that answers q"},
        "created": {"type": "string", "format": "date-time"},
        "source": {"type": "array", "items": {"type": "string"}, "nullable": True},
        "from": {"type": "string", "nullable": True},
        "to": {"type": "string", "nullable": True},
        "webhook": {"type": "string", "nullable": True},
        "entries": {"type": "integer", "minimum": 0, "description": "answers found so far"},
    },
}

# What check_webhook accepts: http or https, a host, printable ASCII without spaces.
_WEBHOOK_PATTERN = "^https?://[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?(\\.[A-Za-z0-9]{1,30})*(:[0-9]{1,4})?(/[!-~]{0,200})?$"

_facets = {
    "type": "object",
    "required": ["source"],
    "properties": {"source": {"type": "array", "items": {
        "type": "object", "required": ["value", "count"],
        "properties": {"value": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}}}},
    "description": "per source, the articles among the passages that answer the query, before the source filter",
}

_result = {
    "type": "object",
    "required": ["rank", "score", "passage_id", "text", "highlight", "citation", "also_in"],
    "properties": {
        "rank": {"type": "integer", "minimum": 1},
        "score": {"type": "number"},
        "passage_id": {"type": "integer"},
        "text": {"type": "string", "description": "the passage exactly as stored: article.text[start:end]"},
        "highlight": {"type": "array", "items": {"$ref": "#/components/schemas/Span"}},
        "citation": {"$ref": "#/components/schemas/Citation"},
        "also_in": {"type": "array", "items": {"$ref": "#/components/schemas/Copy"},
                    "description": "other articles holding a near-identical passage (a wire story republished)"},
    },
}

_search_response = {
    "type": "object",
    "required": ["query", "took_ms", "answer", "facets", "results"],
    "properties": {
        "query": {"type": "string"},
        "took_ms": {"type": "number"},
        "answer": {"$ref": "#/components/schemas/Answer"},
        "facets": {"$ref": "#/components/schemas/Facets"},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
    },
}

_article = {
    "type": "object",
    "required": ["id", "title", "url", "source", "author", "published", "text", "passages"],
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "url": _nullable_str,
        "source": _nullable_str,
        "author": _nullable_str,
        "published": _nullable_str,
        "text": {"type": "string"},
        "passages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "start", "end"],
                "properties": {"id": {"type": "integer"}, "start": {"type": "integer"}, "end": {"type": "integer"}},
            },
        },
    },
}


_new_article = {
    "type": "object",
    "required": ["text"],
    "description": "one article, as on a .jsonl line; an existing id is replaced; null means absent",
    "properties": {
        "title": {**_nullable_str, "description": "taken from the text when missing or empty"},
        "text": {"type": "string", "minLength": 1, "description": "blank lines separate paragraphs"},
        "id": {**_nullable_str, "pattern": "^([A-Za-z0-9][A-Za-z0-9._~-]{0,127})?$",
               "description": "URL-safe; derived from the title and text when missing or empty"},
        "url": _nullable_str,
        "source": _nullable_str,
        "author": _nullable_str,
        "published": {**_nullable_str, "pattern": "^(\\d{4}-?\\d{2}-?\\d{2}([T ].*)?)?$",
                      "description": "ISO 8601 date or date-time"},
    },
}

_write_result = {
    "type": "object",
    "required": ["id", "status", "generation"],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": ["added", "updated", "unchanged", "deleted"]},
        "passages": {"type": "integer", "minimum": 0},
        "generation": {"type": "integer", "minimum": 0},
    },
}

# Text with something besides white space and no NUL: what validate() accepts.
_QUERY_PATTERN = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"


def _errors(*codes: int) -> dict:
    names = {400: "Bad request", 401: "No admin token", 403: "Wrong admin token", 404: "Not found",
             413: "Body too large", 415: "Not JSON", 500: "Internal error",
             503: "Index not available, still loading, or locked by a writer"}
    return {
        str(c): {"description": names[c], "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for c in codes
    }


def _ok(schema_ref: str, description: str) -> dict:
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}}


def _admin_paths() -> dict:
    security = [{"bearer": []}]
    return {
        "/api/articles": {
            "post": {
                "summary": "Add one article (admin token); it is searchable when this answers",
                "operationId": "addArticle",
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/NewArticle"}}}},
                "responses": {
                    "201": {"description": "Added", "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/WriteResult"}}}},
                    "200": {"description": "Already there with the same text: nothing changed",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WriteResult"}}}},
                    **_errors(400, 401, 403, 413, 415, 500, 503),
                },
            }
        },
        "/api/articles/{article_id}": {
            "delete": {
                "summary": "Delete an article and its passages (admin token)",
                "operationId": "deleteArticle",
                "security": security,
                "parameters": [{"name": "article_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {**_ok("WriteResult", "Deleted"), **_errors(400, 401, 403, 404, 500, 503)},
            }
        },
        **_alert_paths(security),
    }


def _alert_paths(security: list) -> dict:
    source_item = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _QUERY_PATTERN}
    new_alert = {"type": "object", "required": ["q"], "properties": {
        "q": {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": _QUERY_PATTERN},
        "source": {"oneOf": [source_item, {"type": "array", "items": source_item, "maxItems": 20}], "nullable": True},
        "from": {"type": "string", "format": "date", "nullable": True},
        "to": {"type": "string", "format": "date", "nullable": True},
        "webhook": {"type": "string", "maxLength": 2000, "pattern": _WEBHOOK_PATTERN, "nullable": True,
                    "description": "POST {alert, q, answer} here as JSON for each new answer (http or https)"}}}
    alert = {"application/json": {"schema": {"$ref": "#/components/schemas/Alert"}}}
    return {
        "/api/alerts": {
            "post": {
                "summary": "Save a standing question (admin token); each new article that answers it is added to "
                           "its feed and sent to its webhook",
                "operationId": "createAlert",
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {"schema": new_alert}}},
                "responses": {"201": {"description": "Saved", "content": alert},
                              **_errors(400, 401, 403, 413, 415, 500, 503)},
            },
            "get": {
                "summary": "The standing questions (admin token)",
                "operationId": "listAlerts",
                "security": security,
                "responses": {"200": {"description": "Oldest first", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["alerts"], "properties": {"alerts": {
                        "type": "array", "items": {"$ref": "#/components/schemas/Alert"}}}}}}},
                    **_errors(401, 403, 500)},
            },
        },
        "/api/alerts/{alert_id}": {
            "delete": {
                "summary": "Delete a standing question, its feed and the webhook calls it still owes (admin token)",
                "operationId": "deleteAlert",
                "security": security,
                "parameters": [{"name": "alert_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"204": {"description": "Deleted"}, **_errors(400, 401, 403, 404, 500)},
            }
        },
    }


_feed_path = {
    "get": {
        "summary": "A standing question's Atom feed: one entry per new article that answers it",
        "operationId": "alertFeed",
        "parameters": [{"name": "alert_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "Atom (RFC 4287), newest entry first", "content": {
            "application/atom+xml": {"schema": {"type": "string"}}}}, **_errors(400, 404, 500, 503)},
    }
}


def spec(server_url: str = "", admin: bool = False) -> dict:
    """Return the OpenAPI 3.0 document (with the write operations when an admin token is set)."""
    q_param = {"name": "q", "in": "query", "required": True, "description": "the question",
               "schema": {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": _QUERY_PATTERN}}
    k_param = {"name": "k", "in": "query", "required": False, "description": "how many passages (default 5)",
               "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5}}
    source_item = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _QUERY_PATTERN}
    filter_params = [
        {"name": "source", "in": "query", "required": False, "style": "form", "explode": True,
         "description": "only articles from this source (repeat for several)",
         "schema": {"type": "array", "items": source_item, "maxItems": 20}},
        {"name": "from", "in": "query", "required": False, "description": "published on or after (YYYY-MM-DD)",
         "schema": {"type": "string", "format": "date"}},
        {"name": "to", "in": "query", "required": False, "description": "published on or before (YYYY-MM-DD)",
         "schema": {"type": "string", "format": "date"}},
        {"name": "sort", "in": "query", "required": False, "description": "relevance, or the same passages newest first",
         "schema": {"type": "string", "enum": ["relevance", "newest"], "default": "relevance"}},
    ]
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": "News question answering",
            "version": __version__,
            "description": "Ask a question; get the passages of news articles that best answer it, each with an exact citation.",
        },
        "servers": [{"url": server_url}] if server_url else [],
        "paths": {
            "/api/search": {
                "get": {
                    "summary": "Search with a question",
                    "operationId": "searchGet",
                    "parameters": [q_param, k_param, *filter_params],
                    "responses": {**_ok("SearchResponse", "The best passages, best first"), **_errors(400, 500, 503)},
                },
                "post": {
                    "summary": "Search with a question (JSON body)",
                    "operationId": "searchPost",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {
                            "type": "object",
                            "required": ["q"],
                            "properties": {"q": {"type": "string", "minLength": 1, "maxLength": 1000,
                                                 "pattern": _QUERY_PATTERN},
                                           "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5,
                                                 "nullable": True},
                                           "source": {"oneOf": [source_item, {"type": "array", "items": source_item,
                                                                              "maxItems": 20}], "nullable": True},
                                           "from": {"type": "string", "format": "date", "nullable": True},
                                           "to": {"type": "string", "format": "date", "nullable": True},
                                           "sort": {"type": "string", "enum": ["relevance", "newest"],
                                                    "nullable": True}},
                        }}},
                    },
                    "responses": {**_ok("SearchResponse", "The best passages, best first"),
                                  **_errors(400, 413, 415, 500, 503)},
                },
            },
            "/api/articles/{article_id}": {
                "get": {
                    "summary": "One article with its passages' offsets",
                    "operationId": "getArticle",
                    "parameters": [{"name": "article_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {**_ok("Article", "The article"), **_errors(404, 500, 503)},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process is up",
                    "operationId": "healthz",
                    "responses": {"200": {"description": "Up", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}}}}}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the index is loaded",
                    "operationId": "readyz",
                    "responses": {"200": {"description": "Ready", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}}}},
                        **_errors(503)},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics, summed over every worker (see docs/operations.md)",
                    "operationId": "metrics",
                    "responses": {"200": {"description": "Prometheus' text format", "content": {
                        "text/plain": {"schema": {"type": "string"}}}}},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": _error,
                "Span": _span,
                "Citation": _citation,
                "Result": _result,
                "Copy": _copy,
                "Answer": _answer,
                "Newer": _newer,
                "Facets": _facets,
                "SearchResponse": _search_response,
                "Article": _article,
            }
        },
    }
    doc["paths"]["/alerts/{alert_id}.atom"] = _feed_path
    if admin:
        for path, ops in _admin_paths().items():
            doc["paths"].setdefault(path, {}).update(ops)
        doc["components"]["schemas"].update(NewArticle=_new_article, WriteResult=_write_result, Alert=_alert)
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc
