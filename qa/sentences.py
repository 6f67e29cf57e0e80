"""Sentences: a passage's scores lean on its best sentence, on both sides.

Each sentence of an article is embedded once (with the title prefix); a
passage window owns the sentences inside it, and its own vector is their
word-piece-weighted mean, so no window is ever run through the model.
Measured on squad-dev, this matched embedding every window as well as every
sentence, at about a third of the model work.

Each sentence also keeps its distinct porter stems, so the lexical side can
ask how much of a question's rare vocabulary one sentence holds (an answer is
usually one sentence; BM25 over a 180-word window rewards terms spread across
it) and the highlight needs no stemming at query time.
"""

from __future__ import annotations

import bisect
import re
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import Stemmer  # PyStemmer: the Snowball stemmers in C

WORD = re.compile(r"\w+", re.UNICODE)
_local = threading.local()


def stemmer() -> Stemmer.Stemmer:
    """This thread's porter stemmer (the algorithm FTS5's porter tokenizer uses; a Stemmer is not thread-safe)."""
    st = getattr(_local, "stemmer", None)
    if st is None:
        st = _local.stemmer = Stemmer.Stemmer("porter")
    return st


def inner_products(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """matrix @ query, on this thread.

    FAISS's SIMD loop rather than BLAS: OpenBLAS hands a product this small to
    helper threads that then spin for milliseconds, taking the other core from
    the next question's model run (search p50 3.4 ms with them, 2.8 ms without).
    """
    out = np.empty(len(matrix), dtype=np.float32)
    if len(matrix):
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        q = np.ascontiguousarray(query.reshape(-1), dtype=np.float32)
        faiss.fvec_inner_products_ny(faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(matrix),
                                     matrix.shape[1], len(matrix))
    return out


def stem(word: str) -> str:
    return stemmer().stemWord(word.lower())


def terms_of(text: str) -> str:
    """The distinct stems of a text, space-separated, as the sentences table keeps them."""
    return " ".join(sorted(set(stemmer().stemWords(WORD.findall(text.lower())))))


@dataclass
class NewSentence:
    start: int
    end: int
    tokens: int
    embed_hash: str
    vector: np.ndarray


def passage_vector(sentences: Sequence[NewSentence], start: int, end: int) -> np.ndarray:
    """The normalised word-piece-weighted mean of the sentence vectors inside [start, end)."""
    inside = [s for s in sentences if s.start < end and s.end > start]
    vec = np.sum([max(s.tokens, 1) * s.vector for s in inside], axis=0).astype(np.float32)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


class SentenceScores:
    """One question's score for every sentence of a snapshot, and each passage's best."""

    def __init__(self, sentences: SentenceIndex, per_sentence: np.ndarray):
        self.sentences = sentences
        self.per_sentence = per_sentence
        # One gather and one segmented max over every passage: cheaper than picking candidates
        # out in Python, and no more work than the exact dense search over the sentences.
        self.per_passage = (np.maximum.reduceat(per_sentence[sentences.rows], sentences.firsts)
                            if len(sentences.pids) else np.zeros(0))

    def best(self, ids: Sequence[int]) -> dict[int, float]:
        """Each passage's best sentence score (passages without sentences left out)."""
        where = self.sentences.position
        found = [(pid, pos) for pid in ids if (pos := where.get(pid)) is not None]
        return dict(zip([pid for pid, _ in found], self.per_passage[[pos for _, pos in found]].tolist()))

    def top(self, n: int) -> list[int]:
        """Passages owning the n best sentences, best first."""
        picked = self.top_positions(n)
        picked = picked[np.argsort(-self.per_passage[picked], kind="stable")]
        return self.sentences.pids[picked].tolist()

    def top_positions(self, n: int) -> np.ndarray:
        """Where the passages owning the n best sentences sit in `sentences.pids`, in no order."""
        scores = self.per_sentence
        if not len(scores) or n <= 0:
            return np.zeros(0, dtype=np.int64)
        floor = np.partition(scores, -n)[-n] if n < len(scores) else -np.inf
        return np.flatnonzero(self.per_passage >= floor)

    def of(self, pid: int) -> list[float]:
        """The scores of one passage's sentences, in order."""
        lo, hi = self.sentences.ranges.get(pid, (0, 0))
        return self.per_sentence[lo:hi].tolist()


class SentenceIndex:
    """Sentence vectors and stems of one snapshot, with which passage windows own which sentences."""

    def __init__(self, vectors: np.ndarray, ranges: dict[int, tuple[int, int]],
                 bounds: list[tuple[int, int]], terms: Sequence[str] | None = None):
        self.matrix = vectors
        self.bounds = bounds      # sentence row -> (start, end) in its article
        self.ranges = ranges      # passage id -> its rows [lo, hi)
        # Every passage's rows end to end (windows overlap, so a row may appear twice),
        # where each passage starts among them, and a passage's place in that order.
        spans = [(pid, lo, hi) for pid, (lo, hi) in ranges.items() if hi > lo]
        self.pids = np.fromiter((pid for pid, _, _ in spans), dtype=np.int64, count=len(spans))
        self.position = {pid: i for i, (pid, _, _) in enumerate(spans)}
        sizes = np.fromiter((hi - lo for _, lo, hi in spans), dtype=np.int64, count=len(spans))
        lows = np.fromiter((lo for _, lo, _ in spans), dtype=np.int64, count=len(spans))
        self.firsts = np.cumsum(sizes) - sizes
        self.rows = np.repeat(lows - self.firsts, sizes) + np.arange(int(sizes.sum()), dtype=np.int64)
        # Stems as postings: the sentence rows holding term t are post_rows[post_ptr[t]:post_ptr[t + 1]].
        self.vocab: dict[str, int] = {}
        ids: list[int] = []
        counts: list[int] = []
        for row_terms in terms or [""] * len(bounds):
            found = row_terms.split()
            ids.extend(self.vocab.setdefault(t, len(self.vocab)) for t in found)
            counts.append(len(found))
        term_ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(term_ids, kind="stable")
        self.post_rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)[order]
        self.post_ptr = np.concatenate([[0], np.cumsum(np.bincount(term_ids, minlength=len(self.vocab)))])

    @classmethod
    def load(cls, conn: sqlite3.Connection, dim: int, gen: int) -> SentenceIndex | None:
        """Read the sentences visible at generation `gen`; None for an index without them."""
        columns = {r[1] for r in conn.execute("PRAGMA table_info(sentences)")}
        terms_col = "terms" if "terms" in columns else "NULL"  # folders written before stems were kept
        rows = conn.execute(
            f"SELECT article_id, start_char, end_char, vector, {terms_col} FROM sentences WHERE gen <= ? "
            "ORDER BY article_id, start_char", (gen,)
        ).fetchall()
        if not rows:
            return None
        matrix = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        by_article: dict[str, list[int]] = defaultdict(list)
        ends_of: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            by_article[r[0]].append(i)
            ends_of[r[0]].append(r[2])
        ranges: dict[int, tuple[int, int]] = {}
        for pid, art, start, end in conn.execute(
            "SELECT id, article_id, start_char, end_char FROM passages WHERE gen <= ?", (gen,)
        ):
            idx = by_article.get(art, [])
            lo = bisect.bisect_right(ends_of.get(art, []), start)  # first sentence ending after start
            hi = lo
            while hi < len(idx) and rows[idx[hi]][1] < end:
                hi += 1
            if hi > lo:
                ranges[pid] = (idx[lo], idx[hi - 1] + 1)
        terms = [r[4] for r in rows]
        for art in {r[0] for r in rows if r[4] is None}:
            (text,) = conn.execute("SELECT text FROM articles WHERE id = ?", (art,)).fetchone() or ("",)
            for i in by_article[art]:
                terms[i] = terms_of(text[rows[i][1]:rows[i][2]])
        return cls(np.ascontiguousarray(matrix), ranges, [(r[1], r[2]) for r in rows], terms)

    def spans(self, pid: int) -> list[tuple[int, int]]:
        """Article offsets of the sentences in a passage, as found at ingest."""
        lo, hi = self.ranges.get(pid, (0, 0))
        return self.bounds[lo:hi]

    def dense(self, query: np.ndarray) -> SentenceScores:
        """Every sentence's inner product with a normalised query vector."""
        return SentenceScores(self, inner_products(self.matrix, query))

    def terms(self, weights: Mapping[str, float]) -> SentenceScores:
        """Every sentence's summed weights of the stems it holds."""
        scores = np.zeros(len(self.bounds))
        for term, w in weights.items():
            t = self.vocab.get(term)
            if t is not None:  # a term's rows are distinct: one stem counts once per sentence
                scores[self.post_rows[self.post_ptr[t]:self.post_ptr[t + 1]]] += w
        return SentenceScores(self, scores)
