"""News over time: the newest answer for questions about the present, the answer of the time a question
names, the answer's date ("as of"), and the notice of a newer article that answers differently."""

import json
import shutil
from datetime import date

import pytest

from qa.ingest.articles import article_from_json
from qa.ingest.pipeline import add_articles
from qa.search import time as when
from qa.search.time import TimeRef, as_of, reference
from qa.web import create_app
from qa.web.service import Service

from .conftest import SEEDS, Runner

TODAY = date(2026, 12, 7)

# The older article repeats the question's words; the newer one tells the change in other words; the
# newest is about the town but does not say who its mayor is.
PAIR = [
    {"id": "mayor-2019", "title": "Lowmoor council sets out plans for the high street", "published": "2019-03-01",
     "source": "Lowmoor Echo",
     "text": "Jane Okafor is the mayor of Lowmoor. As mayor of Lowmoor, Jane Okafor oversees a town of about 40,000 "
             "people.\n\nThe council will review parking charges this spring."},
    {"id": "mayor-2024", "title": "Tom Brandt takes office in Lowmoor", "published": "2024-12-08",
     "source": "Lowmoor Echo",
     "text": "Tom Brandt was sworn in as mayor on Monday at the town hall, taking over from Jane Okafor after winning "
             "the vote.\n\nBrandt promised to reopen the swimming baths within a year."},
    {"id": "library-2025", "title": "Lowmoor library reopens after renovation", "published": "2025-02-01",
     "source": "Lowmoor Echo",
     "text": "The library in Lowmoor reopened on Tuesday after a two-year renovation.\n\nVisitors queued from early "
             "morning."},
]


@pytest.fixture(scope="module")
def time_index(tmp_path_factory, fake_embedder):
    path = tmp_path_factory.mktemp("time") / "index"
    svc = Service(path, "fake", embedder=fake_embedder)
    svc.ingest([SEEDS])
    with svc.writer() as w:
        add_articles(w, fake_embedder, [article_from_json(a, "test") for a in PAIR])
    return path


@pytest.fixture
def time_app(tmp_path, time_index, fake_embedder):
    index = tmp_path / "index"
    shutil.copytree(time_index, index)
    return create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder,
                       "SEEDS_DIR": str(SEEDS)})


def ask(app, q: str, k: int = 5):
    return app.extensions["qa"].searcher().ask(q, k)


# --- what time a question asks about ---------------------------------------------------------------------

@pytest.mark.parametrize("q, kind, first, last", [
    ("Who is the mayor of Lowmoor?", "present", None, None),
    ("What is the current price of a monthly pass?", "present", None, None),
    ("Who runs Veltrix now?", "present", None, None),
    ("Who was the mayor of Lowmoor in 2019?", "named", date(2019, 1, 1), date(2019, 12, 31)),
    ("Who was mayor in March 2020?", "named", date(2020, 3, 1), date(2020, 3, 31)),
    ("What happened on 8 December 2024?", "named", date(2024, 12, 8), date(2024, 12, 8)),
    ("What happened last March?", "named", date(2026, 3, 1), date(2026, 3, 31)),
    ("What was the rate before 2020?", "named", None, date(2019, 12, 31)),
    ("Who has run the firm since 2021?", "named", date(2021, 1, 1), None),
    ("Who led the team in the 1990s?", "named", date(1990, 1, 1), date(1999, 12, 31)),
    ("Who was the chief executive three years ago?", "named", date(2023, 1, 1), date(2023, 12, 31)),
    ("What did she say before the election?", "unplaced", None, None),
    ("Who was the first mayor of Lowmoor?", "past", None, None),
    ("Where did Assad flee to?", "past", None, None),
    ("How many of the 2000 workers were laid off?", "past", None, None),  # a count, not a year
])
def test_what_time_a_question_asks_about(q, kind, first, last):
    ref = reference(q, TODAY)
    assert (ref.kind, ref.first, ref.last) == (kind, first, last), ref


def test_last_march_in_february_is_the_year_before():
    assert reference("Who won last March?", date(2026, 2, 10)).first == date(2025, 3, 1)
    assert reference("Who won in March?", date(2026, 2, 10)).first == date(2025, 3, 1)
    assert reference("Who won in March?", date(2026, 3, 10)).first == date(2026, 3, 1)


def test_as_of_reads_the_articles_own_calendar_date():
    assert as_of("2024-12-08") == "8 December 2024"
    assert as_of("2024-12-08T23:30:00-05:00") == "8 December 2024"  # its own date, not UTC's
    assert as_of(None) is None and as_of("soon") is None


# --- which article's answer -----------------------------------------------------------------------------

def test_present_question_takes_the_newest_article_that_answers(time_app, monkeypatch):
    a = ask(time_app, "Who is the mayor of Lowmoor?").answer
    assert a is not None and a.citation.article_id == "mayor-2024" and "Tom Brandt" in a.text
    assert time_app.extensions["qa"].searcher().index.passages([a.passage_id])[a.passage_id].article_id == "mayor-2024"
    # The newest article about Lowmoor (the library) does not say who the mayor is: it does not win.
    # And words alone would have answered from the older article: the test can tell the two apart.
    monkeypatch.setattr(when, "by_time", lambda q, question, c, best, row, conf, *a, **k: when.ByTime(best, row, conf))
    old = ask(time_app, "Who is the mayor of Lowmoor?").answer
    assert old is not None and old.citation.article_id == "mayor-2019"


def test_a_named_year_takes_the_answer_of_that_time(time_app):
    a = ask(time_app, "Who was the mayor of Lowmoor in 2019?").answer
    assert a is not None and a.citation.article_id == "mayor-2019" and "Jane Okafor" in a.text
    a = ask(time_app, "Who was the mayor of Lowmoor in 2024?").answer
    assert a is not None and a.citation.article_id == "mayor-2024"


def test_a_year_with_no_article_of_its_own_takes_the_fact_as_it_stood(time_app):
    # Nothing from 2021: the last article before it (2019) says who was mayor then.
    a = ask(time_app, "Who was the mayor of Lowmoor in 2021?").answer
    assert a is not None and a.citation.article_id == "mayor-2019"


def test_newer_answer_notice(time_app):
    a = ask(time_app, "Who was the mayor of Lowmoor in 2019?").answer
    assert a.newer is not None
    assert a.newer.citation.article_id == "mayor-2024" and "Tom Brandt" in a.newer.text
    art = time_app.extensions["qa"].searcher().index.article("mayor-2024")
    assert art["text"][a.newer.citation.start:a.newer.citation.end] == a.newer.text
    assert a.newer.citation.href == f"/articles/mayor-2024#p-{a.newer.passage_id}"
    # The newest answer has nothing newer to point to.
    assert ask(time_app, "Who is the mayor of Lowmoor?").answer.newer is None


def test_undated_articles_are_neither_favoured_nor_dropped():
    from types import SimpleNamespace as NS

    def option(aid, published, score):
        at, day = when._instant(published)
        return when.Option(None, NS(article_id=aid, published=published), score, True, 0.9, aid, at, day,
                           True, True, 1.0)

    undated, old, new = option("undated", None, 0.8), option("old", "2019-01-01", 0.5), option("new", "2024-01-01", 0.1)
    present = TimeRef("present")
    # The model's own choice undated: it stays (it may be the newest).
    assert when.prefer(present, when.answering([undated, old, new], undated), undated) is undated
    # A dated choice: the newest dated answer wins; the undated one is not promoted over it.
    assert when.prefer(present, when.answering([undated, old, new], old), old) is new
    # Relevance decides between articles within a day of the newest.
    morning, noon = option("morning", "2024-01-01T00:00:00Z", 0.4), option("noon", "2024-01-01T12:00:00Z", 0.3)
    assert when.prefer(present, when.answering([old, morning, noon], old), old) is morning


def test_no_dates_no_change():
    """Articles without dates (as squad-dev's): time plays no part, the answer model's choice stands."""
    from types import SimpleNamespace as NS

    undated = [NS(article_id="a", published=None), NS(article_id="b", published=None)]
    assert not when.worth_reading(undated)
    assert not when.worth_reading([NS(article_id="a", published="2024-01-01"), undated[1]])
    assert when.worth_reading([NS(article_id="a", published="2024-01-01"), NS(article_id="b", published="2020-05-01")])
    out = when.by_time("Who is the mayor?", None, [], "best", "row", 0.5, [(r, 1.0, []) for r in undated], {}, 10)
    assert (out.sentence, out.row, out.confidence, out.newer, out.span) == ("best", "row", 0.5, None, None)


# --- where it shows ------------------------------------------------------------------------------------

def test_api_gives_the_date_and_the_newer_answer(time_app):
    c = time_app.test_client()
    body = c.get("/api/search", query_string={"q": "Who was the mayor of Lowmoor in 2019?"}).get_json()
    assert body["answer"]["citation"]["published"] == "2019-03-01"
    newer = body["answer"]["newer"]
    assert newer["citation"]["article_id"] == "mayor-2024" and newer["citation"]["published"] == "2024-12-08"
    body = c.get("/api/search", query_string={"q": "Who is the mayor of Lowmoor?"}).get_json()
    assert body["answer"]["newer"] is None and body["answer"]["citation"]["article_id"] == "mayor-2024"


def test_answer_card_says_as_of_and_links_the_newer_answer(time_app):
    c = time_app.test_client()
    html = c.get("/", query_string={"q": "Who was the mayor of Lowmoor in 2019?"}).get_data(as_text=True)
    assert "data-answer" in html and "as of <time datetime=\"2019-03-01\">1 March 2019</time>" in html
    assert "data-newer" in html and "A newer article (<time datetime=\"2024-12-08\">8 December 2024</time>)" in html
    assert "/articles/mayor-2024?" in html.split("data-newer", 1)[1].split("</p>", 1)[0]
    html = c.get("/", query_string={"q": "Who is the mayor of Lowmoor?"}).get_data(as_text=True)
    assert "as of <time datetime=\"2024-12-08\">8 December 2024</time>" in html and "data-newer" not in html


def test_qa_ask_prints_as_of_and_the_newer_answer(time_app):
    out = Runner(time_app).invoke(["ask", "Who was the mayor of Lowmoor in 2019?"]).output
    assert "as of 1 March 2019" in out
    assert "A newer article (8 December 2024) answers differently:" in out and "Tom Brandt" in out
    js = json.loads(Runner(time_app).invoke(["ask", "Who is the mayor of Lowmoor?", "--json"]).output)
    assert js["answer"]["citation"]["article_id"] == "mayor-2024"


# --- the real model ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_real_model_answers_by_time(tmp_path):
    """The packaged model, end to end: words alone answer from the older article; time picks the newer."""
    from qa.embed.model import DEFAULT_MODEL

    svc = Service(tmp_path / "index", DEFAULT_MODEL, "openvino-int8")
    svc.ingest([SEEDS])
    with svc.writer() as w:
        add_articles(w, svc.embedder, [article_from_json(a, "test") for a in PAIR])
    s = svc.searcher(wait=True)
    a = s.ask("Who is the mayor of Lowmoor?", 5).answer
    assert a is not None and a.citation.article_id == "mayor-2024", a
    a = s.ask("Who was the mayor of Lowmoor in 2019?", 5).answer
    assert a is not None and a.citation.article_id == "mayor-2019" and a.newer is not None
    assert a.newer.citation.article_id == "mayor-2024"
    # The seeds' questions are unchanged: their two articles share a date, so relevance decides.
    a = s.ask("Who is the leader of HTS?", 5).answer
    assert a is not None and "al-Golani" in a.text
