"""A read-only snapshot of an index folder: the published manifest's segments, and SQLite for text.

Loading the next generation reuses every segment the last snapshot already
holds (segments never change) and opens only the new ones, so a reload costs
what changed, not the collection.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import IndexBusy, IndexCorrupt
from .db import DB_NAME, VISIBLE, connect, db_state
from .manifest import MANIFEST_NAME, check_model, read_manifest, read_tombstones
from .segment import BM25, Segment, Terms, live_bits
from .terms import NO_DAY, sentence_keys, source_hash, term_hash

log = logging.getLogger(__name__)
# Stems in more passages than this share only score candidates others found. At 1M passages
# (squad-dev, 1,000 questions) 0.05 cost 0.5 point of acc@5 against scoring every match; 0.1 costs 0.1.
GENERATE_SHARE = 0.1
GENERATE_MIN = 5000  # ... and never below this many postings: small collections score every match
DOC_FREQ_CACHE_CHARS = 2_000_000
DOC_FREQ_TERM_CHARS = 64


@dataclass
class PassageRow:
    id: int
    article_id: str
    start: int
    end: int
    text: str
    title: str
    url: str | None
    source: str | None
    published: str | None
    signature: bytes | None = None  # the article's whole-text MinHash (qa/index/copies.py); None before it was kept


@dataclass(frozen=True)
class Where:
    """Which passages a search may return: by their article's source and published day (days since 1970)."""

    sources: tuple[str, ...] = ()
    first_day: int | None = None
    last_day: int | None = None

    def __bool__(self) -> bool:
        return bool(self.sources) or self.first_day is not None or self.last_day is not None

    def mask(self, seg: Segment) -> np.ndarray:
        keep = np.ones(len(seg), dtype=bool)
        if self.sources:
            keep &= np.isin(seg.p_source, np.array([source_hash(s) for s in self.sources], dtype=np.uint64))
        if self.first_day is not None or self.last_day is not None:
            keep &= seg.p_day != NO_DAY  # an undated article is out whenever a date bound is given
            if self.first_day is not None:
                keep &= seg.p_day >= self.first_day
            if self.last_day is not None:
                keep &= seg.p_day <= self.last_day
        return keep


@dataclass(frozen=True)
class Collection:
    """BM25's collection-wide statistics, given explicitly when this folder is one shard of many (the
    sums over every shard, as Elasticsearch's dfs_query_then_fetch gathers them): then a shard scores
    its passages exactly as one folder holding every shard's passages would."""

    doc_freqs: dict  # stem -> passages holding it, over the collection
    passages: int
    avgdl: float


@dataclass
class Part:
    """One segment as this snapshot sees it: which rows are live."""

    seg: Segment
    tombstones: str | None
    live: np.ndarray | None  # None: every row is live
    bits: np.ndarray | None


class Index:
    """A read-only snapshot of an index folder, safe to share between threads."""

    def __init__(self, path: Path, manifest: dict, parts: list[Part]):
        self.path, self.manifest, self.parts = path, manifest, parts
        self.generation = int(manifest["generation"])
        rows = sum(len(p.seg) for p in parts)
        self.bm25 = BM25(avgdl=(sum(p.seg.tokens for p in parts) / rows) if rows else 1.0)
        self._local = threading.local()
        self._doc_freqs: dict[str, int] = {}
        self._doc_freq_chars = 0
        self._masks: dict[Where, list[tuple[np.ndarray | None, np.ndarray | None]]] = {}
        self._masks_lock = threading.Lock()
        self._narrow: bool | None = None  # whether the database has the articles_source index
        self._signed: bool | None = None  # whether the articles table has its signature column

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | None = None, dim: int | None = None,
             previous: Index | None = None) -> Index:
        """Open the published snapshot in `path`, reusing the segments `previous` already holds."""
        path = Path(path)
        held = {p.seg.name: p for p in previous.parts} if previous is not None else {}
        for attempt in range(5):
            manifest = read_manifest(path)
            if manifest is None or not (path / DB_NAME).exists():
                raise IndexCorrupt(f"no index in {path}; run `qa ingest PATH --index {path}` first", code="index_missing")
            check_model(manifest, path, model, dim)
            try:
                parts = [cls._part(path, entry, held.get(entry["name"])) for entry in manifest["segments"]]
                break
            except (OSError, ValueError, RuntimeError, KeyError) as e:  # faiss raises RuntimeError for a bad file
                # A file gone while we opened it (a writer retired its segment after we read the manifest,
                # whatever error the library reading it raised) means: read the manifest again.
                gone = isinstance(e, FileNotFoundError) or _files_gone(path, manifest)
                if gone and attempt < 4:
                    continue
                if gone:
                    raise IndexBusy(f"{path} changed five times while it was being opened; try again") from None
                if isinstance(e, OSError):
                    raise
                raise IndexCorrupt(f"a segment of {path} is damaged ({e}); restore the folder from a backup, "
                                   "or delete it and ingest again") from None
        conn = connect(path / DB_NAME, readonly=True)
        try:
            db_gen = db_state(conn, path / DB_NAME)
        finally:
            conn.close()
        if db_gen < manifest["generation"]:
            raise IndexCorrupt(
                f"{path / DB_NAME} (generation {db_gen}) is older than {MANIFEST_NAME} (generation "
                f"{manifest['generation']}): the files come from different runs; restore the folder as a whole, "
                f"or run `qa ingest PATH --index {path}` to republish from the database")
        return cls(path, manifest, parts)

    @staticmethod
    def _part(path: Path, entry: dict, old: Part | None) -> Part:
        seg = old.seg if old is not None else Segment(path, entry)
        name = entry.get("tombstones")
        if old is not None and old.tombstones == name:
            return Part(seg, name, old.live, old.bits)
        dead = read_tombstones(path, name)
        if not len(dead):
            return Part(seg, name, None, None)
        live = np.ones(len(seg), dtype=bool)
        live[dead] = False
        return Part(seg, name, live, live_bits(live))

    # --- SQLite ------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Run the enclosed queries in one read transaction, so they all see the same database state."""
        conn = self.db
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path / DB_NAME, readonly=True)
        return conn

    @property
    def passage_count(self) -> int:
        return int(self.manifest["passages"])

    @property
    def article_count(self) -> int:
        return int(self.manifest["articles"])

    @property
    def segment_count(self) -> int:
        return len(self.parts)

    def passages(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        """Rows for the given passage ids (with text), keyed by id."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        spans = self.db.execute(f"SELECT id, version, start_char, end_char FROM passages WHERE id IN ({marks})",
                                list(ids)).fetchall()
        # Each article's text is read once, however many of its passages are asked for.
        versions = list({r[1] for r in spans})
        marks = ",".join("?" * len(versions))
        if self._signed is None:  # a database from before signatures has the column after its next write
            self._signed = any(r[1] == "signature" for r in self.db.execute("PRAGMA table_info(articles)"))
        signature = "signature" if self._signed else "NULL"
        arts = {r[0]: r for r in self.db.execute(
            f"SELECT version, id, title, url, source, published, text, {signature} FROM articles "
            f"WHERE version IN ({marks})", versions)} if versions else {}
        out = {}
        for pid, version, start, end in spans:
            a = arts.get(version)
            if a is not None:
                out[pid] = PassageRow(pid, a[1], start, end, a[6][start:end], a[2], a[3], a[4], a[5], a[7])
        return out

    def sources_of(self, ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
        """(article id, source) of the given passages, without their text."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        if self._narrow is None:  # an index folder from before the narrow index has it after its next write
            self._narrow = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'articles_source'").fetchone() is not None
        # SQLite prefers the rowid lookup, which reads the wide row; the narrow index answers alone.
        narrow = "INDEXED BY articles_source " if self._narrow else ""
        return {r[0]: (r[1], r[2]) for r in self.db.execute(
            f"SELECT p.id, a.id, a.source FROM passages p JOIN articles a {narrow}ON a.version = p.version "
            f"WHERE p.id IN ({marks})", list(ids))}

    def article(self, article_id: str) -> dict | None:
        """Return an article as of this snapshot with its passages' offsets, or None."""
        with self.reading():
            row = self.db.execute(
                f"SELECT version, id, title, url, source, author, published, text FROM articles a "
                f"WHERE id = :id AND {VISIBLE}", {"id": article_id, "gen": self.generation}).fetchone()
            if row is None:
                return None
            art = dict(row)
            version = art.pop("version")
            art["passages"] = [{"id": r[0], "start": r[1], "end": r[2]} for r in self.db.execute(
                "SELECT id, start_char, end_char FROM passages WHERE version = ? ORDER BY start_char", (version,))]
        return art

    def masks(self, where: Where | None) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """Per part: the rows a search may return (live and matching `where`), as a mask and a bitmap."""
        if not where:
            return [(p.live, p.bits) for p in self.parts]
        got = self._masks.get(where)
        if got is None:
            got = []
            for p in self.parts:
                keep = where.mask(p.seg) & (p.live if p.live is not None else True)
                got.append((keep, live_bits(keep)))
            with self._masks_lock:  # threads share the cache: two must not evict the same key
                if len(self._masks) >= 16:  # a few filters recur (one source, this week); keep those
                    self._masks.pop(next(iter(self._masks)), None)
                self._masks[where] = got
        return got

    # --- where passages live -----------------------------------------------------------

    def _locate(self, pids: Sequence[int]) -> Iterator[tuple[Part, np.ndarray, np.ndarray]]:
        """For each segment holding some of `pids`: (part, the pids it holds, their rows), sorted by row."""
        want = np.asarray(pids, dtype=np.int64)
        for part in self.parts:
            held, rows = part.seg.rows_of(want)
            if len(rows):
                found = want[held]
                if part.live is not None:
                    alive = part.live[rows]
                    found, rows = found[alive], rows[alive]
                order = np.argsort(rows)
                yield part, found[order], rows[order]

    # --- lexical -----------------------------------------------------------------------

    def doc_freqs(self, terms: Sequence[str]) -> tuple[dict[str, int], int]:
        """Document frequencies of stemmed terms and the passage count, for idf."""
        if not terms:
            return {}, self.passage_count
        cache = self._doc_freqs
        todo = [t for t in terms if t not in cache]
        if todo:
            h = np.fromiter((term_hash(t) for t in todo), dtype=np.uint64, count=len(todo))
            counts = sum((p.seg.df(h) for p in self.parts), np.zeros(len(todo), dtype=np.int64))
            for t, n in zip(todo, counts.tolist()):
                if len(t) > DOC_FREQ_TERM_CHARS:
                    continue
                if self._doc_freq_chars + len(t) > DOC_FREQ_CACHE_CHARS:
                    cache.clear()
                    self._doc_freq_chars = 0
                cache[t] = n
                self._doc_freq_chars += len(t)
            found = dict(zip(todo, counts.tolist()))
        else:
            found = {}
        out = {t: cache.get(t, found.get(t, 0)) for t in terms}
        return {t: n for t, n in out.items() if n}, self.passage_count

    def _bm25_terms(self, stems: Sequence[str], stats: Collection | None = None) -> Terms:
        """Each stem's hash, FTS5-style idf and whether it puts passages forward (a question asks for
        them twice, for its best passages and for the dense side's: the thread keeps the last)."""
        if stats is not None:
            return self._make_terms(stems, stats)
        key = tuple(stems)
        last = getattr(self._local, "terms", None)
        if last is not None and last[0] == key:
            return last[1]
        terms = self._make_terms(stems)
        self._local.terms = (key, terms)
        return terms

    def _make_terms(self, stems: Sequence[str], stats: Collection | None = None) -> Terms:
        df, n = (stats.doc_freqs, stats.passages) if stats is not None else self.doc_freqs(list(stems))
        cutoff = max(GENERATE_MIN, GENERATE_SHARE * n)
        out = []
        for s in stems:
            d = df.get(s, 0)
            if d:
                # df counts tombstoned rows until a merge drops them, so it can pass n
                idf = math.log(max(0.5 + n - d, 1e-9) / (0.5 + d))
                out.append((term_hash(s), idf if idf > 0 else 1e-6, d <= cutoff))
        if out and not any(g for _, _, g in out):
            rarest = min(range(len(out)), key=lambda i: df[stems[i]] if stems[i] in df else 0)
            out[rarest] = (out[rarest][0], out[rarest][1], True)
        return Terms.of(out)

    def lexical(self, stems: Sequence[str], n: int, title_weight: float = 1.0,
                where: Where | None = None, stats: Collection | None = None) -> dict[int, float]:
        """The n best passages by BM25 over title and text (as FTS5's bm25() scores them)."""
        terms = self._bm25_terms(stems, stats)
        if not terms:
            return {}
        bm = BM25(stats.avgdl if stats is not None else self.bm25.avgdl, title_weight)
        pids, scores = [], []
        for part, (live, _) in zip(self.parts, self.masks(where)):
            rows, s = part.seg.lexical_top(terms, n, live, bm)
            pids.append(part.seg.pids[rows])
            scores.append(s)
        return _top(pids, scores, n)

    def lexical_of(self, stems: Sequence[str], pids: Sequence[int], title_weight: float = 1.0,
                   stats: Collection | None = None) -> dict[int, float]:
        """BM25 scores of the given passages (those matching nothing left out)."""
        terms = self._bm25_terms(stems, stats)
        out: dict[int, float] = {}
        if not terms or not pids:
            return out
        bm = BM25(stats.avgdl if stats is not None else self.bm25.avgdl, title_weight)
        for part, found, rows in self._locate(pids):
            s = part.seg.lexical_of(terms, rows, bm)
            hit = s > 0
            out.update(zip(found[hit].tolist(), s[hit].tolist()))
        return out

    # --- dense -------------------------------------------------------------------------

    def dense(self, q: np.ndarray, n: int, where: Where | None = None) -> dict[int, float]:
        """The n best passages by their own vector's cosine."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1)
        # Every segment's best by FAISS's int8 scores, then the best of all scored again exactly.
        best = self.dense_coarse(q, n, where)
        exact = self.dense_of(q, list(best))
        return dict(sorted(exact.items(), key=lambda kv: -kv[1])[:n])

    def dense_coarse(self, q: np.ndarray, n: int, where: Where | None = None) -> dict[int, float]:
        """The n + n/4 best passages by FAISS's int8 scores (n from each segment), which dense() scores
        again exactly; the scores are cosines only as far as 8 bits keep them."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1)
        pids, scores = [], []
        for part, (_, bits) in zip(self.parts, self.masks(where)):
            rows, s = part.seg.dense_top(q, n, bits)
            pids.append(part.seg.pids[rows])
            scores.append(s)
        return _top(pids, scores, n + n // 4)

    def dense_of(self, q: np.ndarray, pids: Sequence[int]) -> dict[int, float]:
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1)
        out: dict[int, float] = {}
        for part, found, rows in self._locate(pids):
            out.update(zip(found.tolist(), part.seg.dense_of(q, rows).tolist()))
        return out

    def sentences(self, q: np.ndarray | None, weights: dict[str, float], pids: Sequence[int]) -> SentenceScores:
        """Score the sentences of the given passages: by cosine with `q` and by the stem weights they hold."""
        out = SentenceScores()
        if not len(pids):
            return out
        qv = np.ascontiguousarray(q, dtype=np.float32).reshape(-1) if q is not None else None
        items = sorted((term_hash(t), w) for t, w in weights.items())
        qhash = np.fromiter((h for h, _ in items), dtype=np.uint64, count=len(items))
        qweight = np.fromiter((w for _, w in items), dtype=np.float64, count=len(items))
        out.qhash, out.qweight, out.qv = qhash, qweight, qv
        for part, found, rows in self._locate(pids):
            seg = part.seg
            srows, firsts = seg.sentence_rows(rows)
            sizes = np.diff(np.append(firsts, len(srows)))
            has = sizes > 0
            terms = seg.sentence_terms(srows, qhash, qweight)
            at = np.minimum(firsts, max(len(srows) - 1, 0))
            if len(srows):
                out.best_terms.update(zip(found[has].tolist(), np.maximum.reduceat(terms, at)[has].tolist()))
                if qv is not None:
                    dense = seg.sentence_dense(qv, srows)
                    out.best_dense.update(zip(found[has].tolist(), np.maximum.reduceat(dense, at)[has].tolist()))
            out.where.update(zip(found.tolist(), zip([seg] * len(found), rows.tolist())))
        return out


def _files_gone(path: Path, manifest: dict) -> bool:
    """Whether a file the manifest names is missing, or the manifest has been replaced since."""
    for entry in manifest["segments"]:
        names = [f"{entry['name']}.arrays", f"{entry['name']}.faiss", entry.get("tombstones")]
        if any(n and not (path / n).exists() for n in names):
            return True
    try:
        return read_manifest(path) != manifest
    except IndexCorrupt:
        return True


class SentenceScores:
    """One question's scores of some passages' sentences: each passage's best, and its sentences on demand."""

    def __init__(self):
        self.best_dense: dict[int, float] = {}
        self.best_terms: dict[int, float] = {}
        self.where: dict[int, tuple[Segment, int]] = {}
        self.qhash = self.qweight = np.zeros(0)
        self.qv: np.ndarray | None = None

    def of(self, pid: int) -> tuple[list[tuple[int, int]], list[float]]:
        """A passage's sentence spans (article offsets) and their stem-weight scores."""
        spans, terms, *_ = self.full(pid)
        return spans, terms

    def full(self, pid: int) -> tuple[list[tuple[int, int]], list[float], list[float], list[np.ndarray], list[float],
                                      list[float]]:
        """A passage's sentence spans (article offsets), stem-weight scores, cosines with the question
        (0 without one), each sentence's stem keys (`sentence_keys`), each sentence's cosine with the
        one before it (0 for the first) and its mean cosine with the passage's other sentences."""
        return self.full_many([pid]).get(pid) or ([], [], [], [], [], [])

    def full_many(self, pids) -> dict[int, tuple]:
        """`full` of several passages (those known here), each segment's sentences read in one pass: the
        same numbers as one at a time, without a dozen array calls per passage (a shard sends ten or more
        with its candidates)."""
        by_seg: dict[int, tuple[Segment, list[int], list[int]]] = {}
        for pid in dict.fromkeys(pids):
            if pid in self.where:
                seg, row = self.where[pid]
                _, mine, rows = by_seg.setdefault(id(seg), (seg, [], []))
                mine.append(pid)
                rows.append(row)
        out: dict[int, tuple] = {}
        for seg, mine, rows in by_seg.values():
            srows, firsts = seg.sentence_rows(np.asarray(rows, dtype=np.int64))
            ends = [*firsts[1:].tolist(), len(srows)]
            terms = seg.sentence_terms(srows, self.qhash, self.qweight) if len(self.qhash) else np.zeros(len(srows))
            codes = seg.sentence_codes(srows)  # once, for the cosines, the links and the centrality
            dense = seg.sentence_dense(self.qv, srows, codes) if self.qv is not None else np.zeros(len(srows))
            ptr, keys = seg.s_term_ptr, seg.s_terms
            held = [sentence_keys(keys[a:b]) for a, b in zip(ptr[srows].tolist(), ptr[srows + 1].tolist())]
            spans = list(zip(seg.s_start[srows].tolist(), seg.s_end[srows].tolist()))
            terms, dense = terms.tolist(), dense.tolist()
            for pid, a, b in zip(mine, firsts.tolist(), ends):
                links, central = seg.sentence_links(srows[a:b], codes[a:b])  # per passage: its own product
                out[pid] = (spans[a:b], terms[a:b], dense[a:b], held[a:b], links.tolist(), central.tolist())
        return out


def _top(pids: list[np.ndarray], scores: list[np.ndarray], n: int) -> dict[int, float]:
    if not pids:
        return {}
    p, s = np.concatenate(pids), np.concatenate(scores)
    if len(p) > n:
        best = np.argpartition(-s, n - 1)[:n]
        p, s = p[best], s[best]
    return dict(zip(p.tolist(), s.tolist()))
