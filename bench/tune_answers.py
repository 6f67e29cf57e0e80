"""Fit the answer models of qa/search/answer.py on squad-dev, split by article, and report on the held-back half.

    python bench/tune_answers.py [--work DIR]

The even-numbered articles of ../shared/eval/squad-dev.json make one index: their
questions are inside the collection, the odd articles' questions outside it. The
sentence model and the pairing are fitted there (logistic regression, Newton steps,
a little L2). The gate and the confidence are fitted on the same questions asked of that
index and of the same articles hidden among distractors (no question is asked of them):
the BBC News articles of ../shared/eval/bbc-news.jsonl, and about 65,000 passages as
bench/scale.py builds them; a collection of squad-dev's size is far easier to say "no"
over than a newsroom's, and the gate reads the collection's size. The odd articles then
make the held-back indexes, at the same three sizes, with the even articles' questions
outside, and every figure printed for them comes from weights that never saw them. The
two big indexes take about 20 minutes each to build, once (kept in --work). Prints the
weights to paste into qa/search/answer.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SQUAD = ROOT.parent / "shared" / "eval" / "squad-dev.json"
NEWS = ROOT.parent / "shared" / "eval" / "bbc-news.jsonl"

from qa.search import answer as A  # noqa: E402
from qa.embed.model import DEFAULT_MODEL  # noqa: E402
from qa.ingest.squad import load_squad, split_by_article  # noqa: E402
from qa.search.evaluate import calibration, evaluate_answers, holds  # noqa: E402
from qa.ingest.pipeline import add_articles, iter_articles  # noqa: E402
from qa.ingest.articles import Failure, read_file  # noqa: E402
from qa.web.service import Service  # noqa: E402


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method (the bias, column 0, is not penalised)."""
    w = np.zeros(x.shape[1])
    reg = np.full(x.shape[1], l2)
    reg[0] = 0.0
    for _ in range(steps):
        p = A.sigmoid(x @ w)
        grad = x.T @ (p - y) + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return w


def fit_choice(groups: list[tuple[np.ndarray, np.ndarray]], l2: float = 1.0) -> np.ndarray:
    """A conditional logit: per question, a softmax over its candidates, fitted to put the mass on those
    that hold an answer (questions with none are left out)."""
    from scipy.optimize import minimize

    groups = [(x, y) for x, y in groups if y.any()]
    d = groups[0][0].shape[1]

    def loss(w):
        total, grad = 0.5 * l2 * w[1:] @ w[1:], np.concatenate([[0.0], l2 * w[1:]])
        for x, y in groups:
            z = x @ w
            z -= z.max()
            p = np.exp(z)
            p /= p.sum()
            py = p * y
            total -= np.log(py.sum() + 1e-300)
            q = py / py.sum()
            grad += x.T @ (p - q)
        return total, grad

    return minimize(loss, np.zeros(d), jac=True, method="L-BFGS-B").x


def collect(work: Path, name: str, articles, inside, outside) -> list[dict]:
    svc = Service(work / name, DEFAULT_MODEL, "openvino-int8")
    if svc.is_empty():
        print(f"indexing {name}", file=sys.stderr, flush=True)
        with svc.writer() as w:
            add_articles(w, svc.embedder, articles() if callable(articles) else articles)
    keep: list[dict] = []
    searcher = svc.searcher()
    evaluate_answers(searcher, inside, outside, keep=keep)
    for r in keep:
        r["passages"] = searcher.index.passage_count
    return keep


def big(work: Path, half: list):
    """About 65,000 passages as bench/scale.py builds them (squad-dev, the BBC articles, articles of BBC
    sentences recombined), keeping only the squad-dev articles of the given half."""
    from scale import corpus

    titles = {a.title for a in half}

    def articles():
        parts = sorted((work / "corpus-65000").glob("part-*.jsonl")) or corpus(65000, work / "corpus-65000")
        return [a for a in iter_articles(parts) if not isinstance(a, Failure)
                and (not a.id.startswith("squad-") or a.title in titles)]
    return articles


def replay(rows: list[dict]) -> list[dict]:
    """Each question's choice, features and answer text under the current weights of qa/search/answer.py."""
    out = []
    for r in rows:
        ev = r["answered"].evidence
        cands = ev.get("candidates") or []
        if not cands:
            out.append({**r, "best": None})
            continue
        best, p = A.choose(cands)
        f = dict(zip(A.GATE_FEATURES, ev["features"]))
        qf = A.question_features(best, p, f["passage_cosine"], f["coverage"], r["passages"])
        out.append({**r, "best": best, "qf": qf, **answer_text(r, best)})
    return out


def answer_text(r: dict, best) -> dict:
    """The answer's text around its best sentence under the current pairing, and whether it holds a right one."""
    start, end = A.span_of(best)
    text = " ".join(c.text for c in (best.before, best, best.after) if c is not None and start <= c.start and c.end <= end)
    return {"text": text, "right": r["inside"] and holds(text, r["question"].answers)}


def report(rows: list[dict], label: str) -> None:
    inside = [r for r in rows if r["inside"]]
    outside = [r for r in rows if not r["inside"]]
    gate = lambda r: r["best"] is not None and A.sigmoid(r["qf"] @ A.GATE_W) >= A.GATE_AT  # noqa: E731
    given = [r for r in rows if gate(r)]
    conf = [float(A.sigmoid(r["qf"] @ A.CONFIDENCE_W)) for r in given]
    ece, table = calibration(conf, [r["right"] for r in given])
    top = [r for r in inside if r["top_right"]]
    marked = sum(r["lexical_marked"] for r in inside) / len(inside)
    print(f"  before answers, the top result's marked sentence holds an answer: {marked:.3f}")
    holds_any = sum(r["best"] is not None and r["right"] for r in inside) / len(inside)
    print(f"{label}: inside {len(inside)}, outside {len(outside)}")
    print(f"  chosen text holds an answer (before the gate): {holds_any:.3f}; after the gate: "
          f"{sum(gate(r) and r['right'] for r in inside) / len(inside):.3f}")
    print(f"  top passage right: {len(top) / len(inside):.3f}; of those answered: "
          f"{sum(gate(r) for r in top) / max(len(top), 1):.3f}")
    print(f"  outside answered null: {sum(not gate(r) for r in outside) / max(len(outside), 1):.3f}")
    print(f"  ECE {ece:.3f}; mean words {np.mean([len(r['text'].split()) for r in given]):.1f}")
    print("  reliability (confidence, share right, n):", table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qa-answers"))
    ap.add_argument("--keep-at", type=float, default=0.98,
                    help="share of inside questions with a right top passage that must keep an answer, over the "
                         "three sizes of collection together")
    args = ap.parse_args()
    for need in (SQUAD, NEWS):
        if not need.exists():
            raise SystemExit(f"needs {need}")
    owners: list[int] = []
    articles, questions = load_squad(SQUAD, owners)
    news = list(read_file(NEWS))
    (a_train, q_train), (a_test, q_test) = split_by_article(articles, questions, owners)
    train = collect(args.work, "even", a_train, q_train, q_test)
    test = collect(args.work, "odd", a_test, q_test, q_train)
    train_news = collect(args.work, "even-news", [*a_train, *news], q_train, q_test)
    test_news = collect(args.work, "odd-news", [*a_test, *news], q_test, q_train)
    train_big = collect(args.work, "even-65k", big(args.work, a_train), q_train, q_test)  # ~20 min each, once
    test_big = collect(args.work, "odd-65k", big(args.work, a_test), q_test, q_train)

    # 1. The sentence model, on every candidate sentence of inside questions.
    groups = []
    for r in train:
        cs = r["answered"].evidence.get("candidates") or []
        if cs and r["inside"]:
            groups.append((np.vstack([c.features for c in cs]),
                           np.array([holds(c.text, r["question"].answers) for c in cs], dtype=float)))
    A.SENTENCE_W = fit_choice(groups)
    rows = replay(train)
    # 1b. When a neighbour joins the answer: answers average <= 46 words, and among the settings within
    # 0.2 point of the most right answers, the shortest (the grid is flat near its top). The choice of
    # sentence does not depend on these, so only each answer's text is made again.
    chosen = [r for r in rows if r["best"] is not None and r["inside"]]
    grid = []
    for short in (0, 30, 35, 40, 45, 50, 55):
        for at in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.01):
            for most in (40, 50, 60, 70, 80):  # two sentences of more than 80 words are a paragraph
                A.PAIR_AT, A.MAX_PAIR_WORDS, A.SHORT_PAIR_WORDS = at, most, short
                rs = [answer_text(r, r["best"]) for r in chosen]
                right = np.mean([r["right"] for r in rs])
                words = np.mean([len(r["text"].split()) for r in rs])
                print(f"  pair when at most {short} words, or at {at} and at most {most} words: "
                      f"holds {right:.3f}, {words:.1f} words")
                if words <= 46:
                    grid.append((right, words, (at, most, short)))
    top = max(right for right, _, _ in grid)
    A.PAIR_AT, A.MAX_PAIR_WORDS, A.SHORT_PAIR_WORDS = min((w, s) for r, w, s in grid if r >= top - 0.002)[1]
    # 2. The gate: inside or outside, from the chosen answer's absolute evidence, at three sizes of
    # collection (alone, among the BBC articles, among 65,000 passages).
    rows = replay(train) + replay(train_news) + replay(train_big)
    have = [r for r in rows if r["best"] is not None]
    A.GATE_W = fit(np.vstack([r["qf"] for r in have]), np.array([r["inside"] for r in have], dtype=float))
    top = [r for r in have if r["inside"] and r["top_right"]]
    A.GATE_AT = float(np.quantile([A.sigmoid(r["qf"] @ A.GATE_W) for r in top], 1 - args.keep_at))
    # 3. Confidence: does the given answer hold a right one.
    given = [r for r in have if A.sigmoid(r["qf"] @ A.GATE_W) >= A.GATE_AT]
    A.CONFIDENCE_W = fit(np.vstack([r["qf"] for r in given]), np.array([r["right"] for r in given], dtype=float))

    report(replay(train), "fitted half (even articles)")
    report(replay(train_news), "fitted half among the BBC articles")
    report(replay(train_big), "fitted half among 65,000 passages")
    report(replay(test), "held-back half (odd articles)")
    report(replay(test_news), "held-back half among the BBC articles")
    report(replay(test_big), "held-back half among 65,000 passages")
    fmt = lambda w: "np.array([" + ", ".join(f"{v:.3f}" for v in w) + "])"  # noqa: E731
    print(f"PAIR_AT = {A.PAIR_AT}\nMAX_PAIR_WORDS = {A.MAX_PAIR_WORDS}\nSHORT_PAIR_WORDS = {A.SHORT_PAIR_WORDS}\nSENTENCE_W = {fmt(A.SENTENCE_W)}\nGATE_W = {fmt(A.GATE_W)}\nGATE_AT = {A.GATE_AT:.3f}\n"
          f"CONFIDENCE_W = {fmt(A.CONFIDENCE_W)}")


if __name__ == "__main__":
    main()
