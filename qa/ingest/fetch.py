"""Articles from the web: pages, RSS and Atom feeds, sitemaps; politely, and nothing fetched twice.

requests fetches (one session, one deadline for each whole response, a size cap
after decompression, at most MAX_REDIRECTS redirects, only http and https, only
HTML, XML and feed types), Robots matches robots.txt as RFC 9309 says, feedparser
reads feeds, lxml sitemaps, and trafilatura the article in a page
(ingest.article_from_html). Each feed's and sitemap's ETag and Last-Modified, and
a record of each of its entries, are kept in the index folder's `feeds.json`, so
the next poll asks "anything new?" and fetches only new or changed entries, and
those whose retry is due.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import requote_uri
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

from .. import __version__
from .articles import Article, Failure, article_from_html, decode
from ..index.files import write_atomic
from ..errors import IngestError

TOKEN = "qa-news"  # our product token, which robots.txt groups name
USER_AGENT = f"{TOKEN}/{__version__} (news question answering; polite crawler, honours robots.txt)"
MAX_REDIRECTS = 5
TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml", "application/rss+xml",
         "application/atom+xml", "application/rdf+xml", "application/feed+json")
MAX_SITEMAP_URLS = 1000  # article links taken from one sitemap
STATE_NAME = "feeds.json"
RETRY_AFTER = 300.0  # seconds before a failed entry is tried again, doubled after each failure
MAX_ATTEMPTS = 8  # then (about 21 hours on) its failure is taken as permanent
CHUNK = 65536  # bytes read at a time; urllib3 decompresses at most this much per read


def is_url(arg: str) -> bool:
    return str(arg).lower().startswith(("http://", "https://"))


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public(ip: str, port: int) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local, reserved, shared or
    multicast. (`port` plays no part; the tests tell their servers on 127.0.0.1 apart by it.)"""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if addr.version == 6:  # an IPv4 address carried in an IPv6 one is judged as itself
        addr = (addr.ipv4_mapped or addr.sixtofour
                or (ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF) if addr in NAT64 else addr))
    return addr.is_global and not addr.is_multicast


class FetchError(IngestError):
    """A URL that could not be had: `permanent` when trying again would not change that (404, 410,
    robots.txt, a refused address or type); `http_status` when the server answered with an error."""

    def __init__(self, message: str, permanent: bool = False, http_status: int | None = None):
        super().__init__(message)
        self.permanent, self.http_status = permanent, http_status


class NotPublic(FetchError):
    """A link found at a public address leads to one that is not: never connected to."""

    def __init__(self):
        super().__init__("leads to an address that is not public, from a public one", permanent=True)


@dataclass
class Page:
    url: str  # after redirects
    status: int
    content_type: str
    body: bytes
    etag: str | None = None
    last_modified: str | None = None
    public: bool = True  # whether it came from a public address (then its links must lead to public ones)
    charset: str | None = None  # the Content-Type's charset parameter

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


_current = threading.local()  # .guard: the _Guard of the request this thread is making


class _Guard:
    """A request's limits, which the connections carrying it read: one deadline for the whole response,
    whatever the server's pace, and whether the current hop may reach only public addresses.

    Socket timeouts bound each read, not their sum: a server sending a byte every half second
    never trips them. At the deadline the request's sockets are shut, so a blocked read returns."""

    def __init__(self, seconds: float):
        self.expired = False
        self.public_only = False  # the rule for the hop being made
        self.peer_public = True  # whether the last hop's address was public (set by its connection)
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Guard:
        _current.guard = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _current.guard = None

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


class _Guarded:
    """Mixin for urllib3's connections: connect only to an address checked against the request's rule,
    and let the request's _Guard shut the socket (not the connection: one that will close lets go of
    its socket once the headers are read, while the response goes on reading from it)."""

    peer_public = True

    def _new_conn(self) -> socket.socket:
        # Resolve once, check every address, connect to a checked one: a second lookup could answer otherwise.
        guard = getattr(_current, "guard", None)
        try:
            infos = socket.getaddrinfo(self._dns_host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise NameResolutionError(self.host, self, e) from e
        public = [is_public(info[4][0], self.port) for info in infos]
        if guard is not None and guard.public_only and not all(public):
            raise NotPublic()
        err: OSError | None = None
        for info, is_pub in zip(infos, public):
            try:
                sock = create_connection(info[4][:2], self.timeout, self.source_address, self.socket_options)
            except OSError as e:
                err = e
                continue
            self.peer_public = is_pub
            return sock
        if isinstance(err, socket.timeout):
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})")
        raise NewConnectionError(self, f"Failed to establish a new connection: {err}")

    def _watch(self) -> None:
        guard = getattr(_current, "guard", None)
        if guard is not None and self.sock is not None:
            guard.add(self.sock)

    def connect(self) -> None:
        super().connect()
        self._watch()

    def request(self, *args, **kwargs):
        guard = getattr(_current, "guard", None)
        if guard is not None and guard.public_only and self.sock is not None and not self.peer_public:
            raise NotPublic()  # a connection kept alive from a request that could go anywhere
        self._watch()  # a kept-alive connection (a new one is watched as it connects, inside request())
        super().request(*args, **kwargs)
        if guard is not None:
            guard.peer_public = self.peer_public


class _HTTPConnection(_Guarded, HTTPConnection):
    pass


class _HTTPSConnection(_Guarded, HTTPSConnection):
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
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.trust_env = False  # a proxy from the environment would connect to addresses we cannot check
        self.session.mount("http://", _Adapter())
        self.session.mount("https://", _Adapter())
        self._last: dict[str, float] = {}
        self._robots: dict[tuple[str, bool], Robots] = {}  # by origin, and whether only public addresses may be reached
        self._lock = threading.Lock()

    def _wait_turn(self, url: str) -> None:
        host = urlsplit(url).netloc.lower()
        with self._lock:
            due = self._last.get(host, 0.0) + self.interval
            now = time.monotonic()
            self._last[host] = max(now, due)
        if due > now:
            time.sleep(due - now)

    def allowed(self, url: str, public_only: bool = False) -> bool:
        """Whether robots.txt lets us fetch `url` (read under the same address rule as `url`)."""
        parts = urlsplit(url)
        key = (f"{parts.scheme}://{parts.netloc}", public_only)
        if key not in self._robots:
            self._robots[key] = self._read_robots(*key)
        return self._robots[key].allows(url)

    def _read_robots(self, origin: str, public_only: bool) -> Robots:
        """An origin's robots.txt, read as a page is (no robots.txt, or an unreadable one: no rules; 401/403: none
        allowed); past the size cap it is cut, as RFC 9309 allows."""
        self._wait_turn(origin)
        try:
            page = self._fetch(origin + "/robots.txt", {}, types=None, whole=False, public_only=public_only)
        except FetchError as e:
            return Robots("User-agent: *\nDisallow: /" if e.http_status in (401, 403) else "")
        except IngestError:
            return Robots()
        text = page.body.decode("utf-8", "replace").removeprefix("\ufeff")
        if len(page.body) >= self.max_bytes:
            text = text[:text.rfind("\n") + 1]  # the line cut by the cap is not a rule
        return Robots(text)

    def get(self, url: str, etag: str | None = None, last_modified: str | None = None,
            public_only: bool = False) -> Page:
        """Fetch one URL; IngestError with a one-line reason when it cannot be had.

        `public_only`: the URL was found in content from a public address, so it (and every redirect)
        may lead only to public addresses; the operator's own URLs may lead anywhere."""
        if not is_url(url):
            raise FetchError("only http and https URLs are fetched", permanent=True)
        if not self.allowed(url, public_only):
            raise FetchError("refused by the site's robots.txt", permanent=True)
        headers = {"Accept": "text/html,application/xhtml+xml,application/rss+xml,application/atom+xml,"
                             "application/xml;q=0.9,*/*;q=0.1"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        self._wait_turn(url)
        return self._fetch(url, headers, public_only=public_only)

    def _fetch(self, url: str, headers: dict, types: tuple | None = TYPES, whole: bool = True,
               public_only: bool = False) -> Page:
        """GET under the deadline and the size cap: a longer body is refused, or with `whole=False` cut at the cap."""
        guard, answered = _Guard(self.timeout), False
        try:
            with guard, self._follow(url, headers, guard, public_only) as r:
                answered = not guard.expired  # (headers cut short by the deadline read as complete)
                return self._read(r, headers, guard, answered, types, whole)
        except requests.RequestException as e:
            raise IngestError(self._reason(e, guard.expired, answered)) from None

    def _follow(self, url: str, headers: dict, guard: _Guard, public_only: bool) -> requests.Response:
        """The response at the end of a URL's redirects, followed one hop at a time: what a public address
        answers may lead only to public addresses."""
        for _ in range(MAX_REDIRECTS + 1):
            guard.public_only = public_only
            r = self.session.get(url, headers=headers, timeout=self.timeout, stream=True, allow_redirects=False)
            public_only = guard.peer_public
            target = self.session.get_redirect_target(r)
            if target is None:
                return r
            r.close()
            url = requote_uri(urljoin(r.url, target))
            if not is_url(url):
                raise IngestError("redirected to something other than http or https")
        raise IngestError(f"more than {MAX_REDIRECTS} redirects (a redirect loop?)")

    def _read(self, r: requests.Response, headers: dict, guard: _Guard, answered: bool, types: tuple | None,
              whole: bool) -> Page:
        """The page in a response, read under the guard's deadline and the size cap."""
        if r.status_code == 304:
            return Page(r.url, 304, "", b"", headers.get("If-None-Match"), headers.get("If-Modified-Since"),
                        guard.peer_public)
        if r.status_code >= 400:
            raise FetchError(f"HTTP {r.status_code} {r.reason or ''}".rstrip(), permanent=r.status_code in (404, 410),
                             http_status=r.status_code)
        ctype, *params = r.headers.get("Content-Type", "").split(";")
        ctype = ctype.strip().lower()
        if types and ctype and ctype not in types:
            raise FetchError(f"not a web page or a feed (content type {ctype})", permanent=True)
        body = bytearray()
        for chunk in r.iter_content(CHUNK):  # decompressed: the cap is on what the page really is
            body += chunk
            if len(body) > self.max_bytes:
                if whole:
                    raise IngestError(f"larger than {self.max_bytes:,} bytes; skipped")
                del body[self.max_bytes:]
                break
        if guard.expired:  # a shut socket reads as a body (or headers) that ended early
            raise IngestError(self._reason(None, True, answered))
        charset = next((v.strip().strip("\"'") for k, _, v in (p.partition("=") for p in params)
                        if k.strip().lower() == "charset"), None)
        return Page(r.url, r.status_code, ctype, bytes(body), r.headers.get("ETag"), r.headers.get("Last-Modified"),
                    guard.peer_public, charset or None)

    def _reason(self, e: requests.RequestException | None, expired: bool, answered: bool) -> str:
        """Why a request failed, in one line (`answered`: its headers came within the deadline)."""
        if expired and answered:
            return f"took longer than {self.timeout:g} s; skipped"
        if expired or isinstance(e, requests.Timeout):
            return f"no answer within {self.timeout:g} s"
        if isinstance(e, requests.ConnectionError):
            return f"cannot connect ({type(e).__name__})"
        return f"the request failed ({type(e).__name__})"


class FeedState:
    """What earlier runs learned of each feed and sitemap, in feeds.json: the last response's ETag and
    Last-Modified, and a record of each entry by link, with the entry's stamp (`updated`, `lastmod`):
    {"id"} taken, {"gone"} failed for good, {"failed", "attempts", "next_try"} waiting for a retry,
    {"sitemap"} a nested sitemap's own record."""

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
            page = fetcher.get(url, *_conditional(state.feeds.get(url), known))
        except IngestError as e:
            yield Failure(url, e.message)
            continue
        if page.not_modified:
            continue
        kind = page.kind()
        if kind == "page":
            yield _article(page, url)
            continue
        try:
            listed, levels = _feed_entries(page) if kind == "feed" else _sitemap_entries(page, 2)
        except IngestError as e:
            yield Failure(url, e.message)
            continue
        mine = state.of(url)
        before = json.dumps(mine, sort_keys=True)
        settled = yield from _take(page, mine, listed, known, fetcher, stop, levels)
        # The validator only when nothing listed waits: a 304 must not hide an entry still to fetch.
        mine["etag"], mine["last_modified"] = (page.etag, page.last_modified) if settled else (None, None)
        if json.dumps(mine, sort_keys=True) != before:
            state.save()


def _conditional(mine: dict | None, known) -> tuple[str | None, str | None]:
    """The validator of a feed's last response, if every entry it listed is settled: else the feed is asked
    for in full, so that what is missing (a run that died before its last commit) is fetched again."""
    if not mine or not all(_settled(rec, known) for rec in mine["entries"].values()):
        return None, None
    return mine["etag"], mine["last_modified"]


def _settled(rec: dict, known) -> bool:
    """Whether an entry needs nothing more: in the index, or failed for good (a nested sitemap: all its
    entries, as long as its lastmod says it is unchanged)."""
    if "sitemap" in rec:
        return rec["stamp"] is not None and all(_settled(r, known) for r in rec["sitemap"]["entries"].values())
    return "gone" in rec or ("id" in rec and known(rec["id"]))


def _article(page: Page, where: str, fallback: dict | None = None) -> Article | Failure:
    try:
        return article_from_html(decode(page.body, page.charset), where, page.url, fallback or {})
    except IngestError as e:
        return Failure(where, e.message.removeprefix(f"{where}: "))


Listed = list[tuple[str, str | None, dict | None]]  # a response's entries: link, stamp, fallback metadata


def _feed_entries(page: Page) -> tuple[Listed, None]:
    """A feed's entries, with `updated` (else `published`) as their stamp; IngestError when unreadable."""
    import feedparser

    parsed = feedparser.parse(page.body)
    if parsed.bozo and not parsed.entries:
        raise IngestError(f"not a readable feed ({type(parsed.bozo_exception).__name__})")
    site = (parsed.feed.get("title") or "").strip() or None
    listed = []
    for entry in parsed.entries:
        if entry.get("link"):
            # (asking feedparser for a missing "updated" warns; keys() does not)
            stamp = entry["updated"] if "updated" in entry.keys() else entry.get("published")
            fallback = {"title": entry.get("title"), "author": entry.get("author"), "source": site,
                        "published": _iso(entry.get("published_parsed") or entry.get("updated_parsed"))}
            listed.append((urljoin(page.url, entry["link"]), stamp, fallback))
    return listed, None  # (no sitemap levels: every entry is an article page)


def _sitemap_entries(page: Page, levels: int) -> tuple[Listed, int]:
    """A sitemap's entries, with `lastmod` as their stamp, and how many levels of sitemaps its entries may
    still lead to (`levels` for an index, none for a list of pages); IngestError when unreadable."""
    from lxml import etree

    try:
        root = etree.fromstring(page.body, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False))
    except etree.XMLSyntaxError as e:
        raise IngestError(f"not a readable sitemap ({e.msg})") from None
    listed = []
    for el in root:  # <url> or <sitemap>: its own <loc>, not an image's
        loc = (el.findtext("{*}loc") or "").strip()
        if loc:
            listed.append((loc, (el.findtext("{*}lastmod") or "").strip() or None, None))
    return listed[:MAX_SITEMAP_URLS], levels if etree.QName(root).localname == "sitemapindex" else 0


def _take(page: Page, mine: dict, listed: Listed, known, fetcher: Fetcher, stop,
          levels: int | None) -> Generator[Article | Failure, None, bool]:
    """Fetch the entries that are new, changed, or due for a retry; whether all are settled (taken, or failed
    for good). `mine["entries"]` then holds what the response lists, plus the failures waiting for a retry,
    which are tried again even once the response no longer lists them. `levels`: None for a feed, else how
    many levels of nested sitemaps may still be followed."""
    old, now = mine["entries"], time.time()
    links = {link for link, _, _ in listed}
    todo = listed + [(link, rec["stamp"], rec.get("fallback")) for link, rec in old.items()
                     if link not in links and "next_try" in rec]
    mine["entries"] = entries = {}
    settled = True
    for i, (link, stamp, fallback) in enumerate(todo):
        if stop():
            entries.update((k, old[k]) for k, _, _ in todo[i:] if k in old and k not in entries)  # for the next run
            return False
        if link in entries:
            continue  # listed twice
        rec = old.get(link)
        if rec and rec.get("stamp") == stamp:
            if _settled(rec, known):
                entries[link] = rec
                continue  # taken before, unchanged since: not fetched again
            if rec.get("next_try", 0) > now:
                entries[link] = rec
                settled = False
                continue  # waits for its retry
        try:
            got = fetcher.get(link, public_only=page.public)
        except IngestError as e:
            new = _failed(rec if rec and rec.get("stamp") == stamp else None, stamp, fallback, e, now)
            settled = settled and "gone" in new
            yield Failure(link, e.message)
        else:
            kind = got.kind()
            if levels is None or kind == "page":
                art = _article(got, link, fallback)
                new = ({"stamp": stamp, "id": art.ensure_id()} if isinstance(art, Article)
                       else {"stamp": stamp, "gone": art.reason})  # no article in it: the same until it changes
                yield art
            elif kind == "sitemap" and levels > 0:
                new = {"stamp": stamp, "sitemap": rec["sitemap"] if rec and "sitemap" in rec else {"entries": {}}}
                try:
                    sub, sub_levels = _sitemap_entries(got, levels - 1)
                except IngestError as e:
                    new = {"stamp": stamp, "gone": e.message}
                    yield Failure(link, e.message)
                else:
                    done = yield from _take(got, new["sitemap"], sub, known, fetcher, stop, sub_levels)
                    settled = settled and done
            else:
                new = {"stamp": stamp, "gone": "not an article page"}  # (a feed, or sitemaps nested too deep)
        if link in links or "next_try" in new:
            entries[link] = new
    return settled


def _failed(rec: dict | None, stamp: str | None, fallback: dict | None, e: IngestError, now: float) -> dict:
    """The record of an entry that failed: for good (404, 410, robots.txt, ...), or to be tried again later,
    each wait twice the last, until MAX_ATTEMPTS."""
    attempts = (rec or {}).get("attempts", 0) + 1
    if getattr(e, "permanent", False) or attempts >= MAX_ATTEMPTS:
        return {"stamp": stamp, "gone": e.message}
    return {"stamp": stamp, "failed": e.message, "attempts": attempts,
            "next_try": now + RETRY_AFTER * 2 ** (attempts - 1), **({"fallback": fallback} if fallback else {})}


def _iso(parsed) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed) if parsed else None
