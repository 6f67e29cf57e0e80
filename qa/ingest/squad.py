"""Read a SQuAD-format file (the evaluation's collections) into articles and questions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import QAError
from .articles import Article, _from_fields


@dataclass
class Question:
    text: str
    answers: list[str]
    impossible: bool = False  # SQuAD 2.0: written to look answerable from its paragraph, which does not answer it


def split_by_article(articles: list[Article], questions: list[Question], owners: list[int]):
    """Two halves by article (even and odd positions): (articles, questions) of each."""
    halves = []
    for parity in (0, 1):
        keep = {i for i in range(len(articles)) if i % 2 == parity}
        halves.append(([a for i, a in enumerate(articles) if i in keep],
                       [q for q, o in zip(questions, owners) if o in keep]))
    return halves


def load_squad(path: str | Path, owners: list[int] | None = None) -> tuple[list[Article], list[Question]]:
    """Read articles (paragraphs joined by blank lines) and questions from a SQuAD v1.1 or v2.0 file (a v2.0
    question nothing in its paragraph answers comes with `impossible` set and no answers; `owners`, if
    given, gets each question's article position)."""
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
                impossible = bool(qa.get("is_impossible"))
                if answers or impossible:
                    questions.append(Question(qa["question"], [] if impossible else answers, impossible))
                    if owners is not None:
                        owners.append(n)
    return articles, questions
