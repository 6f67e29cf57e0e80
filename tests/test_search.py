import dataclasses
import sqlite3

import faiss
import numpy as np
import pytest

from qa.web import create_app
from qa.errors import BadRequest
from qa.search.searcher import Citation, Hit, SearchConfig, fuse, highlight, published_at, query_terms, validate
from qa.index import Index
from qa.index import segment as index_segment
from qa.index.segment import Segment, SegmentBuilder, write_segment
from qa.index.terms import stems, term_hash
from qa.web.service import get_service


def test_query_terms_drop_stop_words_but_never_everything():
    assert query_terms("Where did Assad flee to?") == ["assad", "flee"]
    assert query_terms("Who is it?") == ["who", "is", "it"]


def test_published_values_order_as_instants():
    """Offsets are read (text order would put 23:30 at -05:00 on the 8th first); a date alone is its day's start in UTC."""
    given = ["2024-12-09T01:00Z", "2024-12-08T23:30-05:00", "2024-12-09", "2024-12-09T00:30:00+01:00", "soon", None]
    dated = sorted((p for p in given if published_at(p)), key=published_at)
    assert dated == ["2024-12-09T00:30:00+01:00", "2024-12-09", "2024-12-09T01:00Z", "2024-12-08T23:30-05:00"]
    assert published_at("2024-12-08T23:30-05:00").isoformat() == "2024-12-09T04:30:00+00:00"


def test_fuse_weights_and_missing_scores():
    cfg = SearchConfig(lexical_weight=0.5, dense_weight=0.5)
    lexical = {1: 10.0, 2: 5.0, 3: 0.0}
    dense = {1: 0.2, 2: 0.8, 4: 0.4}
    ranked = dict(fuse(lexical, dense, cfg))
    assert ranked[1] == pytest.approx(0.5 * 1.0 + 0.5 * 0.25)
    assert ranked[2] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)
    assert ranked[3] == pytest.approx(0.0)
    assert ranked[4] == pytest.approx(0.5 * 0.0 + 0.5 * 0.5)
    assert max(ranked, key=ranked.get) == 2
    only_lexical = fuse(lexical, dense, SearchConfig(lexical_weight=1, dense_weight=0))
    assert only_lexical[0][0] == 1


def test_highlight_marks_the_answering_sentence():
    text = "Rebels took the city. Assad fled to Moscow on Sunday. Prices rose."
    [span] = highlight(text, ["assad", "flee", "moscow"], {})
    assert text[span["start"]:span["end"]] == "Assad fled to Moscow on Sunday."


def test_highlight_falls_back_to_first_sentence():
    text = "One thing. Another thing."
    assert highlight(text, ["zebra"], {}) == [{"start": 0, "end": 10}]


@pytest.mark.parametrize("q, k, code", [
    (None, 5, "missing_query"), ("   ", 5, "empty_query"), ("x" * 1001, 5, "query_too_long"),
    ("ok", 0, "k_out_of_range"), ("ok", 51, "k_out_of_range"), ("ok", "ten", "invalid_k"), ("ok", 2.5, "invalid_k"),
    ("ok", True, "invalid_k"), (["list"], 5, "invalid_query"), ("a\x00b", 5, "invalid_query"),
])
def test_validate_rejects(q, k, code):
    with pytest.raises(BadRequest) as e:
        validate(q, k, SearchConfig())
    assert e.value.code == code


def test_validate_defaults():
    assert validate(" hi ", None, SearchConfig()) == ("hi", 5)
    assert validate("hi", "7", SearchConfig()) == ("hi", 7)


def test_fuse_mixes_the_best_sentence_into_the_lexical_side():
    cfg = SearchConfig(lexical_weight=1, dense_weight=0, lexical_sentence_weight=0.5)
    lexical = {1: 10.0, 2: 8.0}  # passage 1 scatters the query terms over its window ...
    best_sentence = {1: 1.0, 2: 4.0}  # ... passage 2 holds them in one sentence
    ranked = dict(fuse(lexical, {}, cfg, best_sentence))
    assert ranked[1] == pytest.approx(0.5 * 1.0 + 0.5 * 0.25)
    assert ranked[2] == pytest.approx(0.5 * 0.8 + 0.5 * 1.0)
    assert fuse(lexical, {}, cfg)[0][0] == 1  # the window's BM25 alone would rank 1 first


def one_segment(tmp_path, texts, passages, vectors=None):
    """A segment of one article whose sentences are `texts` and whose passages are (sentence lo, hi) ranges."""
    text = " ".join(texts)
    starts = [text.index(t) for t in texts]
    vectors = np.eye(4, dtype=np.float32)[: len(texts)] if vectors is None else vectors
    sents = [(a, a + len(t), f"{i:016x}", vectors[i]) for i, (a, t) in enumerate(zip(starts, texts))]
    b = SegmentBuilder(dim=4, scale=100.0)
    b.add_article("Title", text, [(10 + i, starts[lo], starts[hi - 1] + len(texts[hi - 1]), np.ones(4) / 2)
                                  for i, (lo, hi) in enumerate(passages)], sents)
    entry = write_segment(tmp_path, "seg-test", b.arrays(), {"dim": 4, "scale": 100.0, "gen": 1})
    return Segment(tmp_path, entry)


def query_weights(weights):
    items = sorted((term_hash(t), w) for t, w in weights.items())
    return np.array([h for h, _ in items], np.uint64), np.array([w for _, w in items])


def test_sentence_term_scores_sum_the_weights_of_held_stems(tmp_path):
    texts = ["Assad fled to Moscow.", "Rebels entered Damascus.", "Moscow granted asylum to Assad."]
    assert stems(texts[0]) == ["assad", "fled", "to", "moscow"]
    seg = one_segment(tmp_path, texts, [(0, 2), (1, 3)])
    srows, firsts = seg.sentence_rows(np.array([0, 1]))
    assert srows.tolist() == [0, 1, 1, 2] and firsts.tolist() == [0, 2]
    qh, qw = query_weights({"assad": 2.0, "moscow": 1.0, "asylum": 3.0, "zebra": 9.0})
    assert seg.sentence_terms(srows, qh, qw).tolist() == [3.0, 0.0, 0.0, 6.0]


def test_a_sentences_term_score_is_the_same_whatever_it_is_read_with(tmp_path):
    # A shard reads other batches of passages than one folder does: a sentence must score the same to the
    # last bit alone or in company, a trailing sentence with no stems included. (Numpy sums eight or more
    # numbers pairwise: one 0.0 more after a sentence's eight weights changed its sum in a quarter of cases.)
    long = "Alpha bravo charlie delta echo foxtrot golf hotel."
    texts = [long, "Bravo delta.", long.replace("Alpha", "Mike"), "…"]
    seg = one_segment(tmp_path, texts, [(0, 2), (2, 4)])
    assert len(stems(long)) == 8
    for seed in range(12):
        rng = np.random.default_rng(seed)
        qh, qw = query_weights({w: float(rng.random()) for w in stems(long)})
        together = seg.sentence_terms(np.arange(4), qh, qw)
        assert together[3] == 0.0 and together[0] > 0
        for r in range(4):
            assert seg.sentence_terms(np.array([r]), qh, qw)[0] == together[r], (seed, r)
        assert seg.sentence_terms(np.array([0, 1]), qh, qw).tolist() == together[:2].tolist()


def test_sentence_dense_scores_each_passages_sentences(tmp_path):
    seg = one_segment(tmp_path, ["One.", "Two.", "Three."], [(0, 2), (1, 3), (2, 3)])
    srows, _ = seg.sentence_rows(np.array([1]))
    q = np.array([0.2, 0.9, 0.5, 0.0], np.float32)
    assert seg.sentence_dense(q, srows).tolist() == pytest.approx([0.9, 0.5], abs=0.01)


def test_big_sentence_arrays_are_read_not_mapped(tmp_path, monkeypatch):
    """Past READ_ROWS_ABOVE bytes a segment reads its sentence vectors with pread (a mapping of them
    fills a server's memory once the file is cached): the same rows, in any order, runs or not."""
    texts = [f"Sentence number {i}." for i in range(40)]
    vectors = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    seg = one_segment(tmp_path, texts, [(0, 7), (7, 19), (19, 40)], vectors / np.linalg.norm(vectors, axis=1)[:, None])
    assert seg._s_rows is None  # small: through the mapping
    monkeypatch.setattr(index_segment, "READ_ROWS_ABOVE", 0)
    read = Segment(tmp_path, {"name": seg.name, "kind": seg.kind, "passages": len(seg)})
    assert read._s_rows is not None
    for rows in ([], [5], [0, 1, 2, 3], [3, 4, 9, 10, 11, 39], [39, 2, 3, 17], list(range(40))):
        rows = np.array(rows, np.int64)
        assert np.array_equal(read.sentence_codes(rows), seg.s_codes[rows])
    srows, _ = seg.sentence_rows(np.array([0, 2]))
    q = np.array([0.2, 0.9, 0.5, 0.0], np.float32)
    assert read.sentence_dense(q, srows).tolist() == seg.sentence_dense(q, srows).tolist()
    for mine, theirs in zip(read.sentence_links(srows), seg.sentence_links(srows)):
        assert mine.tolist() == theirs.tolist()


def test_bm25_matches_fts5s_formula(tmp_path):
    """Our postings score a passage as SQLite FTS5's bm25() scores the same title and text."""
    texts = ["The harbour of Kelvik reopened.", "Boats returned to the harbour on Monday.", "Fishing resumed.",
             "The market sold fish.", "Prices fell.", "Rain came on Tuesday.", "Schools closed early."]
    ranges = [(0, 2), (1, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    seg = one_segment(tmp_path, texts, ranges, vectors=np.ones((len(texts), 4), np.float32) / 2)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE f USING fts5(title, text, tokenize='porter unicode61')")
    for lo, hi in ranges:
        conn.execute("INSERT INTO f VALUES ('Title', ?)", (" ".join(texts[lo:hi]),))
    want = [-r[0] for r in conn.execute("SELECT bm25(f) FROM f WHERE f MATCH 'harbour OR monday OR kelvik' "
                                        "ORDER BY rowid")]
    n, df = len(ranges), {"harbour": 2, "mondai": 2, "kelvik": 1}
    idf = {t: max(np.log((0.5 + n - d) / (0.5 + d)), 1e-6) for t, d in df.items()}
    terms = index_segment.Terms.of([(term_hash(t), w, True) for t, w in idf.items()])
    assert stems("harbour Monday Kelvik") == list(df)
    got = seg.lexical_of(terms, np.array([0, 1]), index_segment.BM25(avgdl=seg.tokens / len(seg)))
    assert got.tolist() == pytest.approx(want, rel=1e-4)


def test_flat_and_ivf_segments_agree(app, tmp_path, monkeypatch):
    """The same passages in an exact and an IVF segment give the same dense scores for what both find."""
    from qa.web.service import Service

    from .conftest import SEEDS

    with app.app_context():
        svc = get_service()
        flat = svc.searcher().index
        qvec = svc.embedder.encode(["Where did Assad go?"])[0]
    monkeypatch.setattr(index_segment, "IVF_ABOVE", 3)
    Service(tmp_path / "ivf", "fake", embedder=svc.embedder).ingest([SEEDS])
    ivf = Index.load(tmp_path / "ivf")
    assert {p.seg.kind for p in ivf.parts} == {"ivf"} and {p.seg.kind for p in flat.parts} == {"flat"}
    a, b = flat.dense(qvec, 5), ivf.dense(qvec, 5)
    assert len(a) == len(b) == 5
    ta = {flat.passages([i])[i].text: s for i, s in a.items()}
    tb = {ivf.passages([i])[i].text: s for i, s in b.items()}
    assert set(ta) & set(tb)
    assert all(ta[t] == pytest.approx(tb[t], abs=1e-6) for t in set(ta) & set(tb))
    # Mapped IVF lists would start 32 prefetch threads on every search (1.5 ms of 1.7 at 65k passages).
    lists = [faiss.downcast_InvertedLists(faiss.extract_index_ivf(p.seg.vectors).invlists) for p in ivf.parts]
    assert [type(x).__name__ for x in lists] == ["OnDiskInvertedLists"] * len(lists)
    assert all(x.prefetch_nthread == 0 for x in lists)


def test_hit_to_dict_is_asdict():
    hit = Hit(rank=1, score=0.5, passage_id=7, text="Assad fled.", highlight=[{"start": 0, "end": 11}],
              citation=Citation("a", "T", None, "src", None, 3, 14, "/articles/a#p-7"))
    assert hit.to_dict() == dataclasses.asdict(hit)
    assert list(hit.to_dict()) == [f.name for f in dataclasses.fields(Hit)]  # same key order on the wire
    assert Hit(1, 0.5, 7, "x").to_dict() == dataclasses.asdict(Hit(1, 0.5, 7, "x"))


def test_search_settings_come_from_the_environment(monkeypatch, tmp_path, fake_embedder):
    monkeypatch.setenv("QA_LEXICAL_SENTENCE_WEIGHT", "0.25")
    monkeypatch.setenv("QA_SENTENCE_WEIGHT", "0.7")
    app = create_app({"INDEX_DIR": str(tmp_path), "MODEL": "fake", "EMBEDDER": fake_embedder})
    cfg = app.extensions["qa"].cfg
    assert (cfg.lexical_sentence_weight, cfg.sentence_weight) == (0.25, 0.7)


def test_an_ivf_segment_finds_its_codes_with_and_without_the_stored_places(app, tmp_path, monkeypatch):
    """IVF rows' codes come from the .faiss file, through the places stored beside them (or, for a segment
    written before those were, through the lists' ids): the same codes either way, and the same as the flat one."""
    from qa.web.service import Service

    from .conftest import SEEDS

    with app.app_context():
        embedder = get_service().embedder
    monkeypatch.setattr(index_segment, "IVF_ABOVE", 3)
    Service(tmp_path / "ivf", "fake", embedder=embedder).ingest([SEEDS])
    [part] = [p for p in Index.load(tmp_path / "ivf").parts if p.seg.kind == "ivf"][:1]
    seg = part.seg
    assert seg.current and "p_place" in index_segment.read_arrays(tmp_path / "ivf" / f"{seg.name}.arrays")[1]
    real = index_segment.read_arrays
    monkeypatch.setattr(index_segment, "read_arrays", lambda *a, **k: (lambda m, arr: (m, {
        k2: v for k2, v in arr.items() if k2 != "p_place"}))(*real(*a, **k)))
    older = Segment(tmp_path / "ivf", {"name": seg.name, "kind": "ivf", "passages": len(seg)})
    assert not older.current
    rows = np.arange(len(seg))[::-1].copy()
    assert np.array_equal(seg.codes_of(rows), older.codes_of(rows))
    flat = Service(tmp_path / "flat", "fake", embedder=embedder)
    monkeypatch.setattr(index_segment, "IVF_ABOVE", 10**9)
    monkeypatch.setattr(index_segment, "read_arrays", real)
    flat.ingest([SEEDS])
    fseg = Index.load(tmp_path / "flat").parts[0].seg
    assert np.array_equal(fseg.pids, seg.pids)
    assert np.array_equal(fseg.codes_of(np.arange(len(fseg))), seg.codes_of(np.arange(len(seg))))


# A story of our own, and another that quotes one paragraph of it (two articles, not copies).
HARBOUR = """The harbour council of Kelvik voted on Monday to rebuild the north quay, which the November storm left cracked along half its length. The work will cost 14 million crowns and is due to finish before the herring season opens in late spring.

Fishermen had warned for years that the quay wall was failing. Boats have moored two abreast at the south pier since the storm, and the fish market has opened an hour later each morning while crews wait for a berth to unload.

"We cannot ask the fleet to work from a quay that moves under their feet. The state will pay half of the cost, and the rest will come from the harbour's own reserves and a loan that the council expects to repay within twelve years," said Fisheries Minister Ola Brandt.

The council also agreed to raise mooring fees by four percent from January. Councillor Ines Varga, who voted against the increase, said small boat owners had already lost a month of income and should not pay for a wall they did not break.

Engineers from the coastal authority will survey the seabed in December. If the foundations are sound, the contractor will reuse the old granite blocks; if not, the quay will be rebuilt on steel piles, which would add about three million crowns to the bill."""

QUOTER = """Fish prices at the Oskby auction rose for the third week running as the winter fleet stayed in port, with cod fetching the highest price since the spring of 2019. Buyers from the capital said restaurants had begun to take farmed salmon instead.

The minister visited the auction hall on Thursday and repeated the promise he had made in Kelvik the week before:

"We cannot ask the fleet to work from a quay that moves under their feet. The state will pay half of the cost, and the rest will come from the harbour's own reserves and a loan that the council expects to repay within twelve years," said Fisheries Minister Ola Brandt.

Oskby's own harbour master, Petra Lund, said the town would apply for the same support to dredge its silted inner basin, where trawlers can now enter only at high tide. The auction's board meets in January to decide whether to open on Sundays through the winter."""

QUESTIONS = ["Where did Assad flee to?", "Who is the leader of HTS?", "What did Trump post on Truth Social?",
             "Who captured Suwayda?", "When did the rebels reach Homs?", "What did Biden say about Syria?",
             "Who told Reuters that Assad left?", "What happened at Sednaya prison?",
             "Which groups attacked southwards?", "What did Russia's foreign ministry say?",
             "How much will the north quay cost?", "Who voted against the mooring fee increase?",
             "What will the engineers survey in December?", "When is the quay work due to finish?"]


@pytest.fixture
def wire_index(tmp_path, seeded_index, fake_embedder):
    """The seeds and a story of our own, each with a wire copy that adds a dateline above and a credit below;
    and an unrelated story quoting one paragraph of ours. Returns the service and {copy id: original id}."""
    import shutil

    from qa.ingest.articles import article_from_json
    from qa.web.service import Service

    path = tmp_path / "index"
    shutil.copytree(seeded_index, path)
    svc = Service(path, "fake", embedder=fake_embedder)
    svc.add(article_from_json({"id": "kelvik-quay", "title": "Kelvik will rebuild its storm-cracked north quay",
                               "text": HARBOUR, "source": "Kelvik Tidende", "published": "2024-12-08T01:30:00+01:00"},
                              "test"))
    svc.add(article_from_json({"id": "oskby-auction", "title": "Cod prices climb at Oskby auction", "text": QUOTER,
                               "source": "Oskby Posten", "published": "2024-12-16T09:00:00+01:00"}, "test"))
    index = svc.searcher().index
    twins = {}
    for original in ("assad-boards-plane-out-of-damascus", "assad-lands-in-russia", "kelvik-quay"):
        art = index.article(original)
        # 02:00 UTC on the 8th: later than each original (the seeds' date alone is its start in UTC, ours
        # is 00:30 UTC), though earlier as text.
        svc.add(article_from_json({
            "id": f"{original}-wire", "title": art["title"], "source": "Nordic Wire", "published": "2024-12-07T21:00:00-05:00",
            "text": f"DAMASCUS, Dec 9 (Nordic Wire) -\n\n{art['text']}\n\nReporting by Jane Roe; editing by John Doe."},
            "test"))
        twins[f"{original}-wire"] = original
    return svc, twins


def test_a_wire_copy_with_other_first_and_last_lines_is_one_result(wire_index):
    """A copy that adds a dateline above and a credit below shifts every window, so no passage is nearly the
    same as another though the articles are: the copy is found as a copy of the whole article, never shown
    beside its original, and listed in `also_in` of every result from the story."""
    svc, twins = wire_index
    s = svc.searcher()
    shift = len("DAMASCUS, Dec 9 (Nordic Wire) -\n\n")
    windows = {a: [(p["start"], p["end"]) for p in s.index.article(a)["passages"]] for a in twins.values()}
    overlap = lambda x, y: min(x[1], y[1]) - max(x[0], y[0])  # noqa: E731
    copies_shown = 0
    for q in QUESTIONS:
        shown = []  # (original, the span of the original's text shown, hit)
        for h in s.search(q, 5):
            c = h.citation
            original = twins.get(c.article_id, c.article_id)
            span = (c.start - shift, c.end - shift) if c.article_id in twins else (c.start, c.end)
            for other, seen, _ in shown:
                assert other != original or overlap(seen, span) <= 0, f"{q!r}: the same words shown twice ({original})"
            shown.append((original, span, h))
        for original, span, h in shown:
            if original not in twins.values():
                continue
            assert {h.citation.article_id, *(o.article_id for o in h.also_in)} == {original, f"{original}-wire"}, q
            assert len(h.also_in) == 1, q
            if h.citation.article_id != original:
                # The original was published first, so it is shown, unless its own window there overlaps
                # another result (left out, as overlapping windows of one article are).
                copies_shown += 1
                mine = [w for w in windows[original] if overlap(w, span) > 0.5 * (span[1] - span[0])]
                assert mine and all(any(overlap(w, seen) > 0 for other, seen, h2 in shown if other == original
                                        and h2 is not h) for w in mine), q
    assert copies_shown <= 3


def test_articles_sharing_one_quoted_paragraph_are_not_copies(wire_index):
    svc, _ = wire_index
    hits = svc.searcher().search("Who said the fleet cannot work from a quay that moves under their feet?", 10)
    shown = {h.citation.article_id: h for h in hits}
    assert {"kelvik-quay", "oskby-auction"} <= set(shown)
    assert [o.article_id for o in shown["oskby-auction"].also_in] == []
    assert "oskby-auction" not in [o.article_id for o in shown["kelvik-quay"].also_in]


def test_signatures_tell_a_copy_from_an_article_quoting_it():
    from qa.index.copies import COPY_AT, signature, similarity, values

    # Stored signatures compare only with ones made the same way: the hashing must never change.
    assert signature("The harbour council of Kelvik voted on Monday to rebuild the north quay.")[:8].hex() == \
        "63e80b027ed3fd05"
    assert signature("") is None and len(signature("Two words")) == 256
    copy = f"KELVIK, Dec 9 (Nordic Wire) -\n\n{HARBOUR}\n\nReporting by Jane Roe; editing by John Doe."
    assert similarity(values(signature(HARBOUR)), values(signature(copy))) >= 0.85
    assert similarity(values(signature(HARBOUR)), values(signature(QUOTER))) < COPY_AT / 2


def test_a_folder_from_before_signatures_still_finds_copies_passage_by_passage(tmp_path, seeded_index, fake_embedder):
    """A database without the signature column is read as before (copies only by near-identical passages);
    its next writer adds the column, and articles written from then on carry a signature."""
    import shutil
    import sqlite3

    from qa.index.copies import COPY_AT, similarity, values
    from qa.ingest.articles import article_from_json
    from qa.web.service import Service

    path = tmp_path / "index"
    shutil.copytree(seeded_index, path)
    db = sqlite3.connect(path / "qa.sqlite3")
    db.execute("ALTER TABLE articles DROP COLUMN signature")
    db.commit()
    db.close()
    svc = Service(path, "fake", embedder=fake_embedder)
    hits = svc.searcher().search("Where did Assad flee to?", 3)
    assert hits and all(svc.searcher().index.passages([h.passage_id])[h.passage_id].signature is None for h in hits)
    svc.add(article_from_json({"id": "kelvik-quay", "title": "Kelvik quay", "text": HARBOUR}, "test"))
    svc.add(article_from_json({"id": "kelvik-quay-wire", "title": "Kelvik quay",
                               "text": f"KELVIK (Nordic Wire) -\n\n{HARBOUR}\n\nReporting by Jane Roe."}, "test"))
    index = svc.searcher().index
    rows = index.passages([p["id"] for a in ("kelvik-quay", "kelvik-quay-wire", "assad-lands-in-russia")
                           for p in index.article(a)["passages"]])
    sigs = {r.article_id: values(r.signature) for r in rows.values()}
    assert sigs["assad-lands-in-russia"] is None  # written before: left NULL, compared passage by passage
    assert similarity(sigs["kelvik-quay"], sigs["kelvik-quay-wire"]) >= COPY_AT
