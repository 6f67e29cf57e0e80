"""The human pages: the search page and the article page.

Everything an article holds is untrusted: templates autoescape it, links to an
article's own URL are only made for http(s) URLs, and the pages carry no inline
script or style (the Content-Security-Policy forbids both).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, abort, redirect, render_template, request, url_for

from ..errors import QAError
from ..search.snippets import mark_parts, snippet
from ..search.time import as_of
from .service import get_service
from .api import run_search

pages = Blueprint("pages", __name__)

_PARAGRAPH_BREAK = re.compile(r"[ \t\r\f\v]*\n[ \t\r\f\v]*\n\s*")


def article_link(article_id: str, q: str = "", passage_id: int | None = None, anchor: bool = True,
                 said: tuple[int, int] | None = None) -> str:
    """The page's own link to an article: carries the question (for the way back), the cited passage
    and the article offsets of the sentence(s) marked in it (the answer, or a result's mark)."""
    from flask import url_for

    params = {}
    if q:
        params["q"] = q
    if passage_id is not None:
        params["p"] = passage_id
    if said is not None:
        params["s"] = f"{said[0]}-{said[1]}"
    url = url_for("pages.article_page", article_id=article_id)
    if params:
        url += "?" + urlencode(params)
    if anchor and passage_id is not None:
        url += f"#p-{passage_id}"
    return url


def safe_url(url: str | None) -> str | None:
    """An article's URL if it is one a link may point at (http or https), else None."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def site_name(source: str | None, url: str | None) -> str:
    """What to show as the article's source: its `source`, else the host of its URL."""
    if source:
        return source
    url = safe_url(url)
    if url:
        host = urlsplit(url).hostname or ""
        return host.removeprefix("www.")
    return ""


def paragraphs(text: str, passages: list[dict], cited: int | None = None,
               said: tuple[int, int] | None = None) -> tuple[list[list[dict]], list[int]]:
    """Lay an article out as paragraphs of segments so that every passage can be found and marked.

    Passages may overlap (a sentence shared by neighbouring windows) and may span
    paragraphs, so they cannot each be one element. The text is cut at every
    paragraph break and every passage boundary; each segment knows the passages
    that cover it, and the first segment of each passage carries its anchor
    (`id="p-ID"`). `said`: article offsets of the sentence(s) the link came for,
    whose segments are flagged. Returns the paragraphs and the ids of passages that
    got no segment (they get an empty anchor so that their links still land).
    """
    spans = [(p["id"], max(0, p["start"]), min(len(text), p["end"])) for p in passages]
    cuts = sorted({0, len(text), *(x for _, s, e in spans for x in (s, e)), *(said or ())})
    # Segments come in text order, so one sweep over the passages sorted by start finds
    # those covering each segment (a few at a time: windows overlap about twice).
    by_start = sorted(range(len(spans)), key=lambda i: spans[i][1])
    nxt, active = 0, []
    anchored: set[int] = set()
    out: list[list[dict]] = []
    pos = 0
    blocks = []
    for m in _PARAGRAPH_BREAK.finditer(text):
        blocks.append((pos, m.start()))
        pos = m.end()
    blocks.append((pos, len(text)))
    for b_start, b_end in blocks:
        # Trim leading/trailing whitespace of the paragraph.
        chunk = text[b_start:b_end]
        b_start += len(chunk) - len(chunk.lstrip())
        b_end -= len(chunk) - len(chunk.rstrip())
        if b_start >= b_end:
            continue
        edges = [b_start, *cuts[bisect_right(cuts, b_start):bisect_left(cuts, b_end)], b_end]
        segs = []
        for s, e in zip(edges, edges[1:]):
            if s >= e:
                continue
            while nxt < len(by_start) and spans[by_start[nxt]][1] <= s:
                active.append(by_start[nxt])
                nxt += 1
            active = [i for i in active if spans[i][2] > s]
            covering = [spans[i][0] for i in sorted(active) if e <= spans[i][2]]
            anchor = None
            for pid in covering:
                if pid not in anchored:
                    anchored.add(pid)
                    if anchor is None:
                        anchor = pid
                    else:  # two passages start on the same segment: an extra empty anchor
                        segs.append({"text": "", "passages": [pid], "anchor": pid, "cited": False})
            segs.append({"text": text[s:e], "passages": covering, "anchor": anchor,
                         "cited": cited is not None and cited in covering,
                         "said": said is not None and said[0] <= s and e <= said[1]})
        out.append(segs)
    missing = [pid for pid, _, _ in spans if pid not in anchored]
    return out, missing


def search_args() -> dict:
    """The search page's filters from its URL, empty form fields left out."""
    args = request.args
    given = lambda name: args.get(name) or None  # noqa: E731
    return {"source": [s for s in args.getlist("source") if s] or None, "from_": given("from"), "to": given("to"),
            "sort": given("sort")}


@pages.get("/")
def home():
    # The form sends its empty filter fields too: send the browser on to the same search without them,
    # so the URL stays short and shareable (with script on, the script leaves them out itself).
    if any(v == "" for name, v in request.args.items(multi=True) if name in ("source", "from", "to", "sort")):
        clean = [(n, v) for n, v in request.args.items(multi=True) if v != "" or n not in ("source", "from", "to", "sort")]
        return redirect(url_for("pages.home") + ("?" + urlencode(clean) if clean else ""), 302)
    q = request.args.get("q")
    k = request.args.get("k")
    chosen = search_args()
    results, error, empty_query = None, None, False
    if q is not None and not q.strip():
        empty_query = True
    elif q:
        try:
            results = run_search(q, k, **chosen)
        except QAError as e:
            error = e.message
    hits = []
    for r in (results or {}).get("results", []):
        c = r["citation"]
        parts, shortened = snippet(r["text"], r["highlight"])
        marked = r["highlight"][0] if r["highlight"] else None
        said = (c["start"] + marked["start"], c["start"] + marked["end"]) if marked else None
        hits.append({
            **r,
            "snippet": parts,
            "shortened": shortened,
            "parts": mark_parts(r["text"], r["highlight"]),
            "site": site_name(c.get("source"), c.get("url")),
            "date": (c.get("published") or "")[:10],
            "title_href": article_link(c["article_id"], q or "", r["passage_id"], anchor=False, said=said),
            "cite_href": article_link(c["article_id"], q or "", r["passage_id"], said=said),
            "copies": [{"site": site_name(o.get("source"), None) or o["title"], "date": (o.get("published") or "")[:10],
                        "href": article_link(o["article_id"], q or "", int(o["href"].rsplit("-", 1)[1]))}
                       for o in r.get("also_in", [])],
        })
    answer = None
    if results and results.get("answer"):
        a = results["answer"]
        c = a["citation"]
        answer = {**a, "site": site_name(c.get("source"), c.get("url")), "date": (c.get("published") or "")[:10],
                  "as_of": as_of(c.get("published")),
                  "cite_href": article_link(c["article_id"], q or "", a["passage_id"], said=(c["start"], c["end"]))}
        span = a.get("span")  # the words that answer, shown in bold inside the sentence
        answer["parts"] = (a["text"][:span["start"]], a["text"][span["start"]:span["end"]], a["text"][span["end"]:]) \
            if span else (a["text"], "", "")
        if a.get("newer"):  # a newer result answers differently (qa/search/time.py)
            n, nc = a["newer"], a["newer"]["citation"]
            answer["newer_card"] = {"text": n["text"], "title": nc["title"], "as_of": as_of(nc.get("published")),
                                    "date": (nc.get("published") or "")[:10],
                                    "href": article_link(nc["article_id"], q or "", n["passage_id"],
                                                         said=(nc["start"], nc["end"]))}
    sources = [f["value"] for f in (results or {}).get("facets", {}).get("source", [])]
    for s in chosen["source"] or []:  # a chosen source stays in the list even when nothing of it matches
        if s not in sources:
            sources.append(s)
    facets = {f["value"]: f["count"] for f in (results or {}).get("facets", {}).get("source", [])}
    return render_template("index.html", q=q or "", k=k or "", results=results, hits=hits, error=error,
                           empty_query=empty_query, answer=answer, sources=sources, facets=facets,
                           chosen=chosen, filtered=any(chosen.values()))


@pages.get("/articles/<article_id>")
def article_page(article_id: str):
    art = get_service().searcher().index.article(article_id)
    if art is None:
        abort(404, description=f"no article with id {article_id!r}")
    q = request.args.get("q", "")
    try:
        cited = int(request.args["p"]) if "p" in request.args else None
    except ValueError:
        cited = None
    if cited is not None and not any(p["id"] == cited for p in art["passages"]):
        cited = None
    said = said_span(request.args.get("s", ""), len(art["text"]))
    paras, missing = paragraphs(art["text"], art["passages"], cited, said)
    back = article_back_link(q)
    return render_template("article.html", art=art, paragraphs=paras, missing=missing, q=q, cited=cited, said=said,
                           back=back, site=site_name(art.get("source"), art.get("url")),
                           url=safe_url(art.get("url")), date=(art.get("published") or "")[:10])


def said_span(value: str, length: int) -> tuple[int, int] | None:
    """The `s=START-END` of an article link as offsets into its text, or None if it is not a span of it."""
    m = re.fullmatch(r"(\d{1,9})-(\d{1,9})", value)
    if not m:
        return None
    start, end = int(m[1]), int(m[2])
    return (start, end) if start < end <= length else None


def article_back_link(q: str) -> str:
    from flask import url_for

    home = url_for("pages.home")
    return home + "?" + urlencode({"q": q}) if q.strip() else home
