"""The human pages, rendered by the Flask test client (fast; the browser tests are in test_browser.py)."""

import json
import re
from html import unescape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qa.web.pages import mark_parts, paragraphs, safe_url

XSS_TITLE = 'Evil <script>window.__xss=1</script> title <img src=x onerror="window.__xss=1">'
XSS_TEXT = ('First paragraph <script>window.__xss=1</script> about the harbour lighthouse.\n\n'
            'Second paragraph <img src=x onerror="window.__xss=1"> and more text about the lighthouse keeper.')


def html(resp) -> str:
    assert resp.status_code == 200, resp.data[:500]
    return resp.get_data(as_text=True)


def no_inline_code(page: str) -> None:
    """The CSP forbids inline script and style: the pages must not need them."""
    assert not re.search(r"<script(?![^>]*\ssrc=)", page), "inline <script>"
    assert " style=" not in page and "<style" not in page
    assert not re.search(r"\son[a-z]+=", page), "inline event handler"
    assert "javascript:" not in page


# ------------------------------------------------------------------ helpers


def test_mark_parts_merges_clips_and_sorts():
    assert mark_parts("abcdef", []) == [("abcdef", False)]
    assert mark_parts("abcdef", [{"start": 4, "end": 99}, {"start": 0, "end": 2}, {"start": 1, "end": 3}]) == [
        ("abc", True), ("d", False), ("ef", True)]
    assert mark_parts("", []) == [("", False)]
    # Across a paragraph break the gap itself is not marked.
    assert mark_parts("a. b.\n\nc. d.", [{"start": 3, "end": 9}]) == [
        ("a. ", False), ("b.", True), ("\n\n", False), ("c.", True), (" d.", False)]


@given(st.text(max_size=40), st.lists(st.tuples(st.integers(-5, 50), st.integers(-5, 50)), max_size=4))
def test_mark_parts_keeps_the_text(text, spans):
    parts = mark_parts(text, [{"start": s, "end": e} for s, e in spans])
    assert "".join(p for p, _ in parts) == text


def test_paragraphs_anchor_every_passage_even_overlapping_ones():
    text = "One. Two. Three.\n\nFour. Five.\n\n\nSix."
    passages = [{"id": 1, "start": 0, "end": 9}, {"id": 2, "start": 5, "end": 29}, {"id": 3, "start": 31, "end": 35},
                {"id": 4, "start": 33, "end": 35}]
    paras, missing = paragraphs(text, passages, cited=2)
    assert missing == []
    assert ["".join(s["text"] for s in p) for p in paras] == ["One. Two. Three.", "Four. Five.", "Six."]
    anchors = [s["anchor"] for p in paras for s in p if s["anchor"] is not None]
    assert sorted(anchors) == [1, 2, 3, 4]
    cited = "|".join(s["text"] for p in paras for s in p if s["cited"])
    assert cited == "Two.| Three.|Four. Five."
    for p in paras:
        for s in p:
            assert s["cited"] == (2 in s["passages"])


@pytest.mark.parametrize("url, ok", [
    ("https://example.com/a", True), ("http://example.com", True), ("javascript:alert(1)", False),
    ("data:text/html,x", False), ("//example.com", False), ("", False), (None, False),
])
def test_safe_url(url, ok):
    assert (safe_url(url) is not None) == ok


# ------------------------------------------------------------------ search page


def test_search_page_start_state(client):
    page = html(client.get("/"))
    assert "<title>News answers</title>" in page
    assert re.search(r'<input id="q" name="q" type="search" value=""[^>]*autofocus', page)
    assert '<label for="q">' in page and 'class="hint"' in page
    no_inline_code(page)


def test_search_page_renders_results_without_javascript(client):
    r = client.get("/", query_string={"q": "Who is the HTS leader?"})
    page = html(r)
    assert "<title>Who is the HTS leader? – News answers</title>" in page
    assert 'data-state="results"' in page
    marks = re.findall(r"<mark>(.*?)</mark>", page, re.S)
    assert any("al-Golani" in m for m in marks)
    hrefs = [unescape(h) for h in re.findall(r'class="cite" href="([^"]+)"', page)]
    assert page.count("<li class=\"hit\" data-result>") == 5
    assert len(hrefs) == 5 + page.count("data-answer")  # each result's citation, and the answer's
    for href in hrefs:  # the passage, and where in the article its marked sentence lies
        m = re.fullmatch(r"/articles/([\w-]+)\?q=Who\+is\+the\+HTS\+leader%3F&p=(\d+)&s=(\d+)-(\d+)#p-(\d+)", href)
        assert m and m[2] == m[5] and int(m[3]) < int(m[4]), href
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    no_inline_code(page)


def test_search_page_marks_what_the_api_highlights(client):
    api = client.get("/api/search", query_string={"q": "Where did Assad flee to?"}).get_json()
    page = html(client.get("/", query_string={"q": "Where did Assad flee to?"}))
    quotes = re.findall(r'<blockquote class="(?:hit-text|full)">(.*?)</blockquote>', page, re.S)
    assert len(quotes) == len(api["results"])
    for quote, res in zip(quotes, api["results"]):
        marked = "".join(unescape(m) for m in re.findall(r"<mark>(.*?)</mark>", quote, re.S))
        assert "\n" not in marked
        expected = "".join(res["text"][h["start"]:h["end"]] for h in res["highlight"])
        assert marked == re.sub(r"\s*\n\s*", "", expected)
        assert unescape(re.sub(r"</?mark>", "", quote)) == res["text"]


def test_search_page_empty_query(client):
    page = html(client.get("/?q=+++"))
    assert 'data-state="empty-query"' in page and "Type a question first" in page
    assert "<title>News answers</title>" in page


def test_search_page_shows_the_servers_error(client):
    page = html(client.get("/?q=hello&k=0"))
    assert 'data-state="error"' in page and "k must be from 1 to 50 (got 0)" in page
    assert '<input type="hidden" name="k" value="0">' in page


def test_search_page_no_results(client, monkeypatch):
    import qa.web.pages

    monkeypatch.setattr(qa.web.pages, "run_search", lambda q, k, **kw: {"query": q, "took_ms": 1.0, "answer": None,
                                                                     "facets": {"source": []}, "results": []})
    page = html(client.get("/?q=zzzz"))
    assert 'data-state="no-results"' in page and "No passages match “zzzz”" in page


def test_search_page_escapes_the_query(client):
    page = html(client.get("/", query_string={"q": '"><script>window.__xss=1</script>'}))
    assert "<script>window.__xss" not in page
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page


# ------------------------------------------------------------------ article page


def test_article_page_paragraphs_anchors_and_marked_passage(client):
    art = client.get("/api/articles/assad-lands-in-russia").get_json()
    p = art["passages"][2]
    page = html(client.get(f"/articles/{art['id']}", query_string={"q": "Where did Assad flee?", "p": p["id"]}))
    for passage in art["passages"]:
        assert f'id="p-{passage["id"]}"' in page
    paras = re.findall(r"<p>(.*?)</p>", page.split('id="text"')[1], re.S)
    assert len(paras) == len([x for x in art["text"].split("\n\n") if x.strip()])
    marked = " ".join(unescape(m) for m in re.findall(r'<mark class="seg"[^>]*>(.*?)</mark>', page, re.S))
    assert re.sub(r"\s+", " ", marked) == re.sub(r"\s+", " ", art["text"][p["start"]:p["end"]])
    assert f'data-cited="{p["id"]}"' in page
    assert 'href="/?q=Where+did+Assad+flee%3F"' in page and "Results for “Where did Assad flee?”" in page
    no_inline_code(page)


def test_article_page_marks_the_sentence_the_link_came_for(client):
    body = client.get("/api/search", query_string={"q": "Who is the HTS leader?"}).get_json()
    a = body["answer"]
    page = html(client.get("/", query_string={"q": "Who is the HTS leader?"}))
    [href] = re.findall(r'<section class="answer" data-answer.*?class="cite" href="([^"]+)"', page, re.S)
    art = client.get(f"/api/articles/{a['citation']['article_id']}").get_json()
    page = html(client.get(unescape(href)))
    said = "".join(unescape(m) for m in re.findall(r'<mark class="seg said"[^>]*>(.*?)</mark>', page, re.S))
    assert re.sub(r"\s+", "", said) == re.sub(r"\s+", "", a["text"])  # paragraph breaks fall between marks
    assert "has-said" in page and "The cited sentence is" in page
    # The rest of the passage is still marked, so the passage's text is whole.
    passage = next(p for p in art["passages"] if p["id"] == a["passage_id"])
    marked = "".join(unescape(m) for m in re.findall(r'<mark class="seg(?: said)?"[^>]*>(.*?)</mark>', page, re.S))
    assert re.sub(r"\s+", "", marked) == re.sub(r"\s+", "", art["text"][passage["start"]:passage["end"]])
    for bad in ("5-2", "x", "1-999999999", "-1-4", "3-3"):  # not a span of the text: the passage alone
        page = html(client.get(f"/articles/{art['id']}", query_string={"p": passage["id"], "s": bad}))
        assert "seg said" not in page and "has-said" not in page and "The cited passage is" in page


def test_article_page_without_passage_marks_nothing(client):
    page = html(client.get("/articles/assad-lands-in-russia"))
    assert '<mark class="seg"' not in page and "New search" in page
    page = html(client.get("/articles/assad-lands-in-russia?p=notanumber"))
    assert '<mark class="seg"' not in page


def test_article_page_is_inert_for_hostile_articles(client, runner, tmp_path):
    f = tmp_path / "evil.jsonl"
    f.write_text(json.dumps({"id": "evil", "title": XSS_TITLE, "text": XSS_TEXT, "url": "javascript:alert(1)",
                             "source": "<b>Bad</b> source"}) + "\n")
    assert runner.invoke(["ingest", str(f), "-q"]).exit_code == 0
    page = html(client.get("/articles/evil"))
    assert "<script>window" not in page and "<img" not in page and "<b>Bad" not in page
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&#34;window.__xss=1&#34;&gt;" in page
    assert "javascript:" not in page  # a javascript: URL is not made into a link
    results = html(client.get("/?q=lighthouse+keeper+harbour"))
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in results and "<script>window" not in results
