"""Issue #27.1: IVF segments (above IVF_ABOVE passages) with tombstones and filters, big enough that a
search visits only some of their lists.

A search that crashes takes the whole process down, so the searches run in a child process and the
test reads its exit status.
"""

import json
import random
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pytest

from qa.index import Index
from qa.index import segment as index_segment
from qa.web.service import Service

from .conftest import ROOT, FakeEmbedder

WORDS = ("river bridge mayor council vote budget school fire police storm harbour ferry train station market "
         "price oil gas election minister court judge hospital doctor farm harvest").split()


def write_articles(path, n: int, seed: int = 1) -> None:
    """n one-passage articles, alternately from two sources, each naming itself ("Story 17 ...")."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(30)) + f". Story {i} ends here."
            f.write(json.dumps({"id": f"a{i}", "title": f"Story {i}", "text": text,
                                "source": ("Alpha", "Beta")[i % 2], "published": "2024-12-0%dT10:00:00+02:00" % (1 + i % 9)})
                    + "\n")


@pytest.fixture(scope="module")
def ivf_index(tmp_path_factory):
    """2,500 passages in one IVF segment of 64 lists, of which a search probes 16."""
    tmp = tmp_path_factory.mktemp("ivf")
    write_articles(tmp / "many.jsonl", 2500)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(index_segment, "IVF_ABOVE", 1000)
        svc = Service(tmp / "ix", "fake", embedder=FakeEmbedder())
        assert svc.ingest([tmp / "many.jsonl"]).added == 2500
        svc.compact()
    parts = Index.load(tmp / "ix", "fake", 64).parts
    assert [(p.seg.kind, len(p.seg)) for p in parts] == [("ivf", 2500)]
    ivf = faiss.extract_index_ivf(parts[0].seg.vectors)
    assert ivf.nprobe < ivf.nlist / 2, (ivf.nprobe, ivf.nlist)  # a search visits only some lists
    return tmp / "ix"


def run_child(index, code: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.conftest import FakeEmbedder
        from qa.web.service import Service
        from qa.index.reader import Where
        svc = Service({str(index)!r}, "fake", embedder=FakeEmbedder())
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_an_ivf_segment_with_a_tombstone_or_a_filter_is_searched_without_crashing(ivf_index, tmp_path):
    import shutil

    index = tmp_path / "ix"
    shutil.copytree(ivf_index, index)
    child = run_child(index, """
        hits = svc.searcher().search("Story 5 ends here", 10, Where(("Beta",)))  # a filter, no tombstone
        print(json.dumps([h.citation.source for h in hits]))
        svc.delete("a5")  # one article of 2,500: a tombstone, not a rewrite
        hits = svc.searcher().search("Story 5 ends here", 10)
        print(json.dumps([h.citation.article_id for h in hits]))
        hits = svc.searcher().search("Story 7 ends here", 10, Where(("Beta",)))
        print(json.dumps([h.citation.source for h in hits]))
    """)
    assert child.returncode == 0, f"the search process died ({child.returncode}): {child.stderr[-2000:]}"
    filtered, after_delete, both = (json.loads(line) for line in child.stdout.splitlines()[-3:])
    assert filtered and set(filtered) == {"Beta"}
    assert after_delete and "a5" not in after_delete
    assert both and set(both) == {"Beta"}
    parts = Index.load(index, "fake", 64).parts
    assert len(parts) == 1 and parts[0].live is not None and (~parts[0].live).sum() == 1  # still the IVF segment


def test_flat_and_ivf_agree_where_probing_finds_the_same(ivf_index, tmp_path):
    """The IVF segment scores what it finds as the exact one does, and finds most of the exact top 10."""
    flat_dir = tmp_path / "flat"
    write_articles(tmp_path / "many.jsonl", 2500)
    Service(flat_dir, "fake", embedder=FakeEmbedder()).ingest([tmp_path / "many.jsonl"])
    Service(flat_dir, "fake", embedder=FakeEmbedder()).compact()
    flat, ivf = Index.load(flat_dir, "fake", 64), Index.load(ivf_index, "fake", 64)
    assert [p.seg.kind for p in flat.parts] == ["flat"]
    emb = FakeEmbedder()
    found = total = 0
    for q in ("river bridge mayor", "oil gas price", "court judge election", "storm harbour ferry", "farm harvest"):
        qv = emb.encode([q])[0]
        a, b = flat.dense(qv, 10), ivf.dense(qv, 10)
        ta = {flat.passages([i])[i].article_id: s for i, s in a.items()}
        tb = {ivf.passages([i])[i].article_id: s for i, s in b.items()}
        for art in ta.keys() & tb.keys():
            assert ta[art] == pytest.approx(tb[art], abs=1e-5)
        found += len(ta.keys() & tb.keys())
        total += len(ta)
    assert found >= 0.6 * total, (found, total)


@pytest.mark.slow
def test_qa_serve_over_an_ivf_segment_past_the_real_threshold_survives_filters_and_deletes(tmp_path):
    """Just past IVF_ABOVE (the real one), through `qa serve`: a filtered search, a delete, a search.

    The passages' vectors are random (this is about the process staying up, not about their
    meaning), written under the real model's name so that the server runs as it does in production."""
    import http.client

    from qa.embed.model import DEFAULT_MODEL, model_dim
    from qa.index import Writer
    from qa.index.writer import NewPassage
    from qa.ingest.articles import Article
    from qa.ingest.sentences import NewSentence

    from .conftest import qa_server

    n, dim = index_segment.IVF_ABOVE + 500, model_dim(DEFAULT_MODEL)
    rng = np.random.default_rng(0)
    index = tmp_path / "ix"
    with Writer(index, DEFAULT_MODEL, dim) as w:
        for at in range(0, n, 5000):
            items = []
            for i in range(at, min(n, at + 5000)):
                text = f"Story {i} tells of the {WORDS[i % len(WORDS)]} and the {WORDS[(i * 7) % len(WORDS)]}."
                vec = rng.standard_normal(dim).astype(np.float32)
                vec /= np.linalg.norm(vec)
                art = Article(id=f"a{i}", title=f"Story {i}", text=text, source=("Alpha", "Beta")[i % 2],
                              published="2024-12-08T23:30:00-05:00")
                items.append((art, [NewPassage(0, len(text), f"p{i}", vec)],
                              [NewSentence(0, len(text), 12, f"{i:016x}", vec)]))
            w.add(items)
        w.compact()
    parts = Index.load(index, DEFAULT_MODEL, dim).parts
    assert [p.seg.kind for p in parts] == ["ivf"]

    def get(port, method, path, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            conn.close()

    with qa_server(index, env={"QA_ADMIN_TOKEN": "secret"}) as (port, log):
        status, body = get(port, "GET", "/api/search?q=Story+17+river&k=5&source=Beta")
        assert status == 200 and body["results"] and {r["citation"]["source"] for r in body["results"]} == {"Beta"}
        status, _ = get(port, "DELETE", "/api/articles/a17", {"Authorization": "Bearer secret"})
        assert status == 200
        for q in ("/api/search?q=Story+17&k=5", "/api/search?q=Story+17&k=5&source=Alpha&from=2024-12-01"):
            status, body = get(port, "GET", q)
            assert status == 200 and body["results"], (q, status, body)
            assert all(r["citation"]["article_id"] != "a17" for r in body["results"])
        log.seek(0)
        assert "SIGSEGV" not in log.read()


def test_statistics_read_from_an_ivf_folder_match_its_index_while_a_writer_deletes_and_updates(ivf_index, tmp_path):
    """What a sharded search's fusing side reads of a shard folder (qa/index/freqs.py) is what the folder's own
    Index gives, on a big IVF segment with tombstones and a new segment, read while a writer publishes."""
    import shutil
    import threading

    from qa.errors import IndexBusy
    from qa.index.freqs import FolderFreqs
    from qa.search.sharded import ShardReader

    index = tmp_path / "ix"
    shutil.copytree(ivf_index, index)
    stems = ["river", "bridg", "mayor", "harbour", "stori", "nosuchstem"]
    freqs, reader = FolderFreqs(index), ShardReader(index, 0, 1, "fake")
    assert freqs.stats(stems) == reader.stats(stems)
    svc = Service(index, "fake", embedder=FakeEmbedder())
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps({"id": f"a{i}", "title": f"Story {i}", "text": f"The harbour ferry {i} sank."})
                               + "\n" for i in range(10, 20)))
    done, seen, errors = threading.Event(), [], []

    def read() -> None:  # statistics read over and over while the writer publishes
        while not done.is_set():
            try:
                seen.append(freqs.stats(stems)["generation"])
            except IndexBusy:
                pass
            except Exception as e:  # noqa: BLE001 - anything else fails the test
                errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    try:
        for i in range(5):
            svc.delete(f"a{i}")
        svc.ingest([changed])
    finally:
        done.set()
        t.join()
    assert not errors and seen and seen == sorted(seen)  # never an older generation after a newer one
    parts = Index.load(index, "fake", 64).parts
    assert parts[0].seg.kind == "ivf" and (~parts[0].live).sum() == 15 and len(parts) > 1
    assert freqs.stats(stems) == reader.stats(stems)
    assert freqs.stats(stems)["generation"] == reader.generation() > seen[0]


def test_a_sharded_root_of_ivf_segments_reads_rows_from_its_folders_as_its_shards_send_them(tmp_path, monkeypatch):
    """Rows and sentences read from the shard folders (the cluster's ingress, `qa serve` on a root) against the shards
    sending them: big IVF segments with tombstones, a source filter, and a writer publishing while questions run."""
    import threading

    from qa.index.reader import Where
    from qa.index.shards import read_root
    from qa.search.sharded import ShardedIndex, ShardedSearcher, ShardReader, local_shards

    monkeypatch.setattr(index_segment, "IVF_ABOVE", 500)
    write_articles(tmp_path / "many.jsonl", 2500)
    root = tmp_path / "root"
    svc = Service(root, "fake", embedder=FakeEmbedder())
    svc.shards = 2
    svc.ingest([tmp_path / "many.jsonl"])
    svc.compact()
    for i in range(0, 40, 3):  # tombstones in both shards' IVF segments
        svc.delete(f"a{i}")
    folders = [root / f for f in read_root(root)["folders"]]
    assert all(Index.load(f, "fake", 64).parts[0].seg.kind == "ivf" for f in folders)
    emb, cfg = FakeEmbedder(), svc.searcher().cfg

    def searcher(read_here: bool) -> ShardedSearcher:
        readers = [ShardReader(f, i, 2, "fake") for i, f in enumerate(folders)] if read_here else None
        return ShardedSearcher(ShardedIndex(local_shards(root, "fake"), freqs=readers, readers=readers), emb, cfg)

    read, sent = searcher(True), searcher(False)
    qs = [f"What happened in story {i}?" for i in range(0, 60, 2)] + ["Which harbour ferry sank?"]
    alpha = Where(sources=("Alpha",))
    for q in qs:
        for where in (None, alpha):
            a, b = read.ask(q, 5, where).to_dict(), sent.ask(q, 5, where).to_dict()
            assert a["results"] == b["results"] and a["answer"] == b["answer"] and a["facets"] == b["facets"], q
    assert read.index.rounds["fetch"] == 0
    # A writer deletes and updates while both ask: each answer is whole, and both agree once it is done.
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps({"id": f"a{i}", "title": f"Story {i}", "source": "Alpha",
                                           "text": f"The harbour ferry {i} sank off the pier."}) + "\n"
                               for i in range(41, 60, 2)))
    done, errors = threading.Event(), []

    def ask() -> None:
        while not done.is_set():
            for q in qs[-6:]:
                try:
                    out = read.ask(q, 5, alpha).to_dict()
                    assert all(r["text"] for r in out["results"]), q
                except Exception as e:  # noqa: BLE001 - anything fails the test
                    errors.append(e)

    t = threading.Thread(target=ask)
    t.start()
    try:
        for i in range(40, 50):
            svc.delete(f"a{i}")
        svc.ingest([changed])
    finally:
        done.set()
        t.join()
    assert not errors, errors[:3]
    for q in qs[-6:]:
        a, b = read.ask(q, 5, alpha).to_dict(), sent.ask(q, 5, alpha).to_dict()
        assert a["results"] == b["results"] and a["answer"] == b["answer"], q
    assert any("ferry" in r["text"] for r in read.ask("Which harbour ferry sank?", 5).to_dict()["results"])
