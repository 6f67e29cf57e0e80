"""Webhook calls: a JSON POST per new answer, sent on a background thread, never in a writer's way.

The calls owed wait in the store (`deliveries`), so they survive a restart and any process can send
them: a process that finds new answers starts its sender; a server starts one when it opens an index
with calls pending. A call is leased while it is being sent, so two processes never send it twice at
once. A failure (no answer within TIMEOUT, a 5xx, 408 or 429, a refused connection) is tried again
after BACKOFF, doubled each time, ATTEMPTS times in all; any other 4xx, or a redirect, is given up at
once. Every failure is logged, none is fatal.

Only http and https. A webhook is the operator's own URL (only the admin token sets one), and the
fetcher lets the operator's own URLs go anywhere (qa/ingest/fetch.py): a webhook on 127.0.0.1 is
allowed. Its rule against a public address leading to a private one holds by not following
redirects at all; environment proxies are ignored, as the fetcher ignores them.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from .. import __version__
from .store import AlertStore, Delivery

log = logging.getLogger("qa.alerts")

TIMEOUT = 5.0  # seconds for the connection and for each read of the answer
ATTEMPTS = 6
BACKOFF = 2.0  # seconds before the first retry; doubled each time (2, 4, 8, 16, 32)
LEASE = 60.0  # seconds a claimed call is left to its sender before another process may take it
USER_AGENT = f"qa-news/{__version__} (standing question webhook)"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl!r} not followed", headers, fp)


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def post(url: str, body: bytes, timeout: float = TIMEOUT) -> int:
    """POST a JSON body; the HTTP status (an HTTPError for 3xx-5xx, OSError for the connection)."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": USER_AGENT})
    with _opener.open(req, timeout=timeout) as resp:
        resp.read(65536)
        return resp.status


class Sender:
    """The one background sender of a store in this process."""

    _all: dict[Path, Sender] = {}
    _all_lock = threading.Lock()

    def __init__(self, store: AlertStore):
        self.store = store
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy = 0  # calls being sent now

    @classmethod
    def of(cls, store: AlertStore) -> Sender:
        with cls._all_lock:
            key = store.path.resolve()
            if key not in cls._all:
                cls._all[key] = cls(store)
            return cls._all[key]

    def kick(self) -> None:
        """Send what is due now, starting the thread if it is not running."""
        with self._lock:
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="qa-webhooks", daemon=True)
                self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until no call is pending that is due within it; whether none is
        (a process about to exit leaves later retries to the next sender, in the store)."""
        deadline = time.monotonic() + timeout
        self.kick()
        while time.monotonic() < deadline:
            due = self.store.next_due()
            if not self.busy and (due is None or due > time.time() + (deadline - time.monotonic())):
                return due is None
            time.sleep(0.05)
        return False

    def _run(self) -> None:
        while True:
            try:
                job = self.store.claim(LEASE)
            except Exception:  # noqa: BLE001 - a locked or vanished store: try again later
                log.exception("could not read the webhook queue")
                job = None
                time.sleep(1.0)
            if job is not None:
                self._send(job)
                continue
            try:
                due = self.store.next_due()
            except Exception:  # noqa: BLE001
                due = None
            with self._lock:
                if due is None and not self._wake.is_set():
                    self._thread = None
                    return
                self._wake.clear()
            self._wake.wait(min(max((due or time.time()) - time.time(), 0.05), 30.0))

    def _send(self, job: Delivery) -> None:
        self.busy += 1
        try:
            try:
                status = post(job.url, job.body)
                self.store.delivered(job)
                log.info("webhook for alert %s: %s answered %d", job.alert_id, job.url, status)
                return
            except urllib.error.HTTPError as e:
                error, again = f"HTTP {e.code}: {e.reason}", e.code >= 500 or e.code in (408, 429)
            except (OSError, ValueError) as e:  # refused, timed out, name not found, a bad URL
                error, again = f"{type(e).__name__}: {e}", not isinstance(e, ValueError)
            retry = BACKOFF * 2 ** (job.attempts - 1) if again and job.attempts < ATTEMPTS else None
            log.warning("webhook for alert %s to %s failed (attempt %d): %s; %s", job.alert_id, job.url,
                        job.attempts, error, f"trying again in {retry:g} s" if retry is not None else "given up")
            self.store.failed(job, error, retry)
        except Exception:  # noqa: BLE001 - the store itself failed: the lease runs out and it is tried again
            log.exception("webhook for alert %s: could not record the outcome", job.alert_id)
        finally:
            self.busy -= 1
