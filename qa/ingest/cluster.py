"""Ingest on a Ray cluster: chunking and embedding run as Ray tasks across its nodes; this process alone writes.

The `qa ingest` process reads the files (or fetches the URLs), skips what the index
already holds unchanged, and sends batches of articles to the cluster. Each Ray worker
process loads the model once (`get_embedder` keeps it) and returns the batch chunked
and embedded; results stream back as they finish and are written here, whole articles
per transaction, exactly as a local ingest writes them. A node lost mid-run costs only
its batches in flight: Ray runs them again on the nodes left (`max_retries`), and an
article is written when its batch comes back, so none is lost or written twice. If this
process dies, the index holds whole articles, and the same command again skips them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from .chunk import ChunkConfig
from ..errors import QAError
from .pipeline import Report, assemble, prepare, store
from .articles import Article, Failure
from ..index import Writer

BATCH_CHARS = 40_000  # article text sent per task: a few seconds of one core's embedding
RETRIES = 5  # a batch whose node died is run again, up to this many times


def connect(address: str) -> None:
    """Join the cluster at `address` (host:port, `auto`, or `local` for one started here)."""
    try:
        import ray
    except ImportError:
        raise QAError("`--ray` needs Ray: pip install -e '.[cluster]' (or pip install 'ray==2.60.0')",
                      code="ray_missing") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _notices_to_stderr(ray)
    if ray.is_initialized():
        return
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise QAError(f"cannot join the Ray cluster at {address}: {e}", code="ray_unreachable") from None


def disconnect() -> None:
    """Leave the cluster, so none of Ray's notices arrive after our summary."""
    import ray

    ray.shutdown()


def _notices_to_stderr(ray) -> None:
    """Send Ray's own notices (a node lost, a task retried) to stderr: stdout is for our summary."""
    # Ray's driver prints them from a background thread to stdout, whatever log_to_driver says.
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "qa_stderr", False):
        return

    def to_stderr(data, ignore_prefix):
        return original({**data, "is_err": True}, ignore_prefix)

    to_stderr.qa_stderr = True
    worker.print_to_stdstream = to_stderr


def _prepare_batch(model: str, backend: str, articles: list[Article], chunking: ChunkConfig) -> list[tuple]:
    """On a cluster node: chunk and embed a batch of articles into the writer's items."""
    import ray

    from ..embed.model import get_embedder

    # One model thread per CPU Ray gave this task, so nodes sharing a machine do not fight.
    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1
    os.environ.setdefault("QA_MODEL_THREADS", str(cpus))
    embedder = get_embedder(model, backend)
    prepared = [(art, *prepare(embedder, model, art, chunking)) for art in articles]
    inputs = {h: text for _, sents, _ in prepared for h, text in sents}
    keys = list(inputs)
    vectors = dict(zip(keys, embedder.encode([inputs[h] for h in keys]))) if keys else {}
    return [assemble(model, art, sents, units, chunks, vectors) for art, sents, (units, chunks) in prepared]


def add_articles_on_ray(writer: Writer, model: str, backend: str, articles: Iterable[Article | Failure],
                        chunking: ChunkConfig = ChunkConfig(),
                        on_progress: Callable[[Report, Article | Failure], None] | None = None,
                        gpus_per_task: float = 0.0) -> Report:
    """add_articles(), with chunking and embedding on the cluster `connect()` joined."""
    import ray

    task = ray.remote(num_cpus=0 if gpus_per_task else 1, num_gpus=gpus_per_task, max_retries=RETRIES,
                      retry_exceptions=False)(_prepare_batch)
    if gpus_per_task:
        backend = "torch"  # the GPU path: sentence-transformers on the node's CUDA device
    report = Report()
    seen: dict[str, str] = {}
    inflight: dict = {}  # object ref -> the batch's articles
    capacity = max(2, 2 * int(ray.cluster_resources().get("GPU" if gpus_per_task else "CPU", 1)))
    batch: list[Article] = []
    size = 0
    status: dict[str, str] = {}  # article id -> "added" or "updated", as counted

    def submit() -> None:
        nonlocal batch, size
        if batch:
            inflight[task.remote(model, backend, batch, chunking)] = batch
            batch, size = [], 0

    def drain(below: int) -> None:
        while len(inflight) > below:
            done, _ = ray.wait(list(inflight), num_returns=1)
            for ref in done:
                arts = inflight.pop(ref)
                try:
                    items = ray.get(ref)
                except ray.exceptions.RayError as e:
                    raise QAError(f"a batch of {len(arts)} articles failed on the cluster "
                                  f"({type(e).__name__}); what was written before stays, and running the "
                                  f"same command again adds the rest", code="ray_task_failed") from None
                lost = set()

                def failed(art: Article, _passages: int, failure: Failure) -> None:
                    lost.add(art.id)
                    kind = status.pop(art.id, "added")  # counted when it was submitted
                    setattr(report, kind, getattr(report, kind) - 1)
                    report.failures.append(failure)
                    if on_progress:
                        on_progress(report, failure)

                store(writer, items, failed)
                for art, news, sents in items:
                    if art.id not in lost:
                        report.passages += len(news)
                        report.embedded += len(sents)
                        if on_progress:
                            on_progress(report, art)

    for item in articles:
        if isinstance(item, Failure):
            report.failures.append(item)
            if on_progress:
                on_progress(report, item)
            continue
        art_id, h = item.ensure_id(), item.content_hash
        before = seen[art_id] if art_id in seen else writer.fingerprint(art_id)
        if before == h:
            report.duplicates += 1
            if on_progress:
                on_progress(report, item)
            continue
        if art_id in seen:  # the same id twice in one run: the later one wins, as locally
            submit()
            drain(0)
        seen[art_id] = h
        status[art_id] = "added" if before is None else "updated"
        setattr(report, status[art_id], getattr(report, status[art_id]) + 1)
        batch.append(item)
        size += len(item.text)
        if size >= BATCH_CHARS:
            submit()
            drain(capacity)
    submit()
    drain(0)
    return report
