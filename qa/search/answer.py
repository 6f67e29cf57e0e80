"""The answer: the one or two sentences of the best passages that answer the question, or none.

Three small logistic models, fitted on squad-dev by `bench/tune_answers.py` (split by
article: the weights below come from one half, and the figures in docs/quality.md from the
other):

- SENTENCE ranks every sentence of the best few passages by its own evidence (cosine
  with the question, the share of the question's idf mass it holds, the same for its
  neighbours, whether it holds what the wh-word asks for, the words it adds to the
  question) and its passage's place in the ranking;
- GATE says whether the collection answers at all, from absolute evidence only (cosines
  and the share of the question's rare words that the best passage holds, never scores
  divided by the best candidate), and the collection's size: below GATE_AT the answer is
  null. It and CONFIDENCE are fitted on the articles alone and hidden among 7,000 and
  65,000 passages of news, since a big, varied collection nearly answers far more of the
  questions it does not answer;
- CONFIDENCE is the probability that the chosen text holds a right answer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..index.terms import STOPWORDS, sentence_key, stems as index_stems

# What the wh-word asks for, and how a sentence shows it has one.
_ASKS = [
    ("number", re.compile(r"\bhow (many|much|long|old|far|big|large|tall|high|often|fast|heavy|deep|wide|few)\b|"
                          r"\b(what|which) (percentage|percent|number|amount|proportion|share|size|population|age|"
                          r"score|rate|total|sum|price|cost)\b", re.I)),
    ("date", re.compile(r"\bwhen\b|\b(what|which|in what) (year|date|day|month|decade|century|time|period|era|season)s?\b",
                        re.I)),
    ("name", re.compile(r"\bwho(m|se)?\b|\bwhere\b|\b(what|which) (person|man|woman|company|team|club|city|country|"
                        r"party|group|organi[sz]ation|firm|brand|place|town|state|nation|band|newspaper)\b", re.I)),
]
_NUMBER = re.compile(r"\d[\d,.]*|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
                     r"fifty|sixty|seventy|eighty|ninety|hundred|thousand|million|billion|trillion|dozen|"
                     r"(?<!first )(?<!second )(?<!third )(?<!fourth )(?<!last )(?<!final )(?<!next )"
                     r"(half|quarter)|once|twice)\b", re.I)  # "the second half of 2004" is a time, not a count
_DATE = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})s?\b|\b(January|February|March|April|May|June|July|August|September|"
                   r"October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Monday|Tuesday|"
                   r"Wednesday|Thursday|Friday|Saturday|Sunday|yesterday|today|tomorrow|tonight|century|"
                   r"decade|ago|spring|summer|autumn|winter)\b", re.I)
_YEAR = re.compile(r"(1[5-9]\d\d|20\d\d)s?")  # a year is not what "how many" asks for
_CAPITAL = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][\w'-]+")
_WORD = re.compile(r"[^\W_]+")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][\w'-]+|\b\d[\d,.]*\b")  # names and numbers past a sentence's start

# Fitted by bench/tune_answers.py on half of squad-dev's articles (see docs/quality.md).
SENTENCE_FEATURES = ("bias", "cosine", "held", "held_before", "held_after", "passage_score", "passage_rank",
                     "asked_held", "asked_missing", "new_words", "length", "pairs_held", "held_with_before",
                     "new_names", "cosine_with_before", "cosine_with_after", "held_beyond_title",
                     "centrality", "common_held", "names_held")
SENTENCE_W = np.array([-0.000, 7.108, 0.192, -0.717, 0.161, 4.173, 0.975, 1.050, -1.050, -0.251, 0.257,
                       2.049, 3.923, 0.206, 4.434, 2.376, 1.661, -1.436, 1.051, -0.561])
# The gate also reads some of the chosen sentence's own features: in a big, varied collection a
# question it does not answer often finds a sentence with its names but not its other words.
_GATE_FROM_SENTENCE = ("common_held", "names_held", "asked_held", "asked_missing", "held_beyond_title", "pairs_held",
                       "held_with_before")
GATE_FEATURES = ("bias", "chosen", "cosine", "passage_cosine", "coverage", "held", "margin", *_GATE_FROM_SENTENCE,
                 # and how big the collection is (log10 of its passages): the more there is to search,
                 # the more nearly a question it does not answer finds its words
                 "collection_size")
_GATE_COLUMNS = [SENTENCE_FEATURES.index(f) for f in _GATE_FROM_SENTENCE]
GATE_W = np.array([-11.422, 2.993, 8.943, 9.029, 2.976, 0.372, -0.337,
                   -0.744, -0.052, -0.105, -0.279, 0.398, 2.213, 4.408, -0.713])
GATE_AT = 0.391  # keeps 98% of the fitted half's answers whose top passage is right, at three sizes
CONFIDENCE_W = np.array([-3.975, 4.533, 2.903, 0.550, -0.213, -1.101, -0.253,
                         0.472, -0.061, 0.098, -0.152, -0.166, 1.376, 1.323, -0.062])
MAX_PAIR_WORDS = 80  # an answer of two sentences stays this short (more is a paragraph)
PAIR_AT = 0.05  # a neighbour joins the answer when the sentence model rates it this close to the best
SHORT_PAIR_WORDS = 45  # or whenever the two together are this short (news sentences often are)


def unmatched(question: str, texts: list[str]) -> float:
    """How many of the question's names and numbers (past its first word) none of `texts` holds: a
    question written to look answerable often swaps in a name or a number its passage lacks. Years
    are not counted: "in 2021" is often answered by an article's date, not its words (qa/search/time.py)."""
    held = set(_WORD.findall(" ".join(texts).lower()))
    names = {n.lower() for n in _NAME.findall(question) if not _YEAR.fullmatch(n)}
    return float(sum(1 for n in names if n not in STOPWORDS and not set(_WORD.findall(n)) <= held))


def asks(question: str) -> str | None:
    """What the question's wh-word asks for: "number", "date", "name", or None."""
    for kind, pattern in _ASKS:
        if pattern.search(question):
            return kind
    return None


def holds(kind: str | None, sentence: str, question_words: set[str]) -> bool:
    if kind == "number":
        found = (m.group().lower().rstrip(",.") for m in _NUMBER.finditer(sentence))
        return any(n not in question_words and not _YEAR.fullmatch(n) for n in found)
    if kind == "date":
        return bool(_DATE.search(sentence))
    if kind == "name":
        return any(w.lower() not in question_words for w in _CAPITAL.findall(sentence))
    return False


def sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


@dataclass
class Sentence:
    """One sentence of one of the best passages, with what the models read of it."""

    pid: int
    rank: int
    start: int  # article offsets
    end: int
    text: str
    held: float  # share of the question's idf mass this sentence holds
    features: np.ndarray
    before: Sentence | None = None  # the sentences either side of it in the same passage
    after: Sentence | None = None
    p: float = 0.0  # the sentence model's probability that it holds the answer
    stems: frozenset[int] = frozenset()  # its stems' hashes

    def feature(self, name: str) -> float:
        """One of its features, by its name in SENTENCE_FEATURES."""
        return float(self.features[SENTENCE_FEATURES.index(name)])


@dataclass
class Question:
    """What the answer models need of a question: its stems and their idf weights, and what it asks for."""

    text: str
    weights: dict[str, float]  # stem -> idf

    def __post_init__(self):
        self.kind = asks(self.text)
        self.mass = sum(self.weights.values()) or 1.0
        raw = _WORD.findall(self.text)
        words = [w.lower() for w in raw]
        self.words = set(words)
        stemmed = [set(index_stems(w)) for w in words]
        # Stems as the index keeps them for each sentence (32-bit keys), with their idf.
        self.hashed = {sentence_key(s): w for s, w in self.weights.items()}
        self.stems = set(self.hashed)
        # Adjacent words with a content word among them ("Super Bowl", "prime minister"), found in a
        # sentence's lower-cased words as they stand.
        content = set().union(*stemmed) & set(self.weights)
        self.pairs = {f"{a} {b}" for a, b, sa, sb in zip(words, words[1:], stemmed, stemmed[1:]) if content & (sa | sb)}
        self._beyond: dict[str, tuple[set[int], float]] = {}
        # Its names (capitalised past the first word) and its common words: a story's sentences repeat
        # the names, while the common words ("founded", "income") point at the detail asked for.
        keys = [set() if w in STOPWORDS else {sentence_key(s) for s in ss} for w, ss in zip(words, stemmed)]
        self.common = set().union(*(k for w, k in zip(raw, keys) if w[0].islower()))
        self.named = set().union(*(k for w, k in zip(raw[1:], keys[1:]) if w[0].isupper()))

    def beyond(self, title: str) -> tuple[set[int], float]:
        """The question's stems that the article's title lacks, and their idf mass: the title's words
        name the story, which every sentence of it is about (a news lede repeats them all)."""
        if title not in self._beyond:
            named = {sentence_key(s) for s in index_stems(title)}
            rest = self.stems - named
            self._beyond[title] = rest, sum(self.hashed[h] for h in rest)
        return self._beyond[title]


def sentence_features(**named: float) -> np.ndarray:
    """A sentence's features by name, as the array SENTENCE_W weighs (in SENTENCE_FEATURES' order)."""
    if named.keys() != set(SENTENCE_FEATURES):
        raise ValueError(f"sentence features differ from SENTENCE_FEATURES: {sorted(named.keys() ^ set(SENTENCE_FEATURES))}")
    return np.array([named[name] for name in SENTENCE_FEATURES], dtype=np.float64)


def passage_sentences(question: Question, pid: int, rank: int, score: float, title: str, row_start: int,
                      row_text: str, spans: list[tuple[int, int]], terms: list[float], cosines: list[float],
                      stems: list[np.ndarray], links: list[float], central: list[float]) -> list[Sentence]:
    """The sentences of one ranked passage (rank from 1, fused score), each with its features;
    `stems`: each sentence's stem keys, as the index keeps them; `links`: each sentence's cosine
    with the one before it; `central`: its mean cosine with the passage's other sentences (a
    sentence that sums up the rest, like a news lede, rarely holds the detail asked for)."""
    keep = [i for i, (a, b) in enumerate(spans) if row_start <= a < b <= row_start + len(row_text)]
    held = [terms[i] / question.mass for i in keep]
    rest, rest_mass = question.beyond(title)
    out: list[Sentence] = []
    before: set[int] = set()
    for j, i in enumerate(keep):
        a, b = spans[i]
        text = row_text[a - row_start:b - row_start]
        words = text.split()
        mine = set(stems[i].tolist())
        new = len(mine - question.stems) / max(len(mine), 1)
        has = holds(question.kind, text, question.words)
        if question.pairs:
            joined = " ".join(_WORD.findall(text.lower()))
            pairs = sum(1 for pair in question.pairs if pair in joined) / len(question.pairs)
        else:
            pairs = 0.0
        window = sum(question.hashed[h] for h in question.stems & (mine | before)) / question.mass
        before = mine
        names = sum(1 for w in _NAME.findall(text) if w.lower() not in question.words)
        # The question against the sentence read with a neighbour (their vectors summed): news
        # often names the subject in one sentence and gives the detail in the next.
        prev = i - 1 if j > 0 and keep[j - 1] == i - 1 else None
        nxt = i + 1 if j + 1 < len(keep) and keep[j + 1] == i + 1 else None
        with_before = cosines[i] if prev is None else \
            (cosines[i] + cosines[prev]) / math.sqrt(max(2 + 2 * links[i], 1e-6))
        with_after = cosines[i] if nxt is None else \
            (cosines[i] + cosines[nxt]) / math.sqrt(max(2 + 2 * links[nxt], 1e-6))
        f = sentence_features(
            bias=1.0, cosine=cosines[i], held=held[j], held_before=held[j - 1] if j > 0 else 0.0,
            held_after=held[j + 1] if j + 1 < len(keep) else 0.0, passage_score=score, passage_rank=1.0 / rank,
            asked_held=float(question.kind is not None and has), asked_missing=float(question.kind is not None and not has),
            new_words=new, length=math.log1p(len(words)) / 4, pairs_held=pairs, held_with_before=window,
            new_names=math.log1p(names) / 2, cosine_with_before=with_before, cosine_with_after=with_after,
            held_beyond_title=sum(question.hashed[h] for h in rest & mine) / rest_mass if rest_mass else 0.0,
            centrality=central[i],
            common_held=len(question.common & mine) / len(question.common) if question.common else 0.0,
            names_held=len(question.named & mine) / len(question.named) if question.named else 0.0)
        out.append(Sentence(pid, rank, a, b, text, held[j], f, out[-1] if out else None, stems=frozenset(mine)))
        if out[-1].before is not None:
            out[-1].before.after = out[-1]
    return out


def choose(sentences: list[Sentence]) -> tuple[Sentence | None, np.ndarray]:
    """The most likely answer sentence and every candidate's probability of being the one (a softmax)."""
    if not sentences:
        return None, np.zeros(0)
    z = np.vstack([s.features for s in sentences]) @ SENTENCE_W
    p = np.exp(z - z.max())
    p /= p.sum()
    for s, ps in zip(sentences, p.tolist()):
        s.p = ps
    return sentences[int(np.argmax(p))], p


def span_of(best: Sentence, prob: dict[int, float] | None = None) -> tuple[int, int]:
    """The answer's article offsets: the sentence, with a neighbour the sentence model also rates
    (news often names the subject in one sentence and answers in the next) while the two stay short,
    or with the likelier neighbour whenever the two are hardly longer than one long sentence.
    `prob`: the reader's probabilities by id(sentence), in place of the sentence model's."""
    words = len(_WORD.findall(best.text))

    def p(n: Sentence) -> float:
        return n.p if prob is None else prob.get(id(n), 0.0)

    def joins(n: Sentence) -> bool:
        both = words + len(_WORD.findall(n.text))
        return both <= SHORT_PAIR_WORDS or (p(n) >= PAIR_AT * p(best) and both <= MAX_PAIR_WORDS)

    pick = max((n for n in (best.before, best.after) if n is not None and joins(n)), key=p, default=None)
    if pick is None:
        return best.start, best.end
    return min(best.start, pick.start), max(best.end, pick.end)


def question_features(best: Sentence, p: np.ndarray, passage_cosine: float, coverage: float,
                      passages: int) -> np.ndarray:
    """Evidence that the collection (of `passages` passages) answers at all: absolute, never relative
    to the best candidate."""
    top = np.sort(p)[::-1]
    margin = float(top[0] - top[1]) if len(top) > 1 else float(top[0])
    return np.array([1.0, float(top[0]), best.feature("cosine"), passage_cosine, coverage, best.held, margin,
                     *best.features[_GATE_COLUMNS], math.log10(max(passages, 10))])


def coverage(question: Question, sentences: list[Sentence]) -> float:
    """The share of the question's idf mass (rare words weigh most) that a passage's sentences hold."""
    held = set().union(*[question.stems & s.stems for s in sentences])
    return sum(question.hashed[h] for h in held) / question.mass


def gate(features: np.ndarray) -> float:
    """The gate's probability that the collection answers (the reader's calibrator reads it too)."""
    return float(sigmoid(features @ GATE_W))


def judge(features: np.ndarray) -> tuple[bool, float]:
    """Whether to answer, and the confidence that the answer holds a right one."""
    answers = gate(features) >= GATE_AT
    return answers, round(float(sigmoid(features @ CONFIDENCE_W)), 3)


@dataclass
class Read:
    """What the reader (qa/search/reader.py) made of one question's candidate sentences."""

    best: Sentence  # the sentence that answers, if any does
    prob: dict[int, float]  # by id(sentence): the chooser's probability, for pairing a neighbour
    spans: dict[int, tuple[int, int]]  # by id(sentence): the short answer's offsets in its text
    confidence: float  # that the answer holds a right one (the reader's calibrator)
    gives: bool  # whether to give it (else: null)


def shortlist(fp: np.ndarray, top: int, one_at: float) -> np.ndarray:
    """Pick the candidates the reader reads: the `top` the sentence model rates highest, or its best alone at `one_at`."""
    keep = np.argsort(-fp, kind="stable")[:top]
    # Sure of its best, the sentence model leaves the others a reader logit to beat by alpha times the log of
    # the odds: the tuning replay chose otherwise for under 1% of its questions, and one row costs half of three.
    return keep[:1] if fp[keep[0]] >= one_at else keep


def read(reader, question: str, cands: list[Sentence], gate_p: float, passages: int) -> Read:
    """Let the reader choose among the candidates the sentence model rates highest and judge the answer:
    the sentence maximising the reader's logit + alpha * log(the sentence model's p), as
    train/eval_reader.py fitted `candidates`, `alpha` and `one_at` (above it, only the best is read) on
    squad-dev's unseen tuning articles and news-a."""
    fitted = reader.calibrator or {}
    top, alpha = int(fitted.get("candidates", 20)), float(fitted.get("alpha", 0.0))
    fp = np.array([c.p for c in cands])
    keep = shortlist(fp, top, float(fitted.get("one_at", math.inf)))
    got = reader.score(question, [cands[i].text for i in keep])
    z = got.logits + alpha * np.log(np.maximum(fp[keep], 1e-12))
    k = int(np.argmax(z))
    chooser = np.exp(z - z.max())
    chooser /= chooser.sum()
    missing = unmatched(question, [c.text for c in cands])
    confidence = reader.confidence(reader.features(got, k, float(fp[keep[k]]), gate_p, passages, missing))
    return Read(best=cands[int(keep[k])],
                prob={id(cands[i]): float(v) for i, v in zip(keep.tolist(), chooser)},
                spans={id(cands[i]): sp for i, sp in zip(keep.tolist(), got.spans) if sp},
                confidence=confidence, gives=reader.answers(confidence))
