"""End to end: the real packaged model, `qa serve` as a real process, questions over HTTP."""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from .conftest import qa_server
from .test_ingest import CHROME

pytestmark = pytest.mark.slow

# Questions about the seed articles and a string the answer must contain.
QUESTIONS = [
    ("Where did Assad flee to?", "Moscow"),
    ("Who is the leader of HTS?", "al-Golani"),
    ("Which prison did opposition fighters free prisoners from?", "Sednaya"),
    ("Who is Russia's foreign minister?", "Lavrov"),
    ("What is Moscow's only naval base in the Mediterranean?", "Tartus"),
    ("What did Trump post on Truth Social?", "NOT OUR FIGHT"),
    ("Who is the Syrian prime minister?", "al-Jalali"),
    ("When did the rebel offensive start?", "Nov. 27"),
    ("Which group controls the northeast of Syria?", "Syrian Democratic Forces"),
    ("How long did the Assad family rule Syria?", "60 years"),
]


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    index = tmp_path_factory.mktemp("e2e") / "index"
    t0 = time.monotonic()
    with qa_server(index) as (port, _log):
        print(f"\nqa serve built the seed index and became ready in {time.monotonic() - t0:.1f} s")
        yield f"http://127.0.0.1:{port}"


def search(base: str, q: str, k: int = 5) -> dict:  # the API's default page of results
    status, _, body = get(f"{base}/api/search?" + urllib.parse.urlencode({"q": q, "k": k}))
    assert status == 200, body
    return json.loads(body)


def test_answers_are_found_and_cited_exactly(server):
    top1 = 0
    articles = {}
    for q, answer in QUESTIONS:
        results = search(server, q)["results"]
        texts = [r["text"] for r in results]
        assert any(answer in t for t in texts), (q, texts)
        top1 += answer in texts[0]
        for r in results:
            c = r["citation"]
            if c["article_id"] not in articles:
                status, _, body = get(f"{server}/api/articles/{c['article_id']}")
                assert status == 200
                articles[c["article_id"]] = json.loads(body)
            assert articles[c["article_id"]]["text"][c["start"]:c["end"]] == r["text"]
            for h in r["highlight"]:
                assert 0 <= h["start"] < h["end"] <= len(r["text"])
    print(f"top-1: {top1}/{len(QUESTIONS)}")
    assert top1 >= len(QUESTIONS) - 2


def test_no_page_chrome_in_any_passage(server):
    for q in ["subscribe to the newsletter", "enter your email", "skip to content", "news feed editors picks",
              "How will Russia's war end?"]:
        for r in search(server, q, k=50)["results"]:
            for junk in CHROME:
                assert junk.lower() not in r["text"].lower(), (q, junk)


@pytest.mark.parametrize("path, status", [
    ("/api/search?q=", 400), ("/api/search?q=hi&k=0", 400), ("/api/search?q=hi&k=10000", 400),
    ("/api/search", 400), ("/api/articles/does-not-exist", 404),
])
def test_bad_requests_get_json_errors(server, path, status):
    got, headers, body = get(server + path)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"]["code"]


def test_pages_and_health(server):
    for path in ["/", "/healthz", "/openapi.json", "/?q=Where+did+Assad+flee+to%3F", "/articles/assad-lands-in-russia"]:
        status, _, body = get(server + path)
        assert status == 200, path
    assert json.loads(get(server + "/healthz")[2])["status"] == "ok"


def test_serve_on_a_broken_index_stops_with_the_reason_and_no_traceback(tmp_path):
    import os
    import subprocess
    import sys

    from .conftest import ROOT, free_port

    (tmp_path / "manifest.json").write_text('{"articles": 3, "generation": 1}')
    r = subprocess.run([sys.executable, "-m", "qa", "serve", "--index", str(tmp_path), "--port", str(free_port())],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0
    assert "manifest.json is unreadable" in r.stderr and "Traceback" not in r.stderr, r.stderr
