"""Hybrid search: BM25 and dense candidates fused into one score, collapsed, highlighted, cited."""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import datetime, timezone
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from . import answer as answers
from .reader import get_reader
from . import time as when
from ..index import copies as wire
from ..embed.model import Embedder
from ..errors import BadRequest
from ..index import Index, PassageRow, SentenceScores, Where
from ..index.terms import STOPWORDS, stems as index_stems
from ..index.text import WORD as _WORD, sentence_spans


@dataclass(frozen=True)
class SearchConfig:
    # Tuned on squad-dev only (see README): lexical evidence is sharp but literal,
    # dense evidence is fuzzy but paraphrase-proof; both are scaled by their best candidate.
    lexical_weight: float = 0.35
    dense_weight: float = 0.65
    # A passage's dense score leans on its best sentence: an answer is usually one
    # sentence, and a whole-window vector blurs it with its neighbours.
    sentence_weight: float = 0.85
    # The lexical side's share for the best sentence by the query's idf mass it
    # holds, against BM25 over the whole window (0.3 to 0.7 all measured alike).
    lexical_sentence_weight: float = 0.5
    candidates: int = 50       # taken from each side before fusion (100 changed no answer on squad-dev)
    # Passages taken by their own vector before their sentences are scored: on squad-dev
    # 200 matched scoring every sentence of the collection (0.893 / 0.981), 50 lost 0.001 of acc@5.
    dense_candidates: int = 200
    title_weight: float = 1.0  # bm25 weight of the title column
    max_query_chars: int = 1000
    max_k: int = 50
    reader: bool = True  # the trained reader chooses the answer and decides null (else the feature models alone)
    # The passage the reader's answer comes from leads the hits (it read that passage's sentence against
    # the question; the fused score only counted words and vectors).
    reader_leads: bool = True


@dataclass
class Citation:
    article_id: str
    title: str
    url: str | None
    source: str | None
    published: str | None
    start: int
    end: int
    href: str


@dataclass
class Copy:
    """Another article holding a near-identical passage (the same wire story republished)."""

    article_id: str
    title: str
    source: str | None
    published: str | None
    href: str


@dataclass
class Hit:
    rank: int
    score: float
    passage_id: int
    text: str
    highlight: list[dict] = field(default_factory=list)
    citation: Citation | None = None
    also_in: list[Copy] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The API's JSON shape: dataclasses.asdict's result, without its deep copies (0.5 ms a search)."""
        return {**vars(self), "highlight": [dict(h) for h in self.highlight],
                "citation": dict(vars(self.citation)) if self.citation else None,
                "also_in": [dict(vars(c)) for c in self.also_in]}


@dataclass
class Newer:
    """A newer article among the results that answers differently (qa/search/time.py)."""

    text: str
    passage_id: int
    citation: Citation


@dataclass
class Answer:
    text: str
    confidence: float
    passage_id: int
    citation: Citation
    newer: Newer | None = None
    span: dict | None = None  # {"start", "end"}: offsets into `text` of the words that answer

    def to_dict(self) -> dict:
        return {**vars(self), "citation": dict(vars(self.citation)),
                "newer": {**vars(self.newer), "citation": dict(vars(self.newer.citation))} if self.newer else None}


@dataclass
class Answered:
    """A question's answer (None: the collection does not answer it), its passages and source counts."""

    hits: list[Hit]
    answer: Answer | None
    facets: dict[str, list[dict]]
    # What the answer models read, for `qa eval` and bench/tune_answers.py.
    evidence: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"answer": self.answer.to_dict() if self.answer else None, "facets": self.facets,
                "results": [h.to_dict() for h in self.hits]}


def query_terms(q: str) -> list[str]:
    """Lower-cased query words, without stop words unless nothing else is left."""
    words = [w.lower() for w in _WORD.findall(q)]
    content = [w for w in words if w not in STOPWORDS]
    return list(dict.fromkeys(content or words))


def validate(q: object, k: object, cfg: SearchConfig) -> tuple[str, int]:
    """Check a query and k from a request; raise BadRequest with a stable code."""
    if q is None:
        raise BadRequest("the query is missing: pass q, e.g. /api/search?q=Where+did+Assad+go", code="missing_query")
    if not isinstance(q, str):
        raise BadRequest("q must be a string", code="invalid_query")
    if "\x00" in q:
        raise BadRequest("q must not contain NUL characters", code="invalid_query")
    q = q.strip()
    if not q:
        raise BadRequest("the query is empty: type a question", code="empty_query")
    if len(q) > cfg.max_query_chars:
        raise BadRequest(f"the query is too long ({len(q)} characters; at most {cfg.max_query_chars})", code="query_too_long")
    if k is None:
        k = 5
    if isinstance(k, bool):
        raise BadRequest("k must be a whole number", code="invalid_k")
    if isinstance(k, str):
        if not re.fullmatch(r"\s*\d{1,6}\s*", k):
            raise BadRequest(f"k must be a whole number from 1 to {cfg.max_k}", code="invalid_k")
        k = int(k)
    if not isinstance(k, int):
        raise BadRequest(f"k must be a whole number from 1 to {cfg.max_k}", code="invalid_k")
    if not 1 <= k <= cfg.max_k:
        raise BadRequest(f"k must be from 1 to {cfg.max_k} (got {k})", code="k_out_of_range")
    return q, k


def _normalise(scores: dict[int, float], ids: list[int]) -> dict[int, float]:
    """Scale by the best candidate's score; a candidate the side did not find scores 0."""
    top = max((scores[i] for i in ids if i in scores), default=0.0)
    return {i: scores[i] / top if top > 0 and i in scores else 0.0 for i in ids}


def fuse(lexical: dict[int, float], dense: dict[int, float], cfg: SearchConfig,
         sentence_lexical: dict[int, float] | None = None) -> list[tuple[int, float]]:
    """Weighted sum of normalised lexical and dense scores, best first."""
    ids = list(dict.fromkeys([*lexical, *dense]))
    lex, den = _normalise(lexical, ids), _normalise(dense, ids)
    if sentence_lexical:
        a, best = cfg.lexical_sentence_weight, _normalise(sentence_lexical, ids)
        lex = {i: (1 - a) * lex[i] + a * best[i] for i in ids}
    total = cfg.lexical_weight + cfg.dense_weight or 1.0
    fused = [(i, (cfg.lexical_weight * lex[i] + cfg.dense_weight * den[i]) / total) for i in ids]
    return sorted(fused, key=lambda t: (-t[1], t[0]))


def _overlaps(a: PassageRow, b: PassageRow) -> bool:
    """Overlapping windows of one article."""
    return a.article_id == b.article_id and min(a.end, b.end) > max(a.start, b.start)


def _copies(a: PassageRow, b: PassageRow, words: Callable[[PassageRow], set[str]]) -> bool:
    """Passages of two articles with nearly the same words: one wire story, republished
    (a copy cut at other places shares most of the shorter passage's words)."""
    if a.article_id == b.article_id or min(len(a.text), len(b.text)) < 0.6 * max(len(a.text), len(b.text)):
        return False
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return False
    shared = len(wa & wb)
    return shared / min(len(wa), len(wb)) >= 0.9 and shared / (len(wa) + len(wb) - shared) >= 0.7


# Passages of two copies of one article (by their whole texts' signatures) share word 5-shingles as far as
# their windows overlap; a copy with a dateline above shifts every window, so few line up exactly. Shares
# of the shorter passage's shingles, measured on such copies: 0.77-1.0 for the copy's window closest to a
# passage, 0.05-0.72 for its others overlapping it, at most 0.01 (a repeated name) for one that does not.
ALIGNED = 0.5  # holds most of the passage: stands for it, and is shown in its place when published earlier
TOUCHES = 0.03  # overlaps it: left out, as an overlapping window of one article is
TOUCHES_MIN = 3  # shingles, so that a short passage's one repeated phrase is no overlap


def highlight(text: str, terms: list[str], idf: dict[str, float],
              spans: list[tuple[int, int]] | None = None, scores: list[float] | None = None) -> list[dict]:
    """Offsets of the sentence(s) in `text` that best match the query terms (`scores`: per span, if known)."""
    given = spans or ()
    spans = [(a, b) for a, b in given if 0 <= a < b <= len(text)] or sentence_spans(text)
    if not spans:
        return []
    if scores is None or len(scores) != len(spans) or len(spans) != len(given):
        stems = set(index_stems(" ".join(terms)))  # as the index and `idf` spell them
        scores = [sum(idf.get(s, 1.0) for s in stems.intersection(index_stems(text[a:b]))) for a, b in spans]
    best = max(range(len(spans)), key=lambda i: (scores[i], -i))
    chosen = [best]
    # A close second next to the best sentence usually completes the answer.
    for j in (best - 1, best + 1):
        if 0 <= j < len(spans) and scores[best] > 0 and scores[j] >= 0.8 * scores[best] and len(chosen) < 2:
            chosen.append(j)
    chosen.sort()
    return [{"start": spans[chosen[0]][0], "end": spans[chosen[-1]][1]}]


# Threads start on first use, so a process that forks before searching carries none over.
_questions = ThreadPoolExecutor(4, thread_name_prefix="qa-question")
ANSWER_PASSAGES = 5  # the answer is chosen among the sentences of this many best passages
SORTS = ("relevance", "newest")


class _Asked:
    """One question as the search steps read it: its words, stems and idf, its vector (encoded on
    another thread while the lexical side runs here), and its candidates' sentences, each read once."""

    def __init__(self, searcher: Searcher, q: str, among: list[int] | None):
        self.searcher, self.among = searcher, among
        index = searcher.index
        # numpy and FAISS release the GIL, so on an idle core the model's run and the lexical side overlap
        self._vector = _questions.submit(searcher.embedder.encode, [q]) if searcher.cfg.dense_weight > 0 else None
        self.terms = query_terms(q)
        self.stems = list(dict.fromkeys(index_stems(" ".join(self.terms))))  # as the index made them
        df, n_docs = index.doc_freqs(self.stems)
        self.idf = {s: math.log(1 + (n_docs - df.get(s, 0) + 0.5) / (df.get(s, 0) + 0.5)) for s in self.stems}
        self.sentences: SentenceScores | None = None  # the first ranking's candidates' sentence scores
        self._full: dict[int, tuple] = {}

    @property
    def qvec(self) -> np.ndarray | None:
        """The question's vector (None when the dense side is off), waited for on first use."""
        if self._vector is not None and not isinstance(self._vector, np.ndarray):
            self._vector = self._vector.result()[0]
        return self._vector

    def rank(self, where: Where | None, n: int) -> tuple[list[tuple[int, float]], dict[int, float]]:
        """Every candidate passage with its fused score, best first, and the passages' own cosines."""
        cfg, index = self.searcher.cfg, self.searcher.index
        if cfg.lexical_weight <= 0:
            lexical = {}
        elif self.among is not None:
            lexical = index.lexical_of(self.stems, self.among, cfg.title_weight)
        else:
            lexical = index.lexical(self.stems, n, cfg.title_weight, where)
        ranked, whole, sentences = self.searcher._rank(self.qvec, self.stems, self.idf, lexical, n, where,
                                                       self.among)
        if self.sentences is None:
            self.sentences = sentences
        return ranked, whole

    def read_sentences(self, pids) -> None:
        """Read the sentences of those of `pids` among the candidates in one pass (the answer's passages)."""
        if self.sentences is not None:
            self._full.update(self.sentences.full_many([p for p in pids if p not in self._full]))

    def sentences_of(self, pid: int) -> tuple:
        """A passage's sentences with their scores (SentenceScores.full), read once."""
        if pid not in self._full:
            got = self.sentences if pid in self.sentences.where else \
                self.searcher.index.sentences(self.qvec, self.idf, [pid])
            self._full[pid] = got.full(pid)
        return self._full[pid]

    def marked_by_words(self, row: PassageRow) -> list[dict]:
        """The passage's mark by the question's words (its sentences with most of their idf mass)."""
        spans, scores, *_ = self.sentences_of(row.id)
        return highlight(row.text, self.terms, self.idf, [(a - row.start, b - row.start) for a, b in spans], scores)


class Searcher:
    """Answer questions from one index snapshot with one embedder."""

    def __init__(self, index: Index, embedder: Embedder, cfg: SearchConfig = SearchConfig()):
        self.index, self.embedder, self.cfg = index, embedder, cfg

    @property
    def reader(self):
        """The process's trained reader (loaded once: by the servers as they start, else on the first answer),
        or None when switched off."""
        return get_reader() if self.cfg.reader else None

    def search(self, q: str, k: int = 5, where: Where | None = None, sort: str = "relevance") -> list[Hit]:
        """The k passages that best answer `q`."""
        return self.ask(q, k, where, sort, with_answer=False).hits

    def ask(self, q: str, k: int = 5, where: Where | None = None, sort: str = "relevance",
            with_answer: bool = True, among: list[int] | None = None) -> Answered:
        """The answer to `q` (or None), the k passages that best answer it, and its source counts;
        `among`: only these passages are read (a standing question reading new articles: qa/alerts)."""
        cfg = self.cfg
        question = _Asked(self, q, among)
        n = max(cfg.candidates, k)
        ranked, whole = question.rank(where, n)
        facet_ranked = ranked
        if where is not None and where.sources:  # facets count sources as if none were chosen
            facet_ranked, _ = question.rank(Where((), where.first_day, where.last_day), n)
        facets = {"source": self._facets([i for i, _ in facet_ranked[:cfg.candidates]])}

        groups = self._collapse(ranked, max(k, ANSWER_PASSAGES if with_answer else k))
        out = Answered([], None, facets)
        if with_answer and groups:
            question.read_sentences([g[0].id for g in groups[:ANSWER_PASSAGES]])
            out.answer, out.evidence = self._answer(q, question.idf, groups[:ANSWER_PASSAGES], whole,
                                                    question.sentences_of,
                                                    partial(when.next_passages, self.index, ranked, groups[:ANSWER_PASSAGES]))
            if out.answer is not None and cfg.reader and cfg.reader_leads and sort == "relevance":
                groups = _lead_with(groups, out.evidence["best"].pid)
        marks: dict[int, tuple[int, int]] = out.evidence.get("marks", {})
        for r, (row, score, copies) in enumerate(groups[:k], 1):
            if r == 1:  # the mark before answers, made only when `qa eval` asks for it
                out.evidence["lexical_highlight"] = partial(question.marked_by_words, row)
            # A passage the answer read is marked where the answer model puts its answer (the
            # answer itself in the passage that gives it); the rest by the question's words.
            if row.id in marks:
                mark = [{"start": marks[row.id][0] - row.start, "end": marks[row.id][1] - row.start}]
            else:
                mark = question.marked_by_words(row)
            out.hits.append(Hit(
                rank=r, score=round(score, 4), passage_id=row.id, text=row.text, highlight=mark,
                citation=_citation(row),
                also_in=[Copy(c.article_id, c.title, c.source, c.published, f"/articles/{c.article_id}#p-{c.id}")
                         for c in copies]))
        if sort == "newest":  # the same k passages, newest first; undated last, by relevance
            dated = sorted((h for h in out.hits if published_at(h.citation.published)),
                           key=lambda h: published_at(h.citation.published), reverse=True)
            out.hits = dated + [h for h in out.hits if not published_at(h.citation.published)]
            for r, h in enumerate(out.hits, 1):
                h.rank = r
        return out

    def _rank(self, qvec, stems: list[str], idf: dict[str, float], lexical: dict[int, float], n: int,
              where: Where | None, among: list[int] | None = None):
        """Every candidate passage with its fused score, best first; the passages' own cosines; their sentences."""
        cfg, index = self.cfg, self.index
        dense: dict[int, float] = {}
        whole: dict[int, float] = {}
        if qvec is not None:
            # Candidates: the best passages by their own vector and by BM25; each then
            # scores by its best sentence, which the passage vector (a mean) blurs.
            whole = index.dense(qvec, max(n, cfg.dense_candidates), where) if among is None else \
                index.dense_of(qvec, among)
            candidates = list(dict.fromkeys([*whole, *lexical]))
            whole.update(index.dense_of(qvec, [i for i in candidates if i not in whole]))
            sentences = index.sentences(qvec, idf, candidates)
            sw = cfg.sentence_weight
            for i in candidates:
                best = sentences.best_dense.get(i)
                if i in whole:
                    dense[i] = whole[i] if best is None else (1 - sw) * whole[i] + sw * best
            if cfg.lexical_weight > 0:
                lexical.update(index.lexical_of(stems, [i for i in candidates if i not in lexical], cfg.title_weight))
        else:
            sentences = index.sentences(None, idf, list(lexical))
        best_sentence = None
        if cfg.lexical_weight > 0 and cfg.lexical_sentence_weight > 0:
            best_sentence = sentences.best_terms
        return fuse(lexical, dense, cfg, best_sentence), whole, sentences

    def _collapse(self, ranked: list[tuple[int, float]], n: int) -> list[tuple[PassageRow, float, list[PassageRow]]]:
        """The n best passages, one per overlapping run of an article; a wire story's copies join one
        group, shown as its earliest published copy."""
        groups = _Groups()
        pos, extra = 0, 0
        while pos < len(ranked) and (len(groups) < n or extra < 2 * n):
            page = ranked[pos: pos + 2 * n]
            pos += len(page)
            if len(groups) >= n:  # full: one more page only for copies of what is shown
                extra += len(page)
            rows = self.index.passages([i for i, _ in page])
            for pid, score in page:
                if pid in rows:
                    groups.add(rows[pid], score, room=len(groups) < n)
        return groups.shown()

    def _facets(self, pids: list[int]) -> list[dict]:
        """Per source, how many articles the given passages come from, most first."""
        counts: dict[str, set[str]] = {}
        for article_id, source in self.index.sources_of(pids).values():
            if source:
                counts.setdefault(source, set()).add(article_id)
        return [{"value": s, "count": len(a)} for s, a in sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0]))]

    def _answer(self, q: str, idf: dict[str, float], groups, whole: dict[int, float], sentences_of, more=()):
        """Choose the answer among the best passages' sentences, and judge whether to give it."""
        question = answers.Question(q, idf)
        cands: list[answers.Sentence] = []
        cover = 0.0
        for r, (row, score, _) in enumerate(groups, 1):
            spans, terms, cosines, stems, links, central = sentences_of(row.id)
            mine = answers.passage_sentences(question, row.id, r, score, row.title or "", row.start, row.text, spans,
                                             terms, cosines, stems, links, central)
            cover = max(cover, answers.coverage(question, mine))
            cands += mine
        best, p = answers.choose(cands)
        # Each passage's likeliest sentence is its mark; the best of them is the answer.
        evidence = {"candidates": cands, "p": p, "best": best, "marks": _marks(cands)}
        if best is None:
            return None, evidence
        passage_cosine = max((whole.get(g[0].id, 0.0) for g in groups), default=0.0)
        features = answers.question_features(best, p, passage_cosine, cover, self.index.passage_count)
        gives, confidence = answers.judge(features)
        start, end = evidence["marks"][best.pid]
        spans: dict[int, tuple[int, int]] = {}
        reader = self.reader
        if reader is not None:  # the reader reads the question against the likeliest sentences, and decides
            got = answers.read(reader, q, cands, answers.gate(features), self.index.passage_count)
            best, gives, confidence, spans = got.best, got.gives, round(got.confidence, 3), got.spans
            start, end = answers.span_of(best, got.prob)
            evidence["marks"][best.pid] = (start, end)  # its passage is marked where the answer is
            evidence.update(best=best, reading=got)
        row = next(g[0] for g in groups if g[0].id == best.pid)
        evidence.update(features=features, gives=gives, text=row.text[start - row.start:end - row.start])
        if not gives:
            return None, evidence
        # Which article's answer the question's time wants (the newest for the present), and a newer one
        # that answers differently (qa/search/time.py).
        timed = when.by_time(q, question, cands, best, row, confidence, groups, whole, self.index.passage_count,
                             more, sentences_of)
        if timed.sentence is not best:
            best, row, confidence, (start, end) = timed.sentence, timed.row, timed.confidence, timed.span
            evidence.update(best=best, text=row.text[start - row.start:end - row.start])
        cite = _citation(row)
        cite.start, cite.end = start, end
        newer = None
        if timed.newer is not None:
            o = timed.newer
            a, b = o.span
            newer = Newer(o.row.text[a - o.row.start:b - o.row.start], o.row.id,
                          dataclasses.replace(_citation(o.row), start=a, end=b))
        short = spans.get(id(best))  # the words that answer, inside the answer's text
        span = {"start": best.start + short[0] - start, "end": best.start + short[1] - start} if short else None
        return Answer(evidence["text"], confidence, row.id, cite, newer, span), evidence


class _Groups:
    """Passages gathered into results: each one run of an article's text, with its copies in other articles."""

    def __init__(self):
        self.groups: list[tuple[float, list[PassageRow], list[float]]] = []  # score, rows, how close each is
        self.hidden: list[PassageRow] = []  # left out for overlapping a result of their own article
        self._words: dict[int, set[str]] = {}
        self._phrases: dict[int, set[tuple[str, ...]]] = {}
        self._signatures: dict[str, np.ndarray | None] = {}
        self._stories: dict[tuple[str, str], bool] = {}  # whether two articles are copies, by their signatures

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, row: PassageRow, score: float, room: bool) -> None:
        """Put a passage (best first) into the group it copies, or a new one if there is room."""
        if any(_overlaps(row, other) for _, rows, close in self.groups for other, c in zip(rows, close)
               if c >= ALIGNED):
            self.hidden.append(row)
            return
        group, c = self._closest(row)
        if c > 0:
            group[1].append(row)
            group[2].append(c)
        elif room:
            self.groups.append((score, [row], [1.0]))

    def shown(self) -> list[tuple[PassageRow, float, list[PassageRow]]]:
        """Each group's passage to show (its earliest published copy) with its score and the other articles'."""
        for row in self.hidden:  # it may hold the words of its article's copy in another result: list it there
            group, c = self._closest(row, copies_only=True)
            if c >= ALIGNED:
                group[1].append(row)
                group[2].append(0.0)  # listed, never shown: its article shows an overlapping passage already
        return [_shown(score, rows, close) for score, rows, close in self.groups]

    def _closest(self, row: PassageRow, copies_only: bool = False) -> tuple[tuple | None, float]:
        """The group `row` copies most closely, and how closely: against each group's first passage, and
        for a copy of their article against the passages lined up with it; `copies_only`: only the latter."""
        best, most = None, 0.0
        for group in self.groups:
            if copies_only and any(r.article_id == row.article_id for r in group[1]):
                continue  # its article is there already
            for i, (other, c) in enumerate(zip(group[1], group[2])):
                if c >= ALIGNED and ((i == 0 and not copies_only) or self._one_story(row, other)):
                    mine = self._closeness(row, other)
                    if mine > most:
                        best, most = group, mine
                        if most == 1.0:
                            return best, most
        return best, most

    def _closeness(self, row: PassageRow, other: PassageRow) -> float:
        """How closely `row` copies `other`, a passage of another article: for copies of one article, the
        share of word shingles they hold in common; else 1 for a near-identical passage; 0 when not a copy."""
        if row.article_id == other.article_id:
            return 0.0
        if not self._one_story(row, other):
            return 1.0 if _copies(row, other, self._words_of) else 0.0
        a, b = self._phrases_of(row), self._phrases_of(other)
        shared = len(a & b)
        share = shared / max(min(len(a), len(b)), 1)
        return share if share >= TOUCHES and shared >= TOUCHES_MIN else 0.0

    def _one_story(self, row: PassageRow, other: PassageRow) -> bool:
        """Whether two passages' articles are copies of one story, by their whole texts' signatures."""
        pair = (row.article_id, other.article_id)
        if pair not in self._stories:
            self._stories[pair] = wire.similarity(self._signature(row), self._signature(other)) >= wire.COPY_AT
        return self._stories[pair]

    def _words_of(self, row: PassageRow) -> set[str]:
        if row.id not in self._words:
            self._words[row.id] = set(row.text.lower().split())  # str.split: 5x faster than a regex, as telling
        return self._words[row.id]

    def _phrases_of(self, row: PassageRow) -> set[tuple[str, ...]]:
        if row.id not in self._phrases:
            self._phrases[row.id] = wire.phrases(row.text)
        return self._phrases[row.id]

    def _signature(self, row: PassageRow) -> np.ndarray | None:
        if row.article_id not in self._signatures:
            self._signatures[row.article_id] = wire.values(row.signature)
        return self._signatures[row.article_id]


def _shown(score: float, rows: list[PassageRow], close: list[float]) -> tuple[PassageRow, float, list[PassageRow]]:
    """A group as shown: the earliest published copy of its first passage, and each other article once."""
    closest: dict[str, tuple[float, PassageRow]] = {}  # per article, its passage most like the first
    for row, c in zip(rows, close):
        if row.article_id not in closest or c > closest[row.article_id][0]:
            closest[row.article_id] = (c, row)
    # A passage that only overlaps the first is never shown in its place: the words shown would change.
    copies = sorted(closest.values(), key=lambda cr: (cr[0] < ALIGNED, _when(cr[1])))
    return copies[0][1], score, sorted((r for _, r in copies[1:]), key=_when)


def _lead_with(groups: list, pid: int) -> list:
    """The groups with the one holding passage `pid` first (unchanged when none does)."""
    at = next((i for i, g in enumerate(groups) if g[0].id == pid), 0)
    return [groups[at], *groups[:at], *groups[at + 1:]] if at else groups


def _when(row: PassageRow) -> datetime:
    """Sort key: earliest published first, undated last."""
    return published_at(row.published) or _NEVER


def _marks(candidates: list[answers.Sentence]) -> dict[int, tuple[int, int]]:
    """Per passage, the article offsets of its likeliest answer sentence (with a neighbour, as the answer has)."""
    best: dict[int, answers.Sentence] = {}
    for c in candidates:
        if c.pid not in best or c.p > best[c.pid].p:
            best[c.pid] = c
    return {pid: answers.span_of(c) for pid, c in best.items()}


_NEVER = datetime.max.replace(tzinfo=timezone.utc)  # after every date: the undated sort last


def published_at(published: str | None) -> datetime | None:
    """The moment an ISO 8601 `published` names, in UTC, for ordering; None when absent or unreadable."""
    if not published:
        return None
    try:
        at = datetime.fromisoformat(published.replace("Z", "+00:00"))
    except ValueError:
        return None
    # Text would sort 23:30 at -05:00 on the 8th before 01:00Z on the 9th, though it is 04:30Z. A date
    # alone (or a time without an offset) names no zone: read as UTC, so a date is its day's start in UTC.
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def _citation(row: PassageRow) -> Citation:
    return Citation(article_id=row.article_id, title=row.title, url=row.url, source=row.source,
                    published=row.published, start=row.start, end=row.end, href=f"/articles/{row.article_id}#p-{row.id}")

