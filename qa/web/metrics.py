"""GET /metrics: Prometheus' text format, summed over every gunicorn worker.

Each worker counts its own requests into prometheus-client's multiprocess files (one mmap'd file per
process in PROMETHEUS_MULTIPROC_DIR, which `qa serve` makes and removes: `metrics_dir()`), and whichever
worker answers a scrape adds them all up, so 60 searches are 60 whichever worker took each one. Without
that variable (one process: tests, `flask run`) the counts are the process's own.

The index gauges are not stored: the worker answering the scrape reads them from the snapshot it serves,
after the same one-stat check for a newer one that /readyz makes, so they equal what /readyz says. What
writers did comes from the index folder's ingests.json (qa/index/stats.py): `qa ingest` and `qa watch`
are other processes, maybe other containers.

prometheus-client picks its storage when first imported, so nothing here imports it before a request
needs it (after `qa serve` has set the variable, and after gunicorn's fork).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

from flask import Flask, Response, g, request

from ..errors import QAError
from ..index.stats import RESULTS, read_stats
from .service import get_service

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_lock = threading.Lock()
_metrics: SimpleNamespace | None = None


def metrics() -> SimpleNamespace:
    """This process's counters, created on first use."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

                disable_created_metrics()  # *_created series: one per label set, and not kept across workers
                reg = CollectorRegistry()
                _metrics = SimpleNamespace(
                    registry=reg,
                    requests=Counter("qa_http_requests", "HTTP requests answered, by route, method and status",
                                     ["endpoint", "method", "status"], registry=reg),
                    duration=Histogram("qa_http_request_duration_seconds",
                                       "Time from the request reaching the app to its response, by route",
                                       ["endpoint"], registry=reg),
                    answers=Counter("qa_answers", "Searches that gave an answer sentence (kind=answer) or none "
                                    "(kind=null)", ["kind"], registry=reg),
                    reload_errors=Counter("qa_index_reload_errors", "Newer index snapshots that could not be "
                                          "loaded (the older one kept serving)", registry=reg),
                    shard_rounds=Counter("qa_shard_rounds", "A sharded root's rounds of calls to every shard it "
                                         "needed, by kind: candidates (one a question), stats (a shard's statistics "
                                         "for new stems, when its folder is not readable here), fetch (rows the "
                                         "shards' own best missed), stale (a question started again after a shard "
                                         "published)", ["kind"], registry=reg),
                )
    return _metrics


def count_answer(answer) -> None:
    """Count one search's answer: given, or null."""
    metrics().answers.labels("null" if answer is None else "answer").inc()


def _endpoint() -> str:
    """The route's pattern, not the path: /api/articles/<article_id>, so labels stay few."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _start() -> None:
    g.metrics_t0 = time.perf_counter()


def _finish(resp):
    t0 = g.pop("metrics_t0", None)
    endpoint = _endpoint()
    m = metrics()
    m.requests.labels(endpoint, request.method, str(resp.status_code)).inc()
    if t0 is not None:
        m.duration.labels(endpoint).observe(time.perf_counter() - t0)
    return resp


def _index_families(svc) -> Iterator:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    try:
        ready = svc.ready
    except QAError:  # a shard with no live replica (/readyz names it): the counters still answer
        ready = False
    if ready:  # before the first load there is nothing to report (and /readyz says 503)
        idx = svc.searcher().index  # picks up a newer snapshot, as /readyz does
        yield gauge("qa_index_articles", "Articles in the snapshot being served", idx.article_count)
        yield gauge("qa_index_passages", "Passages in the snapshot being served", idx.passage_count)
        yield gauge("qa_index_segments", "Segments in the snapshot being served", idx.segment_count)
        yield gauge("qa_index_generation", "Generation of the snapshot being served", idx.generation)
        if svc.published_at is not None:
            yield gauge("qa_index_published_timestamp_seconds", "When the snapshot being served was published",
                        svc.published_at)
    stats = read_stats(svc.index_dir)
    articles = CounterMetricFamily("qa_ingest_articles", "Articles that writers (qa ingest, qa watch, the API, "
                                   "the seeds) added, updated, skipped as duplicates or failed on, over the "
                                   "index's life", labels=["result"])
    for result in RESULTS:
        articles.add_metric([result], stats["articles"][result])
    yield articles
    yield CounterMetricFamily("qa_ingest_passages", "Passages that finished ingests wrote", value=stats["passages"])
    yield CounterMetricFamily("qa_ingest_runs", "Ingests that finished", value=stats["runs"])
    last = GaugeMetricFamily("qa_ingest_last_articles", "What the last finished ingest did with its articles",
                             labels=["result"])
    for result in RESULTS:
        last.add_metric([result], stats["last"][result])
    yield last
    if stats["finished"] is not None:
        yield gauge("qa_ingest_last_finished_timestamp_seconds", "When the last ingest finished", stats["finished"])


class _Collector:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def render() -> bytes:
    """The whole exposition: every worker's counters, then this index's gauges."""
    from prometheus_client import CollectorRegistry, generate_latest

    counts = metrics().registry
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        counts = CollectorRegistry()
        multiprocess.MultiProcessCollector(counts)
    index = CollectorRegistry()
    index.register(_Collector(list(_index_families(get_service()))))
    return generate_latest(counts) + generate_latest(index)


def metrics_view():
    return Response(render(), content_type=CONTENT_TYPE)


def init_app(app: Flask) -> None:
    """GET /metrics, and the hooks that time and count every request (registered first, so they see all)."""
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    svc = app.extensions["qa"]
    svc.on_reload_error = lambda: metrics().reload_errors.inc()
    svc.on_shard_round = lambda kind: metrics().shard_rounds.labels(kind).inc()


@contextlib.contextmanager
def metrics_dir() -> Iterator[str]:
    """A folder for the workers' metric files for as long as the server runs (PROMETHEUS_MULTIPROC_DIR).

    An operator's own folder is used (and emptied first: old files would add an earlier run's counts);
    otherwise a fresh temporary one is made and removed afterwards.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(given, name))
        yield given
        return
    path, owner = tempfile.mkdtemp(prefix="qa-metrics-"), os.getpid()
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if os.getpid() == owner:  # not a forked worker leaving through this frame: the folder is everyone's
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(path, ignore_errors=True)
