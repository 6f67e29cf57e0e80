import json
from pathlib import Path

import pytest

from qa.ingest.squad import load_squad

TINY = Path(__file__).parent / "data" / "tiny-squad.json"
# Three one-passage articles; question 3 shares more words with the harbour than with the ferry that
# answers it, and nothing answers question 4 (see test_eval_figures_are_exact).
RANKS = Path(__file__).parent / "data" / "tiny-ranks.json"


def test_load_squad_joins_paragraphs():
    articles, questions = load_squad(TINY)
    assert [a.title for a in articles] == ["Lighthouse of Alexandria", "Honey bee"]
    assert articles[0].text.count("\n\n") == 1
    assert len(questions) == 6 and questions[0].answers == ["Pharos"]


def eval_figures(runner, path: Path, mode: str) -> dict:
    result = runner.invoke(["eval", str(path), "--json", "--mode", mode])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "dense"])
def test_eval_scores_known_answers(runner, mode):
    figures = eval_figures(runner, TINY, mode)
    assert figures["questions"] == 6 and figures["articles"] == 2 and figures["passages"] == 2
    # Each article is one passage and every question names its own article's subject, so each of the five
    # answerable questions finds its answer first; the sixth has no answer anywhere.
    assert figures["accuracy"] == {"1": pytest.approx(5 / 6), "5": pytest.approx(5 / 6), "20": pytest.approx(5 / 6)}
    assert figures["mrr"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "dense"])
def test_eval_figures_are_exact(runner, mode):
    """Ranks 1, 1, 2 and none (worked out by hand below): acc@1 2/4, acc@5 and acc@20 3/4, MRR (1 + 1 + 1/2) / 4."""
    figures = eval_figures(runner, RANKS, mode)
    assert (figures["questions"], figures["articles"], figures["passages"]) == (4, 3, 3)
    # 1. granite: the harbour, rank 1; 2. herring: the market, rank 1; 3. Bergen: "island ferry ... Kelvik quay"
    # holds the harbour's kelvik, quay and leave(s) against the ferry's island and ferry, so the ferry that
    # answers is second; 4. Leonardo: in no article.
    assert figures["accuracy"] == {"1": pytest.approx(2 / 4), "5": pytest.approx(3 / 4), "20": pytest.approx(3 / 4)}
    assert figures["mrr"] == pytest.approx((1 + 1 + 1 / 2) / 4)


def test_eval_rejects_a_non_squad_file(runner, tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    result = runner.invoke(["eval", str(bad)])
    assert result.exit_code == 1 and "not a SQuAD" in result.output


def test_eval_reports_the_answer_field(runner):
    out = runner.invoke(["eval", str(TINY), "--json"])
    a = json.loads(out.output[out.output.index("{"):])["answers"]
    assert a["inside"] == 6 and a["outside"] == 0
    assert 0 <= a["answer_holds"] <= 5 / 6 and 0 <= a["ece"] <= 1
    text = runner.invoke(["eval", str(TINY)]).output
    assert "| answer holds a right answer |" in text and "| calibration error over every answer given |" in text


def test_eval_split_asks_the_other_half_as_out_of_collection(runner):
    out = runner.invoke(["eval", str(TINY), "--split", "--json"])
    figures = json.loads(out.output[out.output.index("{"):])
    # The odd article (Honey bee) is indexed; the lighthouse's questions are asked as ones it cannot answer.
    assert figures["articles"] == 1
    assert figures["answers"]["inside"] + figures["answers"]["outside"] == 6 and figures["answers"]["outside"] >= 1
    assert "| not in the collection: null |" in runner.invoke(["eval", str(TINY), "--split"]).output


def test_eval_hides_the_articles_among_distractors(runner, tmp_path):
    news = tmp_path / "news.jsonl"
    news.write_text("\n".join(json.dumps({"id": f"n{i}", "title": f"Harbour news {i}", "text": f"The ferry timetable "
                                           f"changed again on day {i}, the harbour council said."}) for i in range(3)))
    out = runner.invoke(["eval", str(TINY), "--split", "--distractors", str(news), "--json"])
    assert out.exit_code == 0, out.output
    figures = json.loads(out.output[out.output.index("{"):])
    # The distractors are indexed beside the odd article, and no question is asked of them.
    assert figures["articles"] == 1 + 3
    assert figures["answers"]["inside"] + figures["answers"]["outside"] == 6


SQUAD2 = Path(__file__).parent / "data" / "tiny-squad2.json"


def test_load_squad_reads_squad_2_questions_nothing_answers():
    _, questions = load_squad(SQUAD2)
    assert [(q.text.split()[0], q.impossible, q.answers) for q in questions] == [
        ("On", False, ["Pharos"]), ("Which", True, []), ("What", False, ["nectar and pollen"]), ("How", True, [])]


def test_eval_asks_squad_2_lookalikes_apart_and_reports_the_new_figures(runner):
    figures = eval_figures(runner, SQUAD2, "hybrid")
    answers = figures["answers"]
    assert figures["questions"] == 2  # passages are measured on the answerable questions only
    assert answers["inside"] == 2 and answers["lookalike"] == 2
    for key in ("null_lookalike", "span_exact", "span_f1", "sure_right", "ece"):
        assert 0.0 <= answers[key] <= 1.0, key
    assert answers["span_exact"] <= answers["span_f1"] + 1e-9
    text = runner.invoke(["eval", str(SQUAD2)]).output
    assert "2 written to look answerable" in text and "| short span: exact match / F1" in text
