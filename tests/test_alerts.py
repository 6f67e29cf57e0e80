"""Standing questions: create, list and delete them (admin token), their Atom feed, webhook calls to a local
receiver, what a publish reads (only what is new), restarts and no repeats."""

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lxml import etree

from qa import alerts
from qa.alerts import deliver
from qa.web import create_app

from .conftest import SEEDS, Runner, qa_server
from .test_fetch import site  # noqa: F401 - a site served on 127.0.0.1, for qa watch

TOKEN = "alert-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ATOM = "{http://www.w3.org/2005/Atom}"
Q = "Who is the mayor of Lowmoor?"
ANSWERS = {"title": "Tom Brandt takes office in Lowmoor", "published": "2024-12-08", "source": "Lowmoor Echo",
           "text": "Tom Brandt was sworn in as the mayor of Lowmoor on Monday, taking over from Jane Okafor.\n\n"
                   "He promised to reopen the swimming baths within a year."}
UNRELATED = {"title": "Harvest fair draws crowds", "published": "2024-12-09", "source": "Farm Weekly",
             "text": "Thousands of visitors came to the harvest fair to see prize pumpkins and sheep shearing.\n\n"
                     "The fair runs until Sunday."}


@pytest.fixture
def alert_app(tmp_path, seeded_index, fake_embedder):
    index = tmp_path / "index"
    shutil.copytree(seeded_index, index)
    return create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder,
                       "SEEDS_DIR": str(SEEDS), "ADMIN_TOKEN": TOKEN})


@pytest.fixture
def client(alert_app):
    return alert_app.test_client()


class Receiver:
    """A local webhook receiver on 127.0.0.1: records each POST; answers with `statuses` in turn, then 200."""

    def __init__(self, statuses=()):
        self.got: list[tuple[float, dict]] = []
        self.statuses = list(statuses)
        self.calls = 0
        mine = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                mine.calls += 1
                status = mine.statuses.pop(0) if mine.statuses else 200
                if status == 200:
                    mine.got.append((time.monotonic(), json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int = 1, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return [b for _, b in self.got]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def feed_entries(client, alert_id: str, want: int = 0, timeout: float = 5.0) -> list:
    """The feed's entries, polled until there are `want` of them (a POSTed article is read in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/alerts/{alert_id}.atom")
        assert resp.status_code == 200 and resp.content_type.startswith("application/atom+xml")
        entries = etree.fromstring(resp.data).findall(f"{ATOM}entry")
        if len(entries) >= want or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def create(client, **body) -> dict:
    resp = client.post("/api/alerts", json={"q": Q, **body}, headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


# --- create, list, delete --------------------------------------------------------------------------------

def test_create_list_delete_with_the_token(client):
    made = create(client, source="Lowmoor Echo", **{"from": "2024-01-01"})
    assert made["q"] == Q and made["feed"] == f"/alerts/{made['id']}.atom" and made["created"].endswith("Z")
    assert made["source"] == ["Lowmoor Echo"] and made["from"] == "2024-01-01" and made["webhook"] is None
    listed = client.get("/api/alerts", headers=AUTH).get_json()["alerts"]
    assert [a["id"] for a in listed] == [made["id"]] and listed[0]["entries"] == 0
    assert client.get(made["feed"]).status_code == 200  # the feed is public
    assert client.delete(f"/api/alerts/{made['id']}", headers=AUTH).status_code == 204
    assert client.get("/api/alerts", headers=AUTH).get_json() == {"alerts": []}
    gone = client.delete(f"/api/alerts/{made['id']}", headers=AUTH)
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "alert_not_found"
    assert client.get(made["feed"]).get_json()["error"]["code"] == "alert_not_found"


@pytest.mark.parametrize("method, path", [("post", "/api/alerts"), ("get", "/api/alerts"),
                                          ("delete", "/api/alerts/0123456789abcdef")])
def test_the_token_is_needed(client, method, path):
    none = getattr(client, method)(path, json={"q": Q})
    assert none.status_code == 401 and none.get_json()["error"]["code"] == "unauthorized"
    wrong = getattr(client, method)(path, json={"q": Q}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "forbidden"


def test_without_an_admin_token_there_are_no_alert_writes(app):
    resp = app.test_client().post("/api/alerts", json={"q": Q}, headers=AUTH)
    assert resp.status_code in (404, 405) and "error" in resp.get_json()


@pytest.mark.parametrize("body, code", [
    ({}, "missing_query"),
    ({"q": "  "}, "empty_query"),
    ({"q": Q, "webhook": "ftp://example.com/x"}, "invalid_webhook"),
    ({"q": Q, "webhook": "http:///nohost"}, "invalid_webhook"),
    ({"q": Q, "webhook": 7}, "invalid_webhook"),
    ({"q": Q, "from": "2024-13-01"}, "invalid_date"),
    ({"q": Q, "source": [""]}, "invalid_source"),
])
def test_bad_alerts_are_refused_with_a_code(client, body, code):
    resp = client.post("/api/alerts", json=body, headers=AUTH)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == code


# --- the feed and the webhook ----------------------------------------------------------------------------

def test_a_new_article_that_answers_makes_a_feed_entry_and_a_webhook_call(client, receiver):
    made = create(client, webhook=receiver.url)
    t0 = time.monotonic()
    resp = client.post("/api/articles", json=ANSWERS, headers=AUTH)
    assert resp.status_code == 201
    article_id = resp.get_json()["id"]
    [entry] = feed_entries(client, made["id"], 1)
    assert entry.findtext(f"{ATOM}title") == ANSWERS["title"]
    assert entry.findtext(f"{ATOM}published") == "2024-12-08T00:00:00Z"
    summary = entry.findtext(f"{ATOM}summary")
    assert "Tom Brandt was sworn in as the mayor of Lowmoor" in summary
    link = entry.find(f"{ATOM}link").get("href")
    assert f"/articles/{article_id}?" in link and "#p-" in link
    assert "as of 8 December 2024" in entry.findtext(f"{ATOM}content")
    # The link leads to the cited passage, with the answer marked.
    page = client.get(link.split("localhost", 1)[1])
    assert page.status_code == 200 and "Tom Brandt" in page.get_data(as_text=True)

    [body] = receiver.wait(1)
    took = receiver.got[0][0] - t0
    assert body["alert"] == made["id"] and body["q"] == Q
    answer = body["answer"]
    assert answer["citation"]["article_id"] == article_id and answer["text"] == summary
    art = client.get(f"/api/articles/{article_id}").get_json()
    assert art["text"][answer["citation"]["start"]:answer["citation"]["end"]] == answer["text"]
    assert took < 5, f"the webhook came {took:.1f} s after the POST"
    assert client.get("/api/alerts", headers=AUTH).get_json()["alerts"][0]["entries"] == 1


def test_an_article_that_does_not_answer_makes_no_entry(client, receiver, alert_app):
    made = create(client, webhook=receiver.url)
    client.post("/api/articles", json=UNRELATED, headers=AUTH)
    svc = alert_app.extensions["qa"]
    svc.check_alerts()  # whatever the background check is doing, this one has read the article too
    assert feed_entries(client, made["id"], 0) == []
    assert receiver.wait(1, timeout=0.5) == [] and receiver.calls == 0


def test_filters_apply(client):
    other = create(client, source="Someone Else")
    dated = create(client, **{"to": "2020-12-31"})
    mine = create(client)
    client.post("/api/articles", json=ANSWERS, headers=AUTH)
    assert len(feed_entries(client, mine["id"], 1)) == 1
    assert feed_entries(client, other["id"], 0) == [] and feed_entries(client, dated["id"], 0) == []


def test_webhook_failures_are_retried_with_backoff_then_given_up(client, alert_app, monkeypatch, caplog):
    monkeypatch.setattr(deliver, "BACKOFF", 0.05)
    flaky = Receiver(statuses=[500, 503])
    dead = Receiver(statuses=[500] * 10)
    try:
        a = create(client, webhook=flaky.url)
        b = create(client, webhook=dead.url)
        client.post("/api/articles", json=ANSWERS, headers=AUTH)
        assert len(flaky.wait(1)) == 1 and flaky.calls == 3  # two failures, then delivered
        store = alerts.AlertStore(alert_app.extensions["qa"].index_dir)
        deadline = time.monotonic() + 10
        while store.deliveries(b["id"])[0]["done"] != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        [given_up] = store.deliveries(b["id"])
        assert given_up["done"] == 2 and given_up["attempts"] == deliver.ATTEMPTS and "HTTP 500" in given_up["error"]
        assert dead.calls == deliver.ATTEMPTS and dead.got == []
        assert store.deliveries(a["id"])[0]["done"] == 1
        assert "failed (attempt 1)" in caplog.text and "given up" in caplog.text
    finally:
        flaky.close()
        dead.close()


def test_a_webhook_that_does_not_answer_does_not_hold_up_the_write(client, monkeypatch):
    import socket

    monkeypatch.setattr(deliver, "TIMEOUT", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        create(client, webhook=f"http://127.0.0.1:{silent.getsockname()[1]}/hook")
        t0 = time.monotonic()
        assert client.post("/api/articles", json=ANSWERS, headers=AUTH).status_code == 201
        assert time.monotonic() - t0 < 5
    finally:
        silent.close()


def test_redirects_are_not_followed(client, alert_app, monkeypatch):
    monkeypatch.setattr(deliver, "BACKOFF", 0.05)
    mover = Receiver(statuses=[302] * 10)
    try:
        a = create(client, webhook=mover.url)
        client.post("/api/articles", json=ANSWERS, headers=AUTH)
        store = alerts.AlertStore(alert_app.extensions["qa"].index_dir)
        deadline = time.monotonic() + 5
        while not (store.deliveries(a["id"]) and store.deliveries(a["id"])[0]["done"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        [d] = store.deliveries(a["id"])
        assert d["done"] == 2 and d["attempts"] == 1 and "302" in d["error"]
    finally:
        mover.close()


# --- cost, repeats, restarts ------------------------------------------------------------------------------

def test_a_publish_reads_only_what_is_new(client, alert_app):
    create(client)
    svc = alert_app.extensions["qa"]
    client.post("/api/articles", json=UNRELATED, headers=AUTH)
    got = svc.check_alerts()  # the background check may have read it first: then nothing is left
    assert got.articles in (0, 1)
    client.post("/api/articles", json=ANSWERS, headers=AUTH)
    time.sleep(0.2)
    again = svc.check_alerts()
    assert again.articles == 0 and again.pairs == 0  # everything published has been read


def test_a_first_question_does_not_read_what_came_before_it(client, alert_app):
    gone = create(client)
    assert client.delete(f"/api/alerts/{gone['id']}", headers=AUTH).status_code == 204
    client.post("/api/articles", json=UNRELATED, headers=AUTH)  # no standing question reads it
    create(client)
    assert alert_app.extensions["qa"].check_alerts().articles == 0


def test_an_article_already_reported_is_not_reported_again(client, alert_app, receiver):
    made = create(client, webhook=receiver.url)
    article = {**ANSWERS, "id": "lowmoor-mayor"}
    client.post("/api/articles", json=article, headers=AUTH)
    assert len(feed_entries(client, made["id"], 1)) == 1 and len(receiver.wait(1)) == 1
    # The same article again (unchanged), then changed: a new version, but the article was reported.
    assert client.post("/api/articles", json=article, headers=AUTH).status_code == 200
    changed = {**article, "text": ANSWERS["text"] + "\n\nThe council met afterwards."}
    assert client.post("/api/articles", json=changed, headers=AUTH).get_json()["status"] == "updated"
    alert_app.extensions["qa"].check_alerts()
    time.sleep(0.3)
    assert len(feed_entries(client, made["id"], 2, timeout=0.5)) == 1 and len(receiver.got) == 1


def test_alerts_and_their_feeds_survive_a_restart(alert_app, fake_embedder, receiver, monkeypatch):
    client = alert_app.test_client()
    made = create(client)
    client.post("/api/articles", json=ANSWERS, headers=AUTH)
    assert len(feed_entries(client, made["id"], 1)) == 1
    index = alert_app.config["INDEX_DIR"]
    # A webhook call owed while its receiver is down...
    store = alerts.AlertStore(index)
    down = Receiver(statuses=[503])
    owed = create(client, webhook=down.url)
    monkeypatch.setattr(deliver, "BACKOFF", 30.0)
    client.post("/api/articles", json={**ANSWERS, "title": "Lowmoor's new mayor", "published": "2024-12-10"},
                headers=AUTH)
    deadline = time.monotonic() + 5
    while not (store.deliveries(owed["id"]) and store.deliveries(owed["id"])[0]["attempts"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    down.close()
    # ... a new process over the same folder: the alerts, the feed and the owed call are all there.
    restarted = create_app({"TESTING": True, "INDEX_DIR": index, "MODEL": "fake", "EMBEDDER": fake_embedder,
                            "SEEDS_DIR": str(SEEDS), "ADMIN_TOKEN": TOKEN}).test_client()
    ids = {a["id"] for a in restarted.get("/api/alerts", headers=AUTH).get_json()["alerts"]}
    assert ids == {made["id"], owed["id"]}
    assert len(feed_entries(restarted, made["id"], 2)) == 2
    [pending] = store.deliveries(owed["id"])
    assert pending["done"] == 0 and pending["attempts"] == 1
    with store._tx() as c:  # its retry is due now, and it goes to a receiver that answers
        c.execute("UPDATE deliveries SET due = 0, url = ?", (receiver.url,))
    alerts.resume_sending(index)
    [body] = receiver.wait(1)
    assert body["alert"] == owed["id"]


def test_cli_alerts_and_ingest(alert_app, receiver, tmp_path):
    runner = Runner(alert_app)
    out = runner.invoke(["alerts", "add", Q, "--webhook", receiver.url]).output
    alert_id = out.split()[0]
    assert f"/alerts/{alert_id}.atom" in out
    assert runner.invoke(["alerts", "add", Q, "--webhook", "gopher://x"]).exit_code == 1
    articles = tmp_path / "news.jsonl"
    articles.write_text(json.dumps(ANSWERS) + "\n" + json.dumps(UNRELATED) + "\n")
    result = runner.invoke(["ingest", str(articles), "-q"])
    assert result.exit_code == 0, result.output
    [body] = receiver.wait(1)  # sent before `qa ingest` returned
    assert body["alert"] == alert_id and "Tom Brandt" in body["answer"]["text"]
    listed = json.loads(runner.invoke(["alerts", "list", "--json"]).output)["alerts"]
    assert [(a["id"], a["entries"]) for a in listed] == [(alert_id, 1)]
    assert "1 answer so far" in runner.invoke(["alerts", "list"]).output
    assert runner.invoke(["alerts", "rm", alert_id]).output.startswith("Deleted")
    assert runner.invoke(["alerts", "rm", alert_id]).exit_code == 1
    assert "No standing questions" in runner.invoke(["alerts", "list"]).output


def test_qa_watch_reads_what_it_adds(alert_app, site, monkeypatch):
    monkeypatch.setenv("QA_FETCH_INTERVAL", "0")
    runner = Runner(alert_app)
    alert_id = runner.invoke(["alerts", "add", "How many residents signed the petition?"]).output.split()[0]
    result = runner.invoke(["watch", site.base + "/feed.rss", "--rounds", "1", "--every", "1", "-q"])
    assert result.exit_code == 0, result.output
    client = alert_app.test_client()
    [entry] = feed_entries(client, alert_id, 1)
    assert entry.findtext(f"{ATOM}title") == "Evening ferries approved"
    assert "4,000 residents" in entry.findtext(f"{ATOM}summary")


# --- the real model, real processes -------------------------------------------------------------------------

@pytest.mark.slow
def test_real_server_feed_and_webhook_within_five_seconds(tmp_path):
    """`qa serve` with the packaged model: a standing question, a new article POSTed, the webhook on
    127.0.0.1 and the feed within 5 s of the POST; an article that does not answer adds nothing."""
    import urllib.request

    receiver = Receiver()
    index = tmp_path / "index"
    try:
        with qa_server(index, env={"QA_ADMIN_TOKEN": TOKEN, "QA_WORKERS": "1"}) as (port, _log):
            base = f"http://127.0.0.1:{port}"

            def call(method, path, body=None):
                req = urllib.request.Request(base + path, method=method, headers={**AUTH, "Content-Type": "application/json"},
                                             data=json.dumps(body).encode() if body is not None else None)
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, r.read()

            status, body = call("POST", "/api/alerts", {"q": Q, "webhook": receiver.url})
            assert status == 201
            made = json.loads(body)
            call("POST", "/api/articles", UNRELATED)
            t0 = time.monotonic()
            status, _ = call("POST", "/api/articles", ANSWERS)
            [got] = receiver.wait(1, timeout=30)
            took = receiver.got[0][0] - t0
            assert "Tom Brandt" in got["answer"]["text"] and got["answer"]["citation"]["published"] == "2024-12-08"
            with urllib.request.urlopen(base + made["feed"], timeout=30) as r:
                entries = etree.fromstring(r.read()).findall(f"{ATOM}entry")
            assert [e.findtext(f"{ATOM}title") for e in entries] == [ANSWERS["title"]]
            print(f"\nwebhook received {took:.2f} s after the POST of the article")
            assert took <= 5.0
    finally:
        receiver.close()
