"""Glue the stages together: files -> articles -> passages -> vectors -> index."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..index.text import title_prefix
from .chunk import ChunkConfig, split
from ..embed.model import Embedder
from ..errors import QAError
from .articles import Article, Failure, discover_roots, read_file
from .sentences import NewSentence, passage_vector
from ..index import NewPassage, Writer

log = logging.getLogger(__name__)

BATCH_SENTENCES = 512  # articles are committed in groups of about this many sentences


@dataclass
class Report:
    added: int = 0
    updated: int = 0  # stored before under the same id, now replaced
    duplicates: int = 0  # unchanged: the same id with the same text and metadata
    passages: int = 0
    embedded: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def iter_articles(paths: Iterable[str | os.PathLike]) -> Iterator[Article | Failure]:
    """Yield every article (or failure) found under the given paths."""
    for item in discover_roots(paths):
        if isinstance(item, Failure):
            yield item
        else:
            yield from read_file(*item)


def _model_input_counter(embedder: Embedder, prefix: str) -> Callable[[list[str]], list[int]]:
    """Count sentences' word pieces as the model will see them, after the title prefix.

    The embedder then tokenizes each model input once (it keeps what it counted);
    the prefix ends in ": ", which WordPiece never joins across, so its share is fixed.
    """
    if not prefix:
        return embedder.count_tokens
    extra = embedder.count_tokens([prefix])[0] - 2
    return lambda texts: [n - extra for n in embedder.count_tokens([prefix + t for t in texts])]


def sentence_key(model: str, text: str) -> str:
    """What a model input is stored under: the same text through the same model is embedded once, ever."""
    return hashlib.sha1(f"{model}\0{text}".encode()).hexdigest()


def prepare(embedder: Embedder, model: str, art: Article, chunking: ChunkConfig) -> tuple[list, tuple]:
    """Cut an article into sentences (key, model input) and passages: (sentences, (units, chunks))."""
    prefix = title_prefix(art.title)
    units, chunks = split(art.text, art.title, _model_input_counter(embedder, prefix), chunking)
    return [(sentence_key(model, prefix + art.text[a:b]), prefix + art.text[a:b]) for a, b, _ in units], (units, chunks)


def assemble(model: str, art: Article, sents: list, units: list, chunks: list, vectors: dict) -> tuple:
    """The writer's item for a prepared article, once its sentences have vectors."""
    new_sents = [NewSentence(a, b, n, h, vectors[h]) for (a, b, n), (h, _) in zip(units, sents)]
    news = [NewPassage(c.start, c.end, sentence_key(model, "passage\0" + title_prefix(art.title) + c.text),
                       passage_vector(new_sents, c.start, c.end)) for c in chunks]
    return art, news, new_sents


def store(writer: Writer, items: list[tuple], failed: Callable[[Article, int, Failure], None]) -> None:
    """Write (article, passages, sentences) items in one transaction; if the articles' data makes it
    fail, each on its own, so one bad article costs only itself (`failed(article, passages, why)`).
    A damaged index, a full disk or a lock still stop the run."""
    try:
        writer.add(items)
        return
    except (QAError, OSError, sqlite3.DatabaseError):
        raise
    except Exception as e:  # noqa: BLE001 - something in one article's data: find which
        if len(items) == 1:
            art, passages, _ = items[0]
            why = Failure(art.origin or art.id, f"could not be stored ({type(e).__name__}: {e})")
            log.warning("%s: %s", why.origin, why.reason)
            failed(art, len(passages), why)
            return
    for item in items:
        store(writer, [item], failed)


def add_articles(
    writer: Writer,
    embedder: Embedder,
    articles: Iterable[Article | Failure],
    chunking: ChunkConfig = ChunkConfig(),
    on_progress: Callable[[Report, Article | Failure], None] | None = None,
) -> Report:
    """Chunk, embed and store articles, committing whole articles in batches."""
    report = Report()
    # article, (hash, model input) per sentence, (sentences, passages), "added" or "updated"
    batch: list[tuple[Article, list, tuple, str]] = []
    pending = 0
    seen: dict[str, str] = {}  # article id -> fingerprint, for this run

    # The model embeds one batch in a worker thread while this thread chunks the next
    # articles and writes the previous batch (the model releases the GIL).
    pool = ThreadPoolExecutor(1, thread_name_prefix="qa-embed")
    inflight: tuple | None = None  # (batch, vectors, todo, future)

    def finish() -> dict[str, np.ndarray]:
        """Wait for the batch being embedded, store it, and return its new vectors."""
        nonlocal inflight
        if inflight is None:
            return {}
        done, vectors, todo, future = inflight
        inflight = None
        fresh = dict(zip(todo, future.result()))
        vectors.update(fresh)
        report.embedded += len(todo)
        status = {art.id: st for art, _, _, st in done}

        def failed(art: Article, passages: int, failure: Failure) -> None:
            setattr(report, status[art.id], getattr(report, status[art.id]) - 1)
            report.passages -= passages
            seen.pop(art.id, None)
            report.failures.append(failure)
            if on_progress:
                on_progress(report, failure)

        store(writer, [assemble(writer.model, art, sents, units, chunks, vectors)
                       for art, sents, (units, chunks), _ in done], failed)
        return fresh

    def flush() -> None:
        nonlocal batch, pending, inflight
        if not batch:
            return
        # Only sentences go through the model; each is embedded once, ever.
        inputs = {h: text for _, sents, _, _ in batch for h, text in sents}
        vectors = writer.cached_vectors(inputs)
        embedding = set(inflight[2]) if inflight else set()  # not stored yet, but on their way
        todo = [h for h in inputs if h not in vectors and h not in embedding]
        future = pool.submit(embedder.encode, [inputs[h] for h in todo]) if todo else _done(np.zeros((0, 0)))
        fresh = finish()
        vectors.update((h, fresh[h]) for h in inputs if h in fresh and h not in vectors)
        inflight = (batch, vectors, todo, future)
        batch, pending = [], 0

    try:
        for item in articles:
            if isinstance(item, Failure):
                report.failures.append(item)
            else:
                art_id, h = item.ensure_id(), item.content_hash
                before = seen[art_id] if art_id in seen else writer.fingerprint(art_id)
                if before == h:
                    report.duplicates += 1
                else:
                    seen[art_id] = h
                    if before is None:
                        report.added += 1
                    else:
                        report.updated += 1
                    sents, (units, chunks) = prepare(embedder, writer.model, item, chunking)
                    batch.append((item, sents, (units, chunks), "added" if before is None else "updated"))
                    pending += len(units)
                    report.passages += len(chunks)
                    if pending >= BATCH_SENTENCES:
                        flush()
            if on_progress:
                on_progress(report, item)
        flush()
        finish()
    finally:
        pool.shutdown(cancel_futures=True)
    return report
