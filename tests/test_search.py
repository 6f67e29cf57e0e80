import pytest

from qa.errors import BadRequest
from qa.search import SearchConfig, fts_query, fuse, highlight, query_terms, validate


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
