"""The search page and the article page in a real browser: Debian's Chromium, driven by Playwright.

One real `qa serve` (real model, seed articles plus one hostile article) serves
the whole module. Every test fails on any console error or uncaught page error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from .conftest import ROOT, SEEDS, qa_server
from .test_e2e import get

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SHOTS = Path("/tmp/qa-shots")

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); .ci/run installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
expect = sync_api.expect

XSS_TITLE = 'Lighthouse <script>window.__xss=1</script> keeper <img src=x onerror="window.__xss=1">'
XSS_TEXT = ('The old harbour lighthouse keeper wrote <script>window.__xss=1</script> in his log every night.\n\n'
            'Visitors found <img src=x onerror="window.__xss=1"> carved into the lighthouse door, '
            'and the keeper kept the harbour light burning through the storm.')
WIRE = ("The harbour council approved a new ferry timetable on Monday, adding three evening sailings to the "
        "islands from March. Councillor Ines Varga said the change followed a petition signed by 4,000 residents.")
HTS = "Who is the leader of HTS?"
ASSAD = "Where did Assad flee to?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`qa serve` on an index of the seeds and one article whose title and text hold markup."""
    work = tmp_path_factory.mktemp("browser")
    index = work / "index"
    evil = work / "evil.jsonl"
    evil.write_text(json.dumps({"id": "evil-lighthouse", "title": XSS_TITLE, "text": XSS_TEXT,
                                "source": "<b>Harbour</b> Gazette", "url": "javascript:window.__xss=1",
                                "published": "2024-12-09"}) + "\n"
                    # One wire story, republished by two outlets: one result, the other in "Also in".
                    + json.dumps({"id": "ferry-courier", "title": "Ferry timetable adds evening sailings",
                                  "text": WIRE, "source": "Daily Courier", "published": "2024-12-10"}) + "\n"
                    + json.dumps({"id": "ferry-post", "title": "Evening ferries to the islands from March",
                                  "text": WIRE, "source": "Evening Post", "published": "2024-12-11"}) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QA_INDEX_DIR": str(index)}
    done = subprocess.run([sys.executable, "-m", "qa", "ingest", str(SEEDS), str(evil), "--index", str(index), "-q"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    with qa_server(index, env) as (port, _log):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Problems:
    """Console errors and uncaught page errors; tests may allow expected ones by pattern."""

    def __init__(self):
        self.seen: list[str] = []
        self.allowed: list[re.Pattern] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def attach(self, page) -> None:
        page.on("console", lambda m: m.type == "error" and self.seen.append(f"console: {m.text} ({m.location})"))
        page.on("pageerror", lambda e: self.seen.append(f"pageerror: {e}"))

    def unexpected(self) -> list[str]:
        return [s for s in self.seen if not any(p.search(s) for p in self.allowed)]


@pytest.fixture
def problems():
    return Problems()


def open_context(browser, problems, **kw):
    ctx = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **kw})
    ctx.set_default_timeout(20_000)
    ctx.on("page", problems.attach)
    return ctx


@pytest.fixture
def context(browser, problems):
    ctx = open_context(browser, problems)
    yield ctx
    ctx.close()
    assert not problems.unexpected(), "errors in the browser:\n" + "\n".join(problems.unexpected())


@pytest.fixture
def page(context):
    return context.new_page()


def ask(page, question: str) -> None:
    """Type a question into the search box the way a person does and press Enter."""
    box = page.get_by_label("Ask a question about the news")
    box.fill("")
    box.type(question)
    box.press("Enter")


def hit_with(page, text: str):
    """The first result whose marked sentence contains `text`."""
    return page.locator(".hit").filter(has=page.locator("mark", has_text=text)).first


def in_viewport(page, selector: str) -> bool:
    return page.eval_on_selector(selector, """el => { const r = el.getBoundingClientRect();
        return r.bottom > 0 && r.top < window.innerHeight; }""")


def test_search_box_enter_marked_answer_and_citation(page, server):
    resp = page.goto(server + "/")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    box = page.get_by_label("Ask a question about the news")
    expect(box).to_be_focused()
    expect(page).to_have_title("News answers")
    page.evaluate("window.__samePage = true")

    page.keyboard.type(HTS)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server}/?q={quote_plus(HTS)}")
    expect(page).to_have_title(f"{HTS} – News answers")
    hit = hit_with(page, "al-Golani")
    expect(hit).to_be_visible()
    expect(page.locator("#status")).to_have_text(re.compile(r"^(Answer and )?\d+ passages? · \d+ ms$"))
    assert page.evaluate("window.__samePage") is True, "the results should come without a full page load"
    expect(hit.locator(".score")).to_have_text(re.compile(r"^#\d+ · \d\.\d\d$"))
    expect(hit.locator(".hit-meta time")).to_have_text("2024-12-08")

    # The citation names the exact passage; following it lands on that passage, marked.
    cite = hit.locator("a.cite")
    href = cite.get_attribute("href")
    m = re.fullmatch(r"/articles/([\w-]+)\?q=[^#&]+&p=(\d+)&s=(\d+)-(\d+)#p-(\d+)", href)
    assert m and m[2] == m[5], href
    article_id, pid, said_at = m[1], m[2], (int(m[3]), int(m[4]))
    cite.click()
    expect(page).to_have_url(f"{server}{href}")
    anchor = page.locator(f"#p-{pid}")
    expect(anchor).to_be_in_viewport()
    assert anchor.evaluate("el => el.tagName") == "MARK"
    expect(page.locator("mark.seg", has_text="al-Golani").first).to_be_visible()
    expect(page.locator("article h1")).not_to_be_empty()
    api = json.loads(get(f"{server}/api/articles/{article_id}")[2])
    passage = next(p for p in api["passages"] if p["id"] == int(pid))
    marked = page.locator("mark.seg").evaluate_all("els => els.map(e => e.textContent).join('\\n')")
    assert re.sub(r"\s+", " ", marked) == re.sub(r"\s+", " ", api["text"][passage["start"]:passage["end"]])
    assert page.locator(".article .text > p").count() >= 5  # paragraphs, not one block
    # Within it, the sentence the result marked is marked in full, the rest of the passage tinted.
    said = page.locator("mark.seg.said").evaluate_all("els => els.map(e => e.textContent).join('')")
    assert "al-Golani" in said and re.sub(r"\s+", "", said) == re.sub(r"\s+", "", api["text"][slice(*said_at)])
    soft = page.locator("mark.seg:not(.said)").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert soft != page.locator("mark.seg.said").first.evaluate("e => getComputedStyle(e).backgroundColor")

    # The way back carries the question.
    page.locator("#back").click()
    expect(page).to_have_url(f"{server}/?q={quote_plus(HTS)}")
    expect(page.get_by_label("Ask a question about the news")).to_have_value(HTS)
    expect(hit_with(page, "al-Golani")).to_be_visible()


def test_works_with_javascript_off(browser, server, problems):
    ctx = open_context(browser, problems, java_script_enabled=False)
    try:
        page = ctx.new_page()
        page.goto(f"{server}/?q={quote_plus(ASSAD)}")
        expect(page).to_have_title(f"{ASSAD} – News answers")
        expect(page.locator(".hit").first).to_be_visible()
        assert page.locator(".hit-text mark").count() >= 1
        expect(page.locator(".hit-text", has_text="Moscow").first).to_be_visible()

        # The form works without script too: a plain GET to /?q=...
        ask(page, HTS)
        expect(page).to_have_url(f"{server}/?q={quote_plus(HTS)}")
        hit = hit_with(page, "al-Golani")
        expect(hit).to_be_visible()
        href = hit.locator("a.cite").get_attribute("href")
        pid = href.rsplit("#p-", 1)[1]
        hit.locator("a.cite").click()
        expect(page.locator(f"mark#p-{pid}")).to_be_in_viewport()

        # The API's own href (no ?p=) still lands on the passage; CSS marks its start.
        article_path = href.split("?")[0]
        page.goto(f"{server}{article_path}#p-{pid}")
        expect(page.locator(f"#p-{pid}")).to_be_in_viewport()
        assert page.locator(f"#p-{pid}").evaluate("el => el.matches(':target')")

        page.goto(f"{server}/?q=")
        expect(page.locator("#status")).to_have_text(re.compile("Type a question first"))
    finally:
        ctx.close()
    assert not problems.unexpected(), "\n".join(problems.unexpected())


def test_bare_api_citation_href_is_marked_by_script(page, server):
    body = json.loads(get(f"{server}/api/search?q={quote_plus(ASSAD)}&k=1")[2])
    top = body["results"][0]
    href = top["citation"]["href"]
    assert re.fullmatch(r"/articles/[\w-]+#p-\d+", href)
    page.goto(server + href)
    pid = top["passage_id"]
    expect(page.locator(f"mark#p-{pid}")).to_be_in_viewport()
    marked = page.locator("mark.seg").evaluate_all("els => els.map(e => e.textContent).join('')")
    assert re.sub(r"\s+", "", marked) == re.sub(r"\s+", "", top["text"])
    expect(page.locator("#cited-note")).to_be_visible()


def test_back_and_forward(page, server):
    page.goto(server + "/")
    ask(page, HTS)
    expect(hit_with(page, "al-Golani")).to_be_visible()
    ask(page, ASSAD)
    expect(page).to_have_url(f"{server}/?q={quote_plus(ASSAD)}")
    expect(page.locator(".hit-text", has_text="Moscow").first).to_be_visible()

    page.go_back()
    expect(page).to_have_url(f"{server}/?q={quote_plus(HTS)}")
    expect(page).to_have_title(f"{HTS} – News answers")
    expect(page.get_by_label("Ask a question about the news")).to_have_value(HTS)
    expect(hit_with(page, "al-Golani")).to_be_visible()

    page.go_back()
    expect(page).to_have_url(f"{server}/")
    expect(page.get_by_label("Ask a question about the news")).to_have_value("")
    expect(page.locator(".hit")).to_have_count(0)
    expect(page.locator(".hint")).to_be_visible()

    page.go_forward()
    page.go_forward()
    expect(page).to_have_url(f"{server}/?q={quote_plus(ASSAD)}")
    expect(page.get_by_label("Ask a question about the news")).to_have_value(ASSAD)
    expect(page.locator(".hit-text", has_text="Moscow").first).to_be_visible()

    # A reload of a result page shows the same results (the URL is the state).
    page.reload()
    expect(page.get_by_label("Ask a question about the news")).to_have_value(ASSAD)
    expect(page.locator(".hit-text", has_text="Moscow").first).to_be_visible()


HIT_SUMMARY = """els => els.map(li => [
    li.querySelector('.hit-title a').getAttribute('href'), li.querySelector('.hit-title a').textContent,
    li.querySelector('.hit-meta').textContent.trim(), li.querySelector('.hit-text').innerHTML,
    li.querySelector('a.cite').getAttribute('href'), li.querySelector('a.cite').textContent,
    li.querySelector('.score').textContent, li.querySelector('.score').title])"""


def test_script_renders_results_as_the_server_does(page, server):
    page.goto(server + "/")
    ask(page, ASSAD)
    expect(page.locator(".hit").first).to_be_visible()
    by_script = page.locator(".hit").evaluate_all(HIT_SUMMARY)
    page.reload()
    expect(page.locator(".hit").first).to_be_visible()
    by_server = page.locator(".hit").evaluate_all(HIT_SUMMARY)
    assert by_script == by_server
    assert len(by_server) == 5 and all("<mark>" in h[3] for h in by_server)


def test_searching_no_results_empty_and_error_states(page, server, problems):
    page.goto(server + "/")
    held = []
    page.route("**/?q=*", lambda route: held.append(route))
    ask(page, ASSAD)
    status = page.locator("#status")
    expect(status).to_have_text("Searching…")
    expect(page.locator("#results")).to_have_attribute("aria-busy", "true")
    held.pop().continue_()
    expect(page.locator(".hit").first).to_be_visible()
    expect(page.locator("#results")).not_to_have_attribute("aria-busy", "true")
    page.unroute("**/?q=*")

    # Dates no article has: nothing matches, and the page says the filters are why.
    page.locator("#f-from").fill("1990-01-01")
    page.locator("#f-to").fill("1990-01-02")
    ask(page, "zebra crossings in Oslo")
    expect(status).to_have_text("No passages match “zebra crossings in Oslo” with these filters. "
                                "Try other words, or fewer of them, or clear the filters.")
    expect(page.locator(".hit")).to_have_count(0)
    page.goto(server + "/")

    ask(page, "   ")
    expect(status).to_have_text("Type a question first, then press Enter.")
    expect(page.get_by_label("Ask a question about the news")).to_be_focused()

    # The server's own error message, both rendered by the server and fetched by the script.
    problems.allow(r"status of 400")
    page.goto(f"{server}/?q=hello&k=0")
    expect(status).to_have_text("k must be from 1 to 50 (got 0)")
    ask(page, ASSAD)
    expect(page).to_have_url(f"{server}/?q={quote_plus(ASSAD)}&k=0")
    expect(status).to_have_text("k must be from 1 to 50 (got 0)")
    assert "error" in status.get_attribute("class")

    problems.allow(r"net::ERR_FAILED|Failed to load resource")
    page.route("**/?q=*", lambda route: route.abort())
    ask(page, HTS)
    expect(status).to_have_text("Could not reach the server. Check your connection and try again.")


def test_hostile_article_renders_as_inert_text(page, server):
    page.goto(server + "/")
    ask(page, "lighthouse keeper harbour storm")
    title = page.locator(".hit-title a", has_text="Lighthouse")
    expect(title.first).to_have_text(XSS_TITLE)
    expect(page.locator(".hit .site", has_text="<b>Harbour</b> Gazette").first).to_be_visible()
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator(".hit img").count() == 0
    page.reload()  # the server-rendered result page
    expect(title.first).to_have_text(XSS_TITLE)
    assert page.evaluate("typeof window.__xss") == "undefined"

    hit = page.locator(".hit").filter(has=page.locator(".hit-title a", has_text="Lighthouse")).first
    hit.locator("a.cite").click()
    expect(page.locator("article h1")).to_have_text(XSS_TITLE)
    expect(page).to_have_title(f"{XSS_TITLE} – News answers")
    text = page.locator("#text").inner_text()
    assert "<script>window.__xss=1</script>" in text and '<img src=x onerror="window.__xss=1">' in text
    assert page.locator("main img, main script, main b").count() == 0
    assert page.get_by_role("link", name="Original article").count() == 0  # a javascript: URL is never linked
    page.wait_for_timeout(200)
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_keyboard_only(page, server):
    page.goto(server + "/")
    page.keyboard.type(ASSAD)
    page.keyboard.press("Enter")
    expect(page.locator(".hit").first).to_be_visible()

    def focused():
        return page.evaluate("""() => { const e = document.activeElement;
            return [e.tagName, e.className, e.textContent.trim(), getComputedStyle(e).outlineStyle]; }""")

    page.keyboard.press("Tab")
    assert focused()[:3] == ["BUTTON", "", "Search"]
    seen = []
    for _ in range(20):  # the filters (a date field may take a Tab per part), then the answer's citation
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.id || document.activeElement.className"))
        if seen[-1] == "cite":
            break
    assert seen[:3] == ["f-source", "f-sort", "f-from"] and "f-to" in seen and seen[-1] == "cite", seen
    assert page.evaluate("!!document.activeElement.closest('[data-answer]')"), "the answer card comes first"
    assert focused()[3] != "none", "keyboard focus must be visible"
    page.keyboard.press("Tab")
    tag, _, text, outline = focused()
    assert tag == "A" and text == page.locator(".hit-title a").first.inner_text()
    assert outline != "none", "keyboard focus must be visible"
    page.keyboard.press("Tab")
    if focused()[0] == "SUMMARY":  # a snippet opens to the whole passage from the keyboard too
        page.keyboard.press("Enter")
        expect(page.locator(".hit").first.locator("details .full")).to_be_visible()
        page.keyboard.press("Tab")
    assert focused()[1] == "cite"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/articles/[\w-]+\?q=.+#p-\d+$"))
    expect(page.locator("mark.seg").first).to_be_in_viewport()

    # "/" goes back to the search box from anywhere on the search page.
    page.go_back()
    page.locator("body").click(position={"x": 5, "y": 400})
    page.keyboard.press("/")
    expect(page.get_by_label("Ask a question about the news")).to_be_focused()


def test_answer_card_and_no_answer(page, server):
    page.goto(server + "/")
    ask(page, "Who promised to keep aiding Assad?")
    card = page.locator("[data-answer]")
    expect(card).to_be_visible()
    expect(card.locator(".answer-text")).to_contain_text("Russia, one of Assad's key allies, promised")
    expect(page.locator("[data-no-answer]")).to_have_count(0)
    expect(page.locator("[data-result]").first).to_be_visible()
    # The card's citation lands on the passage that holds the answer.
    href = card.locator("a.cite").get_attribute("href")
    card.locator("a.cite").click()
    pid = href.rsplit("#p-", 1)[1]
    expect(page.locator(f"mark#p-{pid}")).to_be_in_viewport()
    expect(page.locator("mark.seg", has_text="promised to continue aiding").first).to_be_visible()

    # A question the collection does not cover: a plain notice, and the closest passages still shown.
    page.goto(server + "/")
    ask(page, "Who won the 1966 football World Cup final at Wembley?")
    expect(page.locator("[data-no-answer]")).to_have_text("No article answers this; the closest passages:")
    expect(page.locator("[data-answer]")).to_have_count(0)
    expect(page.locator("[data-result]").first).to_be_visible()


def test_filters_by_keyboard_and_wire_copies(page, server):
    page.goto(server + "/")
    ask(page, "How many residents signed the ferry petition?")
    ferry = page.locator("[data-result]").filter(has_text="petition signed by 4,000 residents").first
    expect(ferry).to_be_visible()
    # The two outlets' copies are one result, shown as the earliest, the other listed under it.
    expect(page.locator("[data-result]").filter(has_text="petition signed by 4,000 residents")).to_have_count(1)
    expect(ferry.locator(".site")).to_have_text("Daily Courier")
    expect(ferry.locator(".also-in")).to_have_text("Also in Evening Post (2024-12-11)")

    # Keep to one source with the keyboard alone: the URL keeps the choice, the results follow it.
    page.locator("#f-source").focus()
    options = page.locator("#f-source option").all_inner_texts()
    assert any(o.startswith("Evening Post") for o in options) and any(o.startswith("Daily Courier") for o in options)
    while not page.locator("#f-source").input_value() == "Evening Post":
        page.keyboard.press("ArrowDown")
    expect(page).to_have_url(re.compile(r"source=Evening\+Post"))
    expect(page.locator("[data-result] .site").first).to_have_text("Evening Post")
    assert set(page.locator("[data-result] .site").all_inner_texts()) == {"Evening Post"}
    expect(page.locator("#f-source")).to_have_value("Evening Post")
    page.reload()  # the URL is the state
    expect(page.locator("#f-source")).to_have_value("Evening Post")
    assert set(page.locator("[data-result] .site").all_inner_texts()) == {"Evening Post"}
    page.get_by_role("link", name="Clear filters").click()
    expect(page.locator("#f-source")).to_have_value("")


def test_snippet_expands_in_place_without_javascript(browser, server, problems):
    ctx = open_context(browser, problems, java_script_enabled=False)
    try:
        page = ctx.new_page()
        page.goto(f"{server}/?q={quote_plus(HTS)}")
        hit = page.locator("[data-result]").filter(has=page.locator("details")).first
        full = hit.locator("details .full")
        expect(full).to_be_hidden()
        snippet = hit.locator("summary .snippet").inner_text()
        hit.locator("summary").click()
        expect(full).to_be_visible()
        assert len(full.inner_text()) > len(snippet) - 4
        expect(hit.locator("summary .snippet")).to_be_hidden()
        hit.locator("summary").press("Enter")  # and closes again from the keyboard
        expect(full).to_be_hidden()
    finally:
        ctx.close()
    assert not problems.unexpected(), "\n".join(problems.unexpected())


@pytest.mark.parametrize("name, viewport, scale", [("desktop", {"width": 1280, "height": 900}, 1),
                                                   ("phone", {"width": 390, "height": 844}, 2)])
def test_screenshots_and_layout(browser, server, problems, tmp_path, name, viewport, scale):
    ctx = open_context(browser, problems, viewport=viewport, device_scale_factor=scale, is_mobile=name == "phone",
                       has_touch=name == "phone")
    try:
        page = ctx.new_page()
        page.goto(f"{server}/?q={quote_plus(HTS)}")
        expect(hit_with(page, "al-Golani")).to_be_visible()
        # Nothing wider than the screen, and text at a readable size.
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        assert float(page.evaluate("parseFloat(getComputedStyle(document.querySelector('.hit-text')).fontSize)")) >= 15
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = tmp_path / f"results-{name}.png"
        page.screenshot(path=shot, full_page=name == "desktop")
        shutil.copy(shot, SHOTS / shot.name)
        page.goto(f"{server}/?q={quote_plus('Who won the 1966 football World Cup final at Wembley?')}")
        expect(page.locator("[data-no-answer]")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        shot = tmp_path / f"no-answer-{name}.png"
        page.screenshot(path=shot)
        shutil.copy(shot, SHOTS / shot.name)
        page.goto(f"{server}/?q={quote_plus(HTS)}")
        hit_with(page, "al-Golani").locator("a.cite").click()
        expect(page.locator("mark.seg").first).to_be_in_viewport()
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        shot = tmp_path / f"article-{name}.png"
        page.screenshot(path=shot)
        shutil.copy(shot, SHOTS / shot.name)
    finally:
        ctx.close()
    assert not problems.unexpected(), "\n".join(problems.unexpected())
