"""Crash and concurrency safety of the index folder, in-process with the fake embedder.

The same faults with real processes (kill -9, two `qa ingest`s, a live server)
are in test_reliability_process.py.
"""

import json
import logging
import shutil
import sqlite3
import threading
import time

import faiss
import numpy as np
import pytest

from qa import create_app, store
from qa.errors import IndexCorrupt, IndexLocked
from qa.ingest import Article
from qa.service import Service
from qa.store import DB_NAME, FAISS_NAME, MANIFEST_NAME, Index, Writer, lock_index



@pytest.fixture
def index(tmp_path, seeded_index):
    path = tmp_path / "index"
    shutil.copytree(seeded_index, path)
    return path


def articles(n, start=0, word="zanzibar"):
    return [Article(id=f"{word}-{i}", title=f"Report {i}",
                    text=f"The {word} council met for session {i}. It approved plan {i} on Monday.")
            for i in range(start, start + n)]


def add(svc, arts):
    from qa.indexer import add_articles

    with svc.writer() as w:
        return add_articles(w, svc.embedder, arts)


# --- a damaged folder refuses to load, and says why -----------------------------------------

@pytest.mark.parametrize("content, expect", [
    (b"{not json", "manifest.json is unreadable"),
    (b'{"model": "fake"}', "missing dim, generation"),
    (b'["a list"]', "manifest.json is unreadable"),
])
def test_bad_manifest_refuses_with_a_clear_message(index, content, expect):
    (index / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(IndexCorrupt) as e:
        Index.load(index, "fake", 64)
    assert expect in e.value.message and "qa ingest" in e.value.message


def test_corrupt_database_refuses_with_a_clear_message(index):
    for p in index.glob(DB_NAME + "*"):
        p.unlink()
    (index / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IndexCorrupt) as e:
        Index.load(index, "fake", 64)
    assert "not a readable index database" in e.value.message
    with pytest.raises(IndexCorrupt):  # a writer refuses too, instead of crashing
        Writer(index, "fake", 64)
    lock_index(index).close()  # and it let go of the lock


def test_database_older_than_manifest_refuses(index):
    manifest = json.loads((index / MANIFEST_NAME).read_text())
    manifest["generation"] += 5
    (index / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexCorrupt, match="different runs"):
        Index.load(index, "fake", 64)
    # The database is the truth: the next writer republishes from it.
    Writer(index, "fake", 64).close()
    assert Index.load(index, "fake", 64).generation == manifest["generation"] - 5


def test_faiss_file_that_disagrees_is_rebuilt_with_a_warning(index, caplog):
    good = Index.load(index, "fake", 64)
    stale = faiss.IndexIDMap2(faiss.IndexFlatIP(64))
    stale.add_with_ids(np.ones((3, 64), dtype=np.float32), np.arange(3, dtype=np.int64))
    faiss.write_index(stale, str(index / FAISS_NAME))  # as if killed between the faiss and manifest writes
    with caplog.at_level(logging.WARNING, logger="qa.store"):
        idx = Index.load(index, "fake", 64)
    assert "rebuilding the vectors from the database" in caplog.text
    assert idx.vectors.ntotal == good.vectors.ntotal == good.passage_count
    (index / FAISS_NAME).write_bytes(b"garbage")
    assert Index.load(index, "fake", 64).vectors.ntotal == good.passage_count


def test_stale_temporary_files_are_cleaned_up(index):
    (index / f".{FAISS_NAME}.12345.tmp").write_bytes(b"half a file")
    Writer(index, "fake", 64).close()
    assert not list(index.glob(".*.tmp"))


# --- a running service keeps its last good snapshot --------------------------------------------

def test_failed_reload_keeps_serving_the_last_good_snapshot(index, fake_embedder, caplog):
    app = create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder})
    client = app.test_client()
    first = client.get("/api/search?q=Assad&k=2")
    assert first.status_code == 200
    gen = int(first.headers["X-Index-Generation"])
    good_manifest = (index / MANIFEST_NAME).read_bytes()

    (index / MANIFEST_NAME).write_bytes(b"{truncated")
    with caplog.at_level(logging.ERROR, logger="qa.service"):
        r = client.get("/api/search?q=Assad&k=2")
    assert r.status_code == 200 and r.get_json()["results"] == first.get_json()["results"]
    assert int(r.headers["X-Index-Generation"]) == gen
    assert "still serving generation" in caplog.text
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and "manifest.json is unreadable" in ready["reload_error"]

    # A database that does not match the manifest: refused, old snapshot serves on.
    bad = json.loads(good_manifest)
    bad["generation"] += 7
    (index / MANIFEST_NAME).write_text(json.dumps(bad))
    assert client.get("/api/search?q=Assad").status_code == 200
    assert "different runs" in client.get("/readyz").get_json()["reload_error"]

    # The next good publish is picked up without a restart.
    (index / MANIFEST_NAME).write_bytes(good_manifest)
    svc = app.extensions["qa"]
    add(svc, articles(3))
    r = client.get("/api/search?q=zanzibar council&k=1")
    assert r.get_json()["results"][0]["citation"]["title"].startswith("Report")
    assert int(r.headers["X-Index-Generation"]) > gen
    assert "reload_error" not in client.get("/readyz").get_json()


# --- readers never see more than their snapshot ----------------------------------------------------

def test_unpublished_rows_are_invisible_to_readers(index, fake_embedder, monkeypatch):
    monkeypatch.setattr(store, "PUBLISH_EVERY", 1e9)  # commit without publishing
    before = Index.load(index, "fake", 64)
    svc = Service(index, "fake", embedder=fake_embedder)
    from qa.indexer import add_articles

    w = svc.writer()
    try:
        add_articles(w, fake_embedder, articles(2, word="quixotic"))
        new_ids = [r[0] for r in w.conn.execute("SELECT id FROM passages WHERE gen > ?", (before.generation,))]
        assert new_ids
        for idx in (before, Index.load(index, "fake", 64)):  # committed, not yet published
            assert idx.generation == before.generation
            assert idx.lexical('"quixotic"', 10) == []
            assert idx.passages(new_ids) == {}
            art_id = w.conn.execute("SELECT id FROM articles WHERE gen > ?", (before.generation,)).fetchone()[0]
            assert idx.article(art_id) is None
    finally:
        w.close()  # publishes
    after = Index.load(index, "fake", 64)
    assert after.generation > before.generation and after.lexical('"quixotic"', 10)


def test_one_request_sees_one_database_state(index):
    idx = Index.load(index, "fake", 64)
    with idx.reading():
        n1 = idx.db.execute("SELECT count(*) FROM passages").fetchone()[0]
        with Writer(index, "fake", 64) as w:
            w.delete("assad-lands-in-russia")
        n2 = idx.db.execute("SELECT count(*) FROM passages").fetchone()[0]
    assert n1 == n2  # the delete committed meanwhile, but this read transaction does not see it
    assert idx.db.execute("SELECT count(*) FROM passages").fetchone()[0] < n1


def test_searches_during_writes_see_consistent_snapshots(index, fake_embedder):
    app = create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder})
    app.extensions["qa"].searcher()
    seen, errors, done = [], [], threading.Event()

    def reader():
        client = app.test_client()
        while not done.is_set():
            r = client.get("/api/search?q=zanzibar council session plan&k=10")
            if r.status_code != 200:
                errors.append(r.data)
                continue
            gen = int(r.headers["X-Index-Generation"])
            seen.append((gen, [h["passage_id"] for h in r.get_json()["results"]]))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    svc = Service(index, "fake", embedder=fake_embedder)
    for batch in range(6):
        add(svc, articles(5, start=batch * 5))
        with svc.writer() as w:  # updates and deletes too
            assert w.delete(f"zanzibar-{batch}")
        time.sleep(0.05)
    time.sleep(0.3)
    done.set()
    for t in threads:
        t.join()
    assert not errors
    db = sqlite3.connect(index / DB_NAME)
    gens = {gen for gen, _ in seen}
    assert len(gens) > 2, gens  # the running app picked up new snapshots
    for gen, ids in seen:
        for pid in ids:
            row = db.execute("SELECT gen FROM passages WHERE id = ?", (pid,)).fetchone()
            assert row is None or row[0] <= gen  # never a passage newer than the answering snapshot
    final = json.loads((index / MANIFEST_NAME).read_text())["generation"]
    assert max(gens) == final


# --- one writer -------------------------------------------------------------------------------------

def test_second_writer_is_refused_or_waits(index):
    holder = lock_index(index)
    t0 = time.monotonic()
    with pytest.raises(IndexLocked, match="index is locked"):
        Writer(index, "fake", 64)
    with pytest.raises(IndexLocked):
        Writer(index, "fake", 64, wait=0.3)
    assert time.monotonic() - t0 >= 0.3
    threading.Timer(0.3, holder.close).start()
    with Writer(index, "fake", 64, wait=10) as w:  # gets it once the holder lets go
        assert w.generation >= 1
