"""Cut an article into passages: sentence-aware windows with exact character offsets."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import blingfire

CountTokens = Callable[[list[str]], list[int]]


@dataclass(frozen=True)
class Passage:
    start: int
    end: int
    text: str


def title_prefix(title: str) -> str:
    """Return the text put before a passage for the model, so each passage knows its article."""
    return f"{title}: " if title else ""


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """Return (start, end) of each paragraph (runs of text between blank lines), trimmed."""
    spans = []
    for m in re.finditer(r"\S(?:.*?\S)?(?=\s*\n\s*\n|\s*$)", text, re.S):
        spans.append((m.start(), m.end()))
    return spans


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Return (start, end) of each sentence in text[start:end], offsets into `text`."""
    end = len(text) if end is None else end
    segment = text[start:end]
    if not segment.strip():
        return []
    # The splitter may normalise whitespace, so find each sentence back in the
    # original instead of trusting its offsets.
    sentences, _ = blingfire.text_to_sentences_and_offsets(segment)
    spans, cursor = [], 0
    for sent in sentences.split("\n") if sentences else []:
        sent = sent.strip()
        if not sent:
            continue
        i = segment.find(sent, cursor)
        if i < 0:  # whitespace changed inside: fall back to the rest of the segment
            break
        gap = segment[cursor:i]
        i = cursor + len(gap) - len(gap.lstrip())  # keep anything the splitter dropped
        spans.append((start + i, start + segment.find(sent, i) + len(sent)))
        cursor = spans[-1][1] - start
    rest = segment[cursor:]
    if rest.strip():
        lead = len(rest) - len(rest.lstrip())
        spans.append((start + cursor + lead, start + len(segment.rstrip())))
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
    target_tokens: int = 192   # a window closes once it would pass this
    min_tokens: int = 64       # a shorter paragraph is merged with the next one
    overlap: int = 1           # sentences repeated between windows of one paragraph


def chunk(text: str, title: str, count: CountTokens, cfg: ChunkConfig = ChunkConfig()) -> list[Passage]:
    """Split `text` into passages that, with the title prefix, fit the model's input."""
    prefix_tokens = count([title_prefix(title)])[0] if title else 2
    budget = max(cfg.max_tokens - prefix_tokens - 2, 16)
    target = min(cfg.target_tokens, budget)

    units: list[tuple[int, int, int, int]] = []  # start, end, tokens, paragraph no.
    for p, (ps, pe) in enumerate(paragraph_spans(text)):
        spans = sentence_spans(text, ps, pe)
        sizes = [n - 2 for n in count([text[a:b] for a, b in spans])] if spans else []
        for (a, b), n in zip(spans, sizes):
            if n > budget:
                pieces = _split_long(text, (a, b), budget, count)
                psizes = [m - 2 for m in count([text[x:y] for x, y in pieces])]
                units.extend((x, y, m, p) for (x, y), m in zip(pieces, psizes))
            else:
                units.append((a, b, n, p))

    passages: list[Passage] = []
    window: list[tuple[int, int, int, int]] = []

    def emit() -> None:
        s, e = window[0][0], window[-1][1]
        passages.append(Passage(s, e, text[s:e]))

    def size(w) -> int:
        return sum(u[2] for u in w) + max(len(w) - 1, 0)

    for unit in units:
        if window:
            new_paragraph = unit[3] != window[-1][3]
            if new_paragraph and size(window) >= cfg.min_tokens:
                emit()
                window = []
            elif size(window + [unit]) > (budget if new_paragraph else target):
                emit()
                keep = window[-cfg.overlap:] if cfg.overlap and not new_paragraph else []
                while keep and size(keep + [unit]) > target:
                    keep = keep[1:]
                window = keep
        window.append(unit)
    if window:
        emit()
    return _fit(passages, text, title, count, cfg.max_tokens)


def _fit(passages: list[Passage], text: str, title: str, count: CountTokens, max_tokens: int) -> list[Passage]:
    """Check each passage with the real tokenizer and split any that still overflow, losing nothing."""
    prefix = title_prefix(title)
    sizes = count([prefix + p.text for p in passages]) if passages else []
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
