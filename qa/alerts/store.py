"""Standing questions, the answers found for them, and the webhook calls owed: `alerts.sqlite3` in the index folder.

    alerts      id, q, filters (JSON: source, from, to), webhook, created, since (the last article version
                in the index when it was made: only later ones are read for it)
    vectors     each question's vector, per model (made once, so a check encodes nothing)
    entries     one per (alert, article): the answer found, with its citation; UNIQUE, so an article
                already reported is never reported again, whoever checks
    deliveries  webhook calls: due time, attempts, lease (a process sending it), done
    state       `checked`: the last article version read against the standing questions

Separate from qa.sqlite3 (which only a writer holding the index lock changes), so a server can add
and delete alerts while an ingest runs. WAL mode: readers (the feed) never wait for a writer.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ..errors import BadRequest, NotFound

STORE_NAME = "alerts.sqlite3"
MAX_ALERTS = 10_000
MAX_WEBHOOK_CHARS = 2000
MAX_ENTRIES = 200  # the newest entries a feed shows (older ones still block repeats by their article id)
ID = re.compile(r"^[0-9a-f]{16}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    q TEXT NOT NULL,
    filters TEXT NOT NULL,
    webhook TEXT,
    created TEXT NOT NULL,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (alert_id, model)
);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    article_id TEXT NOT NULL,
    answer TEXT NOT NULL,
    found TEXT NOT NULL,
    UNIQUE (alert_id, article_id)
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    lease REAL,
    done INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(done, due);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_webhook(url: object) -> str | None:
    """A webhook URL as given (None: none), or BadRequest: http or https, a host, no spaces, not too long."""
    if url is None or url == "":
        return None
    if not isinstance(url, str) or len(url) > MAX_WEBHOOK_CHARS or re.search(r"[\s\x00-\x1f\x7f]", url):
        raise BadRequest(f"webhook must be an http or https URL of at most {MAX_WEBHOOK_CHARS} characters",
                         code="invalid_webhook")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise BadRequest(f"webhook is not a URL: {url!r:.80}", code="invalid_webhook") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"webhook must be an http or https URL with a host (got {url!r:.80})", code="invalid_webhook")
    return url


@dataclass
class Alert:
    id: str
    q: str
    source: list[str] | None
    from_: str | None
    to: str | None
    webhook: str | None
    created: str
    since: int = 0
    entries: int = 0
    vector: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"id": self.id, "q": self.q, "feed": f"/alerts/{self.id}.atom", "created": self.created,
                "source": self.source, "from": self.from_, "to": self.to, "webhook": self.webhook,
                "entries": self.entries}


@dataclass
class Delivery:
    id: int
    alert_id: str
    url: str
    body: bytes
    attempts: int


class AlertStore:
    """The alerts of one index folder. Every method opens its own short connection: safe across threads
    and processes (a server's workers, an ingest, the CLI)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / STORE_NAME

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def _conn(self, write: bool = False):
        if not write and not self.path.exists():
            raise FileNotFoundError(self.path)
        if write:
            self.folder.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            if write:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(SCHEMA)
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _tx(self):
        with self._conn(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # --- standing questions -------------------------------------------------------------------------

    def add(self, q: str, source: list[str] | None, from_: str | None, to: str | None, webhook: str | None,
            since: int, vector: tuple[str, np.ndarray] | None = None) -> Alert:
        """Save a standing question (validated by the caller; the webhook here); `since`: the index's last
        article version now, so only later articles are read for it."""
        webhook = check_webhook(webhook)
        alert = Alert(secrets.token_hex(8), q, list(source) if source else None, from_, to, webhook, _now(), since)
        with self._tx() as c:
            (n,) = c.execute("SELECT count(*) FROM alerts").fetchone()
            if n >= MAX_ALERTS:
                raise BadRequest(f"at most {MAX_ALERTS} standing questions; delete some first", code="too_many_alerts")
            c.execute("INSERT INTO alerts VALUES (?,?,?,?,?,?)",
                      (alert.id, q, json.dumps({"source": alert.source, "from": from_, "to": to}), webhook,
                       alert.created, since))
            if vector is not None:
                c.execute("INSERT INTO vectors VALUES (?,?,?)",
                          (alert.id, vector[0], np.asarray(vector[1], dtype=np.float32).tobytes()))
            # The first standing question (or the first after all were deleted, while nothing was read)
            # starts the reading here: nothing published before it is news to anyone.
            if n == 0:
                c.execute("INSERT OR REPLACE INTO state VALUES ('checked', ?)", (str(since),))
        return alert

    def delete(self, alert_id: str) -> bool:
        if not self.exists():
            return False
        with self._tx() as c:
            return c.execute("DELETE FROM alerts WHERE id = ?", (alert_id,)).rowcount > 0

    def alerts(self, model: str | None = None) -> list[Alert]:
        """Every standing question, oldest first (with its vector for `model`, where one is kept)."""
        if not self.exists():
            return []
        with self._conn() as c:
            rows = c.execute(
                "SELECT a.id, a.q, a.filters, a.webhook, a.created, a.since, "
                "(SELECT count(*) FROM entries e WHERE e.alert_id = a.id), v.vector "
                "FROM alerts a LEFT JOIN vectors v ON v.alert_id = a.id AND v.model = ? "
                "ORDER BY a.created, a.id", (model or "",)).fetchall()
        out = []
        for aid, q, filters, webhook, created, since, n, vec in rows:
            f = json.loads(filters)
            out.append(Alert(aid, q, f.get("source"), f.get("from"), f.get("to"), webhook, created, since, n,
                             np.frombuffer(vec, dtype=np.float32) if vec is not None else None))
        return out

    def get(self, alert_id: str) -> Alert:
        if ID.match(alert_id or ""):
            for a in self.alerts():  # a few thousand rows at most
                if a.id == alert_id:
                    return a
        raise NotFound(f"no standing question with id {alert_id!r}", code="alert_not_found")

    def keep_vectors(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        with self._tx() as c:
            c.executemany("INSERT OR REPLACE INTO vectors VALUES (?,?,?)",
                          [(aid, model, np.asarray(v, dtype=np.float32).tobytes()) for aid, v in vectors.items()])

    # --- what has been read ---------------------------------------------------------------------------

    def checked(self) -> int | None:
        if not self.exists():
            return None
        with self._conn() as c:
            row = c.execute("SELECT value FROM state WHERE key = 'checked'").fetchone()
        return int(row[0]) if row else None

    def record(self, found: list[tuple[Alert, str, dict]], checked: int) -> list[tuple[Alert, dict]]:
        """Keep the answers found ((alert, article id, answer)) and queue their webhooks, then move the
        reading on to `checked`; the ones that were new (an article already reported for an alert is not
        reported again)."""
        fresh = []
        now = time.time()
        with self._tx() as c:
            live = {r[0] for r in c.execute("SELECT id FROM alerts")}
            for alert, article_id, answer in found:
                if alert.id not in live:  # deleted meanwhile
                    continue
                cur = c.execute("INSERT OR IGNORE INTO entries (alert_id, article_id, answer, found) VALUES (?,?,?,?)",
                                (alert.id, article_id, json.dumps(answer, ensure_ascii=False), _now()))
                if not cur.rowcount:
                    continue
                fresh.append((alert, answer))
                if alert.webhook:
                    body = json.dumps({"alert": alert.id, "q": alert.q, "answer": answer}, ensure_ascii=False)
                    c.execute("INSERT INTO deliveries (alert_id, url, body, due) VALUES (?,?,?,?)",
                              (alert.id, alert.webhook, body, now))
            c.execute("INSERT INTO state VALUES ('checked', ?) ON CONFLICT(key) DO UPDATE SET "
                      "value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))", (str(checked),))
        return fresh

    def entries(self, alert_id: str, limit: int = MAX_ENTRIES) -> list[tuple[str, dict, str]]:
        """An alert's newest entries: (article id, answer, found), newest first."""
        if not self.exists():
            return []
        with self._conn() as c:
            rows = c.execute("SELECT article_id, answer, found FROM entries WHERE alert_id = ? "
                             "ORDER BY seq DESC LIMIT ?", (alert_id, limit)).fetchall()
        return [(aid, json.loads(answer), found) for aid, answer, found in rows]

    # --- webhook calls ------------------------------------------------------------------------------

    def claim(self, lease: float) -> Delivery | None:
        """Take the next webhook call that is due (no other process will take it for `lease` seconds)."""
        if not self.exists():
            return None
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT id, alert_id, url, body, attempts FROM deliveries WHERE done = 0 AND due <= ? "
                            "AND (lease IS NULL OR lease < ?) ORDER BY due LIMIT 1", (now, now)).fetchone()
            if row is None:
                return None
            c.execute("UPDATE deliveries SET lease = ?, attempts = attempts + 1 WHERE id = ?", (now + lease, row[0]))
        return Delivery(row[0], row[1], row[2], row[3].encode(), row[4] + 1)

    def delivered(self, delivery: Delivery) -> None:
        with self._tx() as c:
            c.execute("UPDATE deliveries SET done = 1, lease = NULL, error = NULL WHERE id = ?", (delivery.id,))

    def failed(self, delivery: Delivery, error: str, retry_in: float | None) -> None:
        """A call that failed: due again in `retry_in` seconds, or given up (None)."""
        with self._tx() as c:
            if retry_in is None:
                c.execute("UPDATE deliveries SET done = 2, lease = NULL, error = ? WHERE id = ?", (error, delivery.id))
            else:
                c.execute("UPDATE deliveries SET due = ?, lease = NULL, error = ? WHERE id = ?",
                          (time.time() + retry_in, error, delivery.id))

    def next_due(self) -> float | None:
        """When the next pending webhook call is due (a time.time()), or None when none is pending."""
        if not self.exists():
            return None
        with self._conn() as c:
            row = c.execute("SELECT min(max(due, coalesce(lease, 0))) FROM deliveries WHERE done = 0").fetchone()
        return row[0]

    def deliveries(self, alert_id: str | None = None) -> list[dict]:
        """Webhook calls, for operators and tests: url, attempts, done (0 pending, 1 sent, 2 given up), error."""
        if not self.exists():
            return []
        with self._conn() as c:
            rows = c.execute("SELECT id, alert_id, url, attempts, done, error FROM deliveries "
                             + ("WHERE alert_id = ? " if alert_id else "") + "ORDER BY id",
                             (alert_id,) if alert_id else ()).fetchall()
        return [dict(zip(("id", "alert", "url", "attempts", "done", "error"), r)) for r in rows]
