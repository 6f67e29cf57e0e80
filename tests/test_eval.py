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
