"""The heavy resources (model, index snapshot), created once per process and reached through `get_service()`."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

from flask import Flask, current_app

from ..ingest.chunk import ChunkConfig
from ..embed.model import Embedder, get_embedder, model_dim
from ..errors import IndexCorrupt, IndexLocked, NotReady
from ..ingest.pipeline import Report, add_articles, iter_articles
from ..ingest.articles import Article
from ..search.searcher import SearchConfig, Searcher
from ..index import Index, Writer, lock_index, read_manifest
from ..index.manifest import manifest_stamp
from ..index.shards import is_root, shard_folders
from ..index.stats import record_ingest
from ..search.sharded import ShardedIndex, ShardedSearcher, local_shards

log = logging.getLogger(__name__)

FIRST_LOAD_WAIT = 15.0  # seconds a request waits for its process's first index load before a 503


class Service:
    """One process's view of an index folder: reloads the snapshot when a writer publishes a new one."""

    RELOAD_RETRY = 5.0  # seconds before a snapshot that failed to load is tried again

    def __init__(self, index_dir: str | os.PathLike, model: str, backend: str = "torch",
                 search: SearchConfig = SearchConfig(), embedder: Embedder | None = None):
        self.index_dir = Path(index_dir)
        self.model, self.backend, self.cfg = model, backend, search
        self._embedder = embedder
        self._searcher: Searcher | None = None
        self._shards: list[Path] = []  # a sharded root's shard folders (qa/index/shards.py)
        self._stamp: tuple | None = None
        self._lock = threading.Lock()
        self.reload_error: str | None = None  # why the newest snapshot could not be loaded, if it could not
        self._retry_at = 0.0
        self.published_at: float | None = None  # when the snapshot being served was published (its manifest's mtime)
        self.on_reload_error = lambda: None  # /metrics counts failed reloads (qa/web/metrics.py)
        self.on_shard_round = lambda kind: None  # ... and a sharded root's rounds of calls to its shards
        self._alerts_lock = threading.Lock()  # one check of the standing questions at a time

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.model, self.backend)
        return self._embedder

    def _folders(self) -> list[Path]:
        """The folders whose manifests say what is live: the index folder, or a sharded root's shards."""
        # Asked until a snapshot is served (`qa ingest --shards` may make the root meanwhile); a folder
        # that served one is a plain index for good, and costs no second stat a call.
        if not self._shards and self._searcher is None and is_root(self.index_dir):
            self._shards = shard_folders(self.index_dir)
        return self._shards or [self.index_dir]

    def _manifest_stamp(self) -> tuple | None:
        stamps = [manifest_stamp(folder) for folder in self._folders()]
        if not any(stamps):
            return None
        # the newest publish first (published_at reads it), then every folder's own stamp
        return (max(s[0] for s in stamps if s), *stamps)

    def searcher(self, wait: bool = False) -> Searcher:
        """The searcher over the newest published snapshot (checked with one stat per call).

        While one thread loads a new snapshot the others keep answering from the
        current one; if the new one cannot be loaded, the current one keeps serving.
        """
        stamp = self._manifest_stamp()
        current = self._searcher
        if current is not None and stamp == self._stamp and (
                self.reload_error is None or time.monotonic() < self._retry_at):
            return current
        if current is None and stamp is None:  # say so at once, without loading the model
            raise IndexCorrupt(f"no index in {self.index_dir}; run `qa ingest PATH --index {self.index_dir}` first",
                               code="index_missing")
        # Only the first load is waited for (briefly: a request to a freshly
        # started worker beats a 503); later reloads never hold anyone up.
        timeout = -1 if wait else FIRST_LOAD_WAIT if current is None else 0
        if not self._lock.acquire(timeout=timeout):
            if current is None:
                raise NotReady("the index is still loading; try again in a moment")
            return current
        try:
            if self._searcher is None or stamp != self._stamp or (
                    self.reload_error is not None and time.monotonic() >= self._retry_at):
                self._load(stamp)
            return self._searcher
        finally:
            self._lock.release()

    def _load(self, stamp: tuple | None) -> None:
        if self._shards:  # a sharded root on this machine: one searcher over every shard, fused as one folder
            if self._searcher is None:
                shards = local_shards(self.index_dir, self.model)
                # The shards' own snapshots give the statistics in this process: no stats round, and a shard's
                # newer generation is seen before its candidates are asked (no question starts again).
                # ... and their passages' rows and sentences, without a shard preparing them for its reply.
                readers = [s.reader for s in shards]
                index = ShardedIndex(shards, model=self.model, freqs=readers, readers=readers)
                index.path = self.index_dir
                index.on_round = lambda kind: self.on_shard_round(kind)
                self._searcher = ShardedSearcher(index, self.embedder, self.cfg)
            self._searcher.index.refresh()  # each shard reloads its own newest snapshot; the totals again here
        else:
            try:
                index = Index.load(self.index_dir, self.model, self.embedder.dim,
                                   previous=self._searcher.index if self._searcher is not None else None)
            except Exception as e:
                if self._searcher is None:
                    raise
                # Keep the last good snapshot; try again when the manifest changes, or after a while.
                self._stamp, self._retry_at = stamp, time.monotonic() + self.RELOAD_RETRY
                self.reload_error = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
                self.on_reload_error()
                log.error("cannot load the new index snapshot, still serving generation %d: %s",
                          self._searcher.index.generation, self.reload_error)
                return
            if self._searcher is not None:
                log.info("loaded index generation %d (%d passages)", index.generation, index.passage_count)
            self._searcher = Searcher(index, self.embedder, self.cfg)
        self._stamp, self.reload_error = stamp, None
        self.published_at = stamp[0] / 1e9 if stamp else None

    @property
    def ready(self) -> bool:
        return self._searcher is not None

    def is_empty(self) -> bool:
        manifests = [read_manifest(f) for f in self._folders()]
        return not any(m is not None and int(m.get("articles", 0)) > 0 for m in manifests)

    def seed_if_new(self, seeds: str | os.PathLike) -> Report | None:
        """Build the index from `seeds` when the folder never held one; the report, or None when nothing was done.

        An index emptied by deletes stays empty: only a folder that was never published gets the seeds.
        """
        while self._manifest_stamp() is None:
            try:
                return self.ingest([seeds])
            except IndexLocked:  # another worker is building it
                time.sleep(0.2)
        return None

    def writer(self, wait: float = 0.0, load_model: bool = True) -> Writer:
        """Take the writer lock, then load the model: a second writer is refused before it spends time loading.

        Without `load_model` (the cluster embeds) only the model's dimension is read, from its config."""
        lock = lock_index(self.index_dir, wait)
        try:
            dim = self.embedder.dim if load_model or self._embedder is not None else model_dim(self.model)
        except BaseException:
            lock.close()
            raise
        from ..index.shards import ShardedWriter, is_root

        shards = getattr(self, "shards", None)  # `qa ingest --shards N`: a sharded root (qa/index/shards.py)
        if shards or is_root(self.index_dir):
            try:
                return _Locked(ShardedWriter(self.index_dir, self.model, dim, wait, shards), lock)
            except BaseException:
                lock.close()
                raise
        return Writer(self.index_dir, self.model, dim, lock=lock)

    def ingest(self, paths, chunking: ChunkConfig = ChunkConfig(), on_progress=None, wait: float = 0.0,
               stop=lambda: False, ray: str | None = None, ray_gpus: float = 0.0) -> Report:
        """Add files, folders and web URLs (pages, feeds, sitemaps) to the index; `stop()` ends a run
        between two articles (what is already read is still committed); `ray`: a Ray cluster's address,
        to chunk and embed there. Each snapshot it publishes is read against the standing questions."""
        with self._following_alerts():
            return self._ingest(paths, chunking, on_progress, wait, stop, ray, ray_gpus)

    # --- standing questions (qa/alerts) ----------------------------------------------------------------

    def check_alerts(self):
        """Read what was published since the last check against the standing questions (a no-op without
        any); never raises: a failure is logged, and the next publish reads the same articles again."""
        from .. import alerts

        with self._alerts_lock:
            try:
                return alerts.after_publish(self.index_dir, lambda: self.searcher(wait=True))
            except Exception:  # noqa: BLE001 - an alert must never fail a write
                log.exception("reading new articles against the standing questions failed")
                return None

    @contextlib.contextmanager
    def _following_alerts(self):
        """While a long ingest runs, read each snapshot it publishes (every few seconds) on a background
        thread; at its end, the last one here."""
        from ..alerts import STORE_NAME

        done = threading.Event()
        start = stamp = self._manifest_stamp()

        def follow() -> None:
            nonlocal stamp
            while not done.wait(0.5):
                if self._manifest_stamp() != stamp:
                    stamp = self._manifest_stamp()
                    self.check_alerts()

        thread = None
        if (self.index_dir / STORE_NAME).exists():
            thread = threading.Thread(target=follow, name="qa-alerts-follow", daemon=True)
            thread.start()
        try:
            yield
        finally:
            done.set()
            if thread is not None:
                thread.join()
                if self._manifest_stamp() != start:  # nothing published, nothing to read
                    self.check_alerts()

    def check_alerts_soon(self) -> None:
        """check_alerts on a background thread: a POST of one article answers without waiting for it."""
        from ..alerts import STORE_NAME

        if (self.index_dir / STORE_NAME).exists():
            threading.Thread(target=self.check_alerts, name="qa-alerts-check", daemon=True).start()

    def _ingest(self, paths, chunking: ChunkConfig, on_progress, wait: float, stop, ray: str | None,
                ray_gpus: float) -> Report:
        from ..ingest.fetch import FeedState, fetch_articles, is_url

        urls = [str(p) for p in paths if is_url(str(p))]
        files = [p for p in paths if not is_url(str(p))]
        with self.writer(wait, load_model=not ray) as w:
            def items():
                yield from iter_articles(files)
                if urls:
                    yield from fetch_articles(urls, FeedState(self.index_dir), lambda i: w.fingerprint(i) is not None,
                                              stop=stop)
            if ray:
                from ..ingest.cluster import add_articles_on_ray, connect, disconnect

                connect(ray)
                try:
                    report = add_articles_on_ray(w, self.model, self.backend, items(), chunking, on_progress, ray_gpus)
                finally:
                    disconnect()
            else:
                report = add_articles(w, self.embedder, items(), chunking, on_progress)
            _record(self.index_dir, report)
            return report

    def add(self, article: Article, wait: float = 2.0) -> dict:
        """Add (or replace, by id) one article and publish the new snapshot at once."""
        with self.writer(wait) as w:
            report = add_articles(w, self.embedder, [article])
            _record(self.index_dir, report)
            article_id = article.id  # add_articles gave it one if it had none
            passages = w.passage_count(article_id)
            generation = w.save()["generation"] if w.dirty else w.generation
        self.searcher(wait=True)  # read-your-writes for the next request
        if report.added or report.updated:
            self.check_alerts_soon()
        status = "added" if report.added else "updated" if report.updated else "unchanged"
        return {"id": article_id, "status": status,
                "passages": passages, "generation": generation}

    def compact(self, wait: float = 0.0) -> dict:
        """Merge the index's segments into one and publish it; the new manifest."""
        with self.writer(wait, load_model=False) as w:
            return w.compact()

    def delete(self, article_id: str, wait: float = 2.0) -> int | None:
        """Delete an article from both stores and publish; the new generation, or None if there was no such article."""
        with self.writer(wait) as w:
            if not w.delete(article_id):
                return None
            generation = w.save()["generation"]
        self.searcher(wait=True)
        return generation


class _Locked:
    """A sharded root's writer that also holds the root's own lock (one ingest into a root at a time)."""

    def __init__(self, writer, lock):
        self._writer, self._lock = writer, lock

    def __getattr__(self, name):
        return getattr(self._writer, name)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _record(folder: Path, report: Report) -> None:
    """Count a finished ingest in the index folder's ingests.json (for /metrics), under the writer lock."""
    record_ingest(folder, added=report.added, updated=report.updated, duplicate=report.duplicates,
                  failed=report.failed, passages=report.passages)


def service_from_config(config) -> Service:
    return Service(
        config["INDEX_DIR"],
        config["MODEL"],
        config["BACKEND"],
        SearchConfig(
            lexical_weight=float(config["LEXICAL_WEIGHT"]),
            dense_weight=float(config["DENSE_WEIGHT"]),
            sentence_weight=float(config["SENTENCE_WEIGHT"]),
            lexical_sentence_weight=float(config["LEXICAL_SENTENCE_WEIGHT"]),
            candidates=int(config["CANDIDATES"]),
            title_weight=float(config["TITLE_WEIGHT"]),
            max_query_chars=int(config["MAX_QUERY_CHARS"]),
            max_k=int(config["MAX_K"]),
            reader=_flag(config.get("READER", True)),
            reader_leads=_flag(config.get("READER_LEADS", True)),
        ),
        embedder=config.get("EMBEDDER"),
    )


def init_app(app: Flask) -> None:
    app.extensions["qa"] = service_from_config(app.config)


def get_service() -> Service:
    return current_app.extensions["qa"]


def _flag(value) -> bool:
    """A config switch given as a bool, a number or text (QA_READER=false, 0, no, off)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)
