"""The faults for real: kill -9 during `qa ingest`, two writers, a live server read during an ingest.

One story, real processes and the real model throughout:
1. an index holds two articles; `qa ingest` of 3,000 more is SIGKILLed after its first batch commits,
   while a second `qa ingest` is refused with "index is locked";
2. the folder is checked as the kill left it (a copy): whole articles only, stores in step, searchable;
3. `qa serve` starts on it (/readyz 503 until loaded) and answers a stream of searches while a re-run of
   the ingest adds the rest, publishing new snapshots the server picks up without a restart;
4. the wire: malformed requests get JSON 4xx, even bytes that never become a request; the load script runs clean.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from qa.ingest.chunk import title_prefix
from qa.embed.model import DEFAULT_MODEL
from qa.web.service import Service
from qa.index import DB_NAME, LOCK_NAME, MANIFEST_NAME, Index, Writer, lock_index

from .conftest import ROOT, SEEDS, qa_server

pytestmark = pytest.mark.slow

N_ARTICLES = 3000  # many commit batches (512 sentences each): the kill lands between two, and the run
# lasts long enough (several seconds) for the second writers below to find it still running
TOKEN = "live-token"
TOWNS = ["Kelvik", "Marrow", "Oskby", "Telford", "Brannock", "Quillon", "Dunmere", "Haverly"]
THINGS = ["bridge", "library", "ferry", "school", "clinic", "harbour wall", "tram line", "market hall"]


def article_line(n: int) -> str:
    town, thing = TOWNS[n % len(TOWNS)], THINGS[n // len(TOWNS) % len(THINGS)]
    return json.dumps({"id": f"bulletin-{n}", "title": f"Bulletin {n}: {town} funds a {thing}",
                       "text": f"The {town} council voted on Monday to fund {thing} project number {n}. "
                               f"Officials said work on project {n} starts in spring."})


def qa(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qa", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=kw.pop("timeout", 300), env={**os.environ, "HF_HUB_OFFLINE": "1"}, **kw)


def wait_for(predicate, timeout: float, what: str, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def lock_holder(index) -> str:
    try:
        return (index / LOCK_NAME).read_text().strip()
    except OSError:
        return ""


def db_count(index, sql: str) -> int:
    try:
        db = sqlite3.connect(f"file:{index / DB_NAME}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """Kill -9 a real `qa ingest` after its first commit; try a second writer while it runs."""
    base = tmp_path_factory.mktemp("crash")
    index, feed = base / "index", base / "bulletins.jsonl"
    feed.write_text("\n".join(article_line(n) for n in range(N_ARTICLES)) + "\n")
    # The "before" state, embedded by the model the ingests below use (a fake's vectors under the real
    # model's name would be mixed with theirs).
    seeded = qa("ingest", str(SEEDS), "--index", str(index), "-q")
    assert seeded.returncode == 0 and "2 articles added" in seeded.stdout, seeded.stdout + seeded.stderr
    before = json.loads((index / MANIFEST_NAME).read_text())

    proc = subprocess.Popen([sys.executable, "-m", "qa", "ingest", str(feed), "--index", str(index), "-q"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_for(lambda: lock_holder(index) == str(proc.pid) or proc.poll() is not None, 120, "the ingest to lock")
        t0 = time.monotonic()
        second = qa("ingest", str(SEEDS), "--index", str(index))
        second_took = time.monotonic() - t0
        t0 = time.monotonic()
        waiting = qa("ingest", str(SEEDS), "--index", str(index), "--wait", "1")
        waiting_took = time.monotonic() - t0
        wait_for(lambda: db_count(index, "SELECT count(*) FROM articles") > 2 or proc.poll() is not None, 300,
                 "the first batch to commit")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        out, err = proc.communicate()
    after = base / "after-kill"
    shutil.copytree(index, after)  # as the kill left it; the live server goes on with `index`
    return {"index": index, "after": after, "feed": feed, "rc": proc.returncode, "stderr": err, "before": before,
            "second": second, "second_took": second_took, "waiting": waiting, "waiting_took": waiting_took}


def test_a_second_ingest_is_refused_while_one_runs(crashed):
    second, waiting = crashed["second"], crashed["waiting"]
    assert second.returncode == 1 and "index is locked" in second.stderr, second.stderr
    assert waiting.returncode == 1 and "index is locked" in waiting.stderr
    assert crashed["waiting_took"] >= 1.0  # --wait 1 waited before giving up
    print(f"\nsecond ingest refused in {crashed['second_took']:.1f} s; with --wait 1 in {crashed['waiting_took']:.1f} s")


def test_kill_9_mid_ingest_leaves_whole_articles_and_a_loadable_index(crashed):
    assert crashed["rc"] == -signal.SIGKILL, f"the ingest finished before it could be killed: {crashed['stderr']}"
    after = crashed["after"]
    db = sqlite3.connect(after / DB_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    lines = sorted(int(r[0].rsplit(":", 1)[1]) for r in db.execute("SELECT origin FROM articles WHERE id LIKE 'bulletin-%'"))
    assert 0 < len(lines) < N_ARTICLES and lines == list(range(1, len(lines) + 1))  # a prefix: whole batches
    for version, art_id, text in db.execute("SELECT version, id, text FROM articles"):
        spans = db.execute("SELECT id, start_char, end_char FROM passages WHERE version = ? ORDER BY start_char",
                           (version,)).fetchall()
        assert spans and spans[-1][2] <= len(text), art_id

    # The published snapshot: the one before the run, or a later one with whole articles, every segment whole.
    idx = Index.load(after, DEFAULT_MODEL, 384)
    assert idx.generation >= crashed["before"]["generation"]
    visible = db.execute("SELECT count(*) FROM articles WHERE gen <= :g AND (deleted_gen IS NULL OR deleted_gen > :g)",
                         {"g": idx.generation}).fetchone()[0]
    assert idx.article_count == visible  # exactly the articles its generation committed
    live_rows = sum(len(p.seg) - (0 if p.live is None else int((~p.live).sum())) for p in idx.parts)
    assert live_rows == idx.passage_count == db.execute(
        "SELECT count(*) FROM passages p JOIN articles a ON a.version = p.version WHERE a.gen <= ?",
        (idx.generation,)).fetchone()[0]
    # The next writer publishes everything the killed one committed: every passage in exactly one segment.
    Writer(after, DEFAULT_MODEL, 384).close()
    idx = Index.load(after, DEFAULT_MODEL, 384)
    committed = [r[0] for r in db.execute("SELECT id FROM passages ORDER BY id")]
    held = sorted(pid for p in idx.parts for pid in p.seg.pids.tolist())
    assert held == committed and idx.article_count == 2 + len(lines)
    # And it answers, with the model that embedded it: the seeds' vectors are the model's own (a seed
    # sentence embedded again matches its stored vector), not another embedder's under its name.
    svc = Service(after, DEFAULT_MODEL, "openvino-int8")
    index = svc.searcher().index
    seed = index.article("assad-lands-in-russia")
    pid = seed["passages"][0]["id"]
    (a, b), *_ = index.sentences(None, {}, [pid]).full(pid)[0]
    again = svc.embedder.encode([title_prefix(seed["title"]) + seed["text"][a:b]])[0]
    assert index.sentences(again, {}, [pid]).full(pid)[2][0] > 0.95
    hits = svc.searcher().search("Where did Assad flee to?", 5)
    assert hits and hits[0].citation.article_id.startswith("assad-")
    for h in hits:
        art = svc.searcher().index.article(h.citation.article_id)
        assert art["text"][h.citation.start:h.citation.end] == h.text
    print(f"\nkilled after {len(lines)} of {N_ARTICLES} articles committed; published snapshot: "
          f"generation {idx.generation}, {idx.article_count} articles, {idx.passage_count} passages")


@pytest.fixture(scope="module")
def live(crashed):
    """`qa serve` on the folder the kill left, with writes enabled; notes what /healthz and /readyz said meanwhile."""
    index = crashed["index"]
    seen = []

    def ready(port: int) -> bool:
        health, ready_ = request(port, "GET", "/healthz")[0], request(port, "GET", "/readyz")[0]
        seen.append((health, ready_))
        return ready_ == 200

    with qa_server(index, {"QA_ADMIN_TOKEN": TOKEN}, probe=ready) as (port, log):
        yield {"port": port, "index": index, "feed": crashed["feed"], "seen": seen, "log": log}


def request(port: int, method: str, path: str, body=None, headers=None, timeout: float = 60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def test_readyz_says_503_until_the_index_is_loaded(live):
    seen = live["seen"]
    assert (200, 503) in seen, seen  # up and answering, not yet ready
    assert seen[-1] == (200, 200)
    print(f"\n/readyz answered 503 {seen.count((200, 503))} times while the model loaded, then 200")


def test_searches_during_an_ingest_see_one_snapshot_each(live):
    port, index = live["port"], live["index"]
    questions = ["Where did Assad flee to?", "Which council voted to fund a ferry?", "When does work on project 300 start?",
                 "Who is the leader of HTS?", "Kelvik bridge project"]
    answers, errors, stop = [], [], threading.Event()

    def reader(n: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = n
        while not stop.is_set():
            q = questions[i % len(questions)]
            i += 1
            try:
                conn.request("GET", "/api/search?" + urllib.parse.urlencode({"q": q, "k": 10}))
                r = conn.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            if r.status != 200:
                errors.append((r.status, body[:300]))
                continue
            answers.append((int(r.headers["X-Index-Generation"]), json.loads(body)["results"]))
            time.sleep(0.02)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    start_gen = json.loads((index / MANIFEST_NAME).read_text())["generation"]
    try:
        rerun = subprocess.Popen([sys.executable, "-m", "qa", "ingest", str(live["feed"]), "--index", str(index), "-q"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1"})
        out, err = rerun.communicate(timeout=300)
        time.sleep(1.0)  # a few more answers from the final snapshot
    finally:
        stop.set()
        for t in threads:
            t.join()

    # The re-run completed the interrupted ingest: the rest added, what the killed run committed skipped.
    assert rerun.returncode == 0, err
    m = re.search(r"(\d+) articles added, \d+ updated, (\d+) skipped as duplicates", out)
    added, dupes = int(m[1]), int(m[2])
    assert added + dupes == N_ARTICLES and dupes > 0, out
    manifest = json.loads((index / MANIFEST_NAME).read_text())
    assert manifest["articles"] == 2 + N_ARTICLES
    db = sqlite3.connect(index / DB_NAME)
    assert manifest["generation"] == int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    # No errors; the server moved through snapshots without a restart; no answer mixed in newer passages.
    assert not errors, errors[:5]
    gens = [g for g, _ in answers]
    assert gens[0] == start_gen and gens[-1] == manifest["generation"] and len(set(gens)) >= 2, sorted(set(gens))
    for gen, results in answers:
        for res in results:
            row = db.execute("SELECT a.gen FROM passages p JOIN articles a ON a.version = p.version WHERE p.id = ?",
                             (res["passage_id"],)).fetchone()
            assert row is not None and row[0] <= gen, (gen, res["passage_id"], row)
            text = db.execute("SELECT text FROM articles WHERE id = ? AND deleted_gen IS NULL",
                              (res["citation"]["article_id"],)).fetchone()[0]
            assert text[res["citation"]["start"]:res["citation"]["end"]] == res["text"]

    # While another writer holds the lock (past the API's 2 s wait), a write through the API is told so.
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    article = json.dumps({"id": "live-note", "title": "Live note", "text": "The Oskby ferry timetable changed on Friday."})
    with lock_index(index):
        status, headers, body = request(port, "POST", "/api/articles", article, auth)
    assert status == 503 and json.loads(body)["error"]["code"] == "index_locked", body
    # With the lock free, the write goes through and is searchable at once.
    status, _, body = request(port, "POST", "/api/articles", article, auth)
    assert status == 201, body
    status, headers, body = request(port, "GET", "/api/search?q=Oskby+ferry+timetable&k=1")
    assert json.loads(body)["results"][0]["citation"]["article_id"] == "live-note"
    print(f"\n{len(answers)} answers, 0 errors, generations {sorted(set(gens))}; re-run: {out.strip()}")


@pytest.mark.parametrize("raw, status, code", [
    (b"GET /api/search?q=%FF%FE HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_encoding"),
    (b"GET /api/search?q=a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_query"),
    (b"GET /api/search?q=hi&k=abc HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_k"),
    (b"GET /api/search?q=hi&k=51 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "k_out_of_range"),
    (b"GET /api/search?q=" + b"x" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, "query_too_long"),
    (b"GET /api/articles/%C0%AF HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_encoding"),
    (b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{bad}",
     400, "invalid_json"),
    (b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi", 415,
     "unsupported_media_type"),
    (b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
     + b" " * 100000, 413, "request_entity_too_large"),
    (b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"".join(b"4000\r\n" + b" " * 0x4000 + b"\r\n" for _ in range(6)) + b"0\r\n\r\n", 413, "request_entity_too_large"),
    (b"BREW /api/search HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
    (b"GET /no/such/thing HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
    (b"DELETE /api/articles/live-note HTTP/1.1\r\nHost: x\r\n\r\n", 401, "unauthorized"),
    (b"DELETE /api/articles/live-note HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n", 403, "forbidden"),
])
def test_malformed_requests_on_the_wire_get_json_4xx(live, raw, status, code):
    got, headers, body, data = send_raw(live["port"], raw)
    assert got == status, data[:500]
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == code
    assert headers["x-content-type-options"] == "nosniff" and "frame-ancestors 'none'" in headers["content-security-policy"]
    assert b"Traceback" not in data


@pytest.mark.parametrize("raw", [
    b"GET /api/search?q=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",  # raw bytes: not HTTP, never reaches the app
    b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"\x00\x01garbage\r\n\r\n",
])
def test_requests_that_are_not_http_get_json_400_from_the_server_itself(live, raw):
    got, headers, body, data = send_raw(live["port"], raw)
    assert got == 400 and headers["content-type"] == "application/json", data[:300]  # not gunicorn's HTML page
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert headers["x-content-type-options"] == "nosniff" and "frame-ancestors 'none'" in headers["content-security-policy"]
    assert b"Traceback" not in data


def send_raw(port: int, raw: bytes):
    """Send bytes as they are; return status, lower-cased headers, body and the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body, data


def test_static_files_and_pages_carry_the_security_headers(live):
    for path in ["/static/style.css", "/", "/openapi.json", "/healthz"]:
        status, headers, _ = request(live["port"], "GET", path)
        assert status == 200, path
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY", path
        assert "default-src 'self'" in headers["Content-Security-Policy"], path


def test_load_script_runs_clean(live):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--url", f"http://127.0.0.1:{live['port']}",
                        "--clients", "2", "--duration", "3", "--json"], capture_output=True, text=True, timeout=120)
    figures = json.loads(r.stdout)
    assert r.returncode == 0 and figures["errors"] == 0 and figures["ok"] > 0, (figures, r.stderr)
    print(f"\nload smoke: {figures}")
