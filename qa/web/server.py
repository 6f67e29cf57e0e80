"""Serve the app with gunicorn: one process per core, each with its own model session and index snapshot.

A search is mostly Python, which holds the GIL, so threads in one process
cannot use a second core; processes can.  Every worker answers /healthz at
once and loads the index in the background (/readyz says 503 until then);
writers in different workers are kept apart by the index lock, and each
worker picks up a newly published snapshot on its next request.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.errors import HaltServer
from gunicorn.workers.gthread import ThreadWorker

from .api import CSP
from .metrics import metrics_dir

BOOT_ERROR = 3  # a worker exiting with this makes gunicorn's arbiter halt the server (Arbiter.WORKER_BOOT_ERROR)


_CODES = {414: "uri_too_long", 431: "headers_too_large", 403: "forbidden", 417: "expectation_failed",
          501: "not_implemented"}


def _write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Answer bytes that never became a request with the API's JSON error shape, not an HTML page."""
    code = _CODES.get(status_int, "bad_request" if status_int < 500 else "internal_error")
    body = json.dumps({"error": {"code": code, "message": mesg or reason}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n"
            f"Content-Security-Policy: {CSP}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


class Worker(ThreadWorker):
    """gunicorn's threaded worker (keep-alive, slow clients cost a thread, not the process), loading in the background."""

    on_start: Callable[[object], None] | None = None

    def load_wsgi(self) -> None:
        super().load_wsgi()  # creates the app in this worker
        if Worker.on_start is not None:
            threading.Thread(target=Worker.on_start, args=(self.wsgi,), name="qa-load", daemon=True).start()


class Server(BaseApplication):
    """`qa serve` as a gunicorn application; the Flask app is created in each worker, after the fork."""

    def __init__(self, make_app: Callable[[], object], on_start: Callable[[object], None], options: dict):
        self.make_app, self.options = make_app, options
        Worker.on_start = on_start
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.make_app()


MAX_DEFAULT_WORKERS = 8  # each holds its own model and snapshot; more is a choice (--workers), not a default


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # honours taskset/cgroup cpusets
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    return min(cores(), MAX_DEFAULT_WORKERS)


def serve(make_app: Callable[[], object], on_start: Callable[[object], None], host: str, port: int,
          workers: int, threads: int) -> None:
    """Run until stopped; `on_start(app)` runs in the background in each worker once its app exists."""
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": f"{Worker.__module__}.{Worker.__qualname__}",
        "timeout": 120,  # heartbeat from the worker's main thread; long requests do not trip it
        "graceful_timeout": 10,
        "keepalive": 5,
        "limit_request_line": 8190,  # gunicorn's most; a long query then gets the API's own query_too_long
        "loglevel": "warning",
        "accesslog": None,
        "proc_name": "qa",
        "preload_app": False,  # the model session's threads do not survive a fork
    }
    sys.argv = sys.argv[:1]  # gunicorn reads its own options from argv otherwise
    util.write_error = _write_json_error  # gunicorn has no hook for its parse-error page; workers inherit this
    try:
        with metrics_dir():  # the workers' metric files, summed by /metrics; removed when the server stops
            Server(make_app, on_start, options).run()
    except HaltServer as e:  # a worker could not load; it has said why on stderr
        sys.exit(e.exit_status)
