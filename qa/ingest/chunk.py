"""Cut an article into passages: sentence-aware windows with exact character offsets."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..index.text import sentence_spans, title_prefix

CountTokens = Callable[[list[str]], list[int]]


@dataclass(frozen=True)
class Passage:
    start: int
    end: int
    text: str


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """Return (start, end) of each paragraph (runs of text between blank lines), trimmed."""
    spans = []
    for m in re.finditer(r"\S(?:.*?\S)?(?=\s*\n\s*\n|\s*$)", text, re.S):
        spans.append((m.start(), m.end()))
    return spans


def _split_long(text: str, span: tuple[int, int], budget: int, count: CountTokens) -> list[tuple[int, int]]:
    """Cut an over-long sentence at word boundaries into pieces that fit the budget."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text[span[0]:span[1]])]
    sizes = count([text[span[0] + a: span[0] + b] for a, b in words])
    pieces, first, used = [], 0, 0
    for i, n in enumerate(sizes):
        n = max(n - 2, 1)  # count() includes [CLS]/[SEP]
        if used and used + n > budget:
            pieces.append((span[0] + words[first][0], span[0] + words[i - 1][1]))
            first, used = i, 0
        used += n
    pieces.append((span[0] + words[first][0], span[0] + words[-1][1]))
    return pieces


@dataclass(frozen=True)
class ChunkConfig:
    max_tokens: int = 256      # the model's input size; nothing past it is ever seen
    stride_tokens: int = 128   # a new window starts about this far on: each sentence lands in ~2 windows
    max_sentence_tokens: int = 200  # longer "sentences" (lists, run-ons) are cut at word boundaries


def sentence_units(text: str, count: CountTokens, limit: int) -> list[tuple[int, int, int]]:
    """Sentences of the whole text as (start, end, word pieces), over-long ones cut to fit `limit`."""
    spans = [s for ps, pe in paragraph_spans(text) for s in sentence_spans(text, ps, pe)]
    sizes = [n - 2 for n in count([text[a:b] for a, b in spans])] if spans else []
    units = []
    for (a, b), n in zip(spans, sizes):
        if n > limit:
            pieces = _split_long(text, (a, b), limit, count)
            units.extend((x, y, m - 2) for (x, y), m in zip(pieces, count([text[x:y] for x, y in pieces])))
        else:
            units.append((a, b, n))
    return units


def chunk(text: str, title: str, count: CountTokens, cfg: ChunkConfig = ChunkConfig()) -> list[Passage]:
    """Cut `text` into overlapping sentence windows that, with the title prefix, fit the model's input."""
    return split(text, title, count, cfg)[1]


def split(text: str, title: str, count: CountTokens,
          cfg: ChunkConfig = ChunkConfig()) -> tuple[list[tuple[int, int, int]], list[Passage]]:
    """Return the sentences (start, end, word pieces) and the passage windows built from them.

    Windows run across paragraph breaks and start every ~`stride_tokens`, so an
    answer near one window's edge sits well inside the next; search collapses
    overlapping windows so a reader never sees the same words twice.
    """
    prefix_tokens = count([title_prefix(title)])[0] if title else 2
    # 2 spare: pieces counted apart sum a little low. However odd the title's word pieces,
    # the passage keeps at least half the input: the model may cut the end, never shred the text.
    budget = max(cfg.max_tokens - prefix_tokens - 2, cfg.max_tokens // 2)
    units = sentence_units(text, count, min(cfg.max_sentence_tokens, budget))

    passages: list[Passage] = []
    sizes: list[int | None] = []  # word pieces with the prefix, where the sum of the sentences' is exact
    i, last_end = 0, -1
    while i < len(units):
        j, used = i, 0
        while j < len(units) and (used + units[j][2] <= budget or j == i):
            used += units[j][2]
            j += 1
        if j - 1 > last_end:  # a window inside the previous one adds nothing
            s, e = units[i][0], units[j - 1][1]
            passages.append(Passage(s, e, text[s:e]))
            # WordPiece never joins across whitespace, so pieces counted apart
            # sum exactly when only whitespace lies between the sentences.
            exact = all(text[units[m][1]:units[m + 1][0]].isspace() for m in range(i, j - 1))
            sizes.append(prefix_tokens + used if exact else None)
            last_end = j - 1
        if j >= len(units):
            break
        k, skipped = i, 0
        while k < j - 1 and skipped + units[k][2] <= cfg.stride_tokens:
            skipped += units[k][2]
            k += 1
        i = max(k, i + 1)
    return units, _fit(passages, text, title, count, cfg.max_tokens, sizes)


def _fit(passages: list[Passage], text: str, title: str, count: CountTokens, max_tokens: int,
         known: list[int | None] | None = None) -> list[Passage]:
    """Check each passage with the real tokenizer and split any that still overflow, losing nothing."""
    prefix = title_prefix(title)
    known = known or [None] * len(passages)
    unknown = [i for i, n in enumerate(known) if n is None]
    sizes = list(known)
    for i, n in zip(unknown, count([prefix + passages[i].text for i in unknown]) if unknown else []):
        sizes[i] = n
    out = []
    for p, n in zip(passages, sizes):
        if n <= max_tokens or p.end - p.start < 2:
            out.append(p)
            continue
        spans = sentence_spans(text, p.start, p.end)
        if len(spans) > 1:  # cut at the sentence boundary nearest the middle
            cut = min((b for _, b in spans[:-1]), key=lambda b: abs(b - (p.start + p.end) / 2))
        else:
            mid = (p.start + p.end) // 2
            space = text.rfind(" ", p.start + 1, mid + 1)
            cut = space if space > p.start else mid
        halves = []
        for a, b in ((p.start, cut), (cut, p.end)):
            seg = text[a:b]
            a, b = a + len(seg) - len(seg.lstrip()), b - (len(seg) - len(seg.rstrip()))
            if a < b:
                halves.append(Passage(a, b, text[a:b]))
        out.extend(_fit(halves, text, title, count, max_tokens))
    return out
