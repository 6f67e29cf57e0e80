"""The `qa` command: ingest, serve, ask."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import click

from . import __version__
from .web import create_app
from .errors import IndexCorrupt, IndexLocked, ModelMismatch, QAError
from .ingest.articles import Article, Failure


def _service(index: str | None):
    ctx = click.get_current_context()
    if ctx.obj and "app" in ctx.obj:  # tests hand in an app with a fake embedder
        app = ctx.obj["app"]
        if index:
            from .web.service import service_from_config

            app.config["INDEX_DIR"] = index
            app.extensions["qa"] = service_from_config(app.config)
    else:
        app = create_app({"INDEX_DIR": index} if index else None)
    return app, app.extensions["qa"]


def _fail(e: QAError) -> None:
    click.secho(f"Error: {e.message}", fg="red", err=True)
    sys.exit(1)


index_option = click.option(
    "--index", "index", envvar="QA_INDEX_DIR", type=click.Path(file_okay=False), default=None,
    help="Index folder (default: index/ in the project, or $QA_INDEX_DIR).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="qa")
def cli() -> None:
    """Question-answering search over news articles: cited passages, never generated text."""


def run_ingest(svc, paths, quiet: bool = False, wait: float = 0.0, stop=lambda: False, ray: str | None = None,
               ray_gpus: float = 0.0):
    """Ingest with a progress bar on stderr and one line per failure."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    bar = tqdm(unit=" articles", desc="Ingesting", disable=quiet or None, file=sys.stderr, dynamic_ncols=True)

    def progress(report, item: Article | Failure) -> None:
        if isinstance(item, Failure):
            tqdm.write(click.style(f"  failed: {item.origin}: {item.reason}", fg="yellow"), file=sys.stderr)
        bar.update(1)
        bar.set_postfix(passages=report.passages, refresh=False)

    try:
        report = svc.ingest(paths, on_progress=progress, wait=wait, stop=stop, ray=ray, ray_gpus=ray_gpus)
    finally:
        bar.close()
    return report, time.perf_counter() - t0


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@index_option
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to wait for another ingest holding the index lock.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--ray", "ray_address", metavar="ADDRESS", envvar="QA_RAY_ADDRESS",
              help="Chunk and embed on a Ray cluster: host:port, auto (the cluster this machine is in), or local "
                   "(start one here) [env: QA_RAY_ADDRESS]. Needs pip install -e '.[cluster]'.")
@click.option("--ray-gpus-per-actor", "ray_gpus", type=click.FloatRange(0), default=0.0, show_default=True,
              help="GPUs each Ray task takes (then it embeds with PyTorch on CUDA).")
@click.option("--shards", type=click.IntRange(1, 4096), default=None,
              help="Make (or use) --index as a root of this many shard folders (see docs/cluster.md); later "
                   "ingests into the root keep its shards.")
def ingest(paths, index, wait, quiet, ray_address, ray_gpus, shards):
    """Add files or folders (.txt .md .html .htm .jsonl) and web URLs (article pages, RSS or Atom feeds,
    sitemaps) to the index."""
    app, svc = _service(index)
    svc.shards = shards
    try:
        report, took = run_ingest(svc, paths, quiet, wait, ray=ray_address, ray_gpus=ray_gpus)
    except QAError as e:
        _fail(e)
    click.echo(
        f"{report.added} articles added, {report.updated} updated, {report.duplicates} skipped as duplicates, {report.failed} failed; "
        f"{report.passages} passages ({report.embedded} embedded) in {took:.1f} s -> {svc.index_dir}"
    )
    _send_webhooks(svc)
    sys.exit(1 if report.failures else 0)


def _send_webhooks(svc, timeout: float = 30.0) -> None:
    """Before exiting, send the standing questions' webhook calls this run made (retries past `timeout`
    wait in the index folder for the next process that publishes, or for `qa serve`)."""
    from . import alerts

    if not alerts.drain(svc.index_dir, timeout):
        click.echo("Some webhook calls are still to be retried; they wait in the index folder for `qa serve` "
                   "or the next ingest.", err=True)


@cli.command()
@index_option
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to wait for an ingest holding the index lock.")
def compact(index, wait):
    """Merge the index's segments into one: deleted passages leave its files, older layouts are rewritten.
    A running server keeps answering from the current snapshot meanwhile."""
    from .errors import IndexCorrupt
    from .index import read_manifest

    app, svc = _service(index)
    try:
        before = read_manifest(svc.index_dir)
        if before is None:
            raise IndexCorrupt(f"no index in {svc.index_dir}; run `qa ingest PATH --index {svc.index_dir}` first",
                               code="index_missing")
        click.echo(f"Compacting {len(before['segments'])} segments ({before['passages']:,} passages) in "
                   f"{svc.index_dir}; a million passages take several minutes ...", err=True)
        t0 = time.monotonic()
        was = _segment_bytes(svc.index_dir)
        after = svc.compact(wait)
    except QAError as e:
        _fail(e)
    except (OSError, MemoryError) as e:  # disk full, say: the merge's inputs stay published
        click.secho(f"Error: compacting failed ({type(e).__name__}: {e}); the index is as it was", fg="red", err=True)
        sys.exit(1)
    click.echo(f"{len(before['segments'])} segments -> {len(after['segments'])}; {after['passages']:,} passages, "
               f"{_segment_bytes(svc.index_dir) / 1e6:,.0f} MB of segment files (were {was / 1e6:,.0f} MB), "
               f"in {time.monotonic() - t0:.1f} s -> {svc.index_dir}")


def _segment_bytes(folder) -> int:
    """What the segment files in a folder take on disk, merged-away ones not yet deleted included."""
    total = 0
    for p in Path(folder).glob("seg-*"):
        with contextlib.suppress(FileNotFoundError):  # a running writer may delete one meanwhile
            total += p.stat().st_size
    return total


@cli.command()
@click.argument("urls", nargs=-1, required=True)
@index_option
@click.option("--every", type=click.FloatRange(1), default=300, show_default=True,
              help="Seconds between two polls of the feeds.")
@click.option("--rounds", type=click.IntRange(1), default=None, help="Stop after this many polls (default: never).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def watch(urls, index, every, rounds, quiet):
    """Poll feeds (or pages, or sitemaps) until stopped, adding new entries and updating changed ones.

    Ctrl+C or SIGTERM ends it cleanly between two commits; it waits its turn when an ingest holds the index.
    """
    import signal
    import threading

    from .ingest.fetch import is_url

    bad = [u for u in urls if not is_url(u)]
    if bad:
        _fail(QAError(f"qa watch takes http(s) URLs; not {bad[0]!r}", code="bad_url"))
    app, svc = _service(index)
    stopping = threading.Event()

    def stop(signum, _frame):
        if not stopping.is_set():
            click.echo(f"Stopping after the current article ({signal.Signals(signum).name}).", err=True)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    n = 0
    click.echo(f"Watching {len(urls)} URL{'s' if len(urls) != 1 else ''} every {every:g} s -> {svc.index_dir} "
               f"(Ctrl+C to stop)", err=True)
    while not stopping.is_set():
        n += 1
        try:
            report, took = run_ingest(svc, urls, quiet, wait=max(60.0, every), stop=stopping.is_set)
            click.echo(f"{time.strftime('%H:%M:%S')} {report.added} added, {report.updated} updated, "
                       f"{report.failed} failed; {report.passages} passages in {took:.1f} s")
        except IndexLocked:
            click.echo(f"{time.strftime('%H:%M:%S')} the index stayed locked by another ingest; trying again "
                       f"in {every:g} s", err=True)
        except QAError as e:
            if isinstance(e, (ModelMismatch, IndexCorrupt)):  # no later round can go better
                _fail(e)
            click.echo(f"{time.strftime('%H:%M:%S')} this round failed: {e.message}; trying again in {every:g} s",
                       err=True)
        except Exception as e:  # noqa: BLE001 - a watcher outlives any one round's surprise
            click.echo(f"{time.strftime('%H:%M:%S')} this round failed ({type(e).__name__}: {e}); trying again "
                       f"in {every:g} s", err=True)
        if rounds is not None and n >= rounds:
            break
        stopping.wait(every)
    _send_webhooks(svc)
    click.echo("Stopped.", err=True)


@cli.command()
@index_option
@click.option("--host", default="127.0.0.1", show_default=True, envvar="QA_HOST", help="[env: QA_HOST]")
@click.option("--port", default=8000, show_default=True, type=int, envvar="QA_PORT", help="[env: QA_PORT]")
@click.option("--workers", default=None, type=click.IntRange(1, 64), envvar="QA_WORKERS",
              help="Server processes, each with its own model and index snapshot  [default: one per CPU core, at most 8; "
                   "env: QA_WORKERS]")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 256),
              help="Threads per process (keep-alive and slow clients each hold one).")
@click.option("--ray", "ray_address", metavar="ADDRESS", default=None,
              help="Serve a sharded --index root on a Ray cluster with Ray Serve (host:port, auto or local); "
                   "see docs/cluster.md.")
@click.option("--replicas", type=click.IntRange(1, 64), default=1, show_default=True,
              help="With --ray: replicas of each shard, spread over the nodes.")
@click.option("--ingress-replicas", type=click.IntRange(1, 64), default=1, show_default=True,
              help="With --ray: replicas of the ingress (the HTTP side: the question's embedding, fusion, the "
                   "answer). 1: on the head, beside HAProxy; N > 1: at most one a node while there are N nodes "
                   "(not necessarily on the head), HAProxy sharing the questions out.")
def serve(index, host, port, workers, threads, ray_address, replicas, ingress_replicas):
    """Serve the search page and the JSON API (builds the index from seeds/ when it is empty)."""
    from .web import server

    app, svc = _service(index)  # here only to check the settings and say where the index is
    if ray_address:  # a sharded root on a Ray cluster (qa/web/cluster.py)
        from .web import cluster

        try:
            cluster.run(str(svc.index_dir), ray_address, replicas, host, port, ingress_replicas=ingress_replicas)
        except QAError as e:
            _fail(e)
        return
    workers = workers or server.default_workers()
    if not os.environ.get("QA_MODEL_THREADS"):  # share the cores out instead of every process taking them all
        os.environ["QA_MODEL_THREADS"] = str(max(1, server.cores() // workers))

    def make_app():
        return create_app({"INDEX_DIR": str(svc.index_dir)})

    def load(app) -> None:  # in each worker, in the background, so /healthz answers and /readyz says 503 meanwhile
        wsvc = app.extensions["qa"]
        try:
            seeds = Path(app.config["SEEDS_DIR"])
            t0 = time.perf_counter()
            report = wsvc.seed_if_new(seeds)
            if report is not None:
                click.echo(f"The index in {wsvc.index_dir} was new: built it from {seeds}: "
                           f"{report.added} articles, {report.passages} passages in {time.perf_counter() - t0:.1f} s",
                           err=True)
                for f in report.failures:
                    click.echo(f"  failed: {f.origin}: {f.reason}", err=True)
            t0 = time.perf_counter()
            from .search.reader import warm_up

            warm_up(wsvc.cfg.reader)  # first: /readyz says ready once the index is loaded, and this takes a second
            searcher = wsvc.searcher(wait=True)
            searcher.search("warm up", 1)  # load the model and touch the index before the first user
            from . import alerts

            alerts.resume_sending(wsvc.index_dir)  # webhook calls owed from before a restart
            click.echo(f"[{os.getpid()}] loaded {searcher.index.article_count} articles, "
                       f"{searcher.index.passage_count} passages in {time.perf_counter() - t0:.1f} s", err=True)
        except QAError as e:
            click.secho(f"Error: {e.message}", fg="red", err=True)
            os._exit(server.BOOT_ERROR)  # the arbiter then stops the whole server, not just this worker
        except Exception as e:  # noqa: BLE001 - a worker that can never be ready must not linger half-alive
            click.secho(f"Error: could not load the index or the reader: {type(e).__name__}: {e}", fg="red", err=True)
            os._exit(server.BOOT_ERROR)

    click.echo(f"Serving on http://{host}:{port} with {workers} processes x {threads} threads "
               f"(Ctrl+C to stop; /readyz answers 200 once loaded)", err=True)
    server.serve(make_app, load, host, port, workers, threads)


@cli.command()
@index_option
def mcp(index):
    """Serve the search to an assistant as MCP tools (search, get_article) on stdin/stdout; read-only.
    `qa serve` offers the same tools over HTTP at /mcp."""
    from .web.mcp import serve_stdio

    app, svc = _service(index)
    serve_stdio(svc)


@cli.command()
@click.argument("question")
@click.option("-k", default=5, show_default=True, type=click.IntRange(1, 50), help="How many passages.")
@index_option
@click.option("--source", multiple=True, help="Only articles from this source (repeat for several).")
@click.option("--from", "from_", metavar="YYYY-MM-DD", help="Only articles published on or after this day.")
@click.option("--to", metavar="YYYY-MM-DD", help="Only articles published on or before this day.")
@click.option("--sort", type=click.Choice(["relevance", "newest"]), default="relevance", show_default=True,
              help="The best passages by relevance, or the same ones newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
def ask(question, k, index, source, from_, to, sort, as_json):
    """Print the answer to QUESTION (or say none is in the collection), then the passages, with citations."""
    app, svc = _service(index)
    from .search import filters
    from .search.searcher import validate
    from .search.snippets import snippet

    try:
        q, k = validate(question, k, svc.cfg)
        where, sort = filters.parse(list(source) or None, from_, to, sort)
        searcher = svc.searcher()  # loads the model and the index, which the timing leaves out
        searcher.embedder.encode([q])  # and the question-side model, where a backend has its own
        t0 = time.perf_counter()
        got = searcher.ask(q, k, where, sort)
        took = (time.perf_counter() - t0) * 1000
    except QAError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps({"query": q, "took_ms": round(took, 2), **got.to_dict()}, ensure_ascii=False, indent=2))
        return
    hits = got.hits
    if not hits:
        click.echo("No passages match.")
        return
    width = min(100, click.get_terminal_size()[0] if hasattr(click, "get_terminal_size") else 100)
    a = got.answer
    if a is None:
        click.secho("No answer in the collection; the closest passages:", bold=True)
    else:
        c = a.citation
        click.secho("Answer: ", bold=True, nl=False)
        text = a.text
        if a.span:  # the words that answer, in bold (marked before wrapping: the marks are not spaces)
            text = f"{text[:a.span['start']]}\x01{text[a.span['start']:a.span['end']]}\x02{text[a.span['end']:]}"
        wrapped = textwrap.fill(text, width=width, subsequent_indent="        ")
        click.echo(wrapped.replace("\x01", "\x1b[1m").replace("\x02", "\x1b[22m"))
        from .search.time import as_of

        when = as_of(c.published)
        meta = " · ".join(x for x in (c.title, c.source, f"as of {when}" if when else c.published) if x)
        click.secho(f"        {meta} [{c.article_id} chars {c.start}-{c.end}] confidence {a.confidence:.2f}", dim=True)
        if a.newer is not None:
            n = a.newer.citation
            click.secho(f"        A newer article ({as_of(n.published)}) answers differently:", fg="yellow")
            click.echo(textwrap.fill(a.newer.text, width=width, initial_indent="        ", subsequent_indent="        "))
            click.secho(f"        {n.title} [{n.article_id} chars {n.start}-{n.end}]", dim=True)
    click.echo()
    for h in hits:
        c = h.citation
        meta = " · ".join(x for x in (c.source, c.published) if x)
        click.secho(f"{h.rank}. {c.title}", bold=True)
        if meta:
            click.echo(f"   {meta}")
        parts, _ = snippet(h.text, h.highlight)  # the marked sentence with one either side; --json has it all
        text = "".join(f"»{t}«" if marked else t for t, marked in parts)
        click.echo(textwrap.fill(text, width=width, initial_indent="   ", subsequent_indent="   "))
        if h.also_in:
            click.echo("   also in " + ", ".join(" ".join(x for x in (o.source or o.title, o.published) if x)
                                                for o in h.also_in))
        click.secho(f"   [{c.article_id} chars {c.start}-{c.end}] score {h.score:.3f}", dim=True)
        click.echo()


@cli.command(name="eval")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", default=20, show_default=True, type=click.IntRange(1, 50), help="Passages retrieved per question.")
@index_option
@click.option("--mode", type=click.Choice(["hybrid", "lexical", "dense"]), default="hybrid", show_default=True,
              help="Score with both sides (as the API does) or one side alone.")
@click.option("--limit", type=int, default=None, help="Ask only every n-th question so that about this many are asked.")
@click.option("--split", is_flag=True,
              help="Index only the odd-numbered articles and ask the others' questions too, as questions the "
                   "collection does not answer (the answer models were fitted on the even ones).")
@click.option("--distractors", type=click.Path(exists=True), default=None,
              help="Articles (a file or folder, as `qa ingest` reads them) to hide FILE's articles among: a big, "
                   "varied collection, where questions it does not answer find more that nearly does.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def eval_(file, k, index, mode, limit, split, distractors, as_json):
    """Measure answers on a SQuAD-v1.1-format FILE: passages (top-1/5/20 accuracy, MRR@20) and the answer field."""
    import dataclasses
    import tempfile

    from tqdm import tqdm

    from .ingest.squad import load_squad, split_by_article
    from .search.evaluate import KS, evaluate, evaluate_answers
    from .ingest.pipeline import add_articles

    try:
        owners: list[int] = []
        articles, questions = load_squad(file, owners)
        outside: list = []
        if split:
            (_, outside), (articles, questions) = split_by_article(articles, questions, owners)
            outside = [q for q in outside if not q.impossible]
        # SQuAD 2.0's questions their paragraph does not answer are asked apart: they should get null
        lookalikes = [q for q in questions if q.impossible]
        questions = [q for q in questions if not q.impossible]

        def every(qs: list) -> list:
            if limit and limit < len(qs):
                step = len(qs) / limit
                return [qs[int(i * step)] for i in range(limit)]
            return qs

        questions, outside, lookalikes = every(questions), every(outside), every(lookalikes)
        with tempfile.TemporaryDirectory(prefix="qa-eval-") as tmp:
            app, svc = _service(index or tmp)
            if not index or svc.is_empty():  # a given but empty folder is filled too, for reuse
                t0 = time.perf_counter()
                if distractors:
                    from .ingest.pipeline import iter_articles

                    articles = [*articles, *(a for a in iter_articles([distractors]) if not isinstance(a, Failure))]
                with svc.writer() as w:
                    bar = tqdm(total=len(articles), unit=" articles", desc="Indexing", file=sys.stderr, disable=None)
                    report = add_articles(w, svc.embedder, articles, on_progress=lambda r, a: bar.update(1))
                    bar.close()
                click.echo(f"Indexed {report.added} articles, {report.passages} passages in "
                           f"{time.perf_counter() - t0:.1f} s", err=True)
            searcher = svc.searcher()
            cfg = svc.cfg
            if mode == "lexical":
                cfg = dataclasses.replace(cfg, lexical_weight=1.0, dense_weight=0.0)
            elif mode == "dense":
                cfg = dataclasses.replace(cfg, lexical_weight=0.0, dense_weight=1.0)
            searcher = type(searcher)(searcher.index, searcher.embedder, cfg)  # a sharded root's searcher too
            bar = tqdm(total=len(questions), unit=" questions", desc="Asking", file=sys.stderr, disable=None)
            result = evaluate(searcher, questions, k, on_progress=lambda n: bar.update(1))
            bar.close()
            result.mode = mode
            runs = {"reader": searcher} if cfg.reader else {}
            # the feature models alone: the answer as it was before the reader, beside the reader's
            runs["features"] = type(searcher)(searcher.index, searcher.embedder, dataclasses.replace(cfg, reader=False))
            answered = {}
            for name, s in runs.items():
                bar = tqdm(total=len(questions) + len(outside) + len(lookalikes), unit=" questions",
                           desc=f"Answering ({name})", file=sys.stderr, disable=None)
                answered[name] = evaluate_answers(s, questions, outside, on_progress=lambda n: bar.update(1),
                                                  lookalikes=lookalikes)
                bar.close()
    except QAError as e:
        _fail(e)
    if as_json:
        out = dataclasses.asdict(result)
        out.pop("misses")
        out["answers"] = dataclasses.asdict(next(iter(answered.values())))  # the service's own answers
        if "reader" in answered:
            out["answers_without_reader"] = dataclasses.asdict(answered["features"])
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{result.questions} questions, {result.articles} articles, {result.passages} passages "
               f"({result.mean_passage_words:.0f} words on average, at most {result.max_passage_tokens} word pieces)")
    click.echo("| mode | " + " | ".join(f"acc@{n}" for n in KS) + " | MRR@20 | questions/s |")
    click.echo("|---|" + "---|" * (len(KS) + 2))
    click.echo(f"| {mode} | " + " | ".join(f"{result.accuracy[n]:.3f}" for n in KS)
               + f" | {result.mrr:.3f} | {result.questions_per_second:.0f} |")
    a = next(iter(answered.values()))
    click.echo(f"\nThe answer field, {a.inside} questions the collection answers"
               + (f", {a.outside} it does not (other articles' questions)" if a.outside else "")
               + (f", {a.lookalike} written to look answerable from a paragraph that does not answer them (SQuAD 2.0)"
                  if a.lookalike else "") + ":")
    names = {"reader": "the reader", "features": "the feature models alone" + (" (before the reader)" if
                                                                             "reader" in answered else "")}
    rows = [("answer holds a right answer", lambda a: f"{a.answer_holds:.3f}"),
            ("words in an answer", lambda a: f"{a.mean_answer_words:.1f}"),
            ("the top result's marked sentence holds one", lambda a: f"{a.marked_holds:.3f}"),
            ("... marked by the question's words instead", lambda a: f"{a.highlight_holds:.3f}"),
            ("top passage right; of those, given an answer", lambda a: f"{a.top_right:.3f}; {a.kept_when_top_right:.3f}")]
    if a.outside:
        rows.append(("not in the collection: null", lambda a: f"{a.null_outside:.3f}"))
    if a.lookalike:
        rows.append(("look-alikes (SQuAD 2.0): null", lambda a: f"{a.null_lookalike:.3f}"))
    rows += [("short span: exact match / F1 (no answer or no span: 0)", lambda a: f"{a.span_exact:.3f} / {a.span_f1:.3f}"),
             ("calibration error over every answer given", lambda a: f"{a.ece:.3f}"),
             ("given at confidence >= 0.9: how many, share right", lambda a: f"{a.sure}, {a.sure_right:.3f}")]
    click.echo("| | " + " | ".join(names[n] for n in answered) + " |")
    click.echo("|---|" + "---|" * len(answered))
    for label, cell in rows:
        click.echo(f"| {label} | " + " | ".join(cell(x) for x in answered.values()) + " |")


@cli.group(name="alerts")
def alerts_group() -> None:
    """Standing questions: each new article that answers one goes into its Atom feed (/alerts/ID.atom on
    `qa serve`) and to its webhook, if it has one, as `qa ingest`, `qa watch` or the API publish it."""


@alerts_group.command(name="add")
@click.argument("question")
@index_option
@click.option("--webhook", metavar="URL", help="POST each new answer here as JSON (http or https).")
@click.option("--source", multiple=True, help="Only articles from this source (repeat for several).")
@click.option("--from", "from_", metavar="YYYY-MM-DD", help="Only articles published on or after this day.")
@click.option("--to", metavar="YYYY-MM-DD", help="Only articles published on or before this day.")
def alerts_add(question, index, webhook, source, from_, to):
    """Save QUESTION as a standing question; articles published from now on are read against it."""
    from . import alerts

    app, svc = _service(index)
    try:
        a = alerts.create(svc.index_dir, question, list(source) or None, from_, to, webhook, svc.cfg)
    except QAError as e:
        _fail(e)
    click.echo(f"{a.id}  {a.q}")
    click.echo(f"  feed: /alerts/{a.id}.atom" + (f"  webhook: {a.webhook}" if a.webhook else ""))


@alerts_group.command(name="list")
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print them as GET /api/alerts does.")
def alerts_list(index, as_json):
    """List the standing questions, oldest first, with how many answers each has found."""
    from . import alerts

    app, svc = _service(index)
    found = [a.to_dict() for a in alerts.AlertStore(svc.index_dir).alerts()]
    if as_json:
        click.echo(json.dumps({"alerts": found}, ensure_ascii=False, indent=2))
        return
    if not found:
        click.echo("No standing questions; add one with `qa alerts add QUESTION`.")
    for a in found:
        extra = " ".join(f"{k}={v}" for k, v in (("source", ",".join(a["source"] or [])), ("from", a["from"]),
                                                  ("to", a["to"]), ("webhook", a["webhook"])) if v)
        click.echo(f"{a['id']}  {a['q']}  ({a['entries']} answer{'' if a['entries'] == 1 else 's'} so far; "
                   f"since {a['created']}){'  ' + extra if extra else ''}")


@alerts_group.command(name="rm")
@click.argument("alert_id")
@index_option
def alerts_rm(alert_id, index):
    """Delete a standing question, its feed and the webhook calls it still owes."""
    from . import alerts

    app, svc = _service(index)
    if not alerts.AlertStore(svc.index_dir).delete(alert_id):
        _fail(QAError(f"no standing question with id {alert_id!r}", code="alert_not_found"))
    click.echo(f"Deleted {alert_id}.")
