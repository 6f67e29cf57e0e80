"""News over time: which article's answer a question wants, by when the articles were published.

An archive holds every version of a fact: the mayor elected in 2019 and the one who took office in 2023.
Words alone rank them by how well each repeats the question, and the older article often repeats it
better. Here, after the answer model has read the best passages:

- `reference(question)` says what time the question is about: the present ("Who is the mayor of
  Lowmoor?", "What does a ticket cost now?"), a time it names ("in 2019", "last March", "before 2020",
  "three years ago"), the past without a time ("Who was the first mayor?", "What did she say?"), or a time
  it names that no calendar places ("before the election");
- each article among the best passages gets its own answer: its likeliest sentence, and whether the
  answer gate keeps that sentence when the article is read alone (`options`);
- `prefer` then picks: for the present, the newest dated article that answers (relevance still decides
  between articles within a day of it); for a named time, the best-answering article of that time, or
  failing one, the newest before it (the fact as it stood then); otherwise the answer model's own choice.
  An undated article is neither favoured nor dropped: when the model's own choice is undated it stays;
- `newer` finds a newer article among them that answers differently (a name or number the chosen answer
  lacks), which the answer card and `answer.newer` point to.

The model's own choice must be one the gate keeps for time to play a part, so time never turns "no
answer" into an answer. An article counts as answering only if its answer's probability under the
sentence model is at least FLOOR times the model's choice's, so a newer article about something else
that happens to pass the gate alone does not take over. FLOOR was set on bench/time_pairs.py's
articles (facts that change: mayors, chief executives, prices, coaches), never on the checks'
collections.

Only `options` knows the answer model (qa/search/answer.py): a different model that scores sentences
and keeps or drops an answer needs only its own `options`.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np

FLOOR = 0.0  # an article answers when its answer is at least this likely, relative to the model's choice
POOL = 10  # passages (one an article past the answer model's) whose articles time reads
COMMON = 0.2  # ... its passages hold this share of the question's words besides names (by idf)
CONFIDENT = 0.6  # ... and the gate keeps its answer, or gives it at least this confidence
SAME_TIME = timedelta(hours=24)  # articles this close to the newest are "as new": relevance decides among them

_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTHS.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m})
_MONTHS["sept"] = 9
_MONTH = r"(january|february|march|april|may|june|july|august|september|october|november|december|" \
         r"jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)\.?"
_YEAR = r"(1[89]\d\d|20\d\d)"
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_COUNT = r"(\d{1,3}|" + "|".join(_NUMBER_WORDS) + r"|a|an)"

# Named times, most specific first; each match gives (first day, last day) of the time it names.
_ISO_DAY = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_DAY_MONTH_YEAR = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r",?\s+" + _YEAR + r"\b", re.I)
_MONTH_DAY_YEAR = re.compile(r"\b" + _MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+" + _YEAR + r"\b", re.I)
_MONTH_YEAR = re.compile(r"\b" + _MONTH + r",?\s+(?:of\s+)?" + _YEAR + r"\b", re.I)
_DECADE = re.compile(r"\b(?:the\s+)?(1[89]\d0|20\d0)'?s\b", re.I)
# A year, unless it counts something ("2000 workers"): a plural word right after it.
_YEAR_ALONE = re.compile(r"(?<![\d,.$£€])\b" + _YEAR + r"\b(?!\s*(?:[,.]\d|%|[a-z]+s\b))", re.I)
_LAST_MONTH_NAME = re.compile(r"\b(last|this|past)\s+" + _MONTH + r"\b", re.I)
_IN_MONTH = re.compile(r"\b(?:in|during|since|before|after|until|by)\s+(?:early\s+|late\s+|mid-?)?" + _MONTH
                       + r"(?!\s*\d)\b", re.I)
_RELATIVE = re.compile(r"\b(last|this|past|previous)\s+(year|month|week)\b|\b(yesterday)\b", re.I)
_AGO = re.compile(r"\b" + _COUNT + r"\s+(year|month|week|day)s?\s+ago\b", re.I)
# Open ranges: "before 2020", "since March 2021", "after 2019".
_BEFORE = re.compile(r"\b(before|until|till|prior to|by)\s+(?:the\s+)?(?:end\s+of\s+|start\s+of\s+)?$", re.I)
_AFTER = re.compile(r"\b(after|since|from)\s+(?:the\s+)?$", re.I)
# A time no calendar places: "before the election", "after the merger", "during the war".
_EVENT = re.compile(r"\b(before|after|during|since|until|prior to)\s+(the|his|her|their|its|a|an)\s+[a-z][\w-]*", re.I)

# Which time a question's verbs are in.
_PRESENT_WORDS = re.compile(r"\b(now|currently|current|today|presently|at present|these days|at the moment|"
                            r"latest|still|nowadays|right now|new|newest|incumbent|sitting)\b", re.I)
_PAST_WORDS = re.compile(r"\b(was|were|did|had|used to|former|formerly|previous|previously|originally|"
                         r"first|once|ex-|then)\b", re.I)
_PAST_VERB = re.compile(r"\b(became|won|took|said|got|made|went|came|left|ran|led|lost|beat|bought|sold|held|"
                        r"gave|began|chose|fell|rose|met|paid|told|thought|found|saw|knew|wrote|spoke|broke|"
                        r"[a-z]{2,}ed)\b", re.I)
_NOT_PAST = {"need", "needed", "speed", "feed", "seed", "breed", "bed", "red", "shed", "hundred", "indeed",
             "succeed", "exceed", "proceed", "weed", "united", "limited", "based", "related", "expected",
             "called", "named", "listed", "located", "owned", "used", "supposed", "allowed", "required",
             "interested", "involved", "concerned", "aged", "advanced", "elected", "appointed", "scheduled",
             "planned", "reported", "estimated", "considered", "known", "added", "priced", "ranked", "rated"}


@dataclass(frozen=True)
class TimeRef:
    """What time a question asks about: `kind` is "present", "named" (a calendar time: `first`/`last`,
    inclusive, either open), "past" (the past, no time named) or "unplaced" (a time named by an event)."""

    kind: str
    first: date | None = None
    last: date | None = None
    said: str = ""  # the words that named it

    def holds(self, day: date | None) -> bool:
        return day is not None and (self.first is None or day >= self.first) and (self.last is None or day <= self.last)


def _month_range(year: int, month: int) -> tuple[date, date]:
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def _count(word: str) -> int:
    word = word.lower()
    return 1 if word in ("a", "an") else _NUMBER_WORDS[word] if word in _NUMBER_WORDS else int(word)


def _back(day: date, months: int) -> date:
    y, m = divmod(day.year * 12 + day.month - 1 - months, 12)
    return date(y, m + 1, 1)


def _named(q: str, today: date) -> TimeRef | None:
    """The calendar time a question names, if any."""
    def opened(m: re.Match, first: date, last: date) -> TimeRef:
        head = q[:m.start()]
        if _BEFORE.search(head):  # "before 2020": up to the day before it starts ("by 2020": to its end)
            word = _BEFORE.search(head).group(1).lower()
            return TimeRef("named", None, last if word == "by" else first - timedelta(days=1), m.group(0))
        if _AFTER.search(head):  # "since 2020" from its start; "after 2020" from its end
            word = _AFTER.search(head).group(1).lower()
            return TimeRef("named", last + timedelta(days=1) if word == "after" else first, None, m.group(0))
        return TimeRef("named", first, last, m.group(0))

    for pattern, make in (
            (_ISO_DAY, lambda m: (int(m[1]), int(m[2]), int(m[3]))),
            (_DAY_MONTH_YEAR, lambda m: (int(m[3]), _MONTHS[m[2].lower()], int(m[1]))),
            (_MONTH_DAY_YEAR, lambda m: (int(m[3]), _MONTHS[m[1].lower()], int(m[2])))):
        for m in pattern.finditer(q):
            try:
                day = date(*make(m))
            except ValueError:
                continue
            return opened(m, day, day)
    m = _MONTH_YEAR.search(q)
    if m:
        return opened(m, *_month_range(int(m[2]), _MONTHS[m[1].lower()]))
    m = _DECADE.search(q)
    if m:
        start = int(m[1])
        return opened(m, date(start, 1, 1), date(start + 9, 12, 31))
    m = _YEAR_ALONE.search(q)
    if m:
        year = int(m[1])
        return opened(m, date(year, 1, 1), date(year, 12, 31))
    m = _AGO.search(q)
    if m:
        n, unit = _count(m[1]), m[2].lower()
        if unit == "year":
            return TimeRef("named", date(today.year - n, 1, 1), date(today.year - n, 12, 31), m.group(0))
        if unit == "month":
            first = _back(today, n)
            return TimeRef("named", *_month_range(first.year, first.month), m.group(0))
        days = n * (7 if unit == "week" else 1)
        return TimeRef("named", today - timedelta(days=days + (3 if unit == "week" else 0)),
                       today - timedelta(days=max(days - (3 if unit == "week" else 0), 0)), m.group(0))
    m = _LAST_MONTH_NAME.search(q) or _IN_MONTH.search(q)
    if m:
        month = _MONTHS[(m[2] if m.re is _LAST_MONTH_NAME else m[1]).lower()]
        latest_ok = today.month - 1 if (m.re is _LAST_MONTH_NAME and m[1].lower() != "this") else today.month
        year = today.year if month <= latest_ok else today.year - 1
        return opened(m, *_month_range(year, month))
    m = _RELATIVE.search(q)
    if m:
        if m[3]:  # yesterday
            day = today - timedelta(days=1)
            return TimeRef("named", day, day, m.group(0))
        which, unit = m[1].lower(), m[2].lower()
        back = 0 if which == "this" else 1
        if unit == "year":
            return TimeRef("named", date(today.year - back, 1, 1), date(today.year - back, 12, 31), m.group(0))
        if unit == "month":
            first = _back(today, back)
            return TimeRef("named", *_month_range(first.year, first.month), m.group(0))
        monday = today - timedelta(days=today.weekday()) - timedelta(weeks=back)
        return TimeRef("named", monday, monday + timedelta(days=6), m.group(0))
    return None


def reference(question: str, today: date | None = None) -> TimeRef:
    """What time `question` asks about (relative times count back from `today`, by default today in UTC)."""
    today = today or datetime.now(timezone.utc).date()
    named = _named(question, today)
    if named is not None:
        return named
    m = _EVENT.search(question)
    if m:
        return TimeRef("unplaced", said=m.group(0))
    if _PRESENT_WORDS.search(question):
        return TimeRef("present")
    past = [w for w in _PAST_WORDS.findall(question)]
    verbs = [w for w in _PAST_VERB.findall(question) if w.lower() not in _NOT_PAST]
    if past or verbs:
        return TimeRef("past")
    return TimeRef("present")


# --- which article's answer ---------------------------------------------------------------------------

@dataclass
class Option:
    """One article's answer among the best passages: its sentence (whatever the answer model's candidate
    is), the passage row it stands in, and what the model says of it."""

    sentence: Any
    row: Any  # the passage (qa.index.PassageRow): article_id, published, title ...
    score: float  # relevance: the answer model's probability for this sentence among all the candidates
    answers: bool  # the gate keeps it when the article is read alone
    confidence: float
    text: str  # the answer as it would be shown
    at: datetime | None = None  # published, as an instant in UTC
    day: date | None = None  # published, the article's own calendar date
    gate: bool = False  # the gate keeps it, the article read alone
    names: bool = False  # the article names the question's subject: every name the question holds
    common: float = 0.0  # the share of the question's other words (by idf) its passages and title hold
    span: tuple[int, int] = (0, 0)  # the answer's article offsets


def answers_alone(o: Option) -> bool:
    """Whether an article answers the question by itself: it names the question's subject, holds COMMON of
    its other words, and its answer is one the gate keeps or gives with CONFIDENT confidence."""
    return o.names and o.common >= COMMON and (o.gate or o.confidence >= CONFIDENT)


@functools.lru_cache(maxsize=4096)
def _instant(published: str | None) -> tuple[datetime | None, date | None]:
    from .searcher import published_at  # the one reading of `published` the searcher sorts by

    at = published_at(published)
    day = None
    if at is not None:
        try:
            day = date.fromisoformat(published[:10])
        except ValueError:
            day = at.date()
    return at, day


def next_passages(index, ranked: list[tuple[int, float]], groups, n: int | None = None) -> list[tuple]:
    """The best-ranked passages after `groups`, one for each article not among them (at most `n`, by
    default POOL - len(groups)), as (row, score, []): the newer article often repeats the question's words
    less and ranks just below the passages the answer model reads. Only rows are read, one query."""
    n = POOL - len(groups) if n is None else n
    taken = {r.id for row, _, copies in groups for r in (row, *copies)}
    articles = {r.article_id for row, _, copies in groups for r in (row, *copies)}
    out: list[tuple] = []
    pos = 0
    while len(out) < n and pos < len(ranked):
        page = [(pid, score) for pid, score in ranked[pos:pos + 4 * n] if pid not in taken]
        pos += 4 * n
        rows = index.passages([pid for pid, _ in page])
        for pid, score in page:
            row = rows.get(pid)
            if row is not None and row.article_id not in articles:
                articles.add(row.article_id)
                out.append((row, score, []))
                if len(out) == n:
                    break
    return out


def worth_reading(rows) -> bool:
    """Whether time can change anything here: two dated articles among the passages."""
    dated = {r.article_id for r in rows if r.published and _instant(r.published)[0] is not None}
    return len(dated) >= 2


def options(question, candidates: list, groups, whole: dict[int, float], passages: int,
            ref: TimeRef | None = None, more=(), sentences_of=None, chosen=None) -> list[Option]:
    """Each article's own answer among the answer model's candidates (qa/search/answer.py's sentences):
    its likeliest sentence, and whether it answers: the gate keeps that sentence with the article read
    alone, and the article's passages (with its title) name the question's subject (every name the
    question holds) and hold COVER of the question's idf mass (the words of a named time left out: the
    newer article does not repeat "2019").

    `more`: passages ranked after `groups` (read only here: the newer article often repeats the question's
    words less, and ranks lower), their sentences from `sentences_of(pid)`, scored on the same scale as
    `chosen`, the model's choice among the candidates."""
    from . import answer as answers
    when_said = _stem_keys(ref.said) if ref is not None and ref.said else frozenset()
    names = question.named - when_said
    common_words = (question.common & set(question.hashed)) - when_said - names
    common_mass = sum(question.hashed[h] for h in common_words)
    rows = {g[0].id: g[0] for g in groups}
    by_article: dict[str, list] = {}
    for c in candidates:
        by_article.setdefault(rows[c.pid].article_id, []).append(c)
    if more and sentences_of is not None and chosen is not None:
        z_chosen = float(chosen.features @ answers.SENTENCE_W)
        for r, (row, score, _) in enumerate(more, len(groups) + 1):
            if names and not names <= _stem_keys(row.title) | _stem_keys(row.text):
                continue  # it does not name the question's subject: it cannot answer (see below)
            rows[row.id] = row
            extra = answers.passage_sentences(question, row.id, r, score, row.title or "", row.start, row.text,
                                              *sentences_of(row.id))
            for c in extra:  # its probability had it been among the candidates (the softmax's scale)
                c.p = chosen.p * float(np.exp(min(float(c.features @ answers.SENTENCE_W) - z_chosen, 50.0)))
                by_article.setdefault(row.article_id, []).append(c)
    out = []
    for mine in by_article.values():
        z = np.vstack([s.features for s in mine]) @ answers.SENTENCE_W
        p = np.exp(z - z.max())
        p /= p.sum()
        best = mine[int(np.argmax(p))]
        pids = list(dict.fromkeys(s.pid for s in mine))
        cosine = max(whole.get(pid, 0.0) for pid in pids)
        cover = max(answers.coverage(question, [s for s in mine if s.pid == pid]) for pid in pids)
        gives, confidence = answers.judge(answers.question_features(best, p, cosine, cover, passages))
        row = rows[best.pid]
        held = set().union(*(s.stems for s in mine)) | _stem_keys(row.title)
        common = sum(question.hashed[h] for h in common_words & held) / common_mass if common_mass else 1.0
        start, end = answers.span_of(best)
        at, day = _instant(row.published)
        o = Option(best, row, best.p, False, confidence, row.text[start - row.start:end - row.start], at, day,
                   gives, names <= held, common, (start, end))
        o.answers = answers_alone(o)
        out.append(o)
    return out


@functools.lru_cache(maxsize=1024)  # titles and passages: a few MB at most
def _stem_keys(text: str | None) -> frozenset[int]:
    """The stems of a text (a title, a passage, the question's time words) as the index keeps a sentence's."""
    from ..index.terms import sentence_key, stems as index_stems

    return frozenset(sentence_key(x) for x in index_stems(text or ""))


def answering(opts: list[Option], chosen: Option) -> list[Option]:
    """The dated options that answer: kept by the gate read alone, and at least FLOOR times as likely as
    the answer model's own choice `chosen`."""
    floor = FLOOR * chosen.score
    return [o for o in opts if (o is chosen or (o.answers and o.score >= floor)) and o.at is not None]


def prefer(ref: TimeRef, fit: list[Option], chosen: Option) -> Option:
    """The option whose answer the question wants among `fit` (dated, answering), given the answer model's
    own choice `chosen`."""
    if ref.kind == "present":
        if chosen.at is None or not fit:  # an undated choice stays: it may be the newest
            return chosen
        newest = max(o.at for o in fit)
        return max((o for o in fit if newest - o.at < SAME_TIME), key=lambda o: o.score)
    if ref.kind == "named":
        inside = [o for o in fit if ref.holds(o.day)]
        if inside:
            return max(inside, key=lambda o: o.score)
        if chosen.at is None or ref.first is None:
            return chosen
        before = [o for o in fit if o.day < ref.first]  # the fact as it stood when that time began
        if not before:
            return chosen
        latest = max(o.at for o in before)
        return max((o for o in before if latest - o.at < SAME_TIME), key=lambda o: o.score)
    return chosen


_FACT = re.compile(r"[A-Z][\w'’-]*|\$?\d[\d,.]*%?|£\d[\d,.]*|€\d[\d,.]*")
_CALENDAR_WORDS = {w.lower() for w in [*calendar.month_name[1:], *calendar.month_abbr[1:], *calendar.day_name,
                                       "Sept", "The", "A", "An", "He", "She", "It", "They", "In", "On", "At", "But",
                                       "And", "Mr", "Mrs", "Ms", "Dr", "This", "That", "Its", "His", "Her"]}


def facts(text: str, question: str = "") -> set[str]:
    """The names and numbers an answer states (less the question's own words, and calendar words)."""
    asked = {w.lower() for w in re.findall(r"[\w'’-]+", question)}
    out = set()
    for tok in _FACT.findall(text):
        t = tok.lower().rstrip(".,").replace("’", "'").removesuffix("'s")
        if t and t not in asked and t not in _CALENDAR_WORDS and not re.fullmatch(r"(1[89]|20)\d\d", t):
            out.add(t)
    return out


def newer(question: str, fit: list[Option], chosen: Option) -> Option | None:
    """The newest of `fit` (dated, answering) published after `chosen` that answers differently: it states
    a name or number the chosen answer does not."""
    if chosen.at is None:
        return None
    mine = facts(chosen.text, question)
    later = [o for o in fit if o.at > chosen.at and o.row.article_id != chosen.row.article_id
             and facts(o.text, question) - mine]
    return max(later, key=lambda o: (o.at, o.score), default=None)


@dataclass
class ByTime:
    """The answer time picked (the model's own when time plays no part) and a newer one that differs."""

    sentence: Any
    row: Any
    confidence: float
    span: tuple[int, int] | None = None  # the answer's article offsets, when time picked another
    newer: Option | None = None
    ref: TimeRef | None = None


def by_time(q: str, question, candidates: list, best, row, confidence: float, groups, whole: dict[int, float],
            passages: int, more=(), sentences_of=None, today: date | None = None) -> ByTime:
    """Given the answer model's choice (`best` in `row`, kept by the gate with `confidence`), the answer the
    question's time wants among the articles of `groups` (the passages the answer was chosen from) and of
    `more` (passages of the next articles, their sentences from `sentences_of`; a callable giving them is
    called only for a question about the present or a named time)."""
    ref = reference(q, today)
    out = ByTime(best, row, confidence, None, None, ref)
    if callable(more):  # only where reading further can change the answer (an undated choice stays)
        more = more() if ref.kind == "named" or (ref.kind == "present" and _instant(row.published)[0]) else ()
    if not worth_reading([g[0] for g in [*groups, *more]]):
        return out
    opts = options(question, candidates, groups, whole, passages, ref, more, sentences_of, best)
    mine = next((o for o in opts if o.row.article_id == row.article_id), None)
    if mine is None:
        return out
    if mine.sentence is not best:  # a reader chose another sentence of the article than the sentence model
        mine.sentence, mine.row, mine.text = best, row, best.text
    mine.answers, mine.confidence = True, confidence  # the gate kept it over all the candidates
    fit = answering(opts, mine)
    pick = prefer(ref, fit, mine)
    out.newer = newer(q, fit, pick)
    if pick is not mine:
        out.sentence, out.row, out.confidence, out.span = pick.sentence, pick.row, pick.confidence, pick.span
    return out


def as_of(published: str | None) -> str | None:
    """The article's own calendar date as the answer card and `qa ask` show it: "8 December 2024"."""
    if not published:
        return None
    try:
        day = date.fromisoformat(published[:10])
    except ValueError:
        return None
    return f"{day.day} {calendar.month_name[day.month]} {day.year}"


__all__ = ["ByTime", "Option", "TimeRef", "answering", "as_of", "by_time", "facts", "newer", "options", "prefer", "reference",
           "worth_reading", "FLOOR", "SAME_TIME"]
