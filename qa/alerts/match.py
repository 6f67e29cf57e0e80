"""Reading what a writer published against every standing question, at the cost of what was published.

A check reads the article versions written since the last check (by their version number, the
primary key of qa.sqlite3's articles: a range, not a scan) that the published snapshot shows. Then:

1. one matrix product: every standing question's vector (kept in the store, so nothing is encoded)
   against every sentence vector of the new passages (read from their segments); a question goes on
   with an article only when one of its sentences comes within PREFILTER cosine of it, the article
   names the question's subject (every name in it: "Lowmoor" in "Who is the mayor of Lowmoor?") and
   holds COMMON of its other words, in its title or its sentences' stems (kept in the segments), and
   passes the question's filters (source, from, to);
2. for those pairs only, the search's own answer step restricted to that article's passages
   (`Searcher.ask(..., among=...)`, idf and the gate's collection size from the whole index): an
   answer the gate keeps is an entry in that question's feed, and a webhook call if it has one.

So 1,000 standing questions cost one (1000 x new sentences) product plus a few answer steps, however
big the archive.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..index.terms import STOPWORDS, TOKEN, day_of, sentence_key, sentence_keys, stems as index_stems
from ..search import filters
from .store import Alert, AlertStore

log = logging.getLogger("qa.alerts")

# A question goes on to the answer step with an article holding a sentence at least this close to it.
# bench/alerts_cost.py (1,000 questions, 100 new articles): 154 answer steps and 47 answers at 0.25,
# 640 and 48 at 0.15, 1,669 and 48 with no bar (the one answer 0.25 loses: squad-dev's "Who approved
# of this plan?" read against a story of a stadium plan approved).
PREFILTER = 0.25
COMMON = 0.2  # the share of a question's words besides its names an article must hold (as qa/search/time.py)


@dataclass
class NewArticle:
    version: int
    id: str
    title: str
    source: str | None
    published: str | None
    pids: list[int] = field(default_factory=list)
    keys: set[int] = field(default_factory=set)  # its stems (sentence keys), title and text


def subject(q: str) -> tuple[set[int], set[int]]:
    """A question's names (capitalised words past its first) and its other words, as sentence keys."""
    words = TOKEN.findall(q)
    names, common = set(), set()
    for i, w in enumerate(words):
        if w.lower() in STOPWORDS:
            continue
        keys = {sentence_key(s) for s in index_stems(w)}
        (names if i > 0 and w[0].isupper() else common).update(keys)
    return names, common - names


def about(q_subject: tuple[set[int], set[int]], keys: set[int]) -> bool:
    """Whether an article (its stems' keys) is about what a question asks: it names every name the
    question holds and holds COMMON of its other words."""
    names, common = q_subject
    return names <= keys and (not common or len(common & keys) >= COMMON * len(common))


@dataclass
class Checked:
    """What one check did: articles read, pairs that reached the answer step, answers new to their feeds."""

    articles: int = 0
    passages: int = 0
    alerts: int = 0
    pairs: int = 0
    found: list[tuple[Alert, dict]] = field(default_factory=list)
    seconds: float = 0.0


class _Known:
    """An embedder that answers the standing questions from their kept vectors (anything else: the model)."""

    def __init__(self, embedder, vectors: dict[str, np.ndarray]):
        self._embedder, self._vectors = embedder, vectors
        self.name, self.dim = getattr(embedder, "name", ""), embedder.dim
        self.max_tokens = getattr(embedder, "max_tokens", 256)

    def count_tokens(self, texts):
        return self._embedder.count_tokens(texts)

    def encode(self, texts, batch_size: int = 32):
        if len(texts) == 1 and texts[0] in self._vectors:
            return self._vectors[texts[0]][None, :]
        return self._embedder.encode(texts, batch_size)


def model_key(embedder) -> str:
    """What the kept question vectors are keyed by: the model and the runtime that encodes a question."""
    return f"{type(embedder).__name__}:{getattr(embedder, 'name', '')}:{embedder.dim}"


def new_articles(index, after: int) -> tuple[list[NewArticle], int]:
    """The article versions after `after` that the snapshot shows, with their passages; and the last
    version the snapshot holds (where the next check starts)."""
    gen = index.generation
    with index.reading():
        rows = index.db.execute(
            "SELECT a.version, a.id, a.title, a.source, a.published, p.id FROM articles a "
            "JOIN passages p ON p.version = a.version WHERE a.version > :after AND a.gen <= :gen "
            "AND (a.deleted_gen IS NULL OR a.deleted_gen > :gen) ORDER BY a.version, p.id",
            {"after": after, "gen": gen}).fetchall()
        (last,) = index.db.execute("SELECT max(version) FROM articles WHERE version > ? AND gen <= ?",
                                   (after, gen)).fetchone()
    out: dict[int, NewArticle] = {}
    for version, aid, title, source, published, pid in rows:
        out.setdefault(version, NewArticle(version, aid, title, source, published)).pids.append(pid)
    return list(out.values()), (last if last is not None else after)


def last_version(index) -> int:
    """The last article version the snapshot holds: a new standing question reads only later ones."""
    with index.reading():
        (last,) = index.db.execute("SELECT max(version) FROM articles WHERE gen <= ?", (index.generation,)).fetchone()
    return int(last or 0)


def _sentence_vectors(index, arts: list[NewArticle]) -> tuple[np.ndarray, np.ndarray]:
    """Every sentence vector of the new passages (rows, float32) and the index in `arts` of each one's
    article; each article's `keys` filled in (its title's stems and its sentences')."""
    article_of = {pid: i for i, a in enumerate(arts) for pid in a.pids}
    where = index.sentences(None, {}, list(article_of)).where  # pid -> (segment, row)
    by_seg: dict[int, tuple] = {}
    for pid, (seg, row) in where.items():
        by_seg.setdefault(id(seg), (seg, [], []))
        by_seg[id(seg)][1].append(row)
        by_seg[id(seg)][2].append(article_of[pid])
    mats, owners = [], []
    for seg, rows, owner in by_seg.values():
        rows = np.asarray(rows, dtype=np.int64)
        srows, firsts = seg.sentence_rows(rows)
        sizes = np.diff(np.append(firsts, len(srows)))
        if len(srows):
            mats.append(seg.sentence_codes(srows).astype(np.float32) / seg.scale)
            owned = np.repeat(np.asarray(owner, dtype=np.int64), sizes)
            owners.append(owned)
            ptr = seg.s_term_ptr
            for r, i in zip(srows.tolist(), owned.tolist()):
                arts[i].keys.update(sentence_keys(seg.s_terms[ptr[r]:ptr[r + 1]]).tolist())
    for a in arts:
        a.keys.update(sentence_key(s) for s in index_stems(a.title or ""))
    if not mats:
        return np.zeros((0, index.parts[0].seg.vectors.d if index.parts else 1), np.float32), np.zeros(0, np.int64)
    return np.vstack(mats), np.concatenate(owners)


def _passes(alert: Alert, art: NewArticle) -> bool:
    """The standing question's filters, as /api/search applies them (from/to on the article's own date)."""
    if art.version <= alert.since:
        return False
    where, _ = filters.parse(alert.source, alert.from_, alert.to, None)
    if where is None:
        return True
    if where.sources and art.source not in where.sources:
        return False
    if where.first_day is not None or where.last_day is not None:
        day = day_of(art.published)
        if not art.published or day < (where.first_day if where.first_day is not None else day) or \
                day > (where.last_day if where.last_day is not None else day):
            return False
    return True


def check(searcher, store: AlertStore, prefilter: float = PREFILTER) -> Checked:
    """Read the articles published since the last check against every standing question; keep the new
    answers (an entry per question and article, a webhook call where one is set)."""
    from ..search.searcher import Searcher

    t0 = time.perf_counter()
    out = Checked()
    embedder, index = searcher.embedder, searcher.index
    if not hasattr(index, "db"):  # a sharded root's searcher: its shards are not read here
        log.warning("standing questions are read in a single index folder, not a sharded root")
        return out
    model = model_key(embedder)
    alerts = store.alerts(model)
    if not alerts:
        return out
    after = store.checked()
    if after is None:
        after = min(a.since for a in alerts)
    arts, last = new_articles(index, after)
    out.articles, out.passages, out.alerts = len(arts), sum(len(a.pids) for a in arts), len(alerts)
    found: list[tuple[Alert, str, dict]] = []
    if arts:
        missing = [a for a in alerts if a.vector is None]
        if missing:  # made through the CLI, or under another model: encoded once, then kept
            made = {a.id: embedder.encode([a.q])[0].astype(np.float32) for a in missing}
            store.keep_vectors(model, made)
            for a in missing:
                a.vector = made[a.id]
        sentences, owner = _sentence_vectors(index, arts)
        if len(sentences):
            questions = np.vstack([a.vector for a in alerts])
            cos = questions @ sentences.T  # (alerts, new sentences)
            order = np.argsort(owner, kind="stable")
            owner, cos = owner[order], cos[:, order]
            starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
            best = np.maximum.reduceat(cos, starts, axis=1)  # (alerts, articles with sentences)
            holders = owner[starts]
            pairs = np.argwhere(best >= prefilter)
            known = _Known(embedder, {a.q: a.vector for a in alerts})
            reader = Searcher(index, known, searcher.cfg)
            subjects: dict[int, tuple[set[int], set[int]]] = {}
            for ai, j in pairs.tolist():
                alert, art = alerts[ai], arts[holders[j]]
                if ai not in subjects:
                    subjects[ai] = subject(alert.q)
                if not about(subjects[ai], art.keys) or not _passes(alert, art):
                    continue
                out.pairs += 1
                got = reader.ask(alert.q, 1, among=art.pids)
                if got.answer is not None and got.answer.citation.article_id == art.id:
                    found.append((alert, art.id, got.answer.to_dict()))
    if found or last > after:
        out.found = store.record(found, last)
    out.seconds = time.perf_counter() - t0
    if out.articles:
        log.info("read %d new articles against %d standing questions in %.3f s: %d answer steps, %d new answers",
                 out.articles, out.alerts, out.seconds, out.pairs, len(out.found))
    return out
