"""`qa serve --index ROOT --ray ADDRESS`: a sharded index served by Ray Serve.

    HTTP -> HAProxy (Serve's, head node) -> ingress (the Flask app: same API and pages) -> one replica of every shard

One deployment per shard (`shard-000` ...) with R replicas, spread over the nodes (at most one replica of a
shard per node while there are enough nodes); each replica opens its shard folder from a path its node
can read (a shared file system, or the same disk) and picks up every snapshot the shard's writer
publishes, as a `qa serve` worker does. The ingress embeds the question once and runs ShardedSearcher
(qa/search/sharded.py): one round of calls to one replica of each shard (more only when a shard is new to
a stem or published meanwhile, or when its own best missed a passage the answer reads), then fusion,
collapsing and the answer exactly as over one folder. A call whose replica dies is sent again (Serve routes it to a
live replica); a shard with no running replica answers 503 `shard_unavailable`, and /readyz says which.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import QAError
from ..index import MANIFEST_NAME
from ..index.freqs import FolderFreqs
from ..index.shards import read_root
from ..search.sharded import ShardedIndex, ShardedSearcher, ShardReader, ShardUnavailable

log = logging.getLogger(__name__)

APP_NAME = "qa"
# Serve's high-throughput mode (Ray's docs, "Enable High Throughput on Ray Serve"): HAProxy (shipped with
# ray[serve]) takes HTTP on the head and hands it straight to the ingress replica, no Python proxy between,
# and replicas call each other over direct gRPC instead of Ray's object store (the ingress's handles ask for
# it themselves: see Ingress). A reply may be a whole article, up to 2 million characters: gRPC's own 4 MiB
# limit on a message would refuse a long one in a non-Latin script. The controller (and the proxy it starts)
# and every replica read these when their process starts.
SERVE_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
             "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(64 * 1024 * 1024)}
# Serve runs a replica's code on an event loop of its own thread unless told otherwise; on the loop that
# takes the request (RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0), a call costs two thread hand-offs less.
REPLICA_ENV = {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", **SERVE_ENV}}
# `qa serve`'s own settings, not the replicas' (the ingress is given the root; HAProxy takes host and port).
DRIVER_ONLY = {"QA_RAY_ADDRESS", "QA_HOST", "QA_PORT", "QA_WORKERS", "QA_INDEX_DIR"}
CALL_TIMEOUT = 10.0  # seconds one call to a shard replica may take before it is sent again
CALL_DEADLINE = 30.0  # ... and all tries of one call together
STATUS_EVERY = 5.0  # seconds between two looks at which replicas are running, while every shard has one
STATUS_SOON = 0.5  # ... while one has none, or after a call failed


def replica_env() -> dict:
    """The replicas' runtime environment: REPLICA_ENV, and the QA_* settings `qa serve --ray` was started with
    (a Ray worker inherits its node's environment, not the driver's: QA_READER=false would not reach the
    ingress otherwise). Never a secret: Ray keeps a runtime environment in its cluster state and shows it on
    its dashboard, and the cluster, read-only, has no use for the admin token."""
    mine = {k: v for k, v in os.environ.items() if k.startswith("QA_") and k not in DRIVER_ONLY
            and not any(w in k for w in ("TOKEN", "SECRET", "PASSWORD"))}
    return {"env_vars": {**REPLICA_ENV["env_vars"], **mine}}


def test_embedder(model: str):
    """Tests serve with a fake embedder: QA_TEST_EMBEDDER=module:Class names it (the model name must match)."""
    spec = os.environ.get("QA_TEST_EMBEDDER")
    if not spec:
        return None
    mod, _, attr = spec.partition(":")
    import importlib

    emb = getattr(importlib.import_module(mod), attr)()
    return emb if emb.name == model else None


class ShardReplica:
    """One replica of one shard: a ShardReader over its folder. A folder it cannot read makes it fail to
    start and fail its health checks, so Serve never routes to a replica that has no shard."""

    def __init__(self, folder: str, shard: int, shards: int, model: str):
        os.environ.setdefault("QA_MODEL_THREADS", "1")
        self.reader = ShardReader(folder, shard, shards, model)
        self.reader.index  # load now: a replica is running only once it can answer

    def check_health(self) -> None:
        if not (self.reader.folder / MANIFEST_NAME).exists():
            raise RuntimeError(f"{self.reader.folder} has no index")

    # Coroutines run on the replica's event loop (REPLICA_ENV: the loop that takes the request): a call is
    # answered without handing it to another thread, which costs a wake-up each way on a busy machine.
    async def info(self):
        return self.reader.info()

    async def stats(self, stems):
        return self.reader.stats(stems)

    async def candidates(self, req):
        return self.reader.candidates(req)

    async def fetch(self, req):
        return self.reader.fetch(req)

    async def article(self, article_id):
        return self.reader.article(article_id)


class _Running:
    """Which shard deployments have a running replica, from Serve's status, looked at in the background:
    every STATUS_EVERY seconds while all is well, every STATUS_SOON while a shard has none or after a call
    failed, and at once (if older than STATUS_SOON) for /readyz. serve.status() is not cheap (the
    controller builds it, and the client parses every deployment's config, pickling its request router
    again): twice a second it took a tenth of the ingress's CPU from the questions."""

    def __init__(self, names: list[str]):
        self.names = names
        self.counts: dict[str, int] = {}
        self.checked = 0.0
        self._soon = threading.Event()
        self._looking = threading.Lock()
        threading.Thread(target=self._loop, name="qa-serve-status", daemon=True).start()

    def look(self) -> None:
        from ray import serve

        with self._looking:
            try:
                app = serve.status().applications.get(APP_NAME)
                if app is not None:
                    counts = {}
                    for name in self.names:
                        d = app.deployments.get(name)
                        states = getattr(d, "replica_states", {}) or {}
                        counts[name] = int(sum(v for k, v in states.items()
                                               if str(getattr(k, "value", k)) == "RUNNING"))
                    self.counts, self.checked = counts, time.monotonic()
            except Exception as e:  # noqa: BLE001 - the controller restarting, say: keep the last view
                log.debug("serve.status() failed: %s", e)

    def _loop(self) -> None:
        while True:
            self.look()
            soon = not self.counts or bool(self.missing())
            self._soon.wait(STATUS_SOON if soon else STATUS_EVERY)
            self._soon.clear()

    def soon(self) -> None:
        """Look again soon (a call failed: a replica or a node may be gone)."""
        self._soon.set()

    def fresh(self) -> None:
        """Look now unless the last look is recent (for /readyz)."""
        if time.monotonic() - self.checked > STATUS_SOON:
            self.look()

    def missing(self) -> list[int]:
        """Shards with no running replica (none known before the first look)."""
        if not self.counts:
            return []
        return [s for s, n in enumerate(self.names) if self.counts.get(n, 0) == 0]


def _lost(e: BaseException) -> bool:
    """Whether a call failed on its way (a replica or node gone, a timeout), not in the shard's own code:
    Ray's and gRPC's own errors, timeouts and broken connections."""
    return type(e).__module__.split(".")[0] in ("ray", "grpc") or isinstance(e, (TimeoutError, ConnectionError))


class _Call:
    def __init__(self, shard: RemoteShard, method: str, args: tuple):
        self.shard, self.method, self.args = shard, method, args
        self.response = shard.send(method, args)

    def result(self):
        from ray.exceptions import RayTaskError

        deadline = time.monotonic() + CALL_DEADLINE
        tries = 0
        while True:
            try:
                return self.response.result(timeout_s=max(0.1, min(CALL_TIMEOUT, deadline - time.monotonic())))
            except Exception as e:  # noqa: BLE001 - sorted below: the shard's own error, or a lost replica
                # Over gRPC the shard's own exception arrives as itself; through the object store, wrapped.
                cause = e.as_instanceof_cause() if isinstance(e, RayTaskError) else e
                if isinstance(cause, QAError):
                    raise cause from None
                if isinstance(e, RayTaskError) or not _lost(e):  # not worth another replica's time
                    raise ShardUnavailable(f"shard {self.shard.number} ({self.shard.name}) failed: "
                                           f"{type(cause).__name__}: {cause}") from None
                # the replica died, or is unreachable: another one, if any
                tries += 1
                self.shard.running.soon()
                if time.monotonic() >= deadline or self.shard.number in self.shard.running.missing():
                    raise ShardUnavailable(f"shard {self.shard.number} ({self.shard.name}) has no live replica "
                                           f"({type(e).__name__})") from None
                log.warning("shard %s: %s; asking again (try %d)", self.shard.name, type(e).__name__, tries + 1)
                time.sleep(min(0.05 * tries, 0.5))
                self.response = self.shard.send(self.method, self.args)


class RemoteShard:
    """A shard deployment, through its Serve handle."""

    def __init__(self, handle, number: int, name: str, running: _Running):
        self.handle, self.number, self.name, self.running = handle, number, name, running

    def send(self, method: str, args: tuple):
        return getattr(self.handle, method).remote(*args)

    def submit(self, method: str, *args) -> _Call:
        if self.number in self.running.missing():
            raise ShardUnavailable(f"shard {self.number} ({self.name}) has no live replica")
        return _Call(self, method, args)


def _folders(root: Path) -> dict | None:
    """The root's shards.json, where the ingress runs (the path its replicas open, on the file system they share);
    None, with a warning, where this node does not have the root."""
    try:
        meta = read_root(root)
    except (OSError, QAError) as e:
        meta, why = None, str(e)
    else:
        why = "no shards.json there"
    if meta is None:
        log.warning("cannot read the shard folders under %s (%s); asking the shards for statistics, rows and "
                    "sentences", root, why)
    return meta


def folder_freqs(root: Path) -> list[FolderFreqs] | None:
    """Each shard folder's statistics, read where the ingress runs: a question's new stems then cost no round of
    calls before its candidates. None, and the shards are asked, where this node does not have the root."""
    meta = _folders(root)
    return None if meta is None else [FolderFreqs(root / f) for f in meta["folders"]]


def folder_readers(root: Path, model: str) -> list[ShardReader] | None:
    """Each shard folder opened where the ingress runs, for its statistics and its passages' rows and sentences:
    a shard then sends its candidates alone (half its work, a tenth of its reply) and no question needs a round
    of `fetch` calls (a folder that cannot be opened is asked of its shard for a while: ShardedIndex.snapshots).
    None where this node does not have the root."""
    meta = _folders(root)
    if meta is None:
        return None
    return [ShardReader(root / f, i, meta["shards"], model) for i, f in enumerate(meta["folders"])]


def folder_sources(root: Path, model: str, stats: bool, rows: bool) -> tuple[list | None, list[ShardReader] | None]:
    """Open what the ingress reads of the shard folders here: statistics (`stats`), rows and sentences (`rows`)."""
    readers = folder_readers(root, model) if rows else None
    for r in readers or []:  # opened now, not on the first question (one that fails is retried on questions)
        try:
            r.index
        except Exception as e:  # noqa: BLE001
            log.warning("cannot open the shard folder %s here (%s: %s); its replicas send its rows and sentences",
                        r.folder, type(e).__name__, e)
    # The readers give the statistics too (one mapping of each folder's term tables), unless they are asked.
    return (readers if rows else folder_freqs(root)) if stats else None, readers


class ClusterService:
    """What the Flask app reads of its Service (qa/web/service.py), over the shard deployments."""

    def __init__(self, root: str, handles: list, names: list[str], model: str, backend: str, cfg, embedder=None,
                 stats_from_folders: bool = True, rows_from_folders: bool = True):
        self.index_dir = Path(root)
        self.model, self.backend, self.cfg = model, backend, cfg
        self.running = _Running(names)
        freqs, readers = folder_sources(self.index_dir, model, stats_from_folders, rows_from_folders)
        self.index = ShardedIndex([RemoteShard(h, i, n, self.running) for i, (h, n) in enumerate(zip(handles, names))],
                                  names, model, freqs=freqs, readers=readers)
        self._embedder = embedder
        self._searcher: ShardedSearcher | None = None
        self.reload_error: str | None = None
        self.published_at: float | None = None
        self.on_reload_error = lambda: None
        self.on_shard_round = lambda kind: None
        self.index.on_round = lambda kind: self.on_shard_round(kind)

    @property
    def embedder(self):
        if self._embedder is None:
            from ..embed.model import get_embedder

            self._embedder = test_embedder(self.model) or get_embedder(self.model, self.backend)
        return self._embedder

    def searcher(self, wait: bool = False) -> ShardedSearcher:
        if self._searcher is None:
            self._searcher = ShardedSearcher(self.index, self.embedder, self.cfg)
        return self._searcher

    @property
    def ready(self) -> bool:
        """Every shard has a running replica (else ShardUnavailable names one), and the totals are fresh."""
        self.running.fresh()
        missing = self.running.missing()
        if missing:
            names = ", ".join(f"{s} ({self.index.names[s]})" for s in missing)
            raise ShardUnavailable(f"not ready: no live replica of shard {names}")
        self.searcher()
        self.index.refresh()
        return True

    def _read_only(self, *args, **kw):
        raise QAError("the cluster serves a sharded root read-only: add articles with `qa ingest ... --index ROOT`",
                      code="read_only", status=405)

    add = delete = compact = ingest = _read_only


def _wsgi_environ(scope: dict, body: bytes) -> dict:
    """A PEP 3333 environ for an ASGI HTTP request."""
    path = scope.get("path", "/")
    raw = scope.get("raw_path") or path.encode("utf-8")
    query = scope.get("query_string", b"")
    server = scope.get("server") or ("127.0.0.1", 80)
    client = scope.get("client") or ("127.0.0.1", 0)
    env = {
        "REQUEST_METHOD": scope.get("method", "GET"),
        "SCRIPT_NAME": "",
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "REQUEST_URI": (raw + (b"?" + query if query else b"")).decode("latin-1"),
        "SERVER_NAME": str(server[0]), "SERVER_PORT": str(server[1]),
        "REMOTE_ADDR": str(client[0]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0), "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    for k, v in scope.get("headers", []):
        name, value = k.decode("latin-1").upper().replace("-", "_"), v.decode("latin-1")
        if name == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value
        elif name == "CONTENT_LENGTH":
            env["CONTENT_LENGTH"] = value
        else:
            key = f"HTTP_{name}"
            env[key] = f"{env[key]},{value}" if key in env else value
    if "CONTENT_LENGTH" not in env and body:
        env["CONTENT_LENGTH"] = str(len(body))
    return env


def _run_wsgi(app, environ: dict) -> tuple[int, list[tuple[str, str]], bytes]:
    got: dict = {}

    def start_response(status, headers, exc_info=None):
        got["status"], got["headers"] = status, headers

    out = app(environ, start_response)
    try:
        body = b"".join(out)
    finally:
        if hasattr(out, "close"):
            out.close()
    return int(got["status"].split()[0]), got["headers"], body


class Ingress:
    """The HTTP side: the Flask app of `qa serve`, its Service replaced by a ClusterService."""

    def __init__(self, root: str, handles: list, names: list[str], config: dict):
        from ..web import create_app

        os.environ.setdefault("QA_MODEL_THREADS", "1")
        self.app = create_app({**config, "INDEX_DIR": root})
        base = self.app.extensions["qa"]
        # The handles were made in `qa serve`'s process, which does not run in Serve's gRPC mode: without this
        # they keep calling the shards through Ray's object store (an actor call and a ray.get a shard).
        # `_by_reference` is Serve's own (private) name for that choice: a Ray upgrade may rename it.
        handles = [h.options(_by_reference=False) for h in handles]
        self.service = ClusterService(root, handles, names, base.model, base.backend, base.cfg,
                                      stats_from_folders=bool(self.app.config["STATS_FROM_FOLDERS"]),
                                      rows_from_folders=bool(self.app.config["ROWS_FROM_FOLDERS"]))
        self.app.extensions["qa"] = self.service
        self.service.on_shard_round = base.on_shard_round  # /metrics counts them (set on the one it replaces)
        self.pool = ThreadPoolExecutor(16, thread_name_prefix="qa-ingress")
        self.service.searcher()  # the models load before the replica counts as running
        from ..search.reader import warm_up

        warm_up(self.service.cfg.reader)

    async def __call__(self, request):
        from starlette.responses import Response

        body = await request.body()
        environ = _wsgi_environ(request.scope, body)
        status, headers, content = await asyncio.get_running_loop().run_in_executor(
            self.pool, _run_wsgi, self.app, environ)
        resp = Response(content=content, status_code=status)
        for k, v in headers:
            if k.lower() != "content-length":
                resp.headers.append(k, v)
        return resp


def build(root: str, replicas: int, config: dict | None = None, nodes: int = 1, ingress_replicas: int = 1):
    """The Serve application for a sharded root: one deployment per shard, and the ingress."""
    from ray import serve

    meta = read_root(root)
    if meta is None:
        raise QAError(f"{root} is not a sharded index root: make one with `qa ingest PATH --index {root} --shards N`",
                      code="not_sharded")
    config = dict(config or {})
    model = config.get("MODEL") or os.environ.get("QA_MODEL") or meta.get("model")
    names = [f"shard-{i:03d}" for i in range(meta["shards"])]
    shard = serve.deployment(ShardReplica)
    env = replica_env()
    handles = []
    for i, (name, folder) in enumerate(zip(names, meta["folders"])):
        # No access log: a question is a call to every shard, and a log line each costs a replica's CPU.
        opts = dict(name=name, num_replicas=replicas, ray_actor_options={"num_cpus": 0.5, "runtime_env": env},
                    max_ongoing_requests=32, health_check_period_s=1, health_check_timeout_s=5,
                    graceful_shutdown_timeout_s=1, logging_config={"enable_access_log": False})
        if replicas <= nodes:  # spread: a node lost takes one replica of a shard, not all of them
            opts["max_replicas_per_node"] = 1
        handles.append(shard.options(**opts).bind(str(Path(root).resolve() / folder), i, meta["shards"], model))
    # One ingress replica sits beside Serve's HAProxy on the head. More take questions on other nodes too (one
    # ingress holds one interpreter lock: 50-65 questions a second here, docs/cluster.md), spread one a node
    # while there are nodes enough, so that a node lost takes at most one of them; HAProxy sends a question
    # whose connection is refused to another.
    ingress_opts: dict = dict(name="ingress", num_replicas=ingress_replicas, max_ongoing_requests=64,
                              ray_actor_options={"num_cpus": 0.5, "runtime_env": env})
    if ingress_replicas == 1:
        ingress_opts["ray_actor_options"]["resources"] = {"node:__internal_head__": 0.001}
    elif ingress_replicas <= nodes:
        ingress_opts["max_replicas_per_node"] = 1
    ingress = serve.deployment(Ingress).options(**ingress_opts)
    return ingress.bind(str(Path(root).resolve()), handles, names, {**config, "MODEL": model})


def run(root: str, address: str, replicas: int, host: str, port: int, config: dict | None = None,
        ingress_replicas: int = 1) -> None:
    """Deploy on the cluster at `address` and serve until stopped (Ctrl+C or SIGTERM takes the app down)."""
    import signal

    try:
        import ray
        from ray import serve
    except ImportError:
        raise QAError("`--ray` needs Ray Serve: pip install -e '.[cluster]'", code="ray_missing") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=None if address == "local" else address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise QAError(f"cannot join the Ray cluster at {address}: {e}", code="ray_unreachable") from None
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port},
                controller_options={"runtime_env": {"env_vars": SERVE_ENV}})
    app = build(root, replicas, config, nodes, ingress_replicas)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    print(f"Serving {root} on http://{host}:{port} (Ray Serve, {replicas} replica(s) of each shard, "
          f"{ingress_replicas} of the ingress, {nodes} node(s))", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        serve.delete(APP_NAME)
        ray.shutdown()
