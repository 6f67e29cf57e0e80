"""Measure retrieval on a SQuAD-v1.1-format file: top-k answer accuracy and MRR."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import QAError
from .ingest import Article, _from_fields
from .search import Searcher

KS = (1, 5, 20)


@dataclass
class Question:
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


def load_squad(path: str | Path) -> tuple[list[Article], list[Question]]:
    """Read articles (paragraphs joined by blank lines) and questions from a SQuAD v1.1 file."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
        entries = data["data"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise QAError(f"{path} is not a SQuAD v1.1 file ({e})", code="bad_eval_file") from None
    articles, questions = [], []
    for n, entry in enumerate(entries):
        title = str(entry.get("title", f"article {n}")).replace("_", " ")
        paragraphs = [p["context"] for p in entry["paragraphs"]]
        slug = re.sub(r"[^A-Za-z0-9._~-]+", "-", title).strip("-")[:100] or f"article-{n}"
        articles.append(_from_fields({"id": slug, "title": title, "text": "\n\n".join(paragraphs)}, f"{path}:{title}"))
        for p in entry["paragraphs"]:
            for qa in p.get("qas", []):
                answers = [a["text"] if isinstance(a, dict) else a for a in qa.get("answers", [])]
                if answers:
                    questions.append(Question(qa["question"], answers))
    return articles, questions


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
    from .chunk import title_prefix

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
