"""How every stage cuts text: sentences, words and their stems, and a passage's model input.

The index stores sentence offsets and stems; whoever reads them (the chunker that
made them, the searcher that marks and snippets them) must cut text the same way,
so the rules live here, below every stage that uses them.
"""

from __future__ import annotations

import re
import threading

import blingfire
import Stemmer  # PyStemmer: the Snowball stemmers in C

WORD = re.compile(r"\w+", re.UNICODE)
_local = threading.local()


def stemmer() -> Stemmer.Stemmer:
    """This thread's porter stemmer (the algorithm FTS5's porter tokenizer uses; a Stemmer is not thread-safe)."""
    st = getattr(_local, "stemmer", None)
    if st is None:
        st = _local.stemmer = Stemmer.Stemmer("porter")
    return st


PREFIX_TITLE_CHARS = 160  # a headline; past this a "title" would crowd the passage out of the model's input


def title_prefix(title: str) -> str:
    """Return the text put before a passage for the model, so each passage knows its article."""
    if len(title) > PREFIX_TITLE_CHARS:
        title = title[:PREFIX_TITLE_CHARS].rsplit(" ", 1)[0]
    return f"{title}: " if title else ""


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Return (start, end) of each sentence in text[start:end], offsets into `text`."""
    end = len(text) if end is None else end
    segment = text[start:end]
    if not segment.strip():
        return []
    # The splitter may normalise whitespace, so find each sentence back in the
    # original instead of asking for its offsets (which it maps back from UTF-8
    # in a Python loop over every byte: 3.5x slower than the split itself).
    sentences = blingfire.text_to_sentences(segment)
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
