"""Standing questions: saved questions read against each new article as a writer publishes it.

    store.py    alerts.sqlite3 in the index folder: the questions, their answers found, webhook calls owed
    match.py    a check: the articles published since the last one against every standing question
    feed.py     a question's Atom feed
    deliver.py  webhook calls on a background thread (retries, backoff, a timeout; never in a writer's way)

The web stage (`qa.web`: /api/alerts, /alerts/ID.atom, and the Service's publish paths) and the CLI
(`qa alerts`, `qa ingest`, `qa watch`) use it; it uses the search stage to read articles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .deliver import Sender
from .feed import atom
from .match import Checked, check, last_version, model_key
from .store import STORE_NAME, Alert, AlertStore, check_webhook

log = logging.getLogger("qa.alerts")


def published_version(index_dir: str | Path) -> int:
    """The last article version the folder's published snapshot holds (0 for a new folder): a standing
    question made now reads only later ones. Read from SQLite alone: no model, no segments."""
    from ..errors import BadRequest
    from ..index import DB_NAME, read_manifest
    from ..index.db import connect

    folder = Path(index_dir)
    manifest = read_manifest(folder)
    if manifest is None:
        return 0
    if not (folder / DB_NAME).exists():
        raise BadRequest(f"{folder} is a sharded index root: standing questions are read in a single index folder",
                         code="alerts_unsupported")
    conn = connect(folder / DB_NAME, readonly=True)
    try:
        (last,) = conn.execute("SELECT max(version) FROM articles WHERE gen <= ?", (manifest["generation"],)).fetchone()
    finally:
        conn.close()
    return int(last or 0)


def create(index_dir: str | Path, q: object, source: object = None, from_: object = None, to: object = None,
           webhook: object = None, cfg=None, embedder=None) -> Alert:
    """Validate and save a standing question, as /api/search validates a search (BadRequest with the same
    codes; `invalid_webhook` for a webhook that is not an http(s) URL); `embedder`: to keep its vector
    now (else the first check makes it)."""
    from ..search import filters
    from ..search.searcher import SearchConfig, validate

    q, _ = validate(q, None, cfg or SearchConfig())
    where, _ = filters.parse(source, from_, to, None)
    url = check_webhook(webhook)
    since = published_version(index_dir)
    vector = (model_key(embedder), embedder.encode([q])[0]) if embedder is not None else None
    return AlertStore(index_dir).add(q, list(where.sources) if where and where.sources else None,
                                     from_.strip() if isinstance(from_, str) else None,
                                     to.strip() if isinstance(to, str) else None, url, since, vector)


def after_publish(index_dir: str | Path, searcher: Callable[[], object]) -> Checked:
    """Read what was just published in `index_dir` against its standing questions and start sending the
    webhook calls owed. `searcher()` gives a searcher over the published snapshot; it is not called when
    the folder has no standing questions (a publish then costs one stat)."""
    store = AlertStore(index_dir)
    if not store.exists():
        return Checked()
    got = check(searcher(), store)
    if any(a.webhook for a, _ in got.found):
        Sender.of(store).kick()
    return got


def resume_sending(index_dir: str | Path) -> None:
    """Start sending the webhook calls a folder still owes (after a restart), if it owes any."""
    store = AlertStore(index_dir)
    try:
        if store.next_due() is not None:
            Sender.of(store).kick()
    except Exception:  # noqa: BLE001 - a damaged store must not keep a server from starting
        log.exception("could not read the webhook queue in %s", index_dir)


def drain(index_dir: str | Path, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the webhook calls due meanwhile (a CLI run about to exit)."""
    store = AlertStore(index_dir)
    if not store.exists() or store.next_due() is None:
        return True
    return Sender.of(store).drain(timeout)


__all__ = ["STORE_NAME", "Alert", "AlertStore", "Checked", "Sender", "after_publish", "atom", "check",
           "check_webhook", "create", "drain", "last_version", "model_key", "published_version", "resume_sending"]
