"""Measure the reader through the project's real search, on the held-back half, beside today's answer.

    python train/eval_reader.py [--work train/out/eval] [--fit] [--write-calibrator]

1. Collect (once, kept in --work): indexes built with the project's code (qa.web.service.Service,
   qa.ingest.pipeline.add_articles, the default int8 embedder), every question asked with
   Searcher.ask(q, 5, with_answer=True); kept per question: today's answer (text, confidence), whether
   the top passage holds an answer, and `evidence["candidates"]`, the sentences of the five best
   passages with the sentence model's probability (qa/search/answer.py).
   - held back: the ODD articles of squad-dev indexed; their questions (inside), SQuAD 2.0's
     unanswerable questions of those articles (look-alikes), and the even articles' questions
     (another collection, as `qa eval --split` asks them);
   - tuning replay, for fitting the confidence: the three even articles kept out of the reader's
     training (train/make_reader_data.py CALIBRATION_POSITIONS): their questions and look-alikes asked
     of the even half's index, and their questions asked of the other nine even articles' index
     (another collection).
2. Read: the shipped reader (qa/search/reader.py, int8) over every candidate of every question.
3. Fit on the tuning replay only: how the reader's logit and the sentence model's probability
   combine to choose the sentence, the calibrator (a logistic over the reader's probability, its margin
   over the null, the null's probability, the sentence model's probability and today's gate), and the
   confidence below which the answer is null (an answer kept for 95% of inside questions whose top
   passage is right); then the calibrator's scale refitted on the answers above that line (`rescale`).
4. Report held back: the reader's figures beside today's.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "train"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
EVAL = ROOT.parent / "shared" / "eval"
WRITTEN = ROOT / "train" / "data" / "written"

import numpy as np  # noqa: E402

from make_reader_data import CALIBRATION_POSITIONS  # noqa: E402

from qa.search.answer import _WORD, MAX_PAIR_WORDS, PAIR_AT, SHORT_PAIR_WORDS, shortlist, sigmoid, unmatched  # noqa: E402
from qa.search.reader import CALIBRATOR_COLUMNS, Reading  # noqa: E402
from tune_answers import fit as fit_logistic  # noqa: E402  (logistic regression by Newton's method)
from qa.search.evaluate import answer_f1, holds, normalize_answer  # noqa: E402

KEEP_TOP_RIGHT = 0.95  # the answer is kept for this share of inside questions whose top passage is right
ONE_AT_GRID = (0.99, 0.97, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)  # descending: the first that fails ends the search
ONE_CHANGED = 0.01  # ... at most this share of the tuning replay's questions chosen otherwise
ONE_LOST = 0.003  # ... and a right single sentence for at most this share fewer (as the choice of alpha allows)


# ---------------------------------------------------------------- collect

def _squad():
    from qa.ingest.squad import load_squad

    owners: list[int] = []
    articles, questions = load_squad(EVAL / "squad-dev.json", owners)
    raw = json.loads((EVAL / "squad-dev.json").read_text("utf-8"))["data"]
    squad2 = json.loads((EVAL / "squad2-dev.json").read_text("utf-8"))["data"]
    titles = [a["title"] for a in raw]
    lookalikes = collections.defaultdict(list)  # position -> SQuAD 2.0 unanswerable questions
    for a in squad2:
        if a["title"] in titles:
            pos = titles.index(a["title"])
            lookalikes[pos] += [q["question"].strip() for p in a["paragraphs"] for q in p["qas"] if q["is_impossible"]]
    return articles, questions, owners, lookalikes


def collect(work: Path, name: str, positions: list, asks: list[tuple[str, str, list[str]]],
            index: str | None = None) -> list[dict]:
    """Index the squad-dev articles at `positions` (or the given articles), ask (kind, question, answers)
    of it, keep what the answer read."""
    from qa.embed.model import DEFAULT_MODEL
    from qa.search.evaluate import holds
    from qa.ingest.pipeline import add_articles
    from qa.search.searcher import SearchConfig
    from qa.web.service import Service

    path = work / f"{name}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    if positions and isinstance(positions[0], int):
        articles, _, _, _ = _squad()
        positions = [articles[i] for i in positions]
    # today's answer: the feature models alone (the reader is what is measured against it)
    svc = Service(work / (index or name), DEFAULT_MODEL, "openvino-int8", SearchConfig(reader=False))
    if svc.is_empty():
        t0 = time.time()
        with svc.writer() as w:
            add_articles(w, svc.embedder, positions)
        print(f"{name}: indexed {len(positions)} articles in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    searcher = svc.searcher()
    rows = []
    t0 = time.time()
    for kind, q, answers in asks:
        got = searcher.ask(q, 5)
        ev = got.evidence
        cands = ev.get("candidates") or []
        at = {id(c): i for i, c in enumerate(cands)}
        gate_p = None
        if ev.get("features") is not None:
            from qa.search import answer as A

            gate_p = A.gate(ev["features"])
        rows.append({
            "kind": kind, "question": q, "answers": answers,
            "top_right": bool(got.hits and holds(got.hits[0].text, answers)),
            "base_text": got.answer.text if got.answer else None,
            "base_confidence": got.answer.confidence if got.answer else None,
            "gate_p": gate_p, "passages": searcher.index.passage_count,
            "cands": [{"text": c.text, "pid": c.pid, "rank": c.rank, "start": c.start, "end": c.end, "p": c.p,
                       "before": at.get(id(c.before)), "after": at.get(id(c.after))} for c in cands],
        })
    print(f"{name}: {len(rows)} questions in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    path.write_bytes(pickle.dumps(rows))
    return rows


def collect_all(work: Path) -> tuple[list[dict], list[dict]]:
    articles, questions, owners, lookalikes = _squad()
    n = len(articles)
    odd = [i for i in range(n) if i % 2]
    even = [i for i in range(n) if i % 2 == 0]
    train9 = [i for i in even if i not in CALIBRATION_POSITIONS]

    def qs(positions, kind):
        return [(kind, q.text, q.answers) for q, o in zip(questions, owners) if o in positions]

    def looks(positions):
        return [("lookalike", q, []) for p in positions for q in lookalikes.get(p, [])]

    held = collect(work, "odd", odd, [*qs(odd, "inside"), *looks(odd),
                                      *[("outside", q, a) for _, q, a in qs(even, "x")]])
    cal = list(CALIBRATION_POSITIONS)
    tune = collect(work, "even", even, [*qs(cal, "inside"), *looks(cal)])
    tune += collect(work, "train9", train9, [("outside", q, a) for _, q, a in qs(cal, "x")])
    # which outside questions the reader never saw (the calibration articles' own)
    cal_questions = {q for _, q, _ in qs(cal, "x")}
    for r in held:
        r["reader_saw"] = r["kind"] == "outside" and r["question"] not in cal_questions
    # News we wrote (train/data/written/), never trained on: news-a's replay joins the fitting, news-b's is held
    # back; each indexed alone (tens of passages) and among the other half's squad-dev articles (thousands),
    # its questions also asked of the other half alone (another collection).
    if (WRITTEN / "news-a.json").exists():
        tune += news(work, "news-a", [articles[i] for i in even], "even")
        held += news(work, "news-b", [articles[i] for i in odd], "odd")
    return held, tune


def news(work: Path, name: str, distractors: list, distractors_index: str) -> list[dict]:
    from qa.ingest.squad import load_squad

    arts, questions = load_squad(WRITTEN / f"{name}.json")
    inside = [("lookalike" if q.impossible else "inside", q.text, q.answers) for q in questions]
    out = collect(work, name, arts, inside)
    out += collect(work, f"{name}-among", [*arts, *distractors], inside)
    out += collect(work, f"{name}-elsewhere", distractors, [("outside", q.text, q.answers) for q in questions
                                                            if not q.impossible], index=distractors_index)
    for r in out:
        r["news"] = True
    return out


# ---------------------------------------------------------------- read

READ_FIELDS = ("logits", "span_scores", "span_nulls", "spans")  # what read_all keeps of a question


def read_all(rows: list[dict], reader, key: str, top: int, cache: Path | None = None) -> bool:
    """The reader over each question's `top` candidates the sentence model rates highest (the rest get
    a logit of -inf: never chosen); kept in `cache` (per reader file), so fitting again reads nothing
    it read before. True when it read any."""
    known = pickle.loads(cache.read_bytes()) if cache is not None and cache.exists() else {}

    def name(r):  # the question, where it was asked, and what the reader read
        return r["kind"], r["question"], r["passages"], tuple(c["text"] for c in r["cands"])

    # a question cached without every field read now (a cache from before one was added) is read again
    todo = [r for r in rows if not set(READ_FIELDS) <= known.get(name(r), {}).keys()]
    t0, n = time.time(), 0
    for r in todo:
        fp = np.array([c["p"] for c in r["cands"]])
        keep = np.argsort(-fp, kind="stable")[:top]
        got = reader.score(r["question"], [r["cands"][i]["text"] for i in keep])
        r["logits"] = np.full(len(fp), -np.inf)
        r["logits"][keep] = got.logits
        r["span_scores"] = np.full(len(fp), -np.inf)
        r["span_scores"][keep] = got.span_scores
        r["span_nulls"] = np.full(len(fp), -np.inf)
        r["span_nulls"][keep] = got.span_nulls
        r["spans"] = [None] * len(fp)
        for i, sp in zip(keep, got.spans):
            r["spans"][i] = sp
        n += len(keep)
        known[name(r)] = {k: r[k] for k in READ_FIELDS}
    for r in rows:
        r.update(known[name(r)])
    print(f"{key}: read {n} pairs of {len(todo)} questions in {time.time() - t0:.0f} s "
          f"({len(rows) - len(todo)} from {cache})", file=sys.stderr, flush=True)
    if cache is not None and todo:
        cache.write_bytes(pickle.dumps(known))
    return bool(todo)


# ---------------------------------------------------------------- decide

def answer_text(cands: list[dict], best: int, prob: np.ndarray) -> str:
    """The best sentence with a neighbour, as qa.search.answer.span_of pairs them (its limits; the
    probabilities the chooser's)."""
    c = cands[best]
    words = len(_WORD.findall(c["text"]))
    pick, pick_p = None, -1.0
    for j in (c["before"], c["after"]):
        if j is None:
            continue
        both = words + len(_WORD.findall(cands[j]["text"]))
        if (both <= SHORT_PAIR_WORDS or (prob[j] >= PAIR_AT * prob[best] and both <= MAX_PAIR_WORDS)) and prob[j] > pick_p:
            pick, pick_p = j, prob[j]
    if pick is None:
        return c["text"]
    a, b = sorted((best, pick), key=lambda i: cands[i]["start"])
    return cands[a]["text"] + " " + cands[b]["text"]


def decide(r: dict, alpha: float, top: int, null_logit: float, one_at: float = np.inf) -> dict | None:
    """The reader's choice among the `top` candidates the sentence model rates highest (only its best where
    the sentence model gives it `one_at` or more): the sentence maximising reader logit + alpha * log(sentence
    model p), as qa.search.answer.read chooses; its probabilities and the calibrator's inputs
    (Reading.features, as the service reads them)."""
    cands = r["cands"]
    if not cands:
        return None
    fp = np.array([c["p"] for c in cands])
    keep = shortlist(fp, top, one_at)  # the logits cached from calls of `top` rows: one row reads the same (int8, 1e-3)
    reading = Reading.of(r["logits"][keep], null_logit, span_scores=r["span_scores"][keep], span_nulls=r["span_nulls"][keep])
    z = reading.logits + alpha * np.log(np.maximum(fp[keep], 1e-12))
    k = int(np.argmax(z))
    best = int(keep[k])
    prob = np.zeros(len(cands))
    zc = np.exp(z - z.max())
    prob[keep] = zc / zc.sum()
    span = r["spans"][best]
    have = reading.features(k, float(fp[best]), r["gate_p"] or 0.0, r["passages"],
                            unmatched(r["question"], [c["text"] for c in cands]))
    return {"best": best, "text": answer_text(cands, best, prob),
            "short": cands[best]["text"][span[0]:span[1]] if span else "",
            "x": np.array([have[c] for c in CAL_COLUMNS]), "sentence": cands[best]["text"],
            "margin": have["reader_margin"], "read": len(keep)}


CAL_COLUMNS = CALIBRATOR_COLUMNS  # --columns picks fewer


def reader_stamp(folder: Path, meta: dict) -> str:
    """A name for a reader's model files, for the caches of what it read: the graph and its weights (an
    OpenVINO model keeps them in the .bin beside the .xml; two exports can share a graph)."""
    import hashlib

    model = folder / meta["model"]
    digest = hashlib.sha1(model.read_bytes())
    if model.with_suffix(".bin").exists():
        digest.update(model.with_suffix(".bin").read_bytes())
    return digest.hexdigest()[:12]


def calibration(conf: list[float], right: list[bool], bins: int = 10) -> float:
    from qa.search.evaluate import calibration as cal

    return cal(conf, right, bins)[0] if conf else 0.0


def figures(rows: list[dict], choices: list[dict | None], given: list[bool], conf: list[float]) -> dict:
    """The issue's figures for one system over one set of replayed questions."""
    kinds = collections.defaultdict(list)
    for r, c, g, p in zip(rows, choices, given, conf):
        kinds[r["kind"]].append((r, c, g, p))
    inside = kinds["inside"]
    right = [g and holds(c["text"], r["answers"]) for r, c, g, _ in inside]
    top = [(r, g) for r, c, g, _ in inside if r["top_right"]]
    out = {
        "inside": len(inside), "lookalike": len(kinds["lookalike"]), "outside": len(kinds["outside"]),
        "answer_right": float(np.mean(right)),
        "single_sentence_right": float(np.mean([g and holds(c["sentence"], r["answers"]) for r, c, g, _ in inside])),
        "top_right": len(top) / len(inside),
        "kept_when_top_right": float(np.mean([g for _, g in top])),
        "lookalike_null": float(np.mean([not g for _, _, g, _ in kinds["lookalike"]])) if kinds["lookalike"] else None,
        "outside_null": float(np.mean([not g for _, _, g, _ in kinds["outside"]])) if kinds["outside"] else None,
    }
    unseen = [g for r, _, g, _ in kinds["outside"] if not r.get("reader_saw", False)]
    if unseen and len(unseen) < len(kinds["outside"]):
        out["outside_null_unseen_by_reader"] = float(np.mean([not g for g in unseen]))
        out["outside_unseen"] = len(unseen)
    all_conf, all_right = [], []
    for r, c, g, p in zip(rows, choices, given, conf):
        if g:
            all_conf.append(p)
            all_right.append(r["kind"] == "inside" and holds(c["text"], r["answers"]))
    out["ece_all_kinds"] = calibration(all_conf, all_right)
    hi = [ok for p, ok in zip(all_conf, all_right) if p >= 0.9]
    out["conf90_given"] = len(hi)
    out["conf90_right"] = float(np.mean(hi)) if hi else None
    out["ece_inside_outside"] = calibration(
        [p for (r, c, g, p) in [*inside, *kinds["outside"]] if g],
        [r["kind"] == "inside" and holds(c["text"], r["answers"]) for (r, c, g, p) in [*inside, *kinds["outside"]] if g])
    out["words"] = float(np.mean([len(c["text"].split()) for (r, c, g, p) in zip(rows, choices, given, conf) if g]))
    return out


def span_figures(rows: list[dict], choices: list[dict | None], given: list[bool]) -> dict:
    em, f = [], []
    for r, c, g in zip(rows, choices, given):
        if r["kind"] != "inside":
            continue
        pred = c["short"] if g and c else ""
        em.append(max(float(normalize_answer(pred) == normalize_answer(a)) for a in r["answers"]) if pred else 0.0)
        f.append(max(answer_f1(pred, a) for a in r["answers"]) if pred else 0.0)
    return {"span_em": float(np.mean(em)), "span_f1": float(np.mean(f))}


def rescale(w: np.ndarray, answer_at: float, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Refit the calibrator's scale on the answers it is shown on (Platt's a and b over its logit)."""
    # The logistic is fitted over every question with a candidate, most of them below the answer line;
    # above it, where people read the confidence, it was too sure of itself (docs/quality.md). The map is
    # monotone (a > 0) and the line moves with it, so the same answers are given.
    z = x @ w
    line = np.log(answer_at / (1 - answer_at))
    shown = z >= line
    a, b = fit_logistic(np.column_stack([np.ones(shown.sum()), z[shown]]), y[shown], l2=0.0)[::-1]
    assert a > 0, f"the refitted scale would reverse the confidence (a = {a})"
    scaled = a * w
    scaled[0] += b
    print(f"confidence rescaled on {int(shown.sum())} shown answers: logit x {a:.3f} {b:+.3f}", file=sys.stderr)
    return scaled, float(sigmoid(a * line + b))


def baseline(rows: list[dict]):
    choices = [{"text": r["base_text"] or "", "sentence": r["base_text"] or "", "short": ""} for r in rows]
    given = [r["base_text"] is not None for r in rows]
    conf = [r["base_confidence"] or 0.0 for r in rows]
    return choices, given, conf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "train" / "out" / "eval")
    ap.add_argument("--reader", type=Path, default=None, help="a reader folder (default: the shipped one)")
    ap.add_argument("--write-calibrator", action="store_true",
                    help="store the fitted calibrator and choice in the reader folder's reader.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--limit", type=int, default=0, help="ask only about this many questions of each replay")
    ap.add_argument("--read-top", type=int, default=20, help="candidates read per question (by the sentence model)")
    ap.add_argument("--top", type=int, default=0, help="read this many candidates (default: the fewest near the best)")
    ap.add_argument("--columns", default=None,
                    help="the calibrator's inputs (of qa.search.reader.CALIBRATOR_COLUMNS; default: all, but the "
                         "null span's margin for a reader trained without one)")
    args = ap.parse_args()
    if args.top:  # int8 scales each call by its batch: fit on calls of the size the service makes
        args.read_top = args.top
    args.work.mkdir(parents=True, exist_ok=True)
    held, tune = collect_all(args.work)
    if args.collect_only:
        return
    if args.limit:  # a quick look: every n-th question
        held, tune = held[::max(len(held) // args.limit, 1)], tune[::max(len(tune) // args.limit, 1)]

    from qa.search.reader import DATA, Reader

    folder = args.reader or DATA
    reader = Reader(folder, threads=args.threads)
    stamp = reader_stamp(Path(folder), reader.meta)
    global CAL_COLUMNS
    CAL_COLUMNS = tuple(args.columns.split(",")) if args.columns else tuple(
        c for c in CALIBRATOR_COLUMNS if c != "span_margin" or reader.meta.get("span_null"))
    assert CAL_COLUMNS[0] == "bias" and set(CAL_COLUMNS) <= set(CALIBRATOR_COLUMNS), CAL_COLUMNS
    cache = None if args.limit else args.work / f"read-{stamp}-top{args.read_top}"
    read_all(tune, reader, "tuning replay", args.read_top, cache and cache.with_suffix(".tune.pkl"))
    t_read = time.time()
    read = read_all(held, reader, "held back", args.read_top, cache and cache.with_suffix(".held.pkl"))
    t_read = time.time() - t_read if read else None
    null = reader.null_logit

    # choose alpha and how many candidates the reader reads on the tuning replay (inside questions)
    inside = [r for r in tune if r["kind"] == "inside"]
    grid = []
    tops = [args.top] if args.top else sorted({2, 3, 5, 10, 20, args.read_top} - {t for t in (2, 3, 5, 10, 20)
                                                                                 if t > args.read_top})
    for top in tops:
        for alpha in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 100.0):  # 100: the sentence model chooses
            ch = [decide(r, alpha, top, null) for r in inside]
            single = np.mean([c is not None and holds(c["sentence"], r["answers"]) for r, c in zip(inside, ch)])
            grid.append((float(single), -top, alpha))
            print(f"  tuning: top {top:4d} alpha {alpha:.2f}: a right single sentence {single:.3f}", file=sys.stderr)
    best_single = max(g[0] for g in grid)
    _, neg_top, alpha = max(g for g in grid if g[0] >= best_single - 0.003)  # fewest candidates near the best
    top = -neg_top
    print(f"chosen: the {top} likeliest candidates, alpha {alpha}", file=sys.stderr)
    # Where the sentence model is sure of its best candidate, the reader reads that one alone (one row costs
    # about half of three): going down ONE_AT_GRID, the last probability before the first at which the tuning
    # replay's choices move from those of reading all `top` (more than ONE_CHANGED of its questions chosen
    # otherwise, or a right single sentence for more than ONE_LOST fewer).
    full = [decide(r, alpha, top, null) for r in tune]
    before = [holds(c["sentence"], r["answers"]) for r, c in zip(tune, full) if r["kind"] == "inside" and c]
    one_at = np.inf
    for at in ONE_AT_GRID:
        ch = [decide(r, alpha, top, null, at) for r in tune]
        changed = np.mean([a is not None and a["best"] != b["best"] for a, b in zip(full, ch)])
        inside_right = [holds(c["sentence"], r["answers"]) for r, c in zip(tune, ch) if r["kind"] == "inside" and c]
        one = np.mean([c is not None and c["read"] == 1 for c in ch])
        ok = changed <= ONE_CHANGED and np.mean(inside_right) >= np.mean(before) - ONE_LOST
        print(f"  tuning: one candidate read from p >= {at}: {one:.2f} of questions, {changed:.3f} chosen otherwise, "
              f"a right single sentence {np.mean(inside_right):.3f} against {np.mean(before):.3f}"
              f"{'' if ok else ' (not taken)'}", file=sys.stderr)
        if not ok:
            break
        one_at = at
    print(f"chosen: one candidate read where the sentence model gives it {one_at} or more", file=sys.stderr)

    def run(rows):
        return [decide(r, alpha, top, null, one_at) for r in rows]

    tc = run(tune)
    have = [(r, c) for r, c in zip(tune, tc) if c is not None]
    x = np.vstack([c["x"] for _, c in have])
    y = np.array([r["kind"] == "inside" and holds(c["text"], r["answers"]) for r, c in have], dtype=float)
    w = fit_logistic(x, y)
    conf_t = [float(sigmoid(c["x"] @ w)) if c else 0.0 for c in tc]
    keep = [p for r, c, p in zip(tune, tc, conf_t) if r["kind"] == "inside" and r["top_right"] and c]
    answer_at = float(np.quantile(keep, 1 - KEEP_TOP_RIGHT))
    w, answer_at = rescale(w, answer_at, x, y)
    print("calibrator:", dict(zip(CAL_COLUMNS, np.round(w, 3))), "answer at", round(answer_at, 3), file=sys.stderr)

    def system(rows, ch):
        conf = [float(sigmoid(c["x"] @ w)) if c else 0.0 for c in ch]
        given = [c is not None and p >= answer_at for c, p in zip(ch, conf)]
        return given, conf

    report = {"choice": {"top": top, "alpha": alpha, "one_at": one_at if np.isfinite(one_at) else None}, "calibrator": dict(zip(CAL_COLUMNS, map(float, w))),
              "answer_at": answer_at}
    parts = [("tuning replay (fitted there)", tune), ("held back", [r for r in held if not r.get("news")])]
    if any(r.get("news") for r in held):
        parts.append(("held back: news we wrote (news-b)", [r for r in held if r.get("news")]))
    for label, rows in parts:
        ch = run(rows)
        given, conf = system(rows, ch)
        mine = {**figures(rows, ch, given, conf), **span_figures(rows, ch, given)}
        own = [c is not None and c["margin"] > 0 for c in ch]  # the reader's own rule: best logit above the null's
        raw = {**figures(rows, ch, own, conf), **span_figures(rows, ch, own)}
        base = figures(rows, *baseline(rows))
        report[label] = {"reader": mine, "today": base, "reader_own_null": raw}
        print(f"\n{label}")
        print("| measure | today | reader (calibrated null) | reader (own null: logit above the null's) |")
        print("|---|---|---|---|")
        for k in mine:
            fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
            print(f"| {k} | {fmt(base.get(k))} | {fmt(mine[k])} | {fmt(raw.get(k))} |")
    pairs = sum(len(r["cands"][:top]) for r in held)
    if t_read is not None:
        report["read_ms_per_question_all_candidates"] = 1000 * t_read / len(held)
        print(f"\nreader over every candidate: {1000 * t_read / len(held):.1f} ms a question "
              f"({sum(len(r['cands']) for r in held) / len(held):.1f} candidates on average; {pairs} pairs at top {top})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.write_calibrator:
        meta_path = Path(folder) / "reader.json"
        meta = json.loads(meta_path.read_text())
        meta["calibrator"] = {"columns": list(CAL_COLUMNS), "weights": [round(float(v), 5) for v in w],
                              "answer_at": round(answer_at, 5), "candidates": top, "alpha": alpha,
                              **({"one_at": one_at} if np.isfinite(one_at) else {}),
                              "fitted_on": "train/eval_reader.py tuning replay: squad-dev even articles "
                                           f"{list(CALIBRATION_POSITIONS)} (unseen by the reader) and "
                                           "train/data/written/news-a.json (never trained on)"}
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote the calibrator into {meta_path}")


if __name__ == "__main__":
    main()
