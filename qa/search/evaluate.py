"""Measure retrieval on a SQuAD-v1.1-format file: top-k answer accuracy and MRR."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..index.text import title_prefix
from .searcher import Searcher

KS = (1, 5, 20)


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
                     on_progress: Callable[[int], None] | None = None, keep: list | None = None) -> AnswerResult:
    """Ask questions the collection answers (`inside`) and questions it does not (`outside`); score the answers.

    `keep`, if given, collects each question's evidence (for bench/tune_answers.py)."""
    holds_n = highlight_n = marked_n = top_n = kept_n = null_n = 0
    conf, right, words = [], [], []
    for i, (q, is_inside) in enumerate([*((q, True) for q in inside), *((q, False) for q in outside)]):
        got = searcher.ask(q.text, 5)
        a = got.answer
        ok = is_inside and a is not None and holds(a.text, q.answers)
        if a is not None:
            conf.append(a.confidence)
            right.append(ok)
            words.append(len(a.text.split()))
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
        else:
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
        mean_answer_words=sum(words) / max(len(words), 1), reliability=table)


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
