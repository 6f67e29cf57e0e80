"""Ingest from the web and keep watching (DESIGN.md): a real HTTP server on 127.0.0.1 serves the site."""

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qa.errors import IngestError
from qa.ingest.fetch import Fetcher, FeedState, fetch_articles
from qa.ingest.articles import Article, Failure, clean_text
from qa.web.service import Service

from .conftest import ROOT, SEEDS

CHROME_TOP = """<header><nav><a href="/">Home</a> <a href="/world">World</a> <a href="/sport">Sport</a></nav></header>
<div class="cookie-banner"><p>We use cookies to improve your experience. Accept all cookies?</p><button>Accept</button></div>"""
CHROME_BOTTOM = """<aside class="newsletter"><h3>Sign up for our morning newsletter</h3>
<p>Get the day's top stories in your inbox.</p><form><input type="email"><button>Subscribe</button></form></aside>
<aside class="most-read"><h2>Most read</h2><ul><li><a href="/a">Celebrity chef opens new restaurant</a></li>
<li><a href="/b">Ten things to do this weekend</a></li><li><a href="/c">Storm warning for the coast</a></li></ul></aside>
<footer><p>© 2024 Harbour Gazette. All rights reserved.</p></footer>"""
TWEET = """<blockquote class="twitter-tweet"><p lang="en">Ferries are back!! Huge news for the islands 🎉</p>
&mdash; Island Fan (@islandfan) December 9, 2024 <a href="https://twitter.com/x">pic.twitter.com/abc123</a></blockquote>"""


def page(title: str, paras: list[str], *, canonical: str, author="Ines Varga", date="2024-12-09", tweet=False) -> str:
    body = "".join(f"<p>{p}</p>" for p in paras)
    return f"""<!doctype html><html><head><title>{title} | Harbour Gazette</title>
<link rel="canonical" href="{canonical}"><meta property="og:site_name" content="Harbour Gazette">
<meta name="author" content="{author}"><meta property="article:published_time" content="{date}T08:00:00Z">
<meta property="og:title" content="{title}"></head><body>{CHROME_TOP}
<main><article><h1>{title}</h1>{body}{TWEET if tweet else ""}</article></main>{CHROME_BOTTOM}</body></html>"""


FERRY = ["The harbour council approved a new ferry timetable on Monday, adding three evening sailings to the islands "
         "from March.",
         "Councillor Ines Varga said the change followed a petition signed by 4,000 residents who work late shifts "
         "on the mainland.",
         "The operator will add a second vessel to the route while the harbour wall is repaired next winter."]
BRIDGE = ["Engineers closed the old swing bridge on Tuesday after finding cracks in two of its iron girders.",
          "Traffic is being diverted through the ring road, adding about twenty minutes to journeys at rush hour.",
          "The council expects the bridge to reopen in the spring once the girders have been replaced."]
LIBRARY = ["The town library will open on Sundays from January, the first time in its 120-year history.",
           "Volunteers from the reading group will run the Sunday sessions, which include a story hour for children."]


class Site:
    """What the server serves, and what it was asked."""

    def __init__(self):
        self.base = ""
        self.hits: Counter = Counter()
        self.not_modified: Counter = Counter()
        self.version = {"ferry": 1}
        self.lock = threading.Lock()
        self.custom: dict = {}  # path -> handler(request), for what a test serves its own way
        self.done = threading.Event()  # set when the test ends: slow handlers stop

    def ferry_paras(self):
        return FERRY if self.version["ferry"] == 1 else FERRY[:2] + [
            "The first evening sailing left at 21:30 on Wednesday with 140 passengers on board."]

    def routes(self) -> dict:
        b = self.base
        ferry_stamp = f"2024-12-0{8 + self.version['ferry']}T09:00:00Z"
        rss = f"""<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour Gazette</title><link>{b}/</link>
<item><title>Evening ferries approved</title><link>{b}/news/ferry</link><pubDate>Mon, 09 Dec 2024 08:00:00 GMT</pubDate>
<author>desk@gazette.example (News desk)</author><guid>{b}/news/ferry</guid><description>Three evening sailings</description></item>
<item><title>Bridge closed</title><link>{b}/news/bridge</link><pubDate>Tue, 10 Dec 2024 08:00:00 GMT</pubDate></item>
</channel></rss>"""
        atom = f"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Gazette Atom</title>
<id>{b}/atom</id><updated>{ferry_stamp}</updated>
<entry><title>Evening ferries approved</title><link href="{b}/news/ferry?src=atom"/><id>ferry</id><updated>{ferry_stamp}</updated></entry>
<entry><title>Library opens on Sundays</title><link href="{b}/news/library"/><id>library</id><updated>2024-12-11T09:00:00Z</updated>
<author><name>Tom Reed</name></author></entry></feed>"""
        sitemap = f"""<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<url><loc>{b}/news/library</loc></url><url><loc>{b}/news/bridge</loc></url></urlset>"""
        return {
            "/robots.txt": ("text/plain", "User-agent: *\nDisallow: /private/\n", None),
            "/news/ferry": ("text/html", page("Evening ferries approved", self.ferry_paras(),
                                              canonical=f"{b}/news/ferry", tweet=True), None),
            "/news/bridge": ("text/html", page("Swing bridge closed", BRIDGE, canonical=f"{b}/news/bridge",
                                               date="2024-12-10"), None),
            "/news/library": ("text/html", page("Library opens on Sundays", LIBRARY, canonical=f"{b}/news/library",
                                                author="Tom Reed", date="2024-12-11"), None),
            "/private/memo": ("text/html", page("Memo", BRIDGE, canonical=f"{b}/private/memo"), None),
            "/feed.rss": ("application/rss+xml", rss, f'"rss-{self.version["ferry"]}"'),
            "/feed.atom": ("application/atom+xml", atom, f'"atom-{self.version["ferry"]}"'),
            "/sitemap.xml": ("application/xml", sitemap, None),
            "/logo.png": ("image/png", "\x89PNG....", None),
        }


@contextlib.contextmanager
def serving(s: Site):
    """Serve a Site on 127.0.0.1 while the block runs."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            path = self.path.split("?")[0]
            with s.lock:
                s.hits[path] += 1
            if path in s.custom:
                try:
                    s.custom[path](self)
                except OSError:
                    pass  # the fetcher hung up, as it should
                return
            if path == "/slow":
                time.sleep(3)
            if path == "/loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
                return
            got = s.routes().get(path)
            if got is None:
                self.send_response(404)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(b"<h1>Not found</h1>")
                return
            ctype, body, etag = got
            if etag and self.headers.get("If-None-Match") == etag:
                with s.lock:
                    s.not_modified[path] += 1
                self.send_response(304)
                self.end_headers()
                return
            data = body.encode("utf-8", "surrogateescape")
            self.send_response(200)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if etag:
                self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    s.base = f"http://127.0.0.1:{server.server_address[1]}"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield s
    finally:
        s.done.set()
        server.shutdown()


@pytest.fixture
def site():
    with serving(Site()) as s:
        yield s


def respond(h, body: bytes, ctype="text/html", status=200, headers=()) -> None:
    """Send a whole response from a custom handler."""
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for name, value in headers:
        h.send_header(name, value)
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def svc(tmp_path, fake_embedder, monkeypatch):
    monkeypatch.setenv("QA_FETCH_INTERVAL", "0")  # politeness is tested on its own below
    monkeypatch.setenv("QA_FETCH_TIMEOUT", "1")
    return Service(tmp_path / "index", "fake", embedder=fake_embedder)


def articles(svc) -> dict[str, dict]:
    idx = svc.searcher().index
    ids = [r[0] for r in idx.db.execute("SELECT id FROM articles WHERE deleted_gen IS NULL")]
    return {i: idx.article(i) for i in ids}


def test_a_page_gives_clean_text_and_its_metadata(svc, site):
    report = svc.ingest([site.base + "/news/ferry"])
    assert report.added == 1 and not report.failures
    (art,) = articles(svc).values()
    assert art["title"] == "Evening ferries approved"
    assert art["url"] == site.base + "/news/ferry" and art["source"] == "Harbour Gazette"
    assert art["author"] == "Ines Varga" and art["published"].startswith("2024-12-09")
    assert "petition signed by 4,000 residents" in art["text"]
    for chrome in ("cookies", "newsletter", "Subscribe", "Most read", "Celebrity chef", "All rights reserved",
                   "Sport", "Island Fan", "@islandfan", "pic.twitter.com", "Huge news for the islands"):
        assert chrome not in art["text"], chrome
    # The same article through another link (the canonical URL decides) is the same article.
    again = svc.ingest([site.base + "/news/ferry?utm_source=newsletter"])
    assert again.added == 0 and again.duplicates == 1 and len(articles(svc)) == 1


def test_embedded_post_remains_in_plain_text_are_dropped():
    seed = (SEEDS / "004_fc6aece6c7f21e80.txt").read_text()
    assert "@WarMonitors" in seed and "pic.twitter.com" in seed
    text = clean_text(seed)
    assert "@WarMonitors" not in text and "pic.twitter.com" not in text and "as we known it" not in text
    assert "Hosni Mubarak of Egypt." in text and "What just happened in Syria?" in text


def test_feeds_are_asked_conditionally_and_entries_not_fetched_twice(svc, site):
    urls = [site.base + "/feed.rss", site.base + "/feed.atom"]
    first = svc.ingest(urls)
    assert not first.failures
    arts = articles(svc)
    assert {a["title"] for a in arts.values()} == {"Evening ferries approved", "Swing bridge closed",
                                                   "Library opens on Sundays"}
    assert first.added == 3 and first.duplicates == 1  # the ferry story is in both feeds, once in the index
    assert site.hits["/news/ferry"] == 2 and site.hits["/news/library"] == 1
    state = json.loads((svc.index_dir / "feeds.json").read_text())["feeds"]
    assert state[urls[0]]["etag"] == '"rss-1"'

    # Nothing new: the feeds answer 304 and no article is fetched again.
    second = svc.ingest(urls)
    assert (second.added, second.updated, second.failed) == (0, 0, 0)
    assert site.not_modified["/feed.rss"] == 1 and site.not_modified["/feed.atom"] == 1
    assert site.hits["/news/ferry"] == 2 and site.hits["/news/library"] == 1 and site.hits["/news/bridge"] == 1

    # The ferry story changes: the Atom feed says so, the page is fetched again and replaces the old version.
    old_text = next(a for a in arts.values() if a["title"].startswith("Evening"))["text"]
    site.version["ferry"] = 2
    third = svc.ingest([urls[1]])
    assert third.updated == 1 and third.added == 0, third
    now = articles(svc)
    ferry = next(a for a in now.values() if a["title"].startswith("Evening"))
    assert "140 passengers" in ferry["text"] and ferry["text"] != old_text
    assert len(now) == 3
    hits = svc.searcher().search("second vessel harbour wall repaired", 5)
    assert all("second vessel" not in h.text for h in hits)  # the old version's passages are gone


def test_a_sitemap_gives_its_pages(svc, site):
    report = svc.ingest([site.base + "/sitemap.xml"])
    assert report.added == 2 and not report.failures
    assert {a["title"] for a in articles(svc).values()} == {"Library opens on Sundays", "Swing bridge closed"}


def test_each_failing_url_gets_one_reason_and_the_rest_go_in(svc, site, tmp_path):
    b = site.base
    urls = [b + "/missing", b + "/loop", b + "/slow", b + "/private/memo", b + "/logo.png", "ftp://127.0.0.1/x",
            b + "/news/bridge"]
    got = list(fetch_articles(urls, FeedState(None), fetcher=Fetcher(interval=0, timeout=1)))
    fails = {f.origin: f.reason for f in got if isinstance(f, Failure)}
    assert fails == {
        b + "/missing": "HTTP 404 Not Found",
        b + "/loop": "more than 5 redirects (a redirect loop?)",
        b + "/slow": "no answer within 1 s",
        b + "/private/memo": "refused by the site's robots.txt",
        b + "/logo.png": "not a web page or a feed (content type image/png)",
        "ftp://127.0.0.1/x": "only http and https URLs are fetched",
    }
    assert [a.title for a in got if isinstance(a, Article)] == ["Swing bridge closed"]
    assert site.hits["/private/memo"] == 0  # robots.txt is read first, the page never asked for


def test_a_page_over_the_size_cap_is_refused(site):
    got = list(fetch_articles([site.base + "/news/bridge"], FeedState(None),
                              fetcher=Fetcher(interval=0, timeout=2, max_bytes=1000)))
    assert [(f.origin, f.reason) for f in got] == [(site.base + "/news/bridge", "larger than 1,000 bytes; skipped")]


def test_one_request_a_second_per_host(site):
    f = Fetcher(interval=0.5, timeout=2)
    f.get(site.base + "/news/bridge")  # reads robots.txt too
    t0 = time.monotonic()
    for _ in range(3):
        f.get(site.base + "/news/bridge")
    assert time.monotonic() - t0 >= 1.4  # three requests after the first, each half a second apart


def test_qa_ingest_mixes_urls_and_paths_and_says_what_failed(runner, site, tmp_path):
    result = runner.invoke(["ingest", str(SEEDS), site.base + "/news/library", site.base + "/missing",
                            "--index", str(tmp_path / "ix"), "-q"])
    assert result.exit_code == 1
    assert f"failed: {site.base}/missing: HTTP 404 Not Found" in result.output
    assert "3 articles added" in result.output


def test_qa_watch_adds_entries_while_qa_serve_answers_and_stops_on_sigterm(tmp_path, site):
    """The real model, a real `qa serve`, and `qa watch` as its own process, stopped by SIGTERM."""
    from .conftest import qa_server
    from .test_e2e import get

    index = tmp_path / "index"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QA_INDEX_DIR": str(index), "QA_FETCH_INTERVAL": "0"}
    done = subprocess.run([sys.executable, "-m", "qa", "ingest", str(SEEDS), "-q"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with qa_server(index, env) as (port, _log):
        watch = subprocess.Popen([sys.executable, "-m", "qa", "watch", site.base + "/feed.rss", "--every", "1", "-q"],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            found = False
            for _ in range(600):
                body = json.loads(get(f"http://127.0.0.1:{port}/api/search?q=swing+bridge+girders+cracks&k=1")[2])
                if body["results"] and body["results"][0]["citation"]["title"] == "Swing bridge closed":
                    found = True
                    break
                time.sleep(0.2)
            assert found, "the running server never found the watched feed's article"
        finally:
            watch.send_signal(signal.SIGTERM)
            out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert "Stopped." in err and "2 added" in out


def test_the_whole_response_has_one_deadline_whatever_the_servers_pace(site):
    def drip_body(h):  # a byte every half second: no 64 KB chunk is ever complete
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(16):
            if site.done.wait(0.5):
                return
            h.wfile.write(b"<")
            h.wfile.flush()

    def drip_headers(h):  # the headers themselves, a byte every half second
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Slow: ")
        for _ in range(16):
            if site.done.wait(0.5):
                return
            h.wfile.write(b"a")
            h.wfile.flush()

    site.custom.update({"/drip": drip_body, "/drip-headers": drip_headers})
    f = Fetcher(interval=0, timeout=1)
    for path, reason in (("/drip", "took longer than 1 s; skipped"), ("/drip-headers", "no answer within 1 s")):
        t0 = time.monotonic()
        with pytest.raises(IngestError) as e:
            f.get(site.base + path)
        assert (e.value.message, round(time.monotonic() - t0)) == (reason, 1), path


def test_a_compressed_page_is_capped_after_decompression(site):
    bomb = gzip.compress(b"<p>" + b"a" * 50_000_000)  # 50 MB of page in 49 KB
    site.custom["/bomb"] = lambda h: respond(h, bomb, headers=[("Content-Encoding", "gzip")])
    with pytest.raises(IngestError, match="larger than 1,000,000 bytes"):
        Fetcher(interval=0, timeout=5, max_bytes=1_000_000).get(site.base + "/bomb")


ROBOTS = """# RFC 9309's rules, none of which the first-match robotparser got right
User-agent: otherbot
User-agent: *
Allow: /
Disallow: /private/
Disallow: /*/drafts/
Disallow: /*.pdf$
Allow: /tie
Disallow: /tie

User-agent: news
Disallow: /
"""


def test_robots_txt_is_matched_as_rfc_9309_says(site):
    site.custom["/robots.txt"] = lambda h: respond(h, ROBOTS.encode(), "text/plain")
    f = Fetcher(interval=0, timeout=2)
    got = {p: f.allowed(site.base + p) for p in ("/news/ferry", "/private/memo", "/world/drafts/x", "/report.pdf",
                                                  "/report.pdf?page=2", "/tie", "/robots.txt")}
    assert got == {"/news/ferry": True, "/private/memo": False, "/world/drafts/x": False, "/report.pdf": False,
                   "/report.pdf?page=2": True, "/tie": True, "/robots.txt": True}
    # The group naming our product token, where there is one, and only it; "news" is not "qa-news".
    site.custom["/robots.txt"] = lambda h: respond(h, b"User-agent: *\nDisallow: /\n\nuser-agent: QA-News\n"
                                                      b"Disallow: /news/\n# Allow: /news/ferry\n", "text/plain")
    f = Fetcher(interval=0, timeout=2)
    assert (f.allowed(site.base + "/news/ferry"), f.allowed(site.base + "/world")) == (False, True)


def test_robots_txt_has_the_caps_of_any_page(site):
    import tracemalloc

    rules = b"User-agent: *\nDisallow: /private/\n"
    bomb = gzip.compress(rules + b"# " + b"x" * 50_000_000 + b"\nDisallow: /\n")  # 50 MB of comment in 49 KB
    site.custom["/robots.txt"] = lambda h: respond(h, bomb, "text/plain", headers=[("Content-Encoding", "gzip")])
    tracemalloc.start()
    try:
        f = Fetcher(interval=0, timeout=5, max_bytes=1_000_000)
        got = (f.allowed(site.base + "/private/memo"), f.allowed(site.base + "/news/ferry"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == (False, True)  # the rules before the cap count; what is past it is not read
    assert peak < 10_000_000, f"{peak:,} bytes for a robots.txt capped at 1,000,000"

    def drip(h):
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.end_headers()
        h.wfile.write(rules)
        for _ in range(16):
            if site.done.wait(0.5):
                return
            h.wfile.write(b"#")
            h.wfile.flush()

    site.custom["/robots.txt"] = drip
    t0 = time.monotonic()
    page = Fetcher(interval=0, timeout=1).get(site.base + "/news/bridge")  # an unreadable robots.txt sets no rules
    assert page.status == 200 and time.monotonic() - t0 < 2.5


def rss(*links: str) -> bytes:
    items = "".join(f"<item><title>Item {i}</title><link>{link}</link></item>" for i, link in enumerate(links))
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Links</title>{items}</channel></rss>'.encode()


def sitemap(*locs: str) -> bytes:
    urls = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'.encode()


def redirect(to: str):
    return lambda h: respond(h, b"", status=302, headers=[("Location", to)])


def test_only_global_addresses_are_public():
    from qa.ingest.fetch import is_public

    for ip in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
               "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "2002:7f00:1::1", "64:ff9b::a9fe:a9fe"):
        assert not is_public(ip, 80), ip
    for ip in ("93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34"):
        assert is_public(ip, 80), ip


def test_links_found_at_a_public_address_never_lead_to_a_non_public_one(site, monkeypatch):
    """The site counts as public (by its port), a second server on 127.0.0.1 as an internal one."""
    import qa.ingest.fetch

    with serving(Site()) as internal:
        port = int(site.base.rsplit(":", 1)[1])
        monkeypatch.setattr(qa.ingest.fetch, "is_public", lambda ip, p: p == port, raising=False)
        secret = internal.base + "/news/bridge"
        site.custom.update({"/links.rss": lambda h: respond(h, rss(secret, site.base + "/news/library"),
                                                             "application/rss+xml"),
                            "/sitemap-links.xml": lambda h: respond(h, sitemap(secret), "application/xml"),
                            "/go": redirect(secret)})
        refused = "leads to an address that is not public, from a public one"
        got = list(fetch_articles([site.base + p for p in ("/links.rss", "/sitemap-links.xml", "/go")],
                                  FeedState(None), fetcher=Fetcher(interval=0, timeout=2)))
        assert [(f.origin, f.reason) for f in got if isinstance(f, Failure)] == [
            (secret, refused), (secret, refused), (site.base + "/go", refused)]
        assert [a.title for a in got if isinstance(a, Article)] == ["Library opens on Sundays"]
        # A robots.txt that redirects inward is not followed: no robots.txt, no rules.
        site.custom["/robots.txt"] = redirect(internal.base + "/robots.txt")
        assert Fetcher(interval=0, timeout=2).get(site.base + "/news/bridge").status == 200
        assert not internal.hits, internal.hits  # not one request reached the internal server

        # The operator may name an internal address, and what it links to on internal addresses is taken.
        internal.custom["/links.rss"] = lambda h: respond(h, rss(internal.base + "/news/bridge"), "application/rss+xml")
        got = list(fetch_articles([internal.base + "/links.rss"], FeedState(None), fetcher=Fetcher(interval=0)))
        assert [a.title for a in got] == ["Swing bridge closed"]


def poll(site, urls, state_dir, taken: dict, fetcher=None) -> list:
    """One poll, as `qa watch` makes it; `taken` stands for the index (id -> title)."""
    got = list(fetch_articles([site.base + u for u in urls], FeedState(state_dir), lambda i: i in taken,
                              fetcher or Fetcher(interval=0, timeout=2)))
    taken.update((a.ensure_id(), a.title) for a in got if isinstance(a, Article))
    return got


def test_a_failed_feed_entry_is_tried_again_with_backoff(site, tmp_path):
    down = {"bridge": True}

    def bridge(h):  # down for the first poll only
        if down["bridge"]:
            respond(h, b"<h1>Busy</h1>", status=503)
        else:
            respond(h, page("Swing bridge closed", BRIDGE, canonical=site.base + "/news/bridge").encode())

    site.custom["/news/bridge"] = bridge
    taken: dict = {}
    got = poll(site, ["/feed.rss"], tmp_path, taken)
    assert [(f.origin, f.reason) for f in got if isinstance(f, Failure)] == [
        (site.base + "/news/bridge", "HTTP 503 Service Unavailable")]
    # Back at once: the feed is asked for in full (no 304 hides the entry), the entry waits for its retry.
    down["bridge"] = False
    assert poll(site, ["/feed.rss"], tmp_path, taken) == []
    assert site.not_modified["/feed.rss"] == 0 and site.hits["/news/bridge"] == 1
    state = json.loads((tmp_path / "feeds.json").read_text())["feeds"][site.base + "/feed.rss"]
    waiting = state["entries"][site.base + "/news/bridge"]
    assert waiting["attempts"] == 1 and waiting["next_try"] > time.time() + 60
    # Its time comes: it is fetched and taken; then, and only then, the feed's ETag is kept.
    state = json.loads((tmp_path / "feeds.json").read_text())
    state["feeds"][site.base + "/feed.rss"]["entries"][site.base + "/news/bridge"]["next_try"] -= 3600 * 24
    (tmp_path / "feeds.json").write_text(json.dumps(state))
    assert [a.title for a in poll(site, ["/feed.rss"], tmp_path, taken)] == ["Swing bridge closed"]
    assert poll(site, ["/feed.rss"], tmp_path, taken) == [] and site.not_modified["/feed.rss"] == 1
    assert sorted(taken.values()) == ["Evening ferries approved", "Swing bridge closed"]


def test_an_entry_gone_for_good_does_not_keep_the_feed_from_304(site, tmp_path):
    site.custom["/gone.rss"] = lambda h: respond(h, rss(site.base + "/missing", site.base + "/news/library"),
                                                 "application/rss+xml", headers=[("ETag", '"gone-1"')]) \
        if h.headers.get("If-None-Match") != '"gone-1"' else respond(h, b"", status=304)
    taken: dict = {}
    failure, article = poll(site, ["/gone.rss"], tmp_path, taken)
    assert (failure.reason, article.title) == ("HTTP 404 Not Found", "Library opens on Sundays")
    assert poll(site, ["/gone.rss"], tmp_path, taken) == [] and site.hits["/missing"] == 1
    assert site.hits["/gone.rss"] == 2  # the second answered 304


def test_entries_the_index_never_got_are_fetched_again(site, tmp_path):
    """The run died after feeds.json was saved, before its last commit: the index lacks what the state says."""
    assert len(poll(site, ["/feed.rss"], tmp_path, {})) == 2
    again = poll(site, ["/feed.rss"], tmp_path, {})  # an index that holds none of them
    assert sorted(a.title for a in again) == ["Evening ferries approved", "Swing bridge closed"]
    assert site.not_modified["/feed.rss"] == 0


def test_known_unchanged_sitemap_entries_are_not_fetched_again(site, tmp_path):
    b = site.base
    stamps = {"bridge": "2024-12-10"}

    def urlset(h):
        body = (f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                f'<url><loc>{b}/news/library</loc><lastmod>2024-12-11</lastmod></url>'
                f'<url><loc>{b}/news/bridge</loc><lastmod>{stamps["bridge"]}</lastmod></url>'
                f'<url><loc>{b}/news/ferry</loc></url></urlset>')  # no lastmod: taken once
        respond(h, body.encode(), "application/xml")

    site.custom.update({"/pages.xml": urlset, "/index.xml": lambda h: respond(h, (
        f'<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f'<sitemap><loc>{b}/pages.xml</loc></sitemap></sitemapindex>').encode(), "application/xml")})
    taken: dict = {}
    assert len(poll(site, ["/index.xml"], tmp_path, taken)) == 3
    assert poll(site, ["/index.xml"], tmp_path, taken) == []
    assert (site.hits["/news/library"], site.hits["/news/bridge"], site.hits["/news/ferry"]) == (1, 1, 1)
    stamps["bridge"] = "2024-12-12"  # changed: fetched again, and only it
    assert [a.title for a in poll(site, ["/index.xml"], tmp_path, taken)] == ["Swing bridge closed"]
    assert (site.hits["/news/library"], site.hits["/news/bridge"], site.hits["/news/ferry"]) == (1, 2, 1)


def test_feeds_json_holds_what_the_feed_lists_and_what_waits_and_is_written_only_on_change(site, tmp_path):
    rolls = {"n": 0}  # a busy feed: three new stories on each poll
    for k in range(15):
        site.custom[f"/news/s{k}"] = lambda h, k=k: respond(h, page(
            f"Story {k}", [f"Story number {k} of the rolling feed says something new: {p}" for p in LIBRARY],
            canonical=f"{site.base}/news/s{k}").encode()) if k != 1 or rolls["n"] > 2 else respond(h, b"", status=503)
    site.custom["/rolling.rss"] = lambda h: respond(
        h, rss(*(f"{site.base}/news/s{k}" for k in range(3 * rolls["n"], 3 * rolls["n"] + 3))), "application/rss+xml")
    state = tmp_path / "feeds.json"
    taken: dict = {}
    for rolls["n"] in range(5):
        poll(site, ["/rolling.rss"], tmp_path, taken)
        if rolls["n"] == 2:  # s1 failed on the first poll, and its time for a retry comes
            raw = json.loads(state.read_text())
            raw["feeds"][site.base + "/rolling.rss"]["entries"][site.base + "/news/s1"]["next_try"] = 0
            state.write_text(json.dumps(raw))
        entries = json.loads(state.read_text())["feeds"][site.base + "/rolling.rss"]["entries"]
        # What the feed lists now, plus s1 while it waits for its retry (it is off the feed after the first poll).
        listed = [f"{site.base}/news/s{k}" for k in range(3 * rolls["n"], 3 * rolls["n"] + 3)]
        assert sorted(entries) == sorted(listed + ([site.base + "/news/s1"] if rolls["n"] in (1, 2) else [])), rolls
    assert len(taken) == 15 and site.hits["/news/s1"] == 2

    # A plain page has no state to write; a feed that answers 304 leaves the file as it was.
    other = tmp_path / "other"
    other.mkdir()
    poll(site, ["/news/bridge"], other, {})
    assert not (other / "feeds.json").exists()
    seen: dict = {}
    poll(site, ["/feed.rss"], other, seen)
    written = (other / "feeds.json").stat()
    assert poll(site, ["/feed.rss"], other, seen) == [] and site.not_modified["/feed.rss"] == 1
    after = (other / "feeds.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_the_http_charset_decodes_the_page(site):
    news = ["Rada miasta zatwierdziła nowy rozkład promów w poniedziałek, dodając trzy wieczorne rejsy na wyspy.",
            "Radna powiedziała, że zmiana nastąpiła po petycji podpisanej przez cztery tysiące mieszkańców.",
            "Przewoźnik doda drugi statek na tej trasie, gdy zimą będzie naprawiany mur portu."]
    html = page("Wieczorne promy zatwierdzone", news, canonical=site.base + "/news/cp1250")
    site.custom["/news/cp1250"] = lambda h: respond(h, html.encode("cp1250"), "text/html; charset=windows-1250")
    got = Fetcher(interval=0, timeout=2).get(site.base + "/news/cp1250")
    assert got.charset == "windows-1250"
    (art,) = fetch_articles([site.base + "/news/cp1250"], FeedState(None), fetcher=Fetcher(interval=0, timeout=2))
    assert "cztery tysiące mieszkańców" in art.text  # (detection alone reads these bytes as another charset)
