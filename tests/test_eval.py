import json
from pathlib import Path

import pytest

from qa.evaluate import load_squad

TINY = Path(__file__).parent / "data" / "tiny-squad.json"


def test_load_squad_joins_paragraphs():
    articles, questions = load_squad(TINY)
    assert [a.title for a in articles] == ["Lighthouse of Alexandria", "Honey bee"]
    assert articles[0].text.count("\n\n") == 1
    assert len(questions) == 6 and questions[0].answers == ["Pharos"]


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "dense"])
def test_eval_scores_known_answers(runner, mode):
    result = runner.invoke(["eval", str(TINY), "--json", "--mode", mode])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output[result.output.index("{"):])
    assert figures["questions"] == 6 and figures["articles"] == 2
    # One question has no answer anywhere: the best possible score is 5/6.
    assert figures["accuracy"]["20"] == pytest.approx(5 / 6)
    assert figures["accuracy"]["1"] >= 3 / 6
    assert 0 < figures["mrr"] <= 5 / 6


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
    assert "answer holds a right answer:" in text and "expected calibration error" in text


def test_eval_split_asks_the_other_half_as_out_of_collection(runner):
    out = runner.invoke(["eval", str(TINY), "--split", "--json"])
    figures = json.loads(out.output[out.output.index("{"):])
    # The odd article (Honey bee) is indexed; the lighthouse's questions are asked as ones it cannot answer.
    assert figures["articles"] == 1
    assert figures["answers"]["inside"] + figures["answers"]["outside"] == 6 and figures["answers"]["outside"] >= 1
    assert "answered null:" in runner.invoke(["eval", str(TINY), "--split"]).output


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
