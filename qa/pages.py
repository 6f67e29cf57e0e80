"""The human pages: the search page and the article page."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from .errors import QAError
from .service import get_service
from .web import run_search

pages = Blueprint("pages", __name__)


@pages.get("/")
def home():
    q = request.args.get("q", "")
    results, error = None, None
    if q.strip():
        try:
            results = run_search(q, request.args.get("k"))
        except QAError as e:
            error = e.message
    return render_template("index.html", q=q, results=results, error=error)


@pages.get("/articles/<article_id>")
def article_page(article_id: str):
    art = get_service().searcher().index.article(article_id)
    if art is None:
        abort(404, description=f"no article with id {article_id!r}")
    text = art["text"]
    # Paragraph-wise segments so the cited passage can be marked inside the text.
    segments, pos = [], 0
    for p in art["passages"]:
        if p["start"] < pos:
            continue
        segments.append({"text": text[pos:p["start"]], "id": None})
        segments.append({"text": text[p["start"]:p["end"]], "id": p["id"]})
        pos = p["end"]
    segments.append({"text": text[pos:], "id": None})
    return render_template("article.html", art=art, segments=segments, q=request.args.get("q", ""))
