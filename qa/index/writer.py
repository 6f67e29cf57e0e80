"""The single writer of an index folder: adds and deletes whole articles, publishes, merges.

Order of a write, so that a crash at any point loses nothing committed and
shows readers nothing half-made:

1. `add()`: in one SQLite transaction, the articles' new versions and passages
   are inserted (ids from AUTOINCREMENT) and old versions marked deleted at the
   new generation; before COMMIT, their segment files are written and fsynced,
   and the segment is recorded in the `segments` table.
2. `save()` (every PUBLISH_EVERY seconds, and at close): tombstone files for
   the rows deleted since the last publish, then the manifest, atomically.
3. A writer that finds the database ahead of the manifest (a killed writer's
   commits) publishes them: the segments recorded after the manifest's
   generation and the versions deleted since.

Merges run on a background thread over immutable segments and touch no
SQLite: the writer installs the merged segment at its next publish, with the
tombstones that arrived meanwhile. Files that no published manifest names are
removed once no reader can still be opening them.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .copies import signature
from ..errors import IndexCorrupt, IndexLocked
from .db import DB_NAME, SCHEMA, SCHEMA_VERSION, add_columns, connect, corrupt_db
from .manifest import GRACE_SECONDS, check_model, read_manifest, read_tombstones, write_manifest, \
    write_tombstones
from .merge import merge, plan
from .segment import Segment, SegmentBuilder, write_segment
from .terms import choose_scale

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
PUBLISH_EVERY = 2.0  # seconds between snapshots published during a long ingest


@dataclass
class NewPassage:
    start: int
    end: int
    embed_hash: str
    vector: np.ndarray


@dataclass
class LiveSegment:
    """A segment the writer's next manifest names: its entry there, its files opened, its deleted rows."""

    entry: dict
    seg: Segment
    dead: set[int] = field(default_factory=set)  # rows deleted so far
    published_dead: int = -1  # how many of them the last published manifest recorded (-1: never published)


@dataclass
class FinishedMerge:
    """A merge the background thread has finished, waiting for the writer to install it."""

    names: list[str]  # the segments it merged
    dead_then: list[set[int]] | None = None  # each input's deleted rows when it started (later ones carry over)
    entry: dict | None = None  # the merged segment's manifest entry
    error: BaseException | None = None  # why it failed, if it did (its inputs then stay)


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
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Writer:
    """The single writer of an index folder: holds its lock, adds and deletes articles."""

    def __init__(self, path: str | os.PathLike, model: str, dim: int, wait: float = 0.0, lock=None,
                 background_merges: bool = True):
        self.path = Path(path)
        self.background_merges = background_merges
        self._lock_file = lock if lock is not None else lock_index(self.path, wait)
        try:
            self._open(model, dim)
        except BaseException:
            self._lock_file.close()
            raise

    # --- opening, and finishing what a killed writer left ---------------------------------------

    def _open(self, model: str, dim: int) -> None:
        for stale in self.path.glob(".*.tmp"):  # left by a writer killed mid-write; we hold the lock
            stale.unlink(missing_ok=True)
        try:
            manifest = read_manifest(self.path)
        except IndexCorrupt as e:
            if "another version of qa" in e.message:
                raise
            log.warning("%s; republishing it from the database", e.message)
            manifest = None
        if manifest:
            check_model(manifest, self.path, model, dim)
        self.model, self.dim = model, dim
        self.conn = connect(self.path / DB_NAME)
        try:
            has_meta = self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
            old = has_meta and self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if old and old[0] != str(SCHEMA_VERSION):
                raise IndexCorrupt(f"{self.path} holds an index written by another version of qa (schema version "
                                   f"{old[0]}; this one writes {SCHEMA_VERSION}): move the folder aside and run "
                                   "`qa ingest` on your articles again")
            self.conn.executescript(SCHEMA)
            add_columns(self.conn)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
            if meta["schema_version"] != str(SCHEMA_VERSION):
                raise IndexCorrupt(f"{self.path / DB_NAME} has schema version {meta['schema_version']!r}; this qa "
                                   f"writes version {SCHEMA_VERSION}: move the folder aside and ingest again")
            self.generation = int(meta["generation"])
            self.scale = float(meta["scale"]) if "scale" in meta else None
            self._recover(manifest)
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise corrupt_db(self.path / DB_NAME, e) from None
        except BaseException:
            self.conn.close()
            raise
        self._saved_at, self._save_took = time.monotonic(), 0.0
        self._merge_thread: threading.Thread | None = None
        self._merged: FinishedMerge | None = None
        self._failed_merges: set[tuple[str, ...]] = set()

    def _recover(self, manifest: dict | None) -> None:
        """Load the working state: the manifest's segments plus anything committed after it."""
        published = manifest["generation"] if manifest else -1
        self.retired: list[dict] = list(manifest.get("retired", [])) if manifest else []
        if manifest and published <= self.generation:
            entries = [dict(e) for e in manifest["segments"]]
        else:  # no manifest, or one from another run: rebuild the list from the database and the files
            entries = self._entries_from_files()
            published = -1
        self.live: dict[str, LiveSegment] = {}  # by name, in the manifest's order
        for e in entries:
            dead = set(read_tombstones(self.path, e.get("tombstones")).tolist())
            self.live[e["name"]] = LiveSegment(e, Segment(self.path, e), dead, published_dead=len(dead))
        later = self.conn.execute("SELECT name FROM segments WHERE gen > ? ORDER BY gen", (published,)).fetchall()
        for (name,) in later:
            if name not in self.live:
                self._take(self._entry_of(name))
        if published >= 0:
            self._tombstone(self._deleted_pids(published))
        else:
            self._tombstone(self._dead_pids())
        self.dirty = manifest is None or published != self.generation or any(
            len(s.dead) != s.published_dead for s in self.live.values())
        self._remove_orphans()

    def _entry_of(self, name: str) -> dict:
        seg_meta = Segment.peek(self.path, name)
        return {"name": name, "kind": seg_meta["kind"], "passages": seg_meta["passages"],
                "sentences": seg_meta["sentences"], "tokens": seg_meta["tokens"], "bytes": seg_meta["bytes"]}

    def _entries_from_files(self) -> list[dict]:
        """Segments covering the database's passages, newest first, none twice (merged ones win)."""
        names = sorted({p.name.removesuffix(".arrays") for p in self.path.glob("seg-*.arrays")}, reverse=True)
        taken: list[dict] = []
        seen = np.zeros(0, np.int64)
        for name in names:
            try:
                entry = self._entry_of(name)
                seg = Segment(self.path, entry)
            except (OSError, ValueError, RuntimeError):
                continue
            if len(np.intersect1d(seg.pids, seen)):
                continue
            taken.append(entry)
            seen = np.union1d(seen, seg.pids)
        return sorted(taken, key=lambda e: e["name"])

    def _deleted_pids(self, after_gen: int) -> np.ndarray:
        rows = self.conn.execute(
            "SELECT p.id FROM passages p JOIN articles a ON a.version = p.version "
            "WHERE a.deleted_gen IS NOT NULL AND a.deleted_gen > ?", (after_gen,)).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def _dead_pids(self) -> np.ndarray:
        """Every segment row the database does not hold as live."""
        live = np.asarray([r[0] for r in self.conn.execute(
            "SELECT p.id FROM passages p JOIN articles a ON a.version = p.version WHERE a.deleted_gen IS NULL")],
            dtype=np.int64)
        every = [s.seg.pids for s in self.live.values()]
        return np.setdiff1d(np.concatenate(every), live) if every else np.zeros(0, np.int64)

    def _take(self, entry: dict, seg: Segment | None = None) -> LiveSegment:
        live = self.live[entry["name"]] = LiveSegment(entry, seg or Segment(self.path, entry))
        return live

    def _tombstone(self, pids: np.ndarray) -> None:
        if not len(pids):
            return
        pids = np.unique(pids)
        for live in self.live.values():
            held, rows = live.seg.rows_of(pids)
            if len(rows):
                live.dead.update(rows.tolist())

    def _remove_orphans(self) -> None:
        """Segment and tombstone files no manifest will name: from merges or publishes a killed writer never finished."""
        keep = set(self.live) | {r["name"] for r in self.retired}
        keep_files = {s.entry.get("tombstones") for s in self.live.values()}
        for p in self.path.glob("seg-*"):
            base = p.name.split(".", 1)[0]
            if base not in keep or (".del-" in p.name and p.name not in keep_files
                                     and time.time() - p.stat().st_mtime > GRACE_SECONDS):
                p.unlink(missing_ok=True)

    @property
    def entries(self) -> list[dict]:
        """The manifest entries of the live segments, in order."""
        return [s.entry for s in self.live.values()]

    # --- reading what is there -------------------------------------------------------------

    def fingerprint(self, article_id: str) -> str | None:
        """The stored fingerprint (`Article.content_hash`) of an article, None when there is no such article."""
        row = self.conn.execute("SELECT content_hash FROM articles WHERE id = ? AND deleted_gen IS NULL",
                                (article_id,)).fetchone()
        return row[0] if row else None

    def passage_count(self, article_id: str) -> int:
        """How many passages the live version of an article has."""
        return self.conn.execute("SELECT count(*) FROM passages p JOIN articles a ON a.version = p.version "
                                 "WHERE a.id = ? AND a.deleted_gen IS NULL", (article_id,)).fetchone()[0]

    def cached_vectors(self, embed_hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors already computed for identical model inputs, so nothing is embedded twice."""
        wanted = list(set(embed_hashes))
        out: dict[str, np.ndarray] = {}
        if not wanted or not self.live:
            return out
        keys = np.asarray([int(h[:16], 16) for h in wanted], dtype=np.uint64)
        todo = np.ones(len(wanted), bool)
        for seg in (s.seg for s in self.live.values()):
            idx = np.flatnonzero(todo)
            if not len(idx):
                break
            held, vecs = seg.cached(keys[idx])
            for i, v in zip(idx[held].tolist(), vecs):
                out[wanted[i]] = v
            todo[idx[held]] = False
        return out

    # --- writing ---------------------------------------------------------------------------

    def _new_name(self) -> str:
        return f"seg-{self.generation + 1:09d}-{uuid.uuid4().hex[:8]}"

    def add(self, items: Sequence[tuple]) -> None:
        """Add articles (article, passages, sentences) in one transaction: all of them or none."""
        if not items:
            return
        gen = self.generation + 1
        if self.scale is None:
            vecs = [s.vector for _, _, sents in items for s in sents] or [p.vector for _, ps, _ in items for p in ps]
            self.scale = choose_scale(np.vstack(vecs)) if vecs else 400.0
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('scale', ?)", (repr(self.scale),))
        builder = SegmentBuilder(self.dim, self.scale)
        removed: list[int] = []
        name, written = self._new_name(), False
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            now, t = _now(), time.time()
            for art, passages, sentences in items:
                old = c.execute("SELECT version FROM articles WHERE id = ? AND deleted_gen IS NULL", (art.id,)).fetchone()
                if old:  # a new version of the article: the old one stays visible until this generation
                    removed += [r[0] for r in c.execute("SELECT id FROM passages WHERE version = ?", (old[0],))]
                    c.execute("UPDATE articles SET deleted_gen = ?, deleted_at = ? WHERE version = ?", (gen, t, old[0]))
                version = c.execute(
                    "INSERT INTO articles (id, title, url, source, author, published, text, content_hash, origin, "
                    "added_at, gen, signature) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (art.id, art.title, art.url, art.source, art.author, art.published, art.text,
                     art.content_hash, art.origin, now, gen, signature(art.text))).lastrowid
                rows = []
                for p in passages:
                    pid = c.execute("INSERT INTO passages (version, start_char, end_char) VALUES (?,?,?)",
                                    (version, p.start, p.end)).lastrowid
                    rows.append((pid, p.start, p.end, p.vector))
                builder.add_article(art.title, art.text, rows,
                                    [(s.start, s.end, s.embed_hash, s.vector) for s in sentences],
                                    art.source, art.published)
            if len(builder):
                entry = write_segment(self.path, name, builder.arrays(), {"dim": self.dim, "scale": self.scale, "gen": gen})
                written = True
                c.execute("INSERT INTO segments VALUES (?, ?)", (name, gen))
            c.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            if written:
                for suffix in (".arrays", ".faiss"):
                    (self.path / f"{name}{suffix}").unlink(missing_ok=True)
            raise
        self.generation = gen
        if written:
            self._take(entry)
        self._tombstone(np.asarray(removed, dtype=np.int64))
        self.dirty = True
        # Merge as segments arrive, not only at a publish: batches can outrun publishes (a fast
        # embedder, a GPU, a Ray cluster), and unmerged segments slow every search.
        self._install_merge()
        self._maybe_merge()
        # Publish now and then so a long ingest shows up while it runs, spending at most ~10% on it.
        if time.monotonic() - self._saved_at >= max(PUBLISH_EVERY, 10 * self._save_took):
            self.save()

    def delete(self, article_id: str) -> bool:
        """Delete an article (as of the next generation); False if it was not there."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            old = c.execute("SELECT version FROM articles WHERE id = ? AND deleted_gen IS NULL", (article_id,)).fetchone()
            pids = []
            if old:
                pids = [r[0] for r in c.execute("SELECT id FROM passages WHERE version = ?", (old[0],))]
                self.generation += 1
                c.execute("UPDATE articles SET deleted_gen = ?, deleted_at = ? WHERE version = ?",
                          (self.generation, time.time(), old[0]))
                c.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(self.generation),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        if old:
            self._tombstone(np.asarray(pids, dtype=np.int64))
            self.dirty = True
        return old is not None

    # --- publishing --------------------------------------------------------------------------

    def save(self) -> dict:
        """Publish a snapshot: tombstone files for new deletes, then the manifest that names them."""
        t0 = time.monotonic()
        self._install_merge()
        for live in self.live.values():
            e, dead = dict(live.entry), live.dead
            if len(dead) != live.published_dead or (dead and not e.get("tombstones")):
                e["tombstones"] = None
                if dead:
                    e["tombstones"] = f"{e['name']}.del-{self.generation:09d}-{uuid.uuid4().hex[:6]}"
                    write_tombstones(self.path, e["tombstones"], np.fromiter(dead, dtype=np.int32, count=len(dead)))
            e["deleted"] = len(dead)
            live.entry = e
        entries = self.entries
        (articles,) = self.conn.execute("SELECT count(*) FROM articles WHERE deleted_gen IS NULL").fetchone()
        from .. import __version__

        # Past the grace no reader can still be opening a manifest that named them.
        self._drop_retired(by=time.time() - GRACE_SECONDS)
        manifest = {
            "format": "qa-index",
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "dim": self.dim,
            "scale": self.scale or 0.0,
            "generation": self.generation,
            "articles": articles,
            "passages": sum(e["passages"] - e["deleted"] for e in entries),
            "segments": entries,
            "retired": self.retired,
            "qa_version": __version__,
            "updated": _now(),
        }
        write_manifest(self.path, manifest)
        for live in self.live.values():
            live.published_dead = len(live.dead)
        self._after_publish()
        self.dirty = False
        self._saved_at = time.monotonic()
        self._save_took = self._saved_at - t0
        self._maybe_merge()
        return manifest

    def _after_publish(self) -> None:
        """Forget what no reader can need any more: old versions' rows, and the record of published segments."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("DELETE FROM segments WHERE gen <= ?", (self.generation,))
            c.execute("DELETE FROM articles WHERE deleted_gen IS NOT NULL AND deleted_gen <= ? AND deleted_at < ?",
                      (self.generation, time.time() - GRACE_SECONDS))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        named = {s.entry.get("tombstones") for s in self.live.values()}
        for p in self.path.glob("seg-*.del-*"):
            if p.name not in named and time.time() - p.stat().st_mtime > GRACE_SECONDS:
                p.unlink(missing_ok=True)

    # --- merging ------------------------------------------------------------------------------

    def _maybe_merge(self) -> None:
        if self._merge_thread is not None or self._merged is not None:
            return
        names = plan(self.entries)
        if not names or tuple(names) in self._failed_merges:  # never the same failing merge twice
            return
        self._start_merge(names)

    def _settle(self) -> None:
        """Publish what is unpublished and finish, in the foreground, every merge the policy calls for."""
        self.background_merges = False
        self._install_merge(wait=True)
        self._maybe_merge()  # also when nothing is new: a killed run may have left segments unmerged
        if self.dirty or self._merged is not None:
            self.save()  # merges synchronously now, until the policy is satisfied
        while self._merged is not None:
            self._install_merge()
            self.save()

    def compact(self) -> dict:
        """Merge every segment into one (deleted passages left out, older layouts rewritten) and publish it."""
        self._settle()
        names = [e["name"] for e in self.entries if e["passages"]]
        if len(names) > 1 or any(self.live[n].dead for n in names) or not all(self.live[n].seg.current for n in names):
            self._start_merge(names)
            error = self._merged.error
            self._install_merge()
            if error is not None:  # the segments stay as they were; say why
                raise error
        return self.save()

    def _start_merge(self, names: list[str]) -> None:
        inputs = []
        for n in names:
            seg, dead = self.live[n].seg, set(self.live[n].dead)
            live = None
            if dead:
                live = np.ones(len(seg), bool)
                live[list(dead)] = False
            inputs.append((seg, live, dead))
        name = self._new_name()

        def run() -> None:
            try:
                entry = merge(self.path, name, [(s, lv) for s, lv, _ in inputs],
                              {"dim": self.dim, "scale": self.scale, "gen": self.generation})
                self._merged = FinishedMerge(names, [d for _, _, d in inputs], entry)
            except BaseException as e:  # noqa: BLE001 - reported when installed; the inputs stay
                self._merged = FinishedMerge(names, error=e)

        if self.background_merges:
            self._merge_thread = threading.Thread(target=run, name="qa-merge", daemon=True)
            self._merge_thread.start()
        else:
            run()

    def _install_merge(self, wait: bool = False) -> None:
        """Swap a finished merge's output in for its inputs, carrying over deletes made meanwhile."""
        if wait and self._merge_thread is not None:
            self._merge_thread.join()
        if self._merged is None:
            return
        done = self._merged
        names, dead_then, entry, error = done.names, done.dead_then, done.entry, done.error
        self._merged, self._merge_thread = None, None
        if error is not None:
            log.warning("merging %d segments failed (%s: %s); they stay as they are", len(names),
                        type(error).__name__, error)
            self._failed_merges.add(tuple(names))
            return
        merged = Segment(self.path, entry)
        since = [self.live[n].seg.pids[sorted(self.live[n].dead - then)] for n, then in zip(names, dead_then)]
        now = time.time()
        for n in names:
            del self.live[n]
            self.retired.append({"name": n, "at": now})
        installed = self._take(entry, merged)
        late = np.concatenate(since) if since else np.zeros(0, np.int64)
        if len(late):
            installed.dead.update(merged.rows_of(late)[1].tolist())
        self.dirty = True

    def close(self) -> None:
        """Publish what is unpublished and finish the merges it calls for (small ones are quick), then let go."""
        try:
            self._settle()
            # Not left for a next publish that may never come; safe inside the grace: a reader opens all of
            # a segment's files as it loads it (an open file outlives its name), and one that finds a file
            # gone reads the manifest again.
            self._drop_retired()
        finally:
            self.conn.close()
            self._lock_file.close()

    def _drop_retired(self, by: float = math.inf) -> None:
        """Delete the files of segments merged away by a time (all of them by default) and forget them."""
        for r in self.retired:
            if r["at"] <= by:
                for p in self.path.glob(f"{r['name']}.*"):
                    p.unlink(missing_ok=True)
        self.retired = [r for r in self.retired if r["at"] > by]

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
