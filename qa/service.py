"""The heavy resources (model, index snapshot), created once per process and reached through `get_service()`."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from flask import Flask, current_app

from .chunk import ChunkConfig
from .embed import Embedder, get_embedder
from .indexer import Report, add_articles, iter_articles
from .search import SearchConfig, Searcher
from .store import MANIFEST_NAME, Index, Writer, read_manifest

log = logging.getLogger(__name__)


class Service:
    """One process's view of an index folder: reloads the snapshot when a writer publishes a new one."""

    def __init__(self, index_dir: str | os.PathLike, model: str, backend: str = "torch",
                 search: SearchConfig = SearchConfig(), embedder: Embedder | None = None):
        self.index_dir = Path(index_dir)
        self.model, self.backend, self.cfg = model, backend, search
        self._embedder = embedder
        self._searcher: Searcher | None = None
        self._stamp: tuple | None = None
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.model, self.backend)
        return self._embedder

    def _manifest_stamp(self) -> tuple | None:
        try:
            st = (self.index_dir / MANIFEST_NAME).stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def searcher(self) -> Searcher:
        """The searcher over the newest published snapshot (checked with one stat per call)."""
        stamp = self._manifest_stamp()
        if self._searcher is None or stamp != self._stamp:
            with self._lock:
                if self._searcher is None or stamp != self._stamp:
                    index = Index.load(self.index_dir, self.model, self.embedder.dim)
                    if self._searcher is not None:
                        log.info("loaded index generation %d (%d passages)", index.generation, index.passage_count)
                    self._searcher = Searcher(index, self.embedder, self.cfg)
                    self._stamp = stamp
        return self._searcher

    @property
    def ready(self) -> bool:
        return self._searcher is not None

    def is_empty(self) -> bool:
        manifest = read_manifest(self.index_dir)
        return manifest is None or int(manifest.get("articles", 0)) == 0

    def writer(self, wait: float = 0.0) -> Writer:
        return Writer(self.index_dir, self.model, self.embedder.dim, wait=wait)

    def ingest(self, paths, chunking: ChunkConfig = ChunkConfig(), on_progress=None, wait: float = 0.0) -> Report:
        """Add files and folders to the index."""
        with self.writer(wait) as w:
            return add_articles(w, self.embedder, iter_articles(paths), chunking, on_progress)


def service_from_config(config) -> Service:
    return Service(
        config["INDEX_DIR"],
        config["MODEL"],
        config["BACKEND"],
        SearchConfig(
            lexical_weight=float(config["LEXICAL_WEIGHT"]),
            dense_weight=float(config["DENSE_WEIGHT"]),
            candidates=int(config["CANDIDATES"]),
            title_weight=float(config["TITLE_WEIGHT"]),
            max_query_chars=int(config["MAX_QUERY_CHARS"]),
            max_k=int(config["MAX_K"]),
        ),
        embedder=config.get("EMBEDDER"),
    )


def init_app(app: Flask) -> None:
    app.extensions["qa"] = service_from_config(app.config)


def get_service() -> Service:
    return current_app.extensions["qa"]
