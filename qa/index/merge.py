"""Merging: fold segments into one, leaving deleted passages out, and the policy that says when.

The policy is Lucene's tiered one in small: segments are grouped by size in
tiers of MERGE_FACTOR; when a tier holds MERGE_FACTOR segments they become one
segment of the next tier, and a segment that is mostly tombstones is
rewritten. The number of segments stays about MERGE_FACTOR per tier, a handful
of tiers for a million passages, and each passage is rewritten once per tier.

One rule of our own on top: exact (flat) segments are cheap to search one by one
but not together, so once they hold more than IVF_ABOVE passages between them they
all become one segment (an IVF one). As tiers alone left them, 65k passages sat in
eight flat segments and a question cost 4.2 ms more than over one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import segment as segments
from .segment import Segment, postings, write_segment
from .terms import sentence_keys

MERGE_FACTOR = 4  # 8 left 12 segments at 65k passages; 4 leaves 5 and halves the lexical side (0.83-0.89 against 1.46-1.95 ms)
SMALLEST_TIER = 1000  # passages: segments below this all count as the first tier
MOSTLY_DELETED = 0.5


def tier(n: int) -> int:
    return int(math.log(max(n, SMALLEST_TIER) / SMALLEST_TIER, MERGE_FACTOR)) if n > SMALLEST_TIER else 0


def plan(entries: list[dict]) -> list[str] | None:
    """Names of segments to merge next, smallest first; None when nothing needs it."""
    for e in entries:
        if e["passages"] and e.get("deleted", 0) > MOSTLY_DELETED * e["passages"]:
            return [e["name"]]
    flat = [e for e in entries if e.get("kind") == "flat" and e["passages"]]
    if len(flat) > 1 and sum(e["passages"] - e.get("deleted", 0) for e in flat) > segments.IVF_ABOVE:
        return [e["name"] for e in sorted(flat, key=lambda e: e["passages"])]
    by_tier: dict[int, list[dict]] = {}
    for e in entries:
        by_tier.setdefault(tier(e["passages"] - e.get("deleted", 0)), []).append(e)
    for t in sorted(by_tier):
        group = sorted(by_tier[t], key=lambda e: e["passages"])
        if len(group) >= MERGE_FACTOR:
            return [e["name"] for e in group[:MERGE_FACTOR]]
    return None


def merge(folder: Path, name: str, inputs: list[tuple[Segment, np.ndarray | None]], meta: dict) -> dict:
    """Write one segment holding the live passages of `inputs` ((segment, live mask or None)); return its entry."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (
        "pids", "p_lo", "p_hi", "p_len", "p_source", "p_day", "p_codes", "s_codes", "s_start", "s_end", "s_hash", "s_terms", "s_nterms",
        "h", "rows", "title", "text")}
    p_base = s_base = 0
    for seg, live in inputs:
        keep = np.ones(len(seg), bool) if live is None else np.asarray(live, bool)
        rows = np.flatnonzero(keep)
        # The sentences still owned by a live passage, renumbered.
        owned = np.zeros(len(seg.s_start) + 1, np.int64)
        np.add.at(owned, seg.p_lo[rows], 1)
        np.add.at(owned, seg.p_hi[rows], -1)
        s_keep = np.cumsum(owned)[:-1] > 0
        s_new = np.cumsum(s_keep) - 1
        srows = np.flatnonzero(s_keep)
        lo, hi = seg.p_lo[rows], seg.p_hi[rows]
        parts["pids"].append(seg.pids[rows])
        first = s_new[np.minimum(lo, len(s_new) - 1)] if len(s_new) else np.zeros(len(rows), np.int64)
        parts["p_lo"].append(np.where(hi > lo, first, 0) + s_base)  # a live passage keeps all its sentences
        parts["p_hi"].append(parts["p_lo"][-1] + (hi - lo))
        parts["p_len"].append(seg.p_len[rows])
        parts["p_source"].append(seg.p_source[rows])
        parts["p_day"].append(seg.p_day[rows])
        parts["p_codes"].append(seg.codes_of(rows).astype(np.int8))
        parts["s_codes"].append(seg.s_codes[srows])
        parts["s_start"].append(seg.s_start[srows])
        parts["s_end"].append(seg.s_end[srows])
        parts["s_hash"].append(seg.s_hash[srows])
        t_lo, t_hi = seg.s_term_ptr[srows], seg.s_term_ptr[srows + 1]
        parts["s_nterms"].append(t_hi - t_lo)
        parts["s_terms"].append(seg.s_terms[_ranges(t_lo, t_hi)])
        # Postings of the live rows, renumbered.
        p_new = (np.cumsum(keep) - 1 + p_base).astype(np.int32)
        alive = keep[seg.t_rows]
        parts["h"].append(np.repeat(seg.t_hash, np.diff(seg.t_ptr))[alive])
        parts["rows"].append(p_new[seg.t_rows[alive]])
        parts["title"].append(seg.t_title[alive])
        parts["text"].append(seg.t_text[alive])
        p_base += len(rows)
        s_base += len(srows)
    dim = int(meta["dim"])

    def take(key: str, dtype) -> np.ndarray:
        """One array of all inputs, its pieces freed at once (a million passages are gigabytes)."""
        pieces = parts.pop(key)
        out = np.concatenate(pieces).astype(dtype, copy=False) if pieces else np.zeros(0, dtype)
        pieces.clear()
        return out

    pids = take("pids", np.int64)
    order = np.argsort(pids, kind="stable")  # inputs' id ranges may interleave
    new_row = np.empty(len(order), np.int32)
    new_row[order] = np.arange(len(order), dtype=np.int32)
    arrays = {"pids": pids[order]}
    del pids
    for key, dtype in (("p_lo", np.int32), ("p_hi", np.int32), ("p_len", np.int32), ("p_source", np.uint64),
                       ("p_day", np.int32)):
        arrays[key] = take(key, dtype)[order]
    arrays["p_codes"] = take("p_codes", np.int8).reshape(-1, dim)[order]
    arrays["s_codes"] = take("s_codes", np.int8).reshape(-1, dim)
    arrays["s_start"] = take("s_start", np.int32)
    arrays["s_end"] = take("s_end", np.int32)
    arrays["s_hash"] = take("s_hash", np.uint64)
    arrays["s_term_ptr"] = np.concatenate([[0], np.cumsum(take("s_nterms", np.int64))]).astype(np.int64)
    arrays["s_terms"] = sentence_keys(take("s_terms", np.uint64))  # 64-bit hashes of older segments become keys too
    rows = new_row[take("rows", np.int32)]
    del new_row
    arrays.update(postings(take("h", np.uint64), rows, take("title", np.uint8), take("text", np.uint16)))
    return write_segment(folder, name, arrays, meta)


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The concatenation of range(lo[i], hi[i]) for all i."""
    sizes = (hi - lo).astype(np.int64)
    firsts = np.cumsum(sizes) - sizes
    return np.repeat(lo.astype(np.int64) - firsts, sizes) + np.arange(int(sizes.sum()), dtype=np.int64)
