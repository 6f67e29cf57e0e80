"""Wire copies: a compact signature of an article's whole text, to tell a republished story from another.

A copy that adds a dateline above and a credit below shifts every passage window, so no passage of it
is nearly the same as one of its original, though the articles are. A MinHash of the article's word
5-shingles (64 values, 256 bytes, made once at ingest) estimates how much two whole texts share.
"""

from __future__ import annotations

import hashlib
import re
import zlib

import numpy as np

SHINGLE = 5  # words: long enough that two different stories share few, short enough that an edit costs few
HASHES = 64  # the estimate's standard error is at most 1/(2*sqrt(64)) = 0.06
COPY_AT = 0.5  # estimated Jaccard of the two texts' shingles at which they are one story
_WORD = re.compile(r"\w+")
_MIX = np.uint64(0x100000001B3)
# Fixed forever: signatures are stored, and only signatures made with the same constants compare.
_AB = np.frombuffer(hashlib.shake_128(b"qa wire-copy minhash 1").digest(HASHES * 16), "<u8").reshape(2, HASHES)
_A, _B = _AB[0] | np.uint64(1), _AB[1]
_CHUNK = 4096  # shingles hashed at once: bounds the memory a long article takes


def _shingles(text: str) -> np.ndarray:
    """The distinct hashes of `text`'s lower-cased word 5-shingles (the whole text when it is shorter)."""
    words = np.fromiter((zlib.crc32(w.encode()) for w in _WORD.findall(text.lower())), np.uint64)
    if not len(words):
        return words
    n = max(len(words) - SHINGLE + 1, 1)
    out = np.zeros(n, np.uint64)
    for j in range(min(SHINGLE, len(words))):
        out = out * _MIX + words[j:j + n]  # wraps modulo 2**64, as a hash may
    return np.unique(out)


def signature(text: str) -> bytes | None:
    """A MinHash of the text's word shingles, as stored beside the article; None for a text without words."""
    sh = _shingles(text)
    if not len(sh):
        return None
    sig = np.full(HASHES, np.iinfo(np.uint32).max, np.uint32)
    for i in range(0, len(sh), _CHUNK):
        x = sh[i:i + _CHUNK, None]
        np.minimum(sig, ((x * _A + _B) >> np.uint64(32)).astype(np.uint32).min(axis=0), out=sig)
    return sig.astype("<u4").tobytes()


def values(stored: bytes | None) -> np.ndarray | None:
    """A stored signature's values to compare (None when there is none, or one made another way)."""
    return np.frombuffer(stored, "<u4") if stored and len(stored) == 4 * HASHES else None


def similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """The estimated Jaccard similarity of two signatures' texts (0 when either is missing)."""
    return 0.0 if a is None or b is None else np.count_nonzero(a == b) / HASHES


def phrases(text: str) -> set[tuple[str, ...]]:
    """A passage's word 5-shingles, to compare passages of copies in one process (punctuation kept: the
    copies' is the same, and splitting on spaces alone is 5x faster than a regex)."""
    words = text.lower().split()
    return set(zip(*(words[i:] for i in range(SHINGLE))))
