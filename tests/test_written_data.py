"""The news articles and questions we wrote ourselves (train/data/written/): well-formed SQuAD 2.0 files."""

import json
from pathlib import Path

import pytest

from qa.ingest.squad import load_squad

WRITTEN = sorted((Path(__file__).resolve().parent.parent / "train" / "data" / "written").glob("*.json"))


@pytest.mark.parametrize("path", WRITTEN, ids=[p.stem for p in WRITTEN])
def test_every_answer_slices_back_and_every_id_is_one_question(path):
    data = json.loads(path.read_text("utf-8"))["data"]
    ids = []
    for article in data:
        for p in article["paragraphs"]:
            for q in p["qas"]:
                ids.append(q["id"])
                assert q["is_impossible"] == (not q["answers"]), q["id"]
                for a in q["answers"]:
                    assert p["context"][a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"], q["id"]
    assert len(ids) == len(set(ids)) >= 300
    articles, questions = load_squad(path)
    assert len(articles) == len(data) and sum(q.impossible for q in questions) >= 100


def test_there_are_written_sets():
    assert len(WRITTEN) >= 2
