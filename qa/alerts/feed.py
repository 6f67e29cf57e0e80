"""A standing question's Atom feed (RFC 4287): one entry per new article that answers it."""

from __future__ import annotations

from datetime import date, datetime, timezone
from urllib.parse import quote, urlencode

from lxml import etree

from .. import __version__
from .store import Alert

ATOM = "http://www.w3.org/2005/Atom"
CONTENT_TYPE = "application/atom+xml; charset=utf-8"


def _rfc3339(value: str | None) -> str | None:
    """An ISO 8601 date or date-time as RFC 3339 (a date alone is its day's start in UTC), or None."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            at = datetime.combine(date.fromisoformat(value[:10]), datetime.min.time())
        except ValueError:
            return None
    at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def passage_link(base: str, answer: dict, q: str) -> str:
    """The article page with the cited passage and the answer marked, as the search page links it."""
    c = answer["citation"]
    query = urlencode({"q": q, "p": answer["passage_id"], "s": f"{c['start']}-{c['end']}"})
    return f"{base}/articles/{quote(c['article_id'], safe='')}?{query}#p-{answer['passage_id']}"


def atom(alert: Alert, entries: list[tuple[str, dict, str]], base: str) -> bytes:
    """The feed of `alert` (entries: article id, answer as /api/search gives it, when found; newest
    first); `base`: the service's URL, for absolute links."""
    from ..search.time import as_of

    base = base.rstrip("/")

    def sub(parent, tag: str, text: str | None = None, **attrs) -> etree._Element:
        el = etree.SubElement(parent, f"{{{ATOM}}}{tag}", {k.rstrip("_"): v for k, v in attrs.items()})
        if text is not None:
            el.text = text
        return el

    feed = etree.Element(f"{{{ATOM}}}feed", nsmap={None: ATOM})
    sub(feed, "id", f"urn:qa:alert:{alert.id}")  # stable, whatever host name the feed is read at
    sub(feed, "title", f"Answers to: {alert.q}")
    sub(feed, "subtitle", "Each entry is a new article that answers this standing question, in its own words.")
    sub(feed, "updated", _rfc3339(entries[0][2] if entries else alert.created))
    sub(feed, "link", rel="self", type="application/atom+xml", href=f"{base}/alerts/{alert.id}.atom")
    sub(feed, "link", rel="alternate", type="text/html", href=f"{base}/?{urlencode({'q': alert.q})}")
    sub(feed, "generator", "qa", version=__version__)
    author = sub(feed, "author")
    sub(author, "name", "qa standing questions")
    for article_id, answer, found in entries:
        c = answer["citation"]
        entry = sub(feed, "entry")
        sub(entry, "id", f"urn:qa:alert:{alert.id}:{quote(article_id, safe='')}")
        sub(entry, "title", c.get("title") or article_id)
        sub(entry, "updated", _rfc3339(found))
        published = _rfc3339(c.get("published"))
        if published:
            sub(entry, "published", published)
        sub(entry, "link", rel="alternate", type="text/html", href=passage_link(base, answer, alert.q))
        if c.get("source"):
            source = sub(entry, "author")
            sub(source, "name", c["source"])
        when = as_of(c.get("published"))
        sub(entry, "summary", answer["text"], type="text")
        tail = " · ".join(x for x in (c.get("title"), c.get("source"), f"as of {when}" if when else None) if x)
        sub(entry, "content", f"{answer['text']}\n\n— {tail}", type="text")
    return etree.tostring(feed, xml_declaration=True, encoding="utf-8", pretty_print=True)
