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

import numpy as np
import pytest

from qa.web import create_app
from qa.errors import IndexCorrupt, IndexLocked
from qa.index import DB_NAME, MANIFEST_NAME, Index, Writer, lock_index
from qa.index import merge as index_merge
from qa.index import writer as index_writer
from qa.ingest.articles import Article
from qa.web.service import Service



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
    from qa.ingest.pipeline import add_articles

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


def test_damaged_segment_refuses_with_a_clear_message(index):
    seg = json.loads((index / MANIFEST_NAME).read_text())["segments"][0]["name"]
    (index / f"{seg}.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexCorrupt, match="damaged"):
        Index.load(index, "fake", 64)


def test_stale_temporary_files_are_cleaned_up(index):
    (index / f".{MANIFEST_NAME}.12345.tmp").write_bytes(b"half a file")
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
    with caplog.at_level(logging.ERROR, logger="qa.web.service"):
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
    monkeypatch.setattr(index_writer, "PUBLISH_EVERY", 1e9)  # commit without publishing
    before = Index.load(index, "fake", 64)
    svc = Service(index, "fake", embedder=fake_embedder)
    from qa.ingest.pipeline import add_articles

    w = svc.writer()
    try:
        add_articles(w, fake_embedder, articles(2, word="quixotic"))
        assert w.generation > before.generation
        for idx in (before, Index.load(index, "fake", 64)):  # committed, not yet published
            assert idx.generation == before.generation
            assert idx.lexical(["quixot"], 10) == {}
            assert idx.article("quixotic-0") is None
    finally:
        w.close()  # publishes
    after = Index.load(index, "fake", 64)
    assert after.generation > before.generation and after.lexical(["quixot"], 10)
    assert after.article("quixotic-0") is not None


def test_one_request_sees_one_database_state(index):
    idx = Index.load(index, "fake", 64)
    with idx.reading():
        live = "SELECT count(*) FROM articles WHERE deleted_gen IS NULL"
        n1 = idx.db.execute(live).fetchone()[0]
        with Writer(index, "fake", 64) as w:
            w.delete("assad-lands-in-russia")
        n2 = idx.db.execute(live).fetchone()[0]
    assert n1 == n2  # the delete committed meanwhile, but this read transaction does not see it
    assert idx.db.execute(live).fetchone()[0] < n1


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
            row = db.execute("SELECT a.gen, a.deleted_gen FROM passages p JOIN articles a ON a.version = p.version "
                             "WHERE p.id = ?", (pid,)).fetchone()
            # never a passage newer than the answering snapshot, nor one deleted before it
            assert row is None or (row[0] <= gen and (row[1] is None or row[1] > gen))
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


# --- segments: publish, reload, merge, crash recovery -------------------------------------------------

def test_a_publish_adds_a_segment_and_a_reload_opens_only_it(index, fake_embedder):
    svc = Service(index, "fake", embedder=fake_embedder)
    first = Index.load(index, "fake", 64)
    add(svc, articles(3))
    second = Index.load(index, "fake", 64, previous=first)
    old = {p.seg.name: p.seg for p in first.parts}
    reused = [p for p in second.parts if p.seg.name in old]
    assert reused and all(p.seg is old[p.seg.name] for p in reused)  # the same objects, not reopened
    assert len(second.parts) == len(first.parts) + 1
    assert second.passage_count > first.passage_count


def test_segments_merge_and_stay_few(tmp_path, fake_embedder, monkeypatch):
    monkeypatch.setattr(index_writer, "PUBLISH_EVERY", 0.0)  # one publish per batch: many small segments
    svc = Service(tmp_path / "ix", "fake", embedder=fake_embedder)
    from qa.ingest.pipeline import add_articles

    with svc.writer() as w:
        for i in range(40):
            add_articles(w, fake_embedder, articles(2, start=2 * i))
            w._install_merge(wait=True)
    manifest = json.loads((tmp_path / "ix" / MANIFEST_NAME).read_text())
    assert len(manifest["segments"]) < index_merge.MERGE_FACTOR
    idx = Index.load(tmp_path / "ix", "fake", 64)
    assert idx.article_count == 80 and idx.passage_count == sum(len(p.seg) for p in idx.parts)
    hits = Service(tmp_path / "ix", "fake", embedder=fake_embedder).searcher().search("zanzibar session 57 plan", 3)
    assert hits[0].citation.article_id == "zanzibar-57"
    # Merged-away segments stay on disk while the writer runs, for readers that may still be opening
    # them; a writer that stops deletes them, and a reader that loaded them keeps answering.
    assert manifest["retired"]
    on_disk = {p.name.split(".", 1)[0] for p in (tmp_path / "ix").glob("seg-*")}
    assert on_disk == {e["name"] for e in manifest["segments"]}
    assert idx.article_count == 80 and Index.load(tmp_path / "ix", "fake", 64).article_count == 80


def test_a_reader_keeps_a_snapshot_whose_files_a_stopping_writer_deleted(tmp_path, fake_embedder, monkeypatch):
    monkeypatch.setattr(index_writer, "PUBLISH_EVERY", 0.0)
    svc = Service(tmp_path / "ix", "fake", embedder=fake_embedder)
    from qa.ingest.pipeline import add_articles

    with svc.writer() as w:
        for i in range(3):
            add_articles(w, fake_embedder, articles(2, start=2 * i))
    old = Service(tmp_path / "ix", "fake", embedder=fake_embedder).searcher()
    before = {p.seg.name for p in old.index.parts}
    assert len(before) == 3
    with svc.writer() as w:
        w.compact()
    left = {p.name.split(".", 1)[0] for p in (tmp_path / "ix").glob("seg-*")}
    assert not left & before  # compact's inputs are gone from the disk at once
    hits = old.search("zanzibar session 5 plan", 3)  # the old snapshot still reads its unlinked files
    assert hits[0].citation.article_id == "zanzibar-5"


def test_flat_segments_past_the_ivf_threshold_become_one(tmp_path, fake_embedder, monkeypatch):
    """Exact segments holding more than IVF_ABOVE passages between them are merged into one IVF
    segment, though no tier is full; below the threshold, or once they are IVF, tiers alone decide."""
    flat = [{"name": f"f{i}", "kind": "flat", "passages": n} for i, n in enumerate((18000, 17000, 14000, 4000))]
    assert index_merge.plan(flat[:3]) is None  # 49,000 passages
    ivf = {"name": "i0", "kind": "ivf", "passages": 60000}
    assert index_merge.plan([{**flat[0], "deleted": 3500}, *flat[1:], ivf]) is None  # 49,500 live
    assert index_merge.plan(flat) == ["f3", "f2", "f1", "f0"]
    assert index_merge.plan([*flat, ivf]) == ["f3", "f2", "f1", "f0"]

    from qa.index import segment as index_segment
    from qa.ingest.pipeline import add_articles

    monkeypatch.setattr(index_writer, "PUBLISH_EVERY", 0.0)
    monkeypatch.setattr(index_merge, "MERGE_FACTOR", 100)  # tiers alone would never merge here
    monkeypatch.setattr(index_segment, "IVF_ABOVE", 5)
    svc = Service(tmp_path / "ix", "fake", embedder=fake_embedder)
    with svc.writer() as w:
        for i in range(3):
            add_articles(w, fake_embedder, articles(2, start=2 * i))
            w._install_merge(wait=True)
    kinds = [(e["kind"], e["passages"]) for e in json.loads((tmp_path / "ix" / MANIFEST_NAME).read_text())["segments"]]
    assert kinds == [("ivf", 6)], kinds
    hits = Service(tmp_path / "ix", "fake", embedder=fake_embedder).searcher().search("zanzibar session 5 plan", 3)
    assert hits[0].citation.article_id == "zanzibar-5"


def test_deletes_made_during_a_merge_are_kept(tmp_path, fake_embedder, monkeypatch):
    monkeypatch.setattr(index_writer, "PUBLISH_EVERY", 0.0)
    svc = Service(tmp_path / "ix", "fake", embedder=fake_embedder)
    from qa.ingest.pipeline import add_articles

    w = svc.writer()
    w.background_merges = False
    real_merge = index_writer.merge

    def slow_merge(*a, **k):  # a delete lands while the merge is writing its output
        out = real_merge(*a, **k)
        with w.conn:
            pass
        deleted.append(w.delete("zanzibar-1"))
        return out

    deleted = []
    monkeypatch.setattr(index_writer, "merge", slow_merge)
    for i in range(index_merge.MERGE_FACTOR):
        add_articles(w, fake_embedder, articles(1, start=i))
    w.close()
    assert deleted == [True]
    idx = Index.load(tmp_path / "ix", "fake", 64)
    assert idx.article("zanzibar-1") is None
    assert all(h.citation.article_id != "zanzibar-1"
               for h in Service(tmp_path / "ix", "fake", embedder=fake_embedder).searcher().search("session 1 plan 1", 10))


def test_a_writer_killed_after_commit_is_published_by_the_next(index, fake_embedder, monkeypatch):
    before = Index.load(index, "fake", 64)
    monkeypatch.setattr(Writer, "save", lambda self: None)  # killed between its commits and its publish
    svc = Service(index, "fake", embedder=fake_embedder)
    add(svc, articles(2, word="quixotic"))
    with svc.writer() as w:
        w.delete("assad-lands-in-russia")
    assert Index.load(index, "fake", 64).generation == before.generation
    monkeypatch.undo()
    Writer(index, "fake", 64).close()  # the next writer publishes what was committed
    after = Index.load(index, "fake", 64)
    assert after.article("quixotic-1") is not None and after.article("assad-lands-in-russia") is None
    assert after.article_count == before.article_count + 1


def test_a_lost_manifest_is_rebuilt_from_the_segments(index, fake_embedder):
    svc = Service(index, "fake", embedder=fake_embedder)
    add(svc, articles(3))
    svc.delete("zanzibar-1")
    want = Index.load(index, "fake", 64)
    (index / MANIFEST_NAME).unlink()
    Writer(index, "fake", 64).close()
    got = Index.load(index, "fake", 64)
    assert (got.article_count, got.passage_count) == (want.article_count, want.passage_count)
    assert got.article("zanzibar-1") is None and got.article("zanzibar-2") is not None


def test_an_index_from_an_earlier_qa_says_what_to_do(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / DB_NAME)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.commit()
    (old / MANIFEST_NAME).write_text(json.dumps({"format": "qa-index", "schema_version": 1, "model": "fake",
                                                 "dim": 64, "generation": 3, "passages": 1, "articles": 1}))
    for open_it in (lambda: Index.load(old, "fake", 64), lambda: Writer(old, "fake", 64)):
        with pytest.raises(IndexCorrupt, match="another version of qa .schema version 1"):
            open_it()
    (old / MANIFEST_NAME).unlink()
    with pytest.raises(IndexCorrupt, match="move the folder aside"):
        Writer(old, "fake", 64)


def test_segments_of_the_earlier_layout_read_and_merge_alike(tmp_path, fake_embedder, monkeypatch):
    """Segments written before 2026-12-03 (64-bit sentence stem hashes, passage codes also in .arrays)
    answer as today's do, alone and merged with today's."""
    from qa.index import segment as index_segment
    from qa.ingest.pipeline import add_articles

    monkeypatch.setattr(index_writer, "PUBLISH_EVERY", 0.0)
    monkeypatch.setattr(index_writer, "merge", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("not yet")))

    def search(path, q):
        hits = Service(path, "fake", embedder=fake_embedder).searcher().ask(q, 3)
        return [(h.passage_id, h.score, h.highlight) for h in hits.hits], hits.answer

    def build(path, old: bool):
        with monkeypatch.context() as m:
            if old:
                m.setattr(index_segment, "sentence_keys", lambda h: np.asarray(h, dtype=np.uint64))
            svc = Service(path, "fake", embedder=fake_embedder)
            with svc.writer() as w:
                for i in range(3):
                    add_articles(w, fake_embedder, articles(2, start=2 * i))
        if old:  # the passages' codes in .arrays too, as they were
            for part in Index.load(path, "fake", 64).parts:
                file = path / f"{part.seg.name}.arrays"
                meta, arrays = index_segment.read_arrays(file)
                arrays = {k: np.array(v) for k, v in arrays.items()}
                arrays["p_codes"] = part.seg.codes_of(np.arange(len(part.seg))).astype(np.int8)
                index_segment.write_arrays(file, arrays, meta)

    build(tmp_path / "new", old=False)
    build(tmp_path / "old", old=True)
    old_segs = Index.load(tmp_path / "old", "fake", 64).parts
    assert all(p.seg.s_terms.dtype == np.uint64 for p in old_segs)
    assert all("p_codes" in index_segment.read_arrays(tmp_path / "old" / f"{p.seg.name}.arrays")[1] for p in old_segs)
    assert all(p.seg.s_terms.dtype == np.uint32 for p in Index.load(tmp_path / "new", "fake", 64).parts)
    q = "When did the zanzibar council approve plan 3?"
    assert search(tmp_path / "old", q) == search(tmp_path / "new", q)
    # Today's segments beside the old ones, then everything merged into today's layout.
    monkeypatch.undo()
    monkeypatch.setattr(index_writer, "PUBLISH_EVERY", 0.0)
    for path in (tmp_path / "old", tmp_path / "new"):
        with Service(path, "fake", embedder=fake_embedder).writer() as w:
            add_articles(w, fake_embedder, articles(2, start=6))
    assert search(tmp_path / "old", q) == search(tmp_path / "new", q)
    for path in (tmp_path / "old", tmp_path / "new"):
        with Service(path, "fake", embedder=fake_embedder).writer() as w:
            w.background_merges = False
            for i in range(4, 8):
                add_articles(w, fake_embedder, articles(1, start=10 + i))
                w._install_merge(wait=True)
    merged = Index.load(tmp_path / "old", "fake", 64).parts
    assert len(merged) < 5 and all(p.seg.s_terms.dtype == np.uint32 for p in merged)  # the old ones merged away
    assert search(tmp_path / "old", q) == search(tmp_path / "new", q)
    for path in (tmp_path / "old", tmp_path / "new"):
        Service(path, "fake", embedder=fake_embedder).compact()
        assert len(Index.load(path, "fake", 64).parts) == 1
    assert search(tmp_path / "old", q) == search(tmp_path / "new", q)
    assert search(tmp_path / "old", "zanzibar session 15")[0][0][0] == search(tmp_path / "new", "zanzibar session 15")[0][0][0]


def test_compact_leaves_one_segment_without_the_deleted_passages(app, runner):
    svc = app.extensions["qa"]
    add(svc, articles(3))
    svc.delete("zanzibar-1")
    before = Index.load(svc.index_dir, "fake", 64)
    assert len(before.parts) > 1 and any(p.live is not None for p in before.parts)
    q = "When did the zanzibar council approve plan 2?"
    # The same passages in the same order (BM25's statistics count deleted rows until they are merged
    # away, as Lucene's do, so the scores themselves move a little).
    expected = [(h.citation.article_id, h.citation.start) for h in svc.searcher(wait=True).search(q, 5)]
    result = runner.invoke(["compact"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith(f"{len(before.parts)} segments -> 1;")
    after = Index.load(svc.index_dir, "fake", 64)
    [part] = after.parts
    on_disk = sum(p.stat().st_size for p in svc.index_dir.glob("seg-*"))
    assert f"{on_disk / 1e6:,.0f} MB of segment files (were " in result.output  # what is left, inputs deleted
    assert {p.name.split(".")[0] for p in svc.index_dir.glob("seg-*")} == {part.seg.name}
    assert part.live is None and len(part.seg) == before.passage_count == after.passage_count
    assert after.article("zanzibar-1") is None and after.article("zanzibar-2") is not None
    assert [(h.citation.article_id, h.citation.start) for h in svc.searcher(wait=True).search(q, 5)] == expected
    assert runner.invoke(["compact"]).output.splitlines()[-1].startswith("1 segments -> 1;")  # nothing to do: quick
