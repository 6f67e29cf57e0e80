"""Glue the stages together: files -> articles -> passages -> vectors -> index."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .chunk import ChunkConfig, chunk, title_prefix
from .embed import Embedder
from .ingest import Article, Failure, discover, read_file
from .store import NewPassage, Writer

BATCH_PASSAGES = 256  # articles are committed in groups of about this many passages


@dataclass
class Report:
    added: int = 0
    duplicates: int = 0
    passages: int = 0
    embedded: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


def iter_articles(paths: Iterable[str | os.PathLike]) -> Iterator[Article | Failure]:
    """Yield every article (or failure) found under the given paths."""
    for item in discover(paths):
        if isinstance(item, Failure):
            yield item
        else:
            yield from read_file(item)


def add_articles(
    writer: Writer,
    embedder: Embedder,
    articles: Iterable[Article | Failure],
    chunking: ChunkConfig = ChunkConfig(),
    on_progress: Callable[[Report, Article | Failure], None] | None = None,
) -> Report:
    """Chunk, embed and store articles, committing whole articles in batches."""
    report = Report()
    batch: list[tuple[Article, list]] = []
    pending = 0
    seen: set[str] = set()

    def flush() -> None:
        nonlocal batch, pending
        if not batch:
            return
        inputs = {}
        for art, chunks in batch:
            prefix = title_prefix(art.title)
            for c in chunks:
                text = prefix + c.text
                inputs[hashlib.sha1(f"{writer.model}\0{text}".encode()).hexdigest()] = text
        vectors = writer.cached_vectors(inputs)
        todo = [h for h in inputs if h not in vectors]
        if todo:
            for h, v in zip(todo, embedder.encode([inputs[h] for h in todo])):
                vectors[h] = v
            report.embedded += len(todo)
        items = []
        for art, chunks in batch:
            prefix = title_prefix(art.title)
            news = []
            for c in chunks:
                h = hashlib.sha1(f"{writer.model}\0{prefix + c.text}".encode()).hexdigest()
                news.append(NewPassage(c.start, c.end, h, vectors[h]))
            items.append((art, news))
        writer.add(items)
        batch, pending = [], 0

    for item in articles:
        if isinstance(item, Failure):
            report.failures.append(item)
        else:
            item.ensure_id()
            h = item.content_hash
            if h in seen or writer.known_hashes([h]):
                report.duplicates += 1
            else:
                seen.add(h)
                chunks = chunk(item.text, item.title, embedder.count_tokens, chunking)
                batch.append((item, chunks))
                pending += len(chunks)
                report.added += 1
                report.passages += len(chunks)
                if pending >= BATCH_PASSAGES:
                    flush()
        if on_progress:
            on_progress(report, item)
    flush()
    return report
