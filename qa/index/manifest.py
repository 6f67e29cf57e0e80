"""manifest.json: the one file that says which segments (and which of their rows) a generation holds.

Everything it names is written and fsynced before it is, and it is replaced
atomically, so a reader that reads it can open exactly that snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import IndexCorrupt, ModelMismatch
from .db import SCHEMA_VERSION
from .files import read_arrays, write_arrays, write_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_KEYS = ("model", "dim", "generation", "passages", "articles", "segments", "scale")
GRACE_SECONDS = 60.0  # a retired segment's files stay this long, for readers still opening the manifest before


def manifest_stamp(folder: Path) -> tuple[int, int, int] | None:
    """What changes when a writer publishes (the manifest's mtime, size and inode), None without one."""
    try:
        st = (folder / MANIFEST_NAME).stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def read_manifest(path: Path) -> dict | None:
    """The manifest of an index folder, None when there is none; IndexCorrupt when it is unusable."""
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        manifest, problem = None, str(e)
    else:
        if isinstance(manifest, dict) and manifest.get("format") == "qa-index" and manifest.get("schema_version") != SCHEMA_VERSION:
            raise IndexCorrupt(f"{path} holds an index written by another version of qa (schema version "
                               f"{manifest.get('schema_version')}; this one reads {SCHEMA_VERSION}): move the folder "
                               "aside and run `qa ingest` on your articles again")
        missing = [k for k in MANIFEST_KEYS if not isinstance(manifest, dict) or k not in manifest]
        problem = f"missing {', '.join(missing)}" if missing else None
        if not problem and not all(isinstance(manifest[k], int) for k in ("dim", "generation", "passages", "articles")):
            problem = "counts are not whole numbers"
        if not problem and not isinstance(manifest["segments"], list):
            problem = "segments is not a list"
    if problem:
        raise IndexCorrupt(f"{path / MANIFEST_NAME} is unreadable ({problem}); run `qa ingest PATH --index {path}` "
                           "to republish it from the database, or delete the folder and ingest again")
    return manifest


def write_manifest(path: Path, manifest: dict) -> None:
    write_atomic(path / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())


def check_model(manifest: dict, path: Path, model: str | None, dim: int | None) -> None:
    """Refuse an index built with another model."""
    if model and manifest.get("model") != model:
        raise ModelMismatch(
            f"the index in {path} was built with model {manifest.get('model')!r}, but this run uses {model!r}; "
            f"set QA_MODEL={manifest.get('model')} or use a new --index folder"
        )
    if dim and int(manifest.get("dim", dim)) != dim:
        raise ModelMismatch(f"the index in {path} holds {manifest.get('dim')}-dimensional vectors, the model makes {dim}")


def write_tombstones(path: Path, name: str, rows: np.ndarray) -> None:
    """Write a segment's deleted rows (sorted) to a new file, fsynced."""
    write_arrays(path / name, {"rows": np.sort(np.asarray(rows, dtype=np.int32))}, {"tombstones": True})


def read_tombstones(path: Path, name: str | None) -> np.ndarray:
    if not name:
        return np.zeros(0, np.int32)
    return np.array(read_arrays(path / name)[1]["rows"])
