"""Words as the index keeps them: porter stems (as FTS5's `porter unicode61` made them), hashed to 64 bits.

A segment stores a stem only as its hash, so its vocabulary is one sorted array
that every reader maps, and a query looks its stems up with one binary search
per segment instead of a dictionary built at load.
"""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from collections.abc import Iterable
from datetime import date

import numpy as np

from .text import stemmer

# Function words carry no evidence of an answer and would make every passage a candidate.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off
    on once only or other our ours ourselves out over own same she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours yourself yourselves s t""".split()
)

TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # unicode61: letters and digits; underscore separates
_hashes: dict[str, int] = {}


_COMBINING: dict[int, None] | None = None


def fold(text: str) -> str:
    """Lower-case and drop diacritics ("Café" -> "cafe"), as unicode61 does."""
    global _COMBINING
    text = text.lower()
    if text.isascii():
        return text
    if _COMBINING is None:  # every combining mark, once (0.2 s): translate() then drops them in C
        _COMBINING = {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.combining(chr(cp))}
    return unicodedata.normalize("NFKD", text).translate(_COMBINING)


def stems(text: str) -> list[str]:
    """Every token's stem, in order, repeats kept (for term frequencies and lengths)."""
    return stemmer().stemWords(TOKEN.findall(fold(text)))


def term_hash(stem: str) -> int:
    """A stable 64-bit hash of a stem (Python's own hash() changes from process to process)."""
    h = _hashes.get(stem)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(stem.encode(), digest_size=8).digest(), "little")
        if len(_hashes) > 500_000:
            _hashes.clear()
        _hashes[stem] = h
    return h


def source_hash(source: str | None) -> int:
    """A source's 64-bit key in a segment (0: no source); `source` filters compare whole names."""
    if not source or not source.strip():
        return 0
    return int.from_bytes(hashlib.blake2b(source.strip().encode(), digest_size=8).digest(), "little") or 1


NO_DAY = np.iinfo(np.int32).min
_EPOCH = date(1970, 1, 1).toordinal()


def day_of(published: str | None) -> int:
    """Days since 1970-01-01 of an ISO 8601 `published` (its own calendar date), NO_DAY when absent or unreadable."""
    try:
        return date.fromisoformat((published or "")[:10]).toordinal() - _EPOCH
    except ValueError:
        return int(NO_DAY)


def hashes(words: Iterable[str]) -> np.ndarray:
    return np.fromiter((term_hash(w) for w in words), dtype=np.uint64)


def sentence_keys(h: np.ndarray) -> np.ndarray:
    """The 32-bit keys a segment keeps of each sentence's stems: the low half of their hashes.

    Half the bytes of the largest array a question reads rows of; a question's stem
    meets a stranger's key about once in 4 billion collection stems.
    """
    h = np.asarray(h)
    if h.dtype == np.uint32:  # keys already (today's segments): nothing to do on the question's path
        return h
    return (h.astype(np.uint64, copy=False) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def sentence_key(stem: str) -> int:
    return term_hash(stem) & 0xFFFFFFFF


# --- vectors, 8 bits a dimension --------------------------------------------------------

def quantize(vectors: np.ndarray, scale: float) -> np.ndarray:
    """int8 codes of unit vectors: round(v * scale), clipped. One scale for the whole index,
    so segments merge by copying codes and FAISS scores codes directly (QT_8bit_direct_signed)."""
    return np.clip(np.rint(np.asarray(vectors, dtype=np.float32) * scale), -127, 127).astype(np.int8)


def dequantize(codes: np.ndarray, scale: float) -> np.ndarray:
    return codes.astype(np.float32) / scale


def choose_scale(vectors: np.ndarray) -> float:
    """The index's quantisation scale, from its first vectors: their largest component maps to ~100 of 127."""
    top = float(np.abs(vectors).max()) if len(vectors) else 0.25
    return 100.0 / max(top, 0.25)  # a floor: a first article alone can be unusually tame
