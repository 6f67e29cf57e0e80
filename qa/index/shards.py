"""A sharded index root: N shard folders, each a complete index folder, and a small root manifest.

    ROOT/shards.json        {"format": "qa-shards", "shards": N, "folders": [...], "model", "dim", "scale"}
    ROOT/shard-000/ ...     an index folder as today (SQLite, segments, manifest.json, writer lock)

An article lives in the shard given by a stable hash of its id (blake2b, not Python's hash()), so its
updates and deletes land where it is. Every shard quantises vectors with one scale (chosen from the
first batch written to the root, as one folder chooses it), so int8 scores compare across shards.

Passage ids are each shard's own SQLite ids; across the root a passage is known by its global id
`local * N + shard`, which is the local id itself when N is 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import IndexCorrupt, QAError
from .files import write_atomic
from .manifest import MANIFEST_NAME
from .terms import choose_scale
from .writer import Writer, lock_index

ROOT_NAME = "shards.json"


def shard_of(article_id: str, shards: int) -> int:
    """The shard an article id belongs in: the same id always gives the same shard."""
    h = int.from_bytes(hashlib.blake2b(article_id.encode("utf-8"), digest_size=8).digest(), "little")
    return h % shards


def global_id(local: int, shard: int, shards: int) -> int:
    return local * shards + shard


def split_id(gid: int, shards: int) -> tuple[int, int]:
    """(shard, local id) of a global passage id."""
    return gid % shards, gid // shards


def is_root(path: str | os.PathLike) -> bool:
    return (Path(path) / ROOT_NAME).exists()


def read_root(path: str | os.PathLike) -> dict | None:
    """The root manifest of a sharded index, None when `path` is not one."""
    path = Path(path)
    try:
        root = json.loads((path / ROOT_NAME).read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise IndexCorrupt(f"{path / ROOT_NAME} is unreadable ({e})") from None
    if not isinstance(root, dict) or root.get("format") != "qa-shards" or not isinstance(root.get("shards"), int) \
            or len(root.get("folders") or []) != root["shards"]:
        raise IndexCorrupt(f"{path / ROOT_NAME} is not a qa shard root")
    return root


def write_root(path: Path, root: dict) -> None:
    write_atomic(path / ROOT_NAME, (json.dumps(root, indent=1) + "\n").encode())


def shard_folders(path: str | os.PathLike) -> list[Path]:
    root = read_root(path)
    if root is None:
        raise IndexCorrupt(f"{path} is not a sharded index root (no {ROOT_NAME})", code="index_missing")
    return [Path(path) / f for f in root["folders"]]


def create_root(path: str | os.PathLike, shards: int, model: str, dim: int) -> dict:
    """Make (or check) a root of `shards` shard folders; a root made earlier keeps its own count."""
    path = Path(path)
    root = read_root(path)
    if root is not None:
        if shards and shards != root["shards"]:
            raise QAError(f"{path} holds {root['shards']} shards, not {shards}; resharding is not supported: "
                          "ingest into a new root", code="shard_count")
        return root
    if (path / MANIFEST_NAME).exists():
        raise QAError(f"{path} is a one-folder index; ingest into a new folder to make a sharded one",
                      code="not_sharded")
    if shards < 1:
        raise QAError("--shards must be at least 1", code="shard_count")
    path.mkdir(parents=True, exist_ok=True)
    root = {"format": "qa-shards", "shards": shards, "folders": [f"shard-{i:03d}" for i in range(shards)],
            "hash": "blake2b-64(id) mod shards", "model": model, "dim": dim, "scale": None}
    for f in root["folders"]:
        (path / f).mkdir(exist_ok=True)
    write_root(path, root)
    return root


class ShardedWriter:
    """The writers of every shard of a root, as one Writer: articles routed by id, shards written in parallel."""

    def __init__(self, path: str | os.PathLike, model: str, dim: int, wait: float = 0.0, shards: int | None = None):
        self.path = Path(path)
        self.root = create_root(self.path, shards or 0, model, dim) if shards else read_root(self.path)
        if self.root is None:
            raise IndexCorrupt(f"{path} is not a sharded index root", code="index_missing")
        self.model, self.dim, self.n = model, dim, self.root["shards"]
        self.writers: list[Writer] = []
        try:
            for f in self.root["folders"]:
                self.writers.append(Writer(self.path / f, model, dim, lock=lock_index(self.path / f, wait)))
        except BaseException:
            for w in self.writers:
                w.close()
            raise
        self._pool = ThreadPoolExecutor(self.n, thread_name_prefix="qa-shard-writer")
        scale = self.root.get("scale") or next((w.scale for w in self.writers if w.scale), None)
        if scale:
            self._set_scale(scale)

    def _set_scale(self, scale: float) -> None:
        for w in self.writers:
            if w.scale is None:
                w.scale = scale
                w.conn.execute("INSERT OR REPLACE INTO meta VALUES ('scale', ?)", (repr(scale),))
        if self.root.get("scale") != scale:
            self.root["scale"] = scale
            write_root(self.path, self.root)

    def writer_of(self, article_id: str) -> Writer:
        return self.writers[shard_of(article_id, self.n)]

    # --- what add_articles and the service read ---

    @property
    def generation(self) -> int:
        return sum(w.generation for w in self.writers)

    @property
    def dirty(self) -> bool:
        return any(w.dirty for w in self.writers)

    def fingerprint(self, article_id: str) -> str | None:
        return self.writer_of(article_id).fingerprint(article_id)

    def passage_count(self, article_id: str) -> int:
        return self.writer_of(article_id).passage_count(article_id)

    def cached_vectors(self, embed_hashes) -> dict[str, np.ndarray]:
        wanted = set(embed_hashes)
        out: dict[str, np.ndarray] = {}
        for w in self.writers:
            if len(out) == len(wanted):
                break
            out.update(w.cached_vectors(wanted - out.keys()))
        return out

    # --- writing ---

    def add(self, items) -> None:
        """Each shard's articles in one transaction of its own writer, the shards at once."""
        if not items:
            return
        if self.root.get("scale") is None:  # as Writer.add chooses it, from the first batch of the whole root
            vecs = [s.vector for _, _, sents in items for s in sents] or [p.vector for _, ps, _ in items for p in ps]
            self._set_scale(choose_scale(np.vstack(vecs)) if vecs else 400.0)
        by_shard: dict[int, list] = {}
        for item in items:
            by_shard.setdefault(shard_of(item[0].ensure_id(), self.n), []).append(item)
        if len(by_shard) == 1:
            (s, mine), = by_shard.items()
            self.writers[s].add(mine)
            return
        for f in [self._pool.submit(self.writers[s].add, mine) for s, mine in by_shard.items()]:
            f.result()

    def delete(self, article_id: str) -> bool:
        return self.writer_of(article_id).delete(article_id)

    def save(self) -> dict:
        manifests = list(self._pool.map(lambda w: w.save(), self.writers))
        return {"generation": sum(m["generation"] for m in manifests),
                "articles": sum(m["articles"] for m in manifests),
                "passages": sum(m["passages"] for m in manifests),
                "segments": [s for m in manifests for s in m["segments"]], "shards": manifests}

    def compact(self) -> dict:
        manifests = list(self._pool.map(lambda w: w.compact(), self.writers))
        return {"generation": sum(m["generation"] for m in manifests),
                "passages": sum(m["passages"] for m in manifests),
                "segments": [s for m in manifests for s in m["segments"]], "shards": manifests}

    def close(self) -> None:
        try:
            for f in [self._pool.submit(w.close) for w in self.writers]:
                f.result()
        finally:
            self._pool.shutdown()

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
