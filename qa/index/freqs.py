"""A folder's BM25 statistics read from its segments' term tables alone, without opening the index.

A sharded search sums every shard's document frequencies before it asks the shards for candidates
(qa/search/sharded.py). Where the fusing side can read the shard folders (the shared file system the
replicas read, or one disk), it reads them here instead of asking every shard a round of calls for a
question's new stems: a stem costs a binary search in each segment's memory-mapped term table. The numbers
are those the shard's own Index gives for the same generation (postings of deleted rows count until a merge
drops them, as there); a shard serving another generation says so, and the question asks it again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import IndexBusy, IndexCorrupt
from .manifest import manifest_stamp, read_manifest
from .segment import segment_arrays, term_spans
from .terms import term_hash


class _Tables:
    """One segment's term table (hashes and postings offsets, mapped) and its counts."""

    __slots__ = ("t_hash", "t_ptr", "rows", "tokens")

    def __init__(self, folder: Path, entry: dict):
        meta, a = segment_arrays(folder, entry)
        self.t_hash, self.t_ptr = a["t_hash"], a["t_ptr"]
        self.rows, self.tokens = len(a["pids"]), int(meta["tokens"])


class FolderFreqs:
    """The newest published generation's statistics of one index folder, as `stats(stems)` gives them."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        # (manifest stamp, manifest, tables), replaced whole: request threads read it without the lock
        self._now: tuple[tuple, dict, list[_Tables]] | None = None
        self._lock = threading.Lock()

    def stats(self, stems: Sequence[str]) -> dict:
        """The stems' document frequencies and the folder's counts, in the shape ShardReader.stats answers."""
        manifest, tables = self._current()
        hashes = np.fromiter((term_hash(t) for t in stems), dtype=np.uint64, count=len(stems))
        counts = np.zeros(len(stems), dtype=np.int64)
        for t in tables:
            lo, hi = term_spans(t.t_hash, t.t_ptr, hashes)
            counts += hi - lo
        return {"df": dict(zip(stems, counts.tolist())), "passages": int(manifest["passages"]),
                "rows": sum(t.rows for t in tables), "tokens": sum(t.tokens for t in tables),
                "generation": int(manifest["generation"]), "articles": int(manifest["articles"])}

    def generation(self) -> int:
        """The generation the folder's writer published last (one stat while it stays the same)."""
        return int(self._current()[0]["generation"])

    def _current(self) -> tuple[dict, list[_Tables]]:
        """The published generation's manifest and tables (one stat a call; a new manifest maps only new segments)."""
        stamp = manifest_stamp(self.folder)
        if stamp is None:
            raise IndexCorrupt(f"no index in {self.folder}", code="index_missing")
        now = self._now
        if now is not None and now[0] == stamp:
            return now[1], now[2]
        with self._lock:
            now = self._now
            if now is None or now[0] != stamp:
                held = {} if now is None else {e["name"]: t for e, t in zip(now[1]["segments"], now[2])}
                for _ in range(5):
                    manifest = read_manifest(self.folder)
                    if manifest is None:
                        raise IndexCorrupt(f"no index in {self.folder}", code="index_missing")
                    try:
                        tables = [held.get(e["name"]) or _Tables(self.folder, e) for e in manifest["segments"]]
                        break
                    except FileNotFoundError:  # a merge retired a segment after the manifest was read: read it again
                        continue
                else:
                    raise IndexBusy(f"{self.folder} changed five times while its statistics were read, or names a "
                                    "segment that is not there")
                # The stamp was taken before the manifest was read: a publish in between is read again next call.
                now = self._now = (stamp, manifest, tables)
            return now[1], now[2]
