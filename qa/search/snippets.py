"""What a reader sees of a passage: its marked sentence, alone or with a sentence either side."""

from __future__ import annotations

import re

from ..index.text import sentence_spans

_LINE_BREAK = re.compile(r"(\s*\n\s*)")


def mark_parts(text: str, highlight: list[dict]) -> list[tuple[str, bool]]:
    """Cut `text` into (piece, marked) parts from the API's highlight offsets (merged, clipped, sorted)."""
    spans = sorted((max(0, int(h["start"])), min(len(text), int(h["end"]))) for h in highlight or [])
    merged: list[list[int]] = []
    for s, e in spans:
        if s >= e:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    parts, pos = [], 0
    for s, e in merged:
        if s > pos:
            parts.append((text[pos:s], False))
        parts.append((text[s:e], True))
        pos = e
    if pos < len(text) or not parts:
        parts.append((text[pos:], False))
    # A marked span that crosses a paragraph break is marked paragraph by paragraph, not across the gap.
    out = []
    for piece, marked in parts:
        if not marked:
            out.append((piece, False))
            continue
        for i, bit in enumerate(_LINE_BREAK.split(piece)):
            if bit:
                out.append((bit, marked and i % 2 == 0))
    return out


def snippet(text: str, highlight: list[dict]) -> tuple[list[tuple[str, bool]], bool]:
    """The marked sentence with one sentence either side, as marked parts; and whether it is shorter than `text`."""
    if not highlight:
        return mark_parts(text, highlight), False
    h = highlight[0]
    spans = sentence_spans(text)
    first = next((i for i, (a, b) in enumerate(spans) if b > h["start"]), None)
    last = next((i for i in range(len(spans) - 1, -1, -1) if spans[i][0] < h["end"]), None)
    if first is None or last is None:
        return mark_parts(text, highlight), False
    lo, hi = spans[max(0, first - 1)][0], spans[min(len(spans) - 1, last + 1)][1]
    if lo == 0 and hi >= len(text.rstrip()):
        return mark_parts(text, highlight), False
    shifted = [{"start": h["start"] - lo, "end": h["end"] - lo}]
    parts = mark_parts(text[lo:hi], shifted)
    if lo > 0:
        parts.insert(0, ("… ", False))
    if hi < len(text.rstrip()):
        parts.append((" …", False))
    return parts, True
