"""What the index's writers have done, kept beside the index in `ingests.json` for `/metrics`.

Every writer (`qa ingest`, a `qa watch` round, an article added over the API, the seeds) is its own
process, often not the server's, so the counts live with the index, not in a process: each finished
ingest adds its counts while it still holds the writer lock (one writer at a time: no update is lost).
A run killed before it finishes adds nothing here, though what it committed is in the index.

    {"version": 1, "runs": 12, "passages": 840, "finished": 1765000000.0,
     "articles": {"added": 30, "updated": 2, "duplicate": 5, "failed": 1},
     "last": {"added": 0, "updated": 0, "duplicate": 0, "failed": 0, "passages": 0}}
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .files import write_atomic

STATS_NAME = "ingests.json"
RESULTS = ("added", "updated", "duplicate", "failed")

log = logging.getLogger(__name__)


def read_stats(folder: str | Path) -> dict:
    """The totals so far (zeros when no ingest has finished, or the file is unreadable)."""
    stats = {"runs": 0, "passages": 0, "finished": None, "articles": dict.fromkeys(RESULTS, 0),
             "last": {**dict.fromkeys(RESULTS, 0), "passages": 0}}
    try:
        saved = json.loads((Path(folder) / STATS_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return stats
    if isinstance(saved, dict):
        for key in ("runs", "passages", "finished"):
            if isinstance(saved.get(key), (int, float)):
                stats[key] = saved[key]
        for key in ("articles", "last"):
            if isinstance(saved.get(key), dict):
                stats[key].update({k: v for k, v in saved[key].items() if k in stats[key] and isinstance(v, int)})
    return stats


def record_ingest(folder: str | Path, added: int, updated: int, duplicate: int, failed: int, passages: int) -> None:
    """Add one finished ingest's counts; call it while holding the writer lock. Never fails the ingest."""
    last = {"added": added, "updated": updated, "duplicate": duplicate, "failed": failed, "passages": passages}
    stats = read_stats(folder)
    stats["runs"] += 1
    stats["passages"] += passages
    stats["finished"] = time.time()
    for k in RESULTS:
        stats["articles"][k] += last[k]
    stats["last"] = last
    try:
        write_atomic(Path(folder) / STATS_NAME, json.dumps({"version": 1, **stats}, indent=1).encode())
    except OSError as e:  # a full disk, say: the articles are in; only the count is lost
        log.warning("could not record the ingest's counts in %s: %s", STATS_NAME, e)
