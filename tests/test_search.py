import dataclasses
import shutil
import sqlite3

import numpy as np
import pytest

from qa import create_app
from qa.errors import BadRequest
from qa.search import Citation, Hit, SearchConfig, Searcher, fts_query, fuse, highlight, query_terms, validate
from qa.sentences import SentenceIndex, terms_of
from qa.service import get_service
from qa.store import DB_NAME, Index, Writer


def test_query_terms_drop_stop_words_but_never_everything():
    assert query_terms("Where did Assad flee to?") == ["assad", "flee"]
    assert query_terms("Who is it?") == ["who", "is", "it"]


def test_fts_query_quotes_everything():
    assert fts_query(['a"b', "near"]) == '"a""b" OR "near"'


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


def test_sentence_term_scores_sum_the_weights_of_held_stems():
    texts = ["Assad fled to Moscow.", "Rebels entered Damascus.", "Moscow granted asylum to Assad."]
    terms = [terms_of(t) for t in texts]
    assert terms[0] == "assad fled moscow to"
    sents = SentenceIndex(np.zeros((3, 4), np.float32), {10: (0, 2), 11: (1, 3)},
                          [(0, 21), (22, 46), (47, 78)], terms)
    by_terms = sents.terms({"assad": 2.0, "moscow": 1.0, "asylum": 3.0, "zebra": 9.0})
    assert by_terms.of(10) == [3.0, 0.0]
    assert by_terms.of(11) == [0.0, 6.0]
    assert by_terms.best([11, 10, 99]) == {11: 6.0, 10: 3.0}
    assert sents.terms({"zebra": 1.0}).best([10]) == {10: 0.0}
    assert by_terms.best([99]) == {}
    assert by_terms.top(1) == [11]  # the passage holding the best sentence
    assert by_terms.top(2) == [11, 10]


def test_sentence_dense_scores_every_sentence_and_each_passages_best():
    vectors = np.eye(4, dtype=np.float32)[[0, 1, 2]]
    sents = SentenceIndex(vectors, {10: (0, 2), 11: (1, 3), 12: (2, 3)}, [(0, 1), (2, 3), (4, 5)])
    scores = sents.dense(np.array([0.2, 0.9, 0.5, 0.0], np.float32))
    assert scores.of(11) == pytest.approx([0.9, 0.5])
    assert scores.best([12, 10, 11]) == pytest.approx({12: 0.5, 10: 0.9, 11: 0.9})
    # passages owning the best sentence (row 1, in windows 10 and 11), then the next
    assert sorted(scores.top(1)) == [10, 11]
    assert set(scores.top(2)) == {10, 11, 12}


def test_index_from_before_stems_were_kept_loads_and_searches_the_same(app, tmp_path):
    """A folder whose sentences table has no terms column gets its stems at load, then from the writer."""
    with app.app_context():
        svc = get_service()
        before = [(h.passage_id, h.score, h.highlight) for h in svc.searcher().search("Where did Assad go?", 5)]
        old = tmp_path / "old"
        shutil.copytree(svc.index_dir, old)
    with sqlite3.connect(old / DB_NAME) as conn:
        conn.execute("ALTER TABLE sentences DROP COLUMN terms")
    searcher = Searcher(Index.load(old), svc.embedder, svc.cfg)
    assert [(h.passage_id, h.score, h.highlight) for h in searcher.search("Where did Assad go?", 5)] == before
    with Writer(old, "fake", svc.embedder.dim):
        pass
    with sqlite3.connect(old / DB_NAME) as conn:
        assert "terms" in {r[1] for r in conn.execute("PRAGMA table_info(sentences)")}


def test_exact_and_hnsw_passage_scores_agree(app):
    """The numpy path over a flat index, its dict fallback and FAISS over HNSW give the same dense scores."""
    import faiss

    with app.app_context():
        svc = get_service()
        flat = svc.searcher().index
        qvec = svc.embedder.encode(["Where did Assad go?"])[0]
    ids = flat.flat[0]
    hnsw = faiss.IndexIDMap2(faiss.IndexHNSWFlat(flat.vectors.d, 32, faiss.METRIC_INNER_PRODUCT))
    hnsw.add_with_ids(flat.flat[1].copy(), ids)
    by_hnsw = Index(flat.path, flat.manifest, hnsw, flat.sentences)
    assert by_hnsw.flat is None and flat.flat_rows_of_sentence_passages is not None
    extra = ids[:3].tolist()
    n = min(10, len(ids) - 1)
    arrays = Searcher(flat, svc.embedder, svc.cfg).dense_scores(qvec, n, extra)
    via_faiss = Searcher(by_hnsw, svc.embedder, svc.cfg).dense_scores(qvec, n, extra)
    assert set(arrays) == set(via_faiss) and len(arrays) >= n
    assert all(arrays[i] == pytest.approx(via_faiss[i], abs=1e-5) for i in arrays)
    assert flat.dense(qvec).of([*extra, 10**9]) == pytest.approx(by_hnsw.dense(qvec).of(extra))


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
