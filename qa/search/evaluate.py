"""Measure retrieval on a SQuAD-v1.1-format file: top-k answer accuracy and MRR."""

from __future__ import annotations

import re
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..index.text import title_prefix
from .searcher import Searcher

KS = (1, 5, 20)
_PUNCTUATION = set(string.punctuation)


class Question(Protocol):
    """A question with the answer strings any of which is right (as qa.ingest.squad reads them)."""

    text: str
    answers: list[str]


@dataclass
class EvalResult:
    questions: int
    accuracy: dict[int, float]
    mrr: float
    mean_passage_words: float
    max_passage_tokens: int
    passages: int
    articles: int
    questions_per_second: float
    mode: str = "hybrid"
    misses: list[str] = field(default_factory=list)


@dataclass
class AnswerResult:
    """How well the answer field answers: asked inside the collection, and (optionally) outside it."""

    inside: int
    outside: int
    answer_holds: float  # inside questions whose answer text holds a right answer (no answer counts as wrong)
    highlight_holds: float  # before answers: the top result's marked sentence holds a right answer
    marked_holds: float  # now: the top result's marked sentence (the sentence model's) holds a right answer
    top_right: float  # inside questions whose top passage holds a right answer
    kept_when_top_right: float  # ... of those, the share still given an answer
    null_outside: float  # outside questions answered with null
    ece: float  # expected calibration error of the confidence, over the answers given (10 bins)
    mean_answer_words: float
    reliability: list[tuple[float, float, int]] = field(default_factory=list)  # (mean confidence, share right, n)
    lookalike: int = 0  # SQuAD 2.0 questions its own paragraph does not answer, asked of the collection
    null_lookalike: float = 0.0  # ... answered with null
    span_exact: float = 0.0  # answerable questions whose short span is a right answer (SQuAD's normalisation)
    span_f1: float = 0.0  # SQuAD's word-overlap F1 of the short span (no answer, or no span: 0)
    sure: int = 0  # answers given with confidence >= 0.9, over every kind of question
    sure_right: float = 0.0  # ... and the share of them that are right


def holds(text: str | None, answers: list[str]) -> bool:
    return bool(text) and any(a in text for a in answers)


def calibration(confidence: list[float], right: list[bool], bins: int = 10) -> tuple[float, list]:
    """Expected calibration error (equal-width bins) and each bin's (mean confidence, share right, count)."""
    table, ece = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidence) if lo <= c < hi or (b == bins - 1 and c == 1.0)]
        if idx:
            conf = sum(confidence[i] for i in idx) / len(idx)
            acc = sum(right[i] for i in idx) / len(idx)
            ece += len(idx) / len(confidence) * abs(conf - acc)
            table.append((round(conf, 3), round(acc, 3), len(idx)))
    return ece, table


def evaluate_answers(searcher: Searcher, inside: list[Question], outside: list[Question] = (),
                     on_progress: Callable[[int], None] | None = None, keep: list | None = None,
                     lookalikes: list[Question] = ()) -> AnswerResult:
    """Ask questions the collection answers (`inside`), questions about other articles (`outside`) and
    questions written to look answerable from its paragraphs (`lookalikes`, SQuAD 2.0); score the answers.

    `keep`, if given, collects each question's evidence (for bench/tune_answers.py)."""
    holds_n = highlight_n = marked_n = top_n = kept_n = null_n = null_look = 0
    span_em = span_f1 = 0.0
    conf, right, words = [], [], []
    asked = [*((q, "inside") for q in inside), *((q, "outside") for q in outside),
             *((q, "lookalike") for q in lookalikes)]
    for i, (q, kind) in enumerate(asked):
        is_inside = kind == "inside"
        got = searcher.ask(q.text, 5)
        a = got.answer
        ok = is_inside and a is not None and holds(a.text, q.answers)
        if a is not None:
            conf.append(a.confidence)
            right.append(ok)
            words.append(len(a.text.split()))
        if is_inside and a is not None and a.span:
            short = a.text[a.span["start"]:a.span["end"]]
            span_em += max(float(normalize_answer(short) == normalize_answer(g)) for g in q.answers)
            span_f1 += max(answer_f1(short, g) for g in q.answers)
        if kind == "lookalike":
            null_look += a is None
        lexical = False  # the top result's mark before answers (the question's words) holds a right answer
        if is_inside:
            holds_n += ok
            top = got.hits[0] if got.hits else None
            if top is not None:
                marked = lambda spans: any(holds(top.text[h["start"]:h["end"]], q.answers) for h in spans)  # noqa: E731
                lexical = marked(got.evidence["lexical_highlight"]())
                highlight_n += lexical
                marked_n += marked(top.highlight)
            if top is not None and holds(top.text, q.answers):
                top_n += 1
                kept_n += a is not None
        elif kind == "outside":
            null_n += a is None
        if keep is not None:
            keep.append({"question": q, "inside": is_inside, "answered": got, "lexical_marked": lexical,
                         "top_right": bool(got.hits and holds(got.hits[0].text, q.answers))})
        if on_progress:
            on_progress(i + 1)
    ece, table = calibration(conf, right) if conf else (0.0, [])
    n_in = max(len(inside), 1)
    return AnswerResult(
        inside=len(inside), outside=len(outside), answer_holds=holds_n / n_in, highlight_holds=highlight_n / n_in,
        marked_holds=marked_n / n_in,
        top_right=top_n / n_in, kept_when_top_right=kept_n / max(top_n, 1),
        null_outside=null_n / max(len(outside), 1), ece=ece,
        mean_answer_words=sum(words) / max(len(words), 1), reliability=table,
        lookalike=len(lookalikes), null_lookalike=null_look / max(len(lookalikes), 1),
        span_exact=span_em / n_in, span_f1=span_f1 / n_in,
        sure=sum(c >= 0.9 for c in conf), sure_right=sum(r for c, r in zip(conf, right) if c >= 0.9)
        / max(sum(c >= 0.9 for c in conf), 1))


def normalize_answer(s: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, articles or extra spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def answer_f1(pred: str, gold: str) -> float:
    """SQuAD's word-overlap F1 of two answers."""
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if not p or not g:
        return float(p == g)
    return 0.0 if not same else 2 * same / (len(p) + len(g))


def evaluate(searcher: Searcher, questions: list[Question], k: int = max(KS),
             on_progress: Callable[[int], None] | None = None) -> EvalResult:
    """Ask every question and score where the first passage holding an answer ranks."""
    depth = max(k, max(KS))
    hits_at = {n: 0 for n in KS}
    rr_sum = 0.0
    misses = []
    t0 = time.perf_counter()
    for i, q in enumerate(questions):
        results = searcher.search(q.text, depth)
        rank = next((r.rank for r in results if any(a in r.text for a in q.answers)), None)
        if rank is not None:
            for n in KS:
                hits_at[n] += rank <= n
            rr_sum += 1.0 / rank if rank <= max(KS) else 0.0
        else:
            misses.append(q.text)
        if on_progress:
            on_progress(i + 1)
    took = time.perf_counter() - t0
    index = searcher.index
    rows = index.db.execute(
        "SELECT a.title, substr(a.text, p.start_char + 1, p.end_char - p.start_char) FROM passages p "
        "JOIN articles a ON a.version = p.version WHERE a.deleted_gen IS NULL"
    ).fetchall()
    words = [len(r[1].split()) for r in rows]
    tokens = searcher.embedder.count_tokens([title_prefix(r[0]) + r[1] for r in rows]) if rows else [0]
    n = max(len(questions), 1)
    return EvalResult(
        questions=len(questions),
        accuracy={k_: hits_at[k_] / n for k_ in KS},
        mrr=rr_sum / n,
        mean_passage_words=sum(words) / max(len(words), 1),
        max_passage_tokens=max(tokens),
        passages=len(rows),
        articles=index.article_count,
        questions_per_second=len(questions) / took if took else 0.0,
        misses=misses,
    )
