"""The news articles and questions we wrote ourselves (train/data/written/, and train/data/next/ for a
later run): well-formed SQuAD 2.0 files."""

import importlib.util
import json
from pathlib import Path

import pytest

from qa.ingest.squad import load_squad

ROOT = Path(__file__).resolve().parent.parent
WRITTEN = sorted((ROOT / "train" / "data" / "written").glob("*.json"))
NEXT = sorted((ROOT / "train" / "data" / "next").glob("*.json"))


@pytest.mark.parametrize("path", WRITTEN + NEXT, ids=[p.stem for p in WRITTEN + NEXT])
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
    assert len(ids) == len(set(ids)) >= 80
    articles, questions = load_squad(path)
    assert len(articles) == len(data) and sum(q.impossible for q in questions) >= 40


def test_there_are_written_sets():
    assert len(WRITTEN) >= 2


LOOKALIKES = [p for p in WRITTEN + NEXT if p.name.startswith("lookalike-")]
SQUAD = ROOT.parent / "shared" / "eval" / "squad-dev.json"


@pytest.fixture(scope="module")
def training_paragraphs() -> dict[str, set[str]]:
    """Each training article's paragraphs, as train/make_reader_data.py chooses them (read once)."""
    if not SQUAD.exists():
        pytest.skip(f"{SQUAD} is absent (the tuning set lives beside the repository)")
    spec = importlib.util.spec_from_file_location("make_reader_data", ROOT / "train" / "make_reader_data.py")
    made = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(made)
    return {a["title"]: {p["context"] for p in a["paragraphs"]}
            for a in made.even_articles(json.loads(SQUAD.read_text("utf-8"))["data"])}


@pytest.mark.parametrize("path", LOOKALIKES, ids=[p.stem for p in LOOKALIKES])
def test_written_lookalikes_are_over_the_readers_own_training_paragraphs(path, training_paragraphs):
    """Over the tuning half the reader trains on, never a held-back or calibration article."""
    own = training_paragraphs
    for article in json.loads(path.read_text("utf-8"))["data"]:
        assert article["title"] in own, article["title"]
        assert all(p["context"] in own[article["title"]] for p in article["paragraphs"])
