"""The index folder: SQLite for articles and passages, immutable segments for vectors and postings.

    manifest.json          which segments (and tombstones) the published generation holds
    qa.sqlite3             articles (one row per version), passages (ids never reused)
    seg-GEN-ID.arrays      a segment's arrays: ids, int8 vectors, sentences, BM25 postings
    seg-GEN-ID.faiss       its passage vectors for search (flat, or IVF when big), memory-mapped
    seg-GEN-ID.del-*       rows of a segment deleted as of some generation

See writer.py for the order of writes that keeps it crash-safe, and merge.py
for how the number of segments stays small.
"""

import faiss

# A question searches one vector at a time: OpenMP threads would only fight the model's threads.
faiss.omp_set_num_threads(1)

from .db import DB_NAME  # noqa: E402, SCHEMA_VERSION
from .manifest import MANIFEST_NAME, check_model, read_manifest  # noqa: E402
from .reader import Index, PassageRow, SentenceScores, Where  # noqa: E402
from .writer import LOCK_NAME, NewPassage, Writer, lock_index  # noqa: E402

__all__ = ["DB_NAME", "LOCK_NAME", "MANIFEST_NAME", "SCHEMA_VERSION", "Index", "NewPassage", "PassageRow",
           "SentenceScores", "Where", "Writer", "check_model", "lock_index", "read_manifest"]
