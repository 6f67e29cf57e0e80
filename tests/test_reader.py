"""The reader (qa/search/reader.py): the shipped int8 weights load offline, its spans slice back into their
sentence, and it says "none of these" where nothing answers."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from qa.search.reader import DATA, Reader

pytestmark = pytest.mark.slow

OIL = [
    "The 1973 oil crisis began in October 1973 when the members of the Organization of Arab Petroleum "
    "Exporting Countries proclaimed an oil embargo.",
    "By the end of the embargo in March 1974, the price of oil had risen from US$3 per barrel to nearly $12 "
    "globally.",
    "The crisis had many short- and long-term effects on global politics and the global economy.",
]
ODD = [
    "Café Zoë's naïve façade — 12½% taller — was rebuilt in 1889–1890 (see § 4).",
    "“Quoted,” she said… and left.",
    "A", " leading and trailing spaces ",
    "word " * 200,  # longer than the reader reads: cut, and the span stays inside
    "東京は日本の首都です。",
]


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader()


def test_shipped_files_are_small_and_in_the_package():
    files = [p for p in DATA.iterdir() if p.is_file()]
    assert {"reader.json", "reader-int8.xml", "reader-int8.bin"} <= {p.name for p in files}
    assert sum(p.stat().st_size for p in files) <= 25 * 1024 * 1024


def test_loads_offline_once_per_process():
    # a fresh process with the hubs shut off and no network proxy: only the package's files are read
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}
    code = ("from qa.search.reader import get_reader; r = get_reader(); assert r is get_reader(); "
            "assert not r.warmed and get_reader(warm=True) is r and r.warmed; "
            "x = r.score('When did the oil crisis begin?', ['It began in October 1973.']); "
            "print(round(float(x.p.sum() + x.p_null), 6))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1.0"


def test_probabilities_cover_the_candidates_and_the_null(reader):
    got = reader.score("When did the 1973 oil crisis begin?", OIL)
    assert got.p.shape == (3,) and got.logits.shape == (3,)
    assert got.p.sum() + got.p_null == pytest.approx(1.0)
    assert reader.score("Anything?", []).p_null == 1.0


def test_the_null_spans_margin_is_the_short_answers_score_above_cls(reader):
    got = reader.score("When did the 1973 oil crisis begin?", OIL)
    assert got.span_nulls.shape == (3,) and np.isfinite(got.span_nulls).all()
    have = got.features(0, 0.5, 0.5, 100, 0.0)
    assert have["span_margin"] == pytest.approx(got.span_scores[0] - got.span_nulls[0])
    # a reading without the null span's scores (an older replay): the column reads 0
    from qa.search.reader import Reading
    assert Reading.of(got.logits, got.null_logit, got.spans, got.span_scores).features(0, 0.5, 0.5, 100, 0.0)[
        "span_margin"] == 0.0


@pytest.fixture
def tr(monkeypatch):
    """train/train_reader.py, imported as the training script runs it."""
    import importlib.util
    from pathlib import Path

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = importlib.util.spec_from_file_location(
        "train_reader", Path(__file__).resolve().parent.parent / "train" / "train_reader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_with_a_null_span_points_sentences_that_do_not_answer_at_cls(tr):
    import torch

    torch.manual_seed(0)
    model = tr.Reader(1)
    tok = tr.tokenizer()
    enc, q_len = tr.encode_pair(tok, "When did the crisis begin?", OIL[1:], 96)
    items = [(ids, types, 0, -1, -1) for ids, types, _ in enc]  # two sentences, neither answers
    batch = tr.collate([{"items": items, "q_len": q_len}], [0])
    assert tr.losses(model, batch)[1].item() == 0.0  # no span to learn without the null span
    # and a third that answers, its span on the sentence's first two pieces
    ids, types, _ = tr.encode_pair(tok, "When did the crisis begin?", OIL[:1], 96)[0][0]
    batch = tr.collate([{"items": items + [(ids, types, 1, q_len, q_len + 1)], "q_len": q_len}], [0])
    with torch.no_grad():
        logit, start, end = model(*batch[:3])
    start.requires_grad_()
    end.requires_grad_()

    class Fixed:  # the model's outputs held, to see where the loss pushes them
        null = model.null

        def __call__(self, *inputs):
            return logit, start, end

    _, span_loss, _ = tr.losses(Fixed(), batch, span_null=1.0)
    assert span_loss.item() > 0
    span_loss.backward()
    for g in (start.grad, end.grad):
        # where nothing answers: up at [CLS], down at every piece of the sentence
        assert (g[:2, 0] < 0).all()
        for r in range(2):
            assert (g[r, q_len:int(batch[2][r].sum()) - 1] > 0).all()
        # where the sentence answers, [CLS] is a choice too, and pushed down
        assert g[2, 0] > 0
    assert start.grad[2, q_len] < 0 and end.grad[2, q_len + 1] < 0


def test_a_smaller_reader_starts_from_a_larger_ones_first_layers_and_learns_its_answers(tr, tmp_path):
    import torch

    torch.manual_seed(0)
    teacher = tr.Reader(2)
    with torch.no_grad():  # heads the packaged model lacks: make them the teacher's own
        teacher.score.weight.normal_()
        teacher.null.fill_(0.5)
    torch.save({"model": teacher.state_dict(), "layers": 2, "args": {}}, tmp_path / "reader.pt")
    student = tr.load_reader(tmp_path / "reader.pt", 1)
    assert len(student.bert.encoder.layer) == 1
    for mine, its in ((student.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[0].output.dense.weight),
                      (student.score.weight, teacher.score.weight), (student.null, teacher.null)):
        assert torch.equal(mine, its)
    with pytest.raises(SystemExit, match="has 2 layers"):
        tr.load_reader(tmp_path / "reader.pt", 3)

    tok = tr.tokenizer()
    enc, q_len = tr.encode_pair(tok, "When did the crisis begin?", OIL, 96)
    examples = [{"items": [(ids, types, int(i == 0), -1, -1) for i, (ids, types, _) in enumerate(enc)], "q_len": q_len}]
    tr.teach(teacher, examples, torch.device("cpu"), bf16=False)
    assert [len(t[1]) for t in examples[0]["teacher"]] == [len(ids) for ids, *_ in examples[0]["items"]]
    batch = tr.collate(examples, [0])
    teacher.eval()
    assert tr.losses(teacher, batch)[2].item() < 1e-4  # a reader has nothing to learn from itself
    assert tr.losses(teacher, batch[:-1] + (None,))[2].item() == 0.0  # nor anything without a teacher
    student.eval()  # no dropout: the same outputs each step
    opt = torch.optim.Adam(student.parameters(), lr=1e-4)
    first = tr.losses(student, batch)[2]
    for _ in range(10):
        opt.zero_grad()
        tr.losses(student, batch)[2].backward()
        opt.step()
    assert tr.losses(student, batch)[2].item() < 0.5 * first.item()


def test_a_sentence_scores_the_same_alone_as_among_others(reader):
    # int8 with ranges fixed at export: a sentence's logit does not move with the company it is read in,
    # and the padding a longer companion brings changes nothing
    question = "When did the 1973 oil crisis begin?"
    together = reader.score(question, OIL + ODD).logits
    for i, sentence in enumerate(OIL):
        assert reader.score(question, [sentence]).logits[0] == pytest.approx(together[i], abs=1e-3)
    # fewer candidates than the rows a call is padded to: only theirs come back
    for n in (1, 2):
        got = reader.score(question, OIL[:n])
        assert got.logits.shape == got.p.shape == (n,) and len(got.spans) == n
        np.testing.assert_allclose(got.logits, together[:n], atol=1e-3)


def test_a_folder_exported_for_onnx_runtime_says_to_export_again(tmp_path):
    from qa.errors import ReaderUnusable

    meta = json.loads((DATA / "reader.json").read_text())
    (tmp_path / "reader.json").write_text(json.dumps({**meta, "model": "reader-int8.onnx"}))
    (tmp_path / "reader-int8.onnx").write_bytes(b"not a model")
    with pytest.raises(ReaderUnusable, match="export_reader.py"):
        Reader(tmp_path)


def test_threads_reading_at_once_get_what_one_gets_alone(reader):
    from concurrent.futures import ThreadPoolExecutor

    questions = ["When did the 1973 oil crisis begin?", "What was the price of oil in March 1974?",
                 "Who won the 2004 Super Bowl?", "What did the crisis affect?"] * 8
    alone = [reader.score(q, OIL).logits for q in questions]
    with ThreadPoolExecutor(4) as pool:
        at_once = list(pool.map(lambda q: reader.score(q, OIL).logits, questions))
    for a, b in zip(alone, at_once):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_spans_slice_back_into_their_sentence(reader):
    for question in ("When was it rebuilt?", "Who said it?", "What is the capital?", "x"):
        got = reader.score(question, ODD + OIL)
        for text, span in zip(ODD + OIL, got.spans):
            if span is None:
                continue
            a, b = span
            assert 0 <= a < b <= len(text)
            piece = text[a:b]
            assert piece == piece.strip() and piece
            # whole words: never a word cut in two
            assert a == 0 or not (text[a - 1].isalnum() and text[a].isalnum())
            assert b == len(text) or not (text[b - 1].isalnum() and text[b].isalnum())


def test_ranks_the_answering_sentence_first(reader):
    got = reader.score("When did the 1973 oil crisis begin?", OIL)
    assert got.best == 0
    assert got.spans[0] is not None
    got = reader.score("What was the price of oil in March 1974?", OIL)
    assert got.best == 1


def test_says_none_where_nothing_answers(reader):
    answerable = reader.score("When did the 1973 oil crisis begin?", OIL)
    # another subject altogether, and a look-alike whose name the sentences do not hold
    for question in ("Who won the 2004 Super Bowl?", "When did the 1973 coffee crisis begin in Brazil?"):
        got = reader.score(question, OIL)
        assert got.margin < 0, (question, got.logits, got.null_logit)
        assert got.p_null > got.p.max()
        assert got.margin < answerable.margin


def test_confidence_and_decision_follow_the_calibrator(reader):
    answered = reader.score("When did the 1973 oil crisis begin?", OIL)
    nothing = reader.score("Who won the 2004 Super Bowl?", OIL)
    hi = reader.confidence(reader.features(answered, answered.best, 0.6, 0.9, 1000))
    lo = reader.confidence(reader.features(nothing, nothing.best, 0.6, 0.9, 1000))
    assert 0.0 <= lo < hi <= 1.0
    assert reader.answers(hi) and not reader.answers(lo)
    assert np.isfinite(hi) and np.isfinite(lo)


# --- in the service: the API, the page and `qa ask` use it --------------------------------------------


SEED_QUESTIONS = ["Where did Assad flee to?", "Who leads HTS?", "When did the rebels reach Homs?",
                  "Who reacted to the fall of Assad?", "What happened at Damascus airport?"]


def test_the_api_the_page_and_qa_ask_answer_with_the_reader_and_its_short_span(client, runner):
    spans = 0
    for q in SEED_QUESTIONS:
        a = client.get("/api/search", query_string={"q": q}).get_json()["answer"]
        if a is None or a["span"] is None:
            continue
        spans += 1
        short = a["text"][a["span"]["start"]:a["span"]["end"]]
        assert short.strip() == short and short and len(short) < len(a["text"])
        page = client.get("/", query_string={"q": q}).get_data(as_text=True)
        assert f'<strong class="answer-span" data-span>{html.escape(short, quote=False)}</strong>' in page
        out = runner.invoke(["ask", q], color=True).output
        assert f"\x1b[1m{short.split()[0]}" in out  # bold starts at the short answer (wrapping may split it)
    assert spans >= 2  # most seed questions get an answer with its words marked


def test_the_reader_says_null_where_the_collection_does_not_answer(client):
    for q in ("Who won the 2004 Super Bowl?", "What is the boiling point of mercury?"):
        body = client.get("/api/search", query_string={"q": q}).get_json()
        assert body["answer"] is None and body["results"], q
        page = client.get("/", query_string={"q": q}).get_data(as_text=True)
        assert "data-no-answer" in page and "data-answer" not in page


def test_qa_reader_false_gives_the_feature_models_answer_without_a_span(tmp_path, seeded_index, fake_embedder):
    import shutil

    from qa.web import create_app

    index = tmp_path / "index"
    shutil.copytree(seeded_index, index)
    plain = create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder,
                        "READER": "false"}).test_client()
    got = [plain.get("/api/search", query_string={"q": q}).get_json()["answer"] for q in SEED_QUESTIONS]
    assert any(a is not None for a in got) and all(a is None or a["span"] is None for a in got)


def test_the_passage_the_reader_answers_from_leads_the_results(seeded_index, fake_embedder, monkeypatch):
    import dataclasses

    from qa.search import searcher as searching
    from qa.web.service import Service

    svc = Service(seeded_index, "fake", embedder=fake_embedder)
    index = svc.searcher().index
    stay = searching.Searcher(index, fake_embedder, dataclasses.replace(svc.cfg, reader_leads=False))
    q = "Where did Assad flee to?"
    fused = [h.passage_id for h in stay.ask(q, 5).hits]  # the fused scores' order
    assert len(fused) >= 3
    lower = fused[2]  # the reader "finds" the answer in the third passage
    real_read = searching.answers.read

    def read(reader, question, cands, gate_p, passages):
        got = real_read(reader, question, cands, gate_p, passages)
        return dataclasses.replace(got, best=next(c for c in cands if c.pid == lower), gives=True)

    monkeypatch.setattr(searching.answers, "read", read)
    led = searching.Searcher(index, fake_embedder, svc.cfg).ask(q, 5)
    assert led.answer is not None and led.answer.passage_id == lower
    assert [h.passage_id for h in led.hits] == [lower] + [i for i in fused if i != lower]
    assert [h.rank for h in led.hits] == list(range(1, len(fused) + 1))
    assert [h.passage_id for h in stay.ask(q, 5).hits] == fused  # QA_READER_LEADS=false: as fused


def test_the_calibrators_rescale_keeps_every_decision_and_fixes_an_overconfident_scale(monkeypatch):
    import importlib.util
    from pathlib import Path

    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts train/ and bench/ first
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    spec = importlib.util.spec_from_file_location(
        "eval_reader", Path(__file__).resolve().parent.parent / "train" / "eval_reader.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    rng = np.random.default_rng(5)
    x = np.column_stack([np.ones(4000), rng.normal(size=(4000, 2))])
    truth = np.array([-0.5, 1.0, -0.7])
    y = (rng.random(4000) < 1 / (1 + np.exp(-(x @ truth)))).astype(float)
    w, at = truth * 2.0, 0.3  # twice too sure of itself
    scaled, at2 = ev.rescale(w, at, x, y)
    scaled, at2 = np.round(scaled, 5), round(at2, 5)  # as reader.json keeps them
    before, after = 1 / (1 + np.exp(-(x @ w))), 1 / (1 + np.exp(-(x @ scaled)))
    assert ((before >= at) == (after >= at2)).all()  # the same answers given
    shown = after >= at2
    err = lambda p: abs(p[shown].mean() - y[shown].mean())  # noqa: E731
    assert err(after) < 0.02 < err(before)


def test_only_the_best_candidate_is_read_where_the_sentence_model_is_sure_of_it(reader, monkeypatch):
    # one_at (train/eval_reader.py): at or above it, the other candidates could not win the choice, so one row is
    # read (half the cost of three); below it, the three likeliest
    from qa.search import answer as answers

    assert reader.calibrator.get("one_at", 1.0) < 1.0, "reader.json has no one_at: train/eval_reader.py --write-calibrator"
    texts = OIL + ODD
    read_with = []
    real = reader.score
    monkeypatch.setattr(reader, "score", lambda q, sentences: read_with.append(list(sentences)) or real(q, sentences))
    rows = []  # the rows each model call runs: one candidate is one row, not padded to three
    run = reader.run
    monkeypatch.setattr(reader, "run", lambda feeds: rows.append(feeds["input_ids"].shape[0]) or run(feeds))

    def cands(best_p: float) -> list:
        rest = (1.0 - best_p) / (len(texts) - 1)
        return [answers.Sentence(pid=1, rank=1, start=0, end=len(t), text=t, held=0.0, features=np.zeros(1),
                                 p=best_p if i == 1 else rest) for i, t in enumerate(texts)]

    sure = answers.read(reader, "When did the 1973 oil crisis begin?", cands(reader.calibrator["one_at"]), 0.5, 100)
    assert read_with[-1] == [texts[1]] and sure.best.text == texts[1] and rows[-1] == 1
    assert set(sure.prob.values()) == {1.0}
    unsure = answers.read(reader, "When did the 1973 oil crisis begin?", cands(reader.calibrator["one_at"] - 0.01),
                          0.5, 100)
    assert len(read_with[-1]) == 3 and read_with[-1][0] == texts[1] and rows[-1] == 3
    assert 0.0 < unsure.confidence < 1.0 and len(unsure.prob) == 3
