"""The answer field, "no answer", filters, facets and wire copies (DESIGN.md: "Answers, filters and wire copies")."""

import json
import math
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

from qa.search import answer
from qa.web import create_app
from qa.ingest.articles import article_from_json
from qa.web.service import Service

from .conftest import ROOT, SEEDS

WIRE = ("The harbour council approved a new ferry timetable on Monday, adding three evening sailings to the islands "
        "from March. Councillor Ines Varga said the change followed a petition signed by 4,000 residents.")
EXTRA = [
    {"id": "ferry-courier", "title": "Ferry timetable adds evening sailings", "text": WIRE, "source": "Daily Courier",
     "published": "2024-12-10"},
    # 23:30 UTC on the 9th: earlier than the Courier's day, though its text sorts after "2024-12-10"
    {"id": "ferry-post", "title": "Evening ferries to the islands from March", "text": WIRE, "source": "Evening Post",
     "published": "2024-12-10T00:30:00+01:00"},
    {"id": "ferry-undated", "title": "Islanders welcome the ferry plan", "source": "Island Radio",
     "text": "Islanders welcomed the ferry timetable and the evening sailings, and the council promised a review "
             "of fares for the island ferry in the spring."},
    {"id": "ferry-old", "title": "Ferry fares rise", "source": "Daily Courier", "published": "2023-05-02",
     "text": "The island ferry raised its fares for the summer, the harbour council said, blaming fuel costs."},
]


@pytest.fixture
def client(tmp_path, seeded_index, fake_embedder):
    index = tmp_path / "index"
    shutil.copytree(seeded_index, index)
    svc = Service(index, "fake", embedder=fake_embedder)
    for row in EXTRA:
        svc.add(article_from_json(row, "test"))
    app = create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder})
    return app.test_client()


def search(client, **params):
    r = client.get("/api/search", query_string=params)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_wire_copies_are_one_result_earliest_first(client):
    body = search(client, q="ferry timetable petition residents evening sailings", k=5)
    ferry = [r for r in body["results"] if "petition signed by 4,000" in r["text"]]
    assert len(ferry) == 1
    # The Evening Post's copy was published first (23:30 UTC on the 9th; the Courier's is dated the 10th, a
    # date sorting as its start in UTC), so it is shown; the other is listed.
    assert ferry[0]["citation"]["article_id"] == "ferry-post"
    assert [(c["article_id"], c["source"], c["published"]) for c in ferry[0]["also_in"]] == [
        ("ferry-courier", "Daily Courier", "2024-12-10")]
    assert ferry[0]["also_in"][0]["href"].startswith("/articles/ferry-courier#p-")
    assert all(r["also_in"] == [] for r in body["results"] if r is not ferry[0])


def test_source_filter_and_facets(client):
    whole = search(client, q="ferry timetable island harbour council", k=10)
    facets = {f["value"]: f["count"] for f in whole["facets"]["source"]}
    assert facets["Daily Courier"] == 2 and facets["Island Radio"] == 1
    only = search(client, q="ferry timetable island harbour council", k=10, source="Daily Courier")
    assert only["results"] and {r["citation"]["source"] for r in only["results"]} == {"Daily Courier"}
    assert {r["citation"]["article_id"] for r in only["results"]} == {"ferry-courier", "ferry-old"}
    assert only["facets"] == whole["facets"]  # counted before the source filter
    two = client.get("/api/search?q=ferry+fares&k=10&source=Island+Radio&source=Evening+Post").get_json()
    assert {r["citation"]["source"] for r in two["results"]} == {"Island Radio", "Evening Post"}
    post = client.post("/api/search", json={"q": "ferry fares", "k": 10, "source": ["Island Radio"]}).get_json()
    assert {r["citation"]["article_id"] for r in post["results"]} == {"ferry-undated"}
    assert search(client, q="ferry fares", source="Nobody")["results"] == []


def test_facets_read_the_narrow_index_and_folders_without_it_still_count(tmp_path, seeded_index, fake_embedder):
    import sqlite3

    from qa.index import Index

    index = tmp_path / "index"
    shutil.copytree(seeded_index, index)
    svc = Service(index, "fake", embedder=fake_embedder)
    for row in EXTRA[:3]:
        svc.add(article_from_json(row, "test"))
    db = index / "qa.sqlite3"
    has = lambda: sqlite3.connect(db).execute(  # noqa: E731
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'articles_source'").fetchone()[0] == 1
    pids = list(range(1, 40))
    assert has()
    with_it = Index.load(index).sources_of(pids)
    assert {src for _, src in with_it.values()} >= {"Daily Courier", "Evening Post", "Island Radio"}
    conn = sqlite3.connect(db)
    conn.execute("DROP INDEX articles_source")  # a folder written before the narrow index
    conn.commit()
    conn.close()
    assert not has() and Index.load(index).sources_of(pids) == with_it
    svc.add(article_from_json(EXTRA[3], "test"))  # its next write adds the index
    assert has()


def test_date_filter_and_newest_first(client):
    q = "ferry timetable island harbour council fares"
    dated = search(client, q=q, k=10, **{"from": "2024-12-09", "to": "2024-12-31"})
    # Inclusive on both ends, by the article's own calendar date; undated articles are left out.
    assert {r["citation"]["article_id"] for r in dated["results"]} == {"ferry-post"}
    assert dated["results"][0]["also_in"][0]["article_id"] == "ferry-courier"
    # The Post's 00:30 at +01:00 on the 10th is the 9th in UTC, but its own date, the 10th, is what counts.
    tenth = search(client, q=q, k=10, **{"from": "2024-12-10", "to": "2024-12-10"})["results"]
    assert [(r["citation"]["article_id"], [c["article_id"] for c in r["also_in"]]) for r in tenth] == [
        ("ferry-post", ["ferry-courier"])]
    assert "ferry-post" not in {r["citation"]["article_id"] for r in search(client, q=q, k=10, to="2024-12-09")["results"]}
    old = search(client, q=q, k=10, to="2023-12-31")
    assert {r["citation"]["article_id"] for r in old["results"]} == {"ferry-old"}
    assert search(client, q=q, **{"from": "2030-01-01"})["results"] == []
    relevance = search(client, q=q, k=6)
    newest = search(client, q=q, k=6, sort="newest")
    assert {r["passage_id"] for r in newest["results"]} == {r["passage_id"] for r in relevance["results"]}
    days = [r["citation"]["published"] for r in newest["results"]]
    dated_days = [d for d in days if d]
    assert dated_days == sorted(dated_days, key=instant, reverse=True) and days[:len(dated_days)] == dated_days
    assert [r["rank"] for r in newest["results"]] == list(range(1, len(days) + 1))


def instant(published: str) -> datetime:
    """The moment a `published` value names, in UTC (a date alone: its start)."""
    at = datetime.fromisoformat(published.replace("Z", "+00:00"))
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def test_newest_first_and_the_earliest_copy_compare_instants(tmp_path, fake_embedder):
    """`published` values with other offsets compare as the moments they name, not as text: 23:30 at -05:00 on
    the 8th is 04:30 UTC on the 9th, later than 01:00 UTC on the 9th; a date alone is that day's start in UTC."""
    svc = Service(tmp_path / "index", "fake", embedder=fake_embedder)
    dates = {"quay-new": "2024-12-08T23:30:00-05:00", "quay-mid": "2024-12-09T01:00:00Z", "quay-old": "2024-12-09"}
    texts = {"quay-new": "The Kelvik quay wall was rebuilt with granite blocks from the old mill.",
             "quay-mid": "Fishermen returned to the Kelvik quay wall after the storm damaged their nets.",
             "quay-old": "A crane lifted the last stone onto the Kelvik quay wall before the winter."}
    for aid, text in texts.items():
        svc.add(article_from_json({"id": aid, "title": f"Kelvik quay {aid}", "text": text, "published": dates[aid]},
                                  "test"))
    # One wire story, printed at those two moments: the one at 01:00 UTC is the earlier copy.
    svc.add(article_from_json({"id": "wire-late", "title": "Ferry timetable", "text": WIRE, "source": "A",
                               "published": dates["quay-new"]}, "test"))
    svc.add(article_from_json({"id": "wire-early", "title": "Ferry timetable", "text": WIRE, "source": "B",
                               "published": dates["quay-mid"]}, "test"))
    s = svc.searcher()
    hits = s.search("Kelvik quay wall", 3, sort="newest")
    assert [h.citation.article_id for h in hits] == ["quay-new", "quay-mid", "quay-old"]
    [wire] = [h for h in s.search("ferry timetable petition residents", 5) if "petition" in h.text]
    assert wire.citation.article_id == "wire-early" and [c.article_id for c in wire.also_in] == ["wire-late"]


@pytest.mark.parametrize("params, code", [
    ({"source": ""}, "invalid_source"), ({"source": "x" * 201}, "invalid_source"),
    ({"from": "2024-13-01"}, "invalid_date"), ({"to": "yesterday"}, "invalid_date"), ({"from": ""}, "invalid_date"),
    ({"sort": "oldest"}, "invalid_sort"), ({"sort": ""}, "invalid_sort"),
])
def test_bad_filters_get_json_400s(client, params, code):
    r = client.get("/api/search", query_string={"q": "ferry", **params})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == code, r.get_json()
    r = client.post("/api/search", json={"q": "ferry", **params})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == code
    assert client.post("/api/search", json={"q": "ferry", "source": [1]}).get_json()["error"]["code"] == "invalid_source"
    assert client.post("/api/search", json={"q": "ferry", "to": 20241201}).get_json()["error"]["code"] == "invalid_date"


def test_answer_cites_its_exact_characters(client):
    body = search(client, q="How many residents signed the ferry petition?")
    a = body["answer"]
    assert a is not None and 0 <= a["confidence"] <= 1
    art = client.get(f"/api/articles/{a['citation']['article_id']}").get_json()
    assert art["text"][a["citation"]["start"]:a["citation"]["end"]] == a["text"]
    assert "4,000" in a["text"]
    assert a["passage_id"] in [p["id"] for p in art["passages"]]
    assert set(body) >= {"query", "took_ms", "answer", "facets", "results"}


def test_results_are_marked_where_the_answer_is(client):
    body = search(client, q="How many residents signed the ferry petition?")
    a = body["answer"]
    [given] = [r for r in body["results"] if r["passage_id"] == a["passage_id"]]
    offset = a["citation"]["start"] - given["citation"]["start"]
    # The passage that gives the answer marks the answer itself (here two short sentences; the
    # question's words alone mark only the second), and every result read for it has one mark.
    assert given["highlight"] == [{"start": offset, "end": offset + len(a["text"])}]
    assert a["text"].startswith("The harbour council") and a["text"].endswith("4,000 residents.")
    assert all(len(r["highlight"]) == 1 for r in body["results"])


def test_the_same_evidence_answers_less_readily_in_a_bigger_collection():
    s = answer.Sentence(1, 1, 0, 10, "Some sentence.", 0.6, np.full(len(answer.SENTENCE_FEATURES), 0.5))
    p = np.array([0.6, 0.3, 0.1])
    gate = [float(answer.sigmoid(answer.question_features(s, p, 0.5, 0.7, n) @ answer.GATE_W))
            for n in (1_000, 65_000, 1_000_000)]
    assert gate[0] > gate[1] > gate[2]


def test_what_the_question_asks_for():
    assert answer.asks("How many people died?") == "number"
    assert answer.asks("When did the war end?") == "date"
    assert answer.asks("In what year was it built?") == "date"
    assert answer.asks("Who leads HTS?") == "name"
    assert answer.asks("Where did he go?") == "name"
    assert answer.asks("What is the capital of France?") is None
    assert answer.holds("number", "It cost three million pounds.", set())
    assert not answer.holds("number", "It cost a lot.", set())
    assert answer.holds("date", "It opened in 1998.", set())
    assert answer.holds("name", "The talks were led by Ines Varga.", {"who", "led", "the", "talks"})
    assert not answer.holds("name", "Talks were led by the council.", set())
    # Plural time words ask for dates too; a count is not a year, nor a number the question already has.
    assert answer.asks("In which years did she win the title?") == "date"
    q = {"how", "many", "titles", "did", "she", "win", "in", "2004"}
    assert not answer.holds("number", "She slid down the rankings in 2004 after an illness in April.", q)
    assert not answer.holds("number", "The club was founded in 1898.", set())
    assert answer.holds("number", "She won 5 of the 9 tournaments she entered in 2004.", q)
    assert answer.holds("number", "Net income rose to 3.2bn yuan, or 1,200 per worker.", set())
    assert not answer.holds("number", "Her form dipped in the second half of 2004.", q)  # a time, not a count
    assert answer.holds("number", "Half of the votes went to her.", set())


def test_a_sentence_is_also_read_with_its_neighbours(seeded_index, fake_embedder):
    """Each candidate's cosine with the question, read alone and with the sentence either side of it
    (the two vectors summed), from the cosines and the neighbours' own cosine the index gives."""
    text = "Rebels took the capital. Assad landed in Moscow."
    q = answer.Question("Where did Assad flee?", {"assad": 2.0, "flee": 1.5})
    first, second = answer.passage_sentences(q, 1, 1, 0.5, "Syria", 0, text, [(0, 24), (25, 48)], [0.0, 2.0],
                                             [0.1, 0.8], [np.zeros(0, np.uint32)] * 2, [0.0, 0.5], [0.5, 0.5])
    f = lambda s, name: s.features[answer.SENTENCE_FEATURES.index(name)]  # noqa: E731
    both = (0.1 + 0.8) / math.sqrt(2 + 2 * 0.5)  # |a + b| for unit vectors with a.b = 0.5
    assert f(first, "cosine_with_before") == 0.1 and f(second, "cosine_with_after") == 0.8  # no neighbour there
    assert f(first, "cosine_with_after") == pytest.approx(both) == f(second, "cosine_with_before")
    # The index's links are the stored sentence vectors' cosines with the one before.
    svc = Service(seeded_index, "fake", embedder=fake_embedder)
    index = svc.searcher().index
    seg = index.parts[0].seg
    pid = int(seg.pids[0])
    qv = fake_embedder.encode(["Where did Assad flee?"])[0]
    spans, _, cosines, _, links, central = index.sentences(qv, {}, [pid]).full(pid)
    codes = seg.s_codes[seg.p_lo[0]:seg.p_hi[0]].astype(np.float32) / seg.scale
    assert len(links) == len(spans) == len(codes) >= 2 and links[0] == 0.0
    assert links[1:] == pytest.approx((codes[1:] * codes[:-1]).sum(axis=1).tolist(), abs=1e-5)
    assert cosines == pytest.approx((codes @ qv).tolist(), abs=1e-5)
    gram = codes @ codes.T  # centrality: each sentence's mean cosine with the passage's others
    assert central == pytest.approx(((gram.sum(axis=1) - np.diag(gram)) / (len(codes) - 1)).tolist(), abs=1e-5)


def two_sentences(q: answer.Question, first: str, second: str, title: str, terms: list[float]):
    """The candidates of a passage of two sentences, with the stem keys the index would keep for them."""
    from qa.index.terms import sentence_key, stems

    keys = [np.array([sentence_key(s) for s in stems(t)], np.uint32) for t in (first, second)]
    text = f"{first} {second}"
    return answer.passage_sentences(q, 1, 1, 0.5, title, 0, text, [(0, len(first)), (len(first) + 1, len(text))],
                                    terms, [0.5, 0.5], keys, [0.0, 0.5], [0.5, 0.5])


def test_words_of_the_title_do_not_pick_the_sentence():
    """A news lede repeats the headline's words; what tells sentences of one story apart is how much of
    the rest of the question each holds."""
    q = answer.Question("Who is the festival director in Rotterdam?", {"festiv": 2.0, "director": 1.0, "rotterdam": 3.0})
    lede = "The Rotterdam festival pulled the film."
    quote = "Director Sandra den Hamer said the festival reflects its time."
    a, b = two_sentences(q, lede, quote, "Rotterdam festival pulls film", [5.0, 3.0])
    f = lambda s: s.features[answer.SENTENCE_FEATURES.index("held_beyond_title")]  # noqa: E731
    assert a.held > b.held  # the lede holds more of the question ...
    assert f(a) == 0.0 and f(b) == 1.0  # ... but none of what the title does not already say
    # Every question word in the title: nothing beyond it to hold.
    c, _ = two_sentences(q, lede, quote, "Festival director in Rotterdam", [5.0, 3.0])
    assert f(c) == 0.0


def test_common_words_of_the_question_point_at_the_detail():
    """A story's sentences repeat its names; the question's common words tell which one gives the detail."""
    from qa.index.terms import sentence_key

    q = answer.Question("When was Athletics Kenya founded by Isaiah Kiplagat?",
                        {"athlet": 2.0, "kenya": 2.0, "found": 1.5, "isaiah": 3.0, "kiplagat": 3.0})
    assert q.common == {sentence_key("found")}
    assert q.named == {sentence_key(s) for s in ("athlet", "kenya", "isaiah", "kiplagat")}
    a, b = two_sentences(q, "Athletics Kenya chief Isaiah Kiplagat spoke.", "He founded it in 1951.",
                         "Kenyan athletics", [10.0, 1.5])
    common, named = (answer.SENTENCE_FEATURES.index(n) for n in ("common_held", "names_held"))
    assert (a.features[common], a.features[named]) == (0.0, 1.0)
    assert (b.features[common], b.features[named]) == (1.0, 0.0)


def test_short_sentences_answer_with_their_likelier_neighbour():
    """Two short sentences make the answer even when the model doubts the neighbour (news names the
    subject in one and gives the detail in the next); two long ones only when it rates both."""
    q = answer.Question("Who replaced Wes Butters?", {"replac": 2.0, "wes": 3.0, "butter": 3.0})
    short = "Wes Butters was replaced on the chart show.", "JK and Joel took over in March."
    a, b = two_sentences(q, *short, "Radio 1", [8.0, 0.0])
    a.p, b.p = 0.99, 0.01  # below PAIR_AT of the best
    assert answer.span_of(a) == (a.start, b.end)
    long = ("Wes Butters, who had presented the chart show on Sunday afternoons for two years, was replaced "
            "after a review of the station's weekend schedule by its new controller."), \
           ("The new presenters, a duo who had hosted the breakfast show on a sister station, take over the "
            "programme from March and will also present a weekly podcast.")
    a, b = two_sentences(q, *long, "Radio 1", [8.0, 0.0])
    a.p, b.p = 0.99, 0.01
    assert answer.span_of(a) == (a.start, a.end)
    b.p = 0.5  # rated close to the best: the two join while under MAX_PAIR_WORDS
    assert answer.span_of(a) == (a.start, b.end)


# --- with the real model, end to end ---------------------------------------------------------------

@pytest.fixture(scope="module")
def real_index(tmp_path_factory):
    from qa.embed.model import DEFAULT_MODEL

    path = tmp_path_factory.mktemp("real")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "qa", "ingest", str(SEEDS), "--index", str(path), "-q"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return Service(path, DEFAULT_MODEL, "openvino-int8"), path, env


def test_real_model_answers_and_says_when_nothing_answers(real_index):
    svc, path, env = real_index
    s = svc.searcher()
    got = s.ask("Who promised to keep aiding Assad?", 5)
    assert got.answer is not None and "Russia" in got.answer.text
    art = s.index.article(got.answer.citation.article_id)
    assert art["text"][got.answer.citation.start:got.answer.citation.end] == got.answer.text
    assert len(got.answer.text.split()) <= answer.MAX_PAIR_WORDS + 20
    off = s.ask("Who won the 1966 football World Cup final at Wembley?", 5)
    assert off.answer is None and len(off.hits) == 5  # results are still returned


def test_qa_ask_prints_the_answer_first(real_index):
    _, path, env = real_index
    run = lambda *a: subprocess.run([sys.executable, "-m", "qa", "ask", *a, "--index", str(path)], cwd=ROOT, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    out = run("Who promised to keep aiding Assad?", "-k", "2").stdout
    assert out.startswith("Answer: ") and "Russia" in out.split("\n\n")[0]
    assert "1. " in out
    out = run("Who won the 1966 football World Cup final at Wembley?", "-k", "1").stdout
    assert out.startswith("No answer in the collection; the closest passages:")
    body = json.loads(run("Who promised to keep aiding Assad?", "--json").stdout)
    assert body["answer"]["text"] and set(body) >= {"answer", "facets", "results"}
    bad = run("Who?", "--from", "12/08/2024")
    assert bad.returncode != 0 and "from must be a date written YYYY-MM-DD" in bad.stderr
