"""Articles from the web: pages, RSS and Atom feeds, sitemaps; politely, and nothing fetched twice.

requests fetches (one session, one deadline for each whole response, a size cap
after decompression, at most MAX_REDIRECTS redirects, only http and https, only
HTML, XML and feed types), Robots matches robots.txt as RFC 9309 says, feedparser
reads feeds, lxml sitemaps, and trafilatura the article in a page
(ingest.article_from_html). A feed's ETag and
Last-Modified, and the entries already taken from it, are kept in the index
folder's `feeds.json`, so the next poll asks "anything new?" and fetches only new
or changed entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import __version__
from .ingest import Article, Failure, article_from_html, decode
from .index.files import write_atomic
from .errors import IngestError

TOKEN = "qa-news"  # our product token, which robots.txt groups name
USER_AGENT = f"{TOKEN}/{__version__} (news question answering; polite crawler, honours robots.txt)"
MAX_REDIRECTS = 5
TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml", "application/rss+xml",
         "application/atom+xml", "application/rdf+xml", "application/feed+json")
MAX_SITEMAP_URLS = 1000  # article links taken from one sitemap
STATE_NAME = "feeds.json"
CHUNK = 65536  # bytes read at a time; urllib3 decompresses at most this much per read


def is_url(arg: str) -> bool:
    return str(arg).lower().startswith(("http://", "https://"))


class HTTPStatusError(IngestError):
    """An error status from the server (`http_status`)."""

    def __init__(self, message: str, http_status: int):
        super().__init__(message)
        self.http_status = http_status


@dataclass
class Page:
    url: str  # after redirects
    status: int
    content_type: str
    body: bytes
    etag: str | None = None
    last_modified: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def kind(self) -> str:
        """"feed", "sitemap" or "page", from the content type and the first element."""
        head = self.body[:2048].lstrip().lower()
        if head.startswith(b"<?xml"):
            head = head[head.find(b"?>") + 2:].lstrip()
        while head.startswith(b"<!--") and b"-->" in head:
            head = head[head.find(b"-->") + 3:].lstrip()
        if head.startswith((b"<urlset", b"<sitemapindex")):
            return "sitemap"
        if head.startswith((b"<rss", b"<feed", b"<rdf:rdf")) or any(
                t in self.content_type for t in ("rss", "atom", "rdf")):
            return "feed"
        return "page"


class Robots:
    """One robots.txt's rules for our product token, as RFC 9309 says: the groups that name the token
    (else those for `*`), the longest matching rule, Allow on a tie, `*` and a final `$` in patterns."""

    def __init__(self, text: str = ""):
        groups: list[tuple[set[str], list[tuple[bool, str]]]] = []  # (agents, rules (allow, pattern))
        for line in text.splitlines():
            key, colon, value = line.split("#", 1)[0].partition(":")
            key, value = key.strip().lower(), value.strip()
            if not colon:
                continue
            if key == "user-agent":
                if not groups or groups[-1][1]:  # a user-agent line after rules starts the next group
                    groups.append((set(), []))
                groups[-1][0].add(value if value == "*" else re.match(r"[a-z_-]*", value.lower())[0])
            elif key in ("allow", "disallow") and groups and value:  # (an empty Disallow forbids nothing)
                groups[-1][1].append((key == "allow", _escaped(value)))
        named = [rules for agents, rules in groups if TOKEN in agents]
        self.rules = [r for rules in (named or [rules for agents, rules in groups if "*" in agents]) for r in rules]

    def allows(self, url: str) -> bool:
        """Whether these rules let us fetch `url`."""
        parts = urlsplit(url)
        path = _escaped((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        if path == "/robots.txt":
            return True
        best = max(((len(pattern), allow) for allow, pattern in self.rules if _matches(pattern, path)),
                   default=(0, True))
        return best[1]


def _escaped(path: str) -> str:
    """A path or pattern with its non-ASCII characters percent-encoded, and escapes in capitals."""
    return re.sub(r"%[0-9a-f]{2}", lambda m: m[0].upper(), quote(path, safe="/?#[]@!$&'()*+,;=:%"))


def _matches(pattern: str, path: str) -> bool:
    """Whether a robots.txt pattern matches the start of `path` (`*`: any characters; a final `$`: the end).

    Each literal part is found leftmost in turn, in linear time where a regex could backtrack for ever."""
    anchored = pattern.endswith("$")
    first, *parts = (pattern[:-1] if anchored else pattern).split("*")
    if not path.startswith(first):
        return False
    pos = len(first)
    if not parts:
        return not anchored or pos == len(path)
    for part in parts[:-1]:
        pos = path.find(part, pos)
        if pos < 0:
            return False
        pos += len(part)
    if anchored:
        return path.endswith(parts[-1]) and len(path) - len(parts[-1]) >= pos
    return path.find(parts[-1], pos) >= 0


_current = threading.local()  # .watch: the _Watch of the request this thread is making


class _Watch:
    """One deadline for a whole request (connect, headers, body), whatever the server's pace.

    Socket timeouts bound each read, not their sum: a server sending a byte every half second
    never trips them. At the deadline the request's sockets are shut, so a blocked read returns."""

    def __init__(self, seconds: float):
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watch:
        _current.watch = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _current.watch = None

    def add(self, sock: socket.socket) -> None:
        """Watch a socket this request uses; shut it at once if the deadline has passed."""
        with self._lock:
            self._socks.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """Mixin for urllib3's connections: the sockets they use are watched by their thread's _Watch.

    (The socket, not the connection: a connection that will close lets go of its socket once the
    headers are read, while the response goes on reading from it.)"""

    def _watch(self) -> None:
        watch = getattr(_current, "watch", None)
        if watch is not None and self.sock is not None:
            watch.add(self.sock)

    def connect(self) -> None:
        super().connect()
        self._watch()

    def request(self, *args, **kwargs):
        self._watch()  # a connection kept alive from an earlier request (a new one is watched as it connects)
        return super().request(*args, **kwargs)


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    """requests' adapter, with the connections above."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class Fetcher:
    """HTTP GETs with the limits above, one request a second per host, robots.txt honoured."""

    def __init__(self, interval: float | None = None, timeout: float | None = None, max_bytes: int | None = None):
        self.interval = float(os.environ.get("QA_FETCH_INTERVAL", 1.0)) if interval is None else interval
        self.timeout = float(os.environ.get("QA_FETCH_TIMEOUT", 15.0)) if timeout is None else timeout
        self.max_bytes = int(os.environ.get("QA_FETCH_MAX_BYTES", 10 * 1024 * 1024)) if max_bytes is None else max_bytes
        self.session = requests.Session()
        self.session.max_redirects = MAX_REDIRECTS
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.mount("http://", _Adapter())
        self.session.mount("https://", _Adapter())
        self._last: dict[str, float] = {}
        self._robots: dict[str, Robots] = {}
        self._lock = threading.Lock()

    def _wait_turn(self, url: str) -> None:
        host = urlsplit(url).netloc.lower()
        with self._lock:
            due = self._last.get(host, 0.0) + self.interval
            now = time.monotonic()
            self._last[host] = max(now, due)
        if due > now:
            time.sleep(due - now)

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets us fetch `url`."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            self._robots[origin] = self._read_robots(origin)
        return self._robots[origin].allows(url)

    def _read_robots(self, origin: str) -> Robots:
        """An origin's robots.txt, read as a page is (no robots.txt, or an unreadable one: no rules; 401/403: none
        allowed); past the size cap it is cut, as RFC 9309 allows."""
        self._wait_turn(origin)
        try:
            page = self._fetch(origin + "/robots.txt", {}, types=None, whole=False)
        except HTTPStatusError as e:
            return Robots("User-agent: *\nDisallow: /" if e.http_status in (401, 403) else "")
        except IngestError:
            return Robots()
        text = page.body.decode("utf-8", "replace").removeprefix("\ufeff")
        if len(page.body) >= self.max_bytes:
            text = text[:text.rfind("\n") + 1]  # the line cut by the cap is not a rule
        return Robots(text)

    def get(self, url: str, etag: str | None = None, last_modified: str | None = None) -> Page:
        """Fetch one URL; IngestError with a one-line reason when it cannot be had."""
        if not is_url(url):
            raise IngestError("only http and https URLs are fetched")
        if not self.allowed(url):
            raise IngestError("refused by the site's robots.txt")
        headers = {"Accept": "text/html,application/xhtml+xml,application/rss+xml,application/atom+xml,"
                             "application/xml;q=0.9,*/*;q=0.1"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        self._wait_turn(url)
        return self._fetch(url, headers)

    def _fetch(self, url: str, headers: dict, types: tuple | None = TYPES, whole: bool = True) -> Page:
        """GET under the deadline and the size cap: a longer body is refused, or with `whole=False` cut at the cap."""
        watch, answered = _Watch(self.timeout), False
        try:
            with watch, self.session.get(url, headers=headers, timeout=self.timeout, stream=True) as r:
                answered = not watch.expired  # (headers cut short by the deadline read as complete)
                if r.status_code == 304:
                    return Page(r.url, 304, "", b"", headers.get("If-None-Match"), headers.get("If-Modified-Since"))
                if r.status_code >= 400:
                    raise HTTPStatusError(f"HTTP {r.status_code} {r.reason or ''}".rstrip(), r.status_code)
                ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if types and ctype and ctype not in types:
                    raise IngestError(f"not a web page or a feed (content type {ctype})")
                body = bytearray()
                for chunk in r.iter_content(CHUNK):  # decompressed: the cap is on what the page really is
                    body += chunk
                    if len(body) > self.max_bytes:
                        if whole:
                            raise IngestError(f"larger than {self.max_bytes:,} bytes; skipped")
                        del body[self.max_bytes:]
                        break
                if watch.expired:  # a shut socket reads as a body (or headers) that ended early
                    raise IngestError(self._reason(None, True, answered))
                return Page(r.url, r.status_code, ctype, bytes(body), r.headers.get("ETag"),
                            r.headers.get("Last-Modified"))
        except requests.RequestException as e:
            raise IngestError(self._reason(e, watch.expired, answered)) from None

    def _reason(self, e: requests.RequestException | None, expired: bool, answered: bool) -> str:
        """Why a request failed, in one line (`answered`: its headers came within the deadline)."""
        if expired and answered:
            return f"took longer than {self.timeout:g} s; skipped"
        if expired or isinstance(e, requests.Timeout):
            return f"no answer within {self.timeout:g} s"
        if isinstance(e, requests.TooManyRedirects):
            return f"more than {MAX_REDIRECTS} redirects (a redirect loop?)"
        if isinstance(e, requests.exceptions.InvalidSchema):
            return "redirected to something other than http or https"
        if isinstance(e, requests.ConnectionError):
            return f"cannot connect ({type(e).__name__})"
        return f"the request failed ({type(e).__name__})"


class FeedState:
    """What earlier runs learned of each feed (ETag, Last-Modified, the entries taken), in feeds.json."""

    def __init__(self, folder: Path | None):
        self.path = folder / STATE_NAME if folder is not None else None
        self.feeds: dict[str, dict] = {}
        if self.path is not None and self.path.exists():
            try:
                self.feeds = json.loads(self.path.read_text("utf-8")).get("feeds", {})
            except (OSError, ValueError):
                self.feeds = {}  # a damaged state file costs one full fetch, nothing else

    def of(self, url: str) -> dict:
        return self.feeds.setdefault(url, {"etag": None, "last_modified": None, "entries": {}})

    def save(self) -> None:
        if self.path is not None and self.path.parent.exists():
            write_atomic(self.path, json.dumps({"version": 1, "feeds": self.feeds}, indent=1).encode())


def fetch_articles(urls: Iterable[str], state: FeedState, known: Callable[[str], bool] = lambda _id: False,
                   fetcher: Fetcher | None = None, stop: Callable[[], bool] = lambda: False,
                   ) -> Iterator[Article | Failure]:
    """Yield the articles at these URLs (pages, feeds' entries, sitemaps' pages), or a Failure per URL that fails.

    `known(article_id)` says whether the index holds an article; `stop()` ends the run between two articles."""
    fetcher = fetcher or Fetcher()
    for url in urls:
        if stop():
            return
        try:
            page = fetcher.get(url, *(_conditional(state, url)))
        except IngestError as e:
            yield Failure(url, e.message)
            continue
        if page.not_modified:
            continue
        kind = page.kind()
        if kind == "feed":
            yield from _feed(page, url, state, known, fetcher, stop)
        elif kind == "sitemap":
            yield from _sitemap(page, url, known, fetcher, stop)
        else:
            yield _article(page, url)
        state.save()


def _conditional(state: FeedState, url: str) -> tuple[str | None, str | None]:
    got = state.feeds.get(url)
    return (got["etag"], got["last_modified"]) if got else (None, None)


def _article(page: Page, where: str, fallback: dict | None = None) -> Article | Failure:
    try:
        return article_from_html(decode(page.body), where, page.url, fallback or {})
    except IngestError as e:
        return Failure(where, e.message.removeprefix(f"{where}: "))


def _feed(page: Page, url: str, state: FeedState, known, fetcher: Fetcher, stop) -> Iterator[Article | Failure]:
    import feedparser

    parsed = feedparser.parse(page.body)
    if parsed.bozo and not parsed.entries:
        yield Failure(url, f"not a readable feed ({type(parsed.bozo_exception).__name__})")
        return
    mine = state.of(url)
    mine["etag"], mine["last_modified"] = page.etag, page.last_modified
    site = (parsed.feed.get("title") or "").strip() or None
    for entry in parsed.entries:
        if stop():
            return
        link = entry.get("link")
        if not link:
            continue
        link = urljoin(page.url, link)
        # (asking feedparser for a missing "updated" warns; keys() does not)
        stamp = entry["updated"] if "updated" in entry.keys() else entry.get("published")
        seen = mine["entries"].get(link)
        if seen and seen.get("stamp") == stamp and known(seen["id"]):
            continue  # taken before, unchanged since: not fetched again
        try:
            got = fetcher.get(link)
        except IngestError as e:
            yield Failure(link, e.message)
            continue
        fallback = {"title": entry.get("title"), "author": entry.get("author"), "source": site,
                    "published": _iso(entry.get("published_parsed") or entry.get("updated_parsed"))}
        art = _article(got, link, fallback)
        if isinstance(art, Article):
            mine["entries"][link] = {"id": art.ensure_id(), "stamp": stamp}
        yield art


def _sitemap(page: Page, url: str, known, fetcher: Fetcher, stop, depth: int = 0) -> Iterator[Article | Failure]:
    from lxml import etree

    try:
        root = etree.fromstring(page.body, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False))
    except etree.XMLSyntaxError as e:
        yield Failure(url, f"not a readable sitemap ({e.msg})")
        return
    locs = [el.text.strip() for el in root.iter("{*}loc") if el.text and el.text.strip()][:MAX_SITEMAP_URLS]
    nested = etree.QName(root).localname == "sitemapindex"
    for loc in locs:
        if stop():
            return
        try:
            got = fetcher.get(loc)
        except IngestError as e:
            yield Failure(loc, e.message)
            continue
        if nested and depth < 2 and got.kind() == "sitemap":
            yield from _sitemap(got, loc, known, fetcher, stop, depth + 1)
        elif got.kind() == "page":
            yield _article(got, loc)


def _iso(parsed) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed) if parsed else None
