"""SQLite, the source of truth for articles' text and metadata and which passages they have.

Every article row is one version: written at generation `gen`, replaced or
deleted at `deleted_gen`. A reader on generation G sees the versions with
gen <= G < deleted_gen, so an update shows the old version until the new one is
published, and a writer killed between its commit and its publish leaves
readers the old one. Passage ids come from AUTOINCREMENT and are never reused.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import IndexBusy, IndexCorrupt

SCHEMA_VERSION = 2
DB_NAME = "qa.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    version INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    url TEXT, source TEXT, author TEXT, published TEXT,
    text TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    origin TEXT,
    signature BLOB,  -- the whole text's MinHash (copies.py), to find wire copies; see add_columns
    added_at TEXT NOT NULL,
    gen INTEGER NOT NULL,
    deleted_gen INTEGER,
    deleted_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS articles_live ON articles(id) WHERE deleted_gen IS NULL;
CREATE INDEX IF NOT EXISTS articles_id ON articles(id, gen);
CREATE INDEX IF NOT EXISTS articles_deleted ON articles(deleted_gen) WHERE deleted_gen IS NOT NULL;
-- Facets read each passage's article id and source from this narrow index: the rows themselves carry
-- the text, so at a million passages each lookup was a cold page of a gigabyte table (~13 ms a question).
CREATE INDEX IF NOT EXISTS articles_source ON articles(version, id, source);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL REFERENCES articles(version) ON DELETE CASCADE,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_version ON passages(version);
-- Segments written by committed transactions, so a writer can publish what a killed one committed.
CREATE TABLE IF NOT EXISTS segments (name TEXT PRIMARY KEY, gen INTEGER NOT NULL);
"""

VISIBLE = "a.gen <= :gen AND (a.deleted_gen IS NULL OR a.deleted_gen > :gen)"


def corrupt_db(path: Path, e: Exception) -> IndexCorrupt | IndexBusy:
    """The error to raise for a database error: busy (try again) or corrupt (restore or rebuild)."""
    if isinstance(e, sqlite3.OperationalError) and any(
            w in str(e).lower() for w in ("locked", "busy", "unable to open", "disk i/o", "interrupt")):
        return IndexBusy(f"{path} could not be read just now ({e}); try again in a moment")
    return IndexCorrupt(f"{path} is not a readable index database ({e}); restore it from a backup, "
                        f"or delete the folder {path.parent} and ingest again")


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as e:
        raise corrupt_db(path, e) from None
    return conn


def add_columns(conn: sqlite3.Connection) -> None:
    """Add to a database written before them the columns added since (their old rows stay NULL)."""
    if "signature" not in {r[1] for r in conn.execute("PRAGMA table_info(articles)")}:
        conn.execute("ALTER TABLE articles ADD COLUMN signature BLOB")


def db_state(conn: sqlite3.Connection, path: Path) -> int:
    """The database's committed generation; IndexCorrupt when it is not an index this qa reads."""
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as e:
        raise corrupt_db(path, e) from None
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise IndexCorrupt(f"{path} has schema version {meta.get('schema_version')!r}; this qa reads version "
                           f"{SCHEMA_VERSION}: move the folder aside and ingest the articles again")
    return int(meta.get("generation", 0))
