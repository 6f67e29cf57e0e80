"""The index folder: SQLite (articles, passages, FTS5) + FAISS (vectors) + a JSON manifest.

How the three files stay in step, and what happens when they do not:

- SQLite is the source of truth, vectors included. Every change is one
  transaction of whole articles, stamped with a new generation number.
- `vectors.faiss` is a fast copy of the vectors; `manifest.json` vouches for
  it (model, dimension, article and passage counts, generation). Both are
  written under a temporary name, fsynced and moved into place with
  `os.replace`, faiss first: a crash leaves the old pair, or a new faiss with
  the old manifest, never half a file.
- A reader serves exactly the published generation: every query filters
  `gen <= manifest generation`, so rows a writer committed later (or a killed
  writer left unpublished) stay invisible until the next publish.
- On load, a faiss file that does not match its manifest (count, dimension)
  is rebuilt from SQLite with a logged warning. A manifest or database that
  cannot be read, or a database older than its manifest, refuses to load with
  an `index_corrupt` message saying what to do; a running server keeps
  serving its last good snapshot (see `service.Service.searcher`).
- One writer at a time (`flock` on `.lock`); the next writer republishes
  whatever a crashed one committed but did not publish.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np

from .errors import IndexBusy, IndexCorrupt, IndexLocked, ModelMismatch
from .sentences import SentenceIndex, SentenceScores, inner_products, terms_of

log = logging.getLogger(__name__)
# Queries search one vector at a time: OpenMP threads would only fight the model's threads.
faiss.omp_set_num_threads(1)

SCHEMA_VERSION = 1
DB_NAME, FAISS_NAME, MANIFEST_NAME, LOCK_NAME = "qa.sqlite3", "vectors.faiss", "manifest.json", ".lock"
HNSW_ABOVE = 200_000  # exact search below this many passages, HNSW above
DOC_FREQ_CACHE_CHARS = 2_000_000  # per snapshot; about 10 MB of cached document frequencies at most
DOC_FREQ_TERM_CHARS = 64  # longer "terms" are not worth remembering
PUBLISH_EVERY = 2.0  # seconds between snapshots published during a long ingest
MANIFEST_KEYS = ("model", "dim", "generation", "passages", "articles")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    url TEXT, source TEXT, author TEXT, published TEXT,
    text TEXT NOT NULL,
    content_hash TEXT NOT NULL UNIQUE,
    origin TEXT,
    added_at TEXT NOT NULL,
    gen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY,
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    embed_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    gen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_article ON passages(article_id);
CREATE INDEX IF NOT EXISTS passages_embed_hash ON passages(embed_hash);
CREATE TABLE IF NOT EXISTS sentences (
    id INTEGER PRIMARY KEY,
    article_id TEXT NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    embed_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    gen INTEGER NOT NULL,
    terms TEXT  -- distinct porter stems, space-separated
);
CREATE INDEX IF NOT EXISTS sentences_article ON sentences(article_id);
CREATE INDEX IF NOT EXISTS sentences_embed_hash ON sentences(embed_hash);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(title, text, tokenize='porter unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS passages_vocab USING fts5vocab(passages_fts, 'row');
"""


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


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as e:
        raise _corrupt_db(path, e) from None
    return conn


def _corrupt_db(path: Path, e: Exception) -> IndexCorrupt | IndexBusy:
    if isinstance(e, sqlite3.OperationalError):  # locked, busy, cannot open now: the file may be fine
        return IndexBusy(f"{path} could not be read just now ({e}); try again in a moment")
    return IndexCorrupt(f"{path} is not a readable index database ({e}); restore it from a backup, "
                        f"or delete the folder {path.parent} and ingest again")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that it is either the old or the new one, even after a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_manifest(path: Path) -> dict | None:
    """The manifest of an index folder, None when there is none; IndexCorrupt when it is unusable."""
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        manifest, problem = None, str(e)
    else:
        missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
        problem = f"missing {', '.join(missing)}" if missing else None
        if not problem and not all(isinstance(manifest[k], int) for k in ("dim", "generation", "passages", "articles")):
            problem = "counts are not whole numbers"
    if problem:
        raise IndexCorrupt(f"{path / MANIFEST_NAME} is unreadable ({problem}); run `qa ingest PATH --index {path}` "
                           "to republish it from the database, or delete the folder and ingest again")
    return manifest


def _new_faiss(dim: int, n: int) -> faiss.Index:
    inner = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT) if n > HNSW_ABOVE else faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap2(inner)


class FlatView(NamedTuple):
    """An exact index's ids and vectors, over FAISS's own memory (no copy)."""

    ids: np.ndarray
    matrix: np.ndarray
    order: np.ndarray  # ids[order] is sorted: lookups by id without a dict of every passage

    @classmethod
    def of(cls, vectors: faiss.Index) -> FlatView | None:
        """The view of an exact, non-empty index; None for HNSW or an empty one."""
        inner = faiss.downcast_index(vectors.index) if isinstance(vectors, faiss.IndexIDMap) else None
        if not isinstance(inner, faiss.IndexFlatIP) or inner.ntotal == 0:
            return None
        matrix = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d).reshape(inner.ntotal, inner.d)
        ids = faiss.vector_to_array(vectors.id_map)
        return cls(ids, matrix, np.argsort(ids, kind="stable"))

    def rows(self, wanted: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which of `wanted` the index holds (a mask), and their rows."""
        wanted = np.asarray(wanted, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ids, wanted, sorter=self.order), len(self.ids) - 1)
        rows = self.order[at]
        held = self.ids[rows] == wanted
        return held, rows[held]


class PassageScores:
    """A question's inner products with the passage vectors: all at once for an exact index, through FAISS for HNSW."""

    def __init__(self, index: Index, query: np.ndarray):
        self.index, self.query = index, query
        # One product over the matrix costs less than FAISS's search plus reconstructing the
        # extra candidates (0.05 against 0.16 ms for 964 passages), and serves both.
        self.all = inner_products(index.flat.matrix, query) if index.flat is not None else None

    def top_rows(self, n: int) -> np.ndarray:
        """Rows of the n best passages, in no order (exact index only)."""
        return np.argpartition(-self.all, n)[:n] if n < len(self.all) else np.arange(len(self.all))

    def top(self, n: int) -> dict[int, float]:
        """The n best passages and their scores."""
        if self.all is not None:
            best = self.top_rows(n)
            return dict(zip(self.index.flat.ids[best].tolist(), self.all[best].tolist()))
        vectors = self.index.vectors
        if vectors.ntotal == 0:
            return {}
        scores, ids = vectors.search(self.query.reshape(1, -1), min(n, vectors.ntotal))
        return {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}

    def of(self, ids: Sequence[int]) -> dict[int, float]:
        """The scores of the given passages (unknown ids left out)."""
        if not ids:
            return {}
        if self.all is not None:
            held, rows = self.index.flat.rows(ids)
            return dict(zip(np.asarray(ids)[held].tolist(), self.all[rows].tolist()))
        try:
            vecs = self.index.vectors.reconstruct_batch(np.asarray(ids, dtype=np.int64))
        except RuntimeError:  # an id vanished between snapshot and query
            return {}
        return dict(zip(ids, inner_products(vecs, self.query).tolist()))


class Index:
    """A read-only snapshot of an index folder, safe to share between threads."""

    def __init__(self, path: Path, manifest: dict, vectors: faiss.Index, sentences: SentenceIndex | None = None):
        self.path = path
        self.manifest = manifest
        self.generation = int(manifest["generation"])
        self.vectors = vectors
        self.sentences = sentences
        self.flat = FlatView.of(vectors)
        # Where each passage of the sentence index sits in the flat matrix, so the two sides
        # line up as arrays (None if FAISS lacks one, which a consistent snapshot never does).
        self.flat_rows_of_sentence_passages = None
        if self.flat is not None and sentences is not None:
            held, rows = self.flat.rows(sentences.pids)
            self.flat_rows_of_sentence_passages = rows if held.all() else None
        self._local = threading.local()
        self._doc_freqs: dict[str, int] = {}
        self._doc_freq_chars = 0

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | None = None, dim: int | None = None) -> Index:
        """Open the published snapshot in `path`, checking that it was built with `model`."""
        path = Path(path)
        for _ in range(5):
            manifest = read_manifest(path)
            if manifest is None or not (path / DB_NAME).exists():
                raise IndexCorrupt(f"no index in {path}; run `qa ingest PATH --index {path}` first", code="index_missing")
            check_model(manifest, path, model, dim)
            try:
                vectors = faiss.read_index(str(path / FAISS_NAME))
            except Exception as e:  # faiss raises RuntimeError for any bad file
                log.warning("cannot read %s (%s); rebuilding vectors from the database", path / FAISS_NAME, e)
                vectors = None
            # A writer may have published between the two reads: then take the newer pair.
            if read_manifest(path) == manifest:
                break
        gen, dim = manifest["generation"], manifest["dim"]
        conn = _connect(path / DB_NAME, readonly=True)
        try:
            db_gen, count = _db_state(conn, path / DB_NAME, gen)
            if db_gen < gen or count > manifest["passages"]:
                raise IndexCorrupt(
                    f"{path / DB_NAME} (generation {db_gen}, {count} passages) does not match {MANIFEST_NAME} "
                    f"(generation {gen}, {manifest['passages']} passages): the files come from different runs; "
                    f"restore the folder as a whole, or run `qa ingest PATH --index {path}` to republish from the database")
            if vectors is None or vectors.ntotal != manifest["passages"] or vectors.d != dim:
                if vectors is not None:
                    log.warning("%s holds %d %d-dimensional vectors but %s vouches for %d %d-dimensional ones; "
                                "rebuilding the vectors from the database", FAISS_NAME, vectors.ntotal, vectors.d,
                                MANIFEST_NAME, manifest["passages"], dim)
                vectors = vectors_from_db(conn, dim, gen)
            sentences = SentenceIndex.load(conn, dim, gen)
        except sqlite3.DatabaseError as e:
            raise _corrupt_db(path / DB_NAME, e) from None
        finally:
            conn.close()
        return cls(path, manifest, vectors, sentences)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Run the enclosed queries in one read transaction, so they all see the same database state."""
        conn = self.db
        if conn.in_transaction:  # nested: the outer block holds the snapshot
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            if conn.in_transaction:  # an error inside may have ended it already
                conn.execute("COMMIT")

    # One connection per thread: sqlite3 connections must not be shared mid-query.
    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path / DB_NAME, readonly=True)
        return conn

    def sentence_spans(self, pid: int) -> list[tuple[int, int]]:
        """Article offsets of a passage's sentences ([] when the index has none)."""
        return self.sentences.spans(pid) if self.sentences else []

    def sentence_dense(self, query: np.ndarray) -> SentenceScores | None:
        """Every sentence's inner product with the query, and each passage's best (None without sentences)."""
        return self.sentences.dense(query) if self.sentences else None

    def sentence_terms(self, weights: dict[str, float]) -> SentenceScores | None:
        """Every sentence's summed weights of the stems it holds, and each passage's best (None without sentences)."""
        return self.sentences.terms(weights) if self.sentences else None

    @property
    def passage_count(self) -> int:
        return int(self.manifest["passages"])

    @property
    def article_count(self) -> int:
        return int(self.manifest["articles"])

    def lexical(self, match: str, n: int, title_weight: float = 1.0) -> list[tuple[int, float]]:
        """Top-n passages for an FTS5 MATCH expression, as (id, positive bm25 score)."""
        if not match:
            return []
        rows = self.db.execute(
            "SELECT f.rowid, -bm25(passages_fts, ?, 1.0) AS s FROM passages_fts f "
            "JOIN passages p ON p.id = f.rowid WHERE passages_fts MATCH ? AND p.gen <= ? "
            "ORDER BY bm25(passages_fts, ?, 1.0) LIMIT ?",
            (title_weight, match, self.generation, title_weight, n),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def dense(self, query: np.ndarray) -> PassageScores:
        """A question's inner products with the passage vectors (query: normalised)."""
        return PassageScores(self, query.reshape(-1).astype(np.float32))

    def passages(self, ids: Sequence[int]) -> dict[int, PassageRow]:
        """Fetch passages with their article metadata."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            # The text from the FTS5 table's copy of the window (written as the article's slice):
            # 5x faster than substr() over the article, which reads the whole article.
            "SELECT p.id, p.article_id, p.start_char, p.end_char, f.text, a.title, a.url, a.source, a.published "
            "FROM passages p JOIN articles a ON a.id = p.article_id JOIN passages_fts f ON f.rowid = p.id "
            f"WHERE p.id IN ({marks}) AND p.gen <= ?",
            [*ids, self.generation],
        ).fetchall()
        return {r[0]: PassageRow(*r) for r in rows}

    def article(self, article_id: str) -> dict | None:
        """Return an article with its passages' offsets, or None."""
        with self.reading():
            row = self.db.execute(
                "SELECT id, title, url, source, author, published, text FROM articles WHERE id = ? AND gen <= ?",
                (article_id, self.generation),
            ).fetchone()
            if row is None:
                return None
            art = dict(row)
            art["passages"] = [
                {"id": r[0], "start": r[1], "end": r[2]}
                for r in self.db.execute(
                    "SELECT id, start_char, end_char FROM passages WHERE article_id = ? AND gen <= ? ORDER BY start_char",
                    (article_id, self.generation),
                )
            ]
        return art

    def doc_freqs(self, terms: Sequence[str]) -> tuple[dict[str, int], int]:
        """Document frequencies of stemmed terms and the passage count, for idf."""
        if not terms:
            return {}, self.passage_count
        cache = self._doc_freqs  # per snapshot; near enough, as FTS5's vocabulary ignores generations anyway
        out = {t: cache.get(t) for t in terms}
        todo = [t for t, n in out.items() if n is None]
        if todo:
            marks = ",".join("?" * len(todo))
            found = dict(self.db.execute(f"SELECT term, doc FROM passages_vocab WHERE term IN ({marks})", todo).fetchall())
            for t in todo:
                out[t] = n = found.get(t, 0)
                if len(t) <= DOC_FREQ_TERM_CHARS:
                    if self._doc_freq_chars + len(t) > DOC_FREQ_CACHE_CHARS:
                        cache.clear()
                        self._doc_freq_chars = 0
                    cache[t] = n
                    self._doc_freq_chars += len(t)
        return {t: n for t, n in out.items() if n}, self.passage_count


def _db_state(conn: sqlite3.Connection, path: Path, gen: int) -> tuple[int, int]:
    """The database's generation and its passage count up to `gen`; IndexCorrupt when it is not an index."""
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        count = conn.execute("SELECT count(*) FROM passages WHERE gen <= ?", (gen,)).fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise _corrupt_db(path, e) from None
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise IndexCorrupt(f"{path} has schema version {meta.get('schema_version')!r}; this qa reads version "
                           f"{SCHEMA_VERSION}: delete the folder and ingest again")
    return int(meta.get("generation", 0)), count


def check_model(manifest: dict, path: Path, model: str | None, dim: int | None) -> None:
    """Refuse an index built with another model."""
    if model and manifest.get("model") != model:
        raise ModelMismatch(
            f"the index in {path} was built with model {manifest.get('model')!r}, but this run uses {model!r}; "
            f"set QA_MODEL={manifest.get('model')} or use a new --index folder"
        )
    if dim and int(manifest.get("dim", dim)) != dim:
        raise ModelMismatch(f"the index in {path} holds {manifest.get('dim')}-dimensional vectors, the model makes {dim}")


def vectors_from_db(conn: sqlite3.Connection, dim: int, gen: int | None = None) -> faiss.Index:
    """Rebuild the FAISS index from the vectors stored in SQLite."""
    where, args = ("WHERE gen <= ?", (gen,)) if gen is not None else ("", ())
    rows = conn.execute(f"SELECT id, vector FROM passages {where} ORDER BY id", args).fetchall()
    index = _new_faiss(dim, len(rows))
    if rows:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        index.add_with_ids(mat, ids)
    return index


@dataclass
class NewPassage:
    start: int
    end: int
    embed_hash: str
    vector: np.ndarray


def lock_index(path: str | os.PathLike, wait: float = 0.0):
    """Take the index folder's writer lock (an open file; closing it releases the lock)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    lock = open(path / LOCK_NAME, "a+")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                lock.close()
                raise IndexLocked(f"index is locked: another writer (a `qa ingest`?) is writing to {path}; "
                                  "wait for it to finish, or pass --wait SECONDS") from None
            time.sleep(0.1)
    # The holder's pid, for people wondering who holds it (the kernel drops the lock when it dies).
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


class Writer:
    """The single writer of an index folder: holds its lock, adds and deletes articles."""

    def __init__(self, path: str | os.PathLike, model: str, dim: int, wait: float = 0.0, lock=None):
        self.path = Path(path)
        self._lock_file = lock if lock is not None else lock_index(self.path, wait)
        try:
            self._open(model, dim)
        except BaseException:
            self._lock_file.close()
            raise

    def _open(self, model: str, dim: int) -> None:
        for stale in self.path.glob(".*.tmp"):  # left by a writer killed mid-write; we hold the lock
            stale.unlink(missing_ok=True)
        try:
            manifest = read_manifest(self.path)
        except IndexCorrupt as e:  # the database is the truth: republish from it
            log.warning("%s; republishing it from the database", e.message)
            manifest = None
        if manifest:
            check_model(manifest, self.path, model, dim)
        self.model, self.dim = model, dim
        self.conn = _connect(self.path / DB_NAME)
        try:
            self.conn.executescript(SCHEMA)
            if "terms" not in {r[1] for r in self.conn.execute("PRAGMA table_info(sentences)")}:
                self.conn.execute("ALTER TABLE sentences ADD COLUMN terms TEXT")  # readers fill in older rows
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            self.generation = int(self.conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            self.vectors = self._published_vectors(manifest) or vectors_from_db(self.conn, dim)
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise _corrupt_db(self.path / DB_NAME, e) from None
        self.dirty = manifest is None or manifest["generation"] != self.generation
        self._saved_at, self._save_took = time.monotonic(), 0.0

    def _published_vectors(self, manifest: dict | None) -> faiss.Index | None:
        """The published FAISS file when it matches the database exactly, to save re-reading every vector."""
        if not manifest or manifest["generation"] != self.generation or manifest["dim"] != self.dim:
            return None
        try:
            vectors = faiss.read_index(str(self.path / FAISS_NAME))
        except Exception:  # faiss raises RuntimeError for any bad file; rebuild instead
            return None
        count = self.conn.execute("SELECT count(*) FROM passages").fetchone()[0]
        return vectors if vectors.ntotal == count and vectors.d == self.dim else None

    def close(self) -> None:
        try:
            if self.dirty:
                self.save()
        finally:
            self.conn.close()
            self._lock_file.close()  # releases the flock

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fingerprint(self, article_id: str) -> str | None:
        """The stored fingerprint (`Article.content_hash`) of an article, None when there is no such article."""
        row = self.conn.execute("SELECT content_hash FROM articles WHERE id = ?", (article_id,)).fetchone()
        return row[0] if row else None

    def cached_vectors(self, embed_hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors already computed for identical model inputs, so nothing is embedded twice."""
        hashes = list(set(embed_hashes))
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(hashes), 500):
            part = hashes[i:i + 500]
            marks = ",".join("?" * len(part))
            # Only sentences go through the model; passage vectors are derived from them.
            for h, blob in self.conn.execute(f"SELECT embed_hash, vector FROM sentences WHERE embed_hash IN ({marks})", part):
                out[h] = np.frombuffer(blob, dtype=np.float32)
        return out

    def add(self, items: Sequence[tuple]) -> None:
        """Add articles with their passages in one transaction: all of them or none."""
        gen = self.generation + 1
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        new: dict[int, np.ndarray] = {}  # passage id -> vector, in insertion order
        removed = []
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for art, passages, *more in items:  # (article, passages[, sentences])
                old = c.execute("SELECT id FROM passages WHERE article_id = ?", (art.id,)).fetchall()
                if old:  # same id, new content: the article was updated
                    # (a version added earlier in this same batch never reached FAISS)
                    removed += [r[0] for r in old if new.pop(r[0], None) is None]
                    self._delete_rows(art.id)
                c.execute(
                    "INSERT INTO articles (id, title, url, source, author, published, text, content_hash, origin, added_at, gen) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (art.id, art.title, art.url, art.source, art.author, art.published, art.text,
                     art.content_hash, art.origin, now, gen),
                )
                for p in passages:
                    vec = np.ascontiguousarray(p.vector, dtype=np.float32)
                    cur = c.execute(
                        "INSERT INTO passages (article_id, start_char, end_char, embed_hash, vector, gen) VALUES (?,?,?,?,?,?)",
                        (art.id, p.start, p.end, p.embed_hash, vec.tobytes(), gen),
                    )
                    pid = cur.lastrowid
                    c.execute("INSERT INTO passages_fts (rowid, title, text) VALUES (?,?,?)", (pid, art.title, art.text[p.start:p.end]))
                    new[pid] = vec
                for sent in (more[0] if more else ()):
                    c.execute(
                        "INSERT INTO sentences (article_id, start_char, end_char, embed_hash, vector, gen, terms) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (art.id, sent.start, sent.end, sent.embed_hash,
                         np.ascontiguousarray(sent.vector, dtype=np.float32).tobytes(), gen,
                         terms_of(art.text[sent.start:sent.end])),
                    )
            c.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self.generation = gen
        if removed:
            self.vectors.remove_ids(np.asarray(removed, dtype=np.int64))
        if new:
            self.vectors.add_with_ids(np.vstack(list(new.values())), np.fromiter(new, dtype=np.int64, count=len(new)))
        self.dirty = True
        # Publish now and then so a long ingest shows up while it runs, spending at most ~10% on it.
        if time.monotonic() - self._saved_at >= max(PUBLISH_EVERY, 10 * self._save_took):
            self.save()

    def _delete_rows(self, article_id: str) -> None:
        c = self.conn
        c.execute("DELETE FROM passages_fts WHERE rowid IN (SELECT id FROM passages WHERE article_id = ?)", (article_id,))
        c.execute("DELETE FROM passages WHERE article_id = ?", (article_id,))
        c.execute("DELETE FROM sentences WHERE article_id = ?", (article_id,))
        c.execute("DELETE FROM articles WHERE id = ?", (article_id,))

    def delete(self, article_id: str) -> bool:
        """Remove an article and its passages from both stores; False if it was not there."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            ids = [r[0] for r in c.execute("SELECT id FROM passages WHERE article_id = ?", (article_id,))]
            found = c.execute("SELECT 1 FROM articles WHERE id = ?", (article_id,)).fetchone() is not None
            if found:
                self._delete_rows(article_id)
                self.generation += 1
                c.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(self.generation),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        if ids:
            self.vectors.remove_ids(np.asarray(ids, dtype=np.int64))
        if found:
            self.dirty = True
        return found

    def save(self) -> dict:
        """Publish a snapshot: write the FAISS file, then the manifest that vouches for it."""
        t0 = time.monotonic()
        articles, passages = self.conn.execute(
            "SELECT (SELECT count(*) FROM articles), (SELECT count(*) FROM passages)"
        ).fetchone()
        if self.vectors.ntotal != passages:  # never write a file that disagrees with the database
            self.vectors = vectors_from_db(self.conn, self.dim)
        write_atomic(self.path / FAISS_NAME, faiss.serialize_index(self.vectors).tobytes())
        from . import __version__

        manifest = {
            "format": "qa-index",
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "dim": self.dim,
            "articles": articles,
            "passages": passages,
            "generation": self.generation,
            "faiss": FAISS_NAME,
            "faiss_type": "hnsw" if passages > HNSW_ABOVE else "flat",
            "qa_version": __version__,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_atomic(self.path / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
        self.dirty = False
        self._saved_at = time.monotonic()
        self._save_took = self._saved_at - t0
        return manifest
