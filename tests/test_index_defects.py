"""Issue #27: defects of the index and the ingest pipeline (4, 5, 6, 7), each with a test that failed before its fix."""

import errno
import json

import pytest

from qa.errors import IndexCorrupt
from qa.index import Index, Writer
from qa.index import files as index_files
from qa.index import segment as index_segment
from qa.ingest.articles import Article
from qa.web.service import Service

from .conftest import SEEDS


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- 4. one bad article never costs the others ----------------------------------------------

def test_a_title_of_300_copies_of_one_word_is_stored_with_the_rest(tmp_path, fake_embedder):
    arts = [{"id": "a", "title": "Ferry sails", "text": "The ferry sailed at noon."},
            {"id": "b", "title": "⒈" * 300, "text": "A title of numbers, three hundred of them."},
            {"id": "c", "title": "Storm", "text": "The storm closed the harbour."}]
    svc = Service(tmp_path / "ix", "fake", embedder=fake_embedder)
    report = svc.ingest([jsonl(tmp_path / "a.jsonl", arts)])
    assert (report.added, report.failed) == (3, 0), report.failures
    assert Index.load(tmp_path / "ix", "fake", 64).article_count == 3
    assert svc.searcher().search("ferry", 1)[0].citation.article_id == "a"


def test_an_article_that_cannot_be_stored_fails_alone_with_a_reason(tmp_path, fake_embedder, monkeypatch):
    real = index_segment.SegmentBuilder.add_article

    def add_article(self, title, text, *a, **kw):
        if title == "Poison":
            raise OverflowError("Python integer 300 out of bounds for uint8")
        return real(self, title, text, *a, **kw)

    monkeypatch.setattr(index_segment.SegmentBuilder, "add_article", add_article)
    arts = [{"id": f"n{i}", "title": "Poison" if i == 3 else f"News {i}", "text": f"Story {i} of the day."}
            for i in range(6)]
    svc = Service(tmp_path / "ix", "fake", embedder=fake_embedder)
    report = svc.ingest([jsonl(tmp_path / "a.jsonl", arts)])
    assert (report.added, report.failed) == (5, 1)
    assert "OverflowError" in report.failures[0].reason and report.failures[0].origin.endswith("a.jsonl:4")
    idx = Index.load(tmp_path / "ix", "fake", 64)
    assert idx.article_count == 5 and idx.article("n3") is None and idx.article("n4") is not None


def test_qa_watch_survives_a_round_that_fails_and_says_why(runner, monkeypatch):
    from qa import cli

    rounds = []

    def run_ingest(svc, urls, quiet, wait=0.0, stop=None):
        rounds.append(urls)
        if len(rounds) == 1:
            raise RuntimeError("something odd in one article")
        from qa.ingest.pipeline import Report

        return Report(added=1, passages=2), 0.1

    monkeypatch.setattr(cli, "run_ingest", run_ingest)
    result = runner.invoke(["watch", "http://127.0.0.1:9/feed.xml", "--every", "1", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    assert "this round failed (RuntimeError: something odd in one article)" in result.output
    assert len(rounds) == 2 and "1 added" in result.output


# --- 6. a file gone while a reader loads means: read the manifest again ----------------------

def test_a_segment_file_removed_while_a_reader_opens_it_makes_it_read_the_manifest_again(
        tmp_path, fake_embedder, monkeypatch):
    index = tmp_path / "ix"
    svc = Service(index, "fake", embedder=fake_embedder)
    for i in range(3):  # three segments, so that a compaction retires them
        svc.add(Article(id=f"a{i}", title=f"Bridge {i}", text=f"The bridge number {i} opened on Monday."))
    real = index_segment.faiss.read_index
    calls = []

    def read_index(path, *flags):
        if not calls:  # a writer merges the segments away and, stopping, deletes their files at once
            calls.append(path)
            with Writer(index, "fake", 64) as w:
                w.compact()
        return real(path, *flags)

    monkeypatch.setattr(index_segment.faiss, "read_index", read_index)
    idx = Index.load(index, "fake", 64)
    assert calls and len(idx.parts) == 1 and idx.article_count == 3


def test_a_segment_damaged_for_real_still_says_so(tmp_path, fake_embedder):
    index = tmp_path / "ix"
    Service(index, "fake", embedder=fake_embedder).ingest([SEEDS])
    faiss_file = next(index.glob("seg-*.faiss"))
    faiss_file.write_bytes(b"not an index at all")
    with pytest.raises(IndexCorrupt, match="damaged"):
        Index.load(index, "fake", 64)


# --- 7. a failed write leaves no temporary file ---------------------------------------------

def test_disk_full_while_writing_a_segment_leaves_no_temporary_files(tmp_path, fake_embedder, monkeypatch):
    index = tmp_path / "ix"
    svc = Service(index, "fake", embedder=fake_embedder)
    svc.ingest([SEEDS])
    before = sorted(p.name for p in index.iterdir())

    real_fsync = index_files.os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    for target in ("arrays", "faiss"):
        if target == "arrays":
            monkeypatch.setattr(index_files.os, "fsync", full)
        else:
            monkeypatch.setattr(index_files.os, "fsync", real_fsync)
            monkeypatch.setattr(index_segment.faiss, "write_index",
                                lambda ix, path: (open(path, "wb").write(b"half"), full(0)))
        with pytest.raises(OSError, match="No space"):
            svc.add(Article(id=f"new-{target}", title="Ferry", text="The ferry sailed at noon on Monday."))
        assert not list(index.glob(".*tmp")), list(index.glob(".*tmp"))
        assert sorted(p.name for p in index.iterdir() if p.name != ".lock") == \
            [n for n in before if n != ".lock"]


def test_a_failed_merge_leaves_no_temporary_files(tmp_path, fake_embedder, monkeypatch):
    index = tmp_path / "ix"
    svc = Service(index, "fake", embedder=fake_embedder)
    for i in range(3):
        svc.add(Article(id=f"a{i}", title=f"Bridge {i}", text=f"The bridge number {i} opened on Monday."))
    monkeypatch.setattr(index_segment.faiss, "write_index",
                        lambda ix, path: (open(path, "wb").write(b"half"), (_ for _ in ()).throw(
                            OSError(errno.ENOSPC, "No space left on device"))))
    with Writer(index, "fake", 64) as w:
        with pytest.raises(OSError):
            w.compact()
        assert not list(index.glob(".*tmp")) and not list(index.glob(".*.tmp"))


# --- 5. an article being updated never disappears for a reader -------------------------------

def test_reads_and_searches_during_updates_always_see_the_article(tmp_path, fake_embedder):
    """One thread replaces an article again and again (each a publish, with merges); readers in other
    services (as other server processes would) read it and search for it all the while."""
    import threading

    index = tmp_path / "ix"
    writer = Service(index, "fake", embedder=fake_embedder)
    writer.ingest([SEEDS])
    text = "The ferry to Lowmoor sails at {} o'clock. Tickets cost {} pounds at the harbour office."
    writer.add(Article(id="ferry", title="Ferry timetable", text=text.format(0, 0)))
    stop, seen, missed, errors = threading.Event(), [0], [], []

    def read():
        svc = Service(index, "fake", embedder=fake_embedder)
        while not stop.is_set():
            try:
                searcher = svc.searcher()
                art = searcher.index.article("ferry")
                hits = searcher.search("ferry to Lowmoor tickets harbour office", 3)
            except Exception as e:  # noqa: BLE001 - any error is a finding
                errors.append(repr(e))
                continue
            seen[0] += 1
            if art is None or "ferry" not in {h.citation.article_id for h in hits}:
                missed.append((searcher.index.generation, art is None))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i in range(1, 40):
            writer.add(Article(id="ferry", title="Ferry timetable", text=text.format(i % 12, i)))
            if i % 8 == 0:
                writer.add(Article(id=f"other-{i}", title="Other news", text=f"Story {i} is about something else."))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[:3]
    assert seen[0] > 20 and not missed, (seen[0], missed[:5])


# --- also seen: merges keep up with any ingest rate --------------------------------------------

def test_segments_do_not_pile_up_when_batches_outrun_publishes(tmp_path, fake_embedder, monkeypatch):
    from qa.index import writer as index_writer

    monkeypatch.setattr(index_writer, "PUBLISH_EVERY", 1e9)  # a long ingest between two publishes
    from qa.ingest.chunk import ChunkConfig
    from qa.ingest.pipeline import assemble, prepare

    with Writer(tmp_path / "ix", "fake", 64, background_merges=False) as w:
        for i in range(40):  # one small segment a batch
            art = Article(id=f"a{i}", title=f"Story {i}", text=f"Story {i} is about the harbour.")
            sents, (units, chunks) = prepare(fake_embedder, "fake", art, ChunkConfig())
            vectors = dict(zip([h for h, _ in sents], fake_embedder.encode([t for _, t in sents])))
            w.add([assemble("fake", art, sents, units, chunks, vectors)])
        assert len(w.live) <= 8, len(w.live)


def test_a_writer_with_nothing_to_publish_still_merges(tmp_path, fake_embedder, monkeypatch):
    from qa.index import writer as index_writer

    index = tmp_path / "ix"
    svc = Service(index, "fake", embedder=fake_embedder)
    with monkeypatch.context() as mp:
        mp.setattr(index_writer, "plan", lambda entries: None)  # as a run that crashed before merging leaves it
        for i in range(10):
            svc.add(Article(id=f"a{i}", title=f"Story {i}", text=f"Story {i} is about the harbour."))
    assert len(Index.load(index, "fake", 64).parts) == 10
    Writer(index, "fake", 64).close()  # opens, finds nothing new, stops
    assert len(Index.load(index, "fake", 64).parts) < 10
