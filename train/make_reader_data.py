"""Build the reader's training data from the tuning half only (reproducible from --seed).

    python train/make_reader_data.py [--out train/out/reader-data.jsonl] [--seed 2026]

Sources, all from the EVEN positions of ../shared/eval/squad-dev.json's data[] (the odd ones are
held back for figures, as `split_by_article` in qa/evaluate.py and `qa eval --split` use them), less
the three kept for fitting the confidence (CALIBRATION_POSITIONS):

- squad-dev's questions of those articles (answerable);
- SQuAD 2.0's unanswerable questions (../shared/eval/squad2-dev.json, `is_impossible`) of the
  articles whose titles are among the even ones (its answerable questions are squad-dev's own);
- unanswerable questions made here from the answerable ones, the way SQuAD 2.0's authors wrote
  theirs: a name, number or year swapped for another of its kind from the same article that the
  paragraph does not hold, a negation inserted, an antonym swapped;
- questions asked of another article's sentences (the collection does not answer them);
- questions we wrote (train/data/written/, TRAINING_FILES): look-alikes written SQuAD 2.0's way over
  the even articles' own paragraphs (the three articles squad2-dev lacks, and four others), and news
  reports we wrote with their answerable and look-alike questions (news-a and news-b, the confidence's and
  the figures' sets, are never read here). train/data/next/ holds sets written since, not read here: the
  shipped reader was trained on written/ as it stands (train/runs/).

Each example is one question with its candidate sentences: the paragraph's sentences (split as the
index splits them, qa.index.text.sentence_spans) plus hard negatives (sentences of the article's other
paragraphs sharing the most of the question's content stems). A candidate's label is 1 when it holds
one of the question's answer strings; `span` is the answer's [start, end) in the candidate's text,
given for the single best positive (the one holding the most voted answer and the most of the
question's words). ../shared/eval/bbc-news.jsonl is never read.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval"
WRITTEN = ROOT / "train" / "data" / "written"
TRAINING_FILES = ("lookalike-*.json", "train-news-*.json")
NEXT = ROOT / "train" / "data" / "next"  # sets written since the shipped reader (--with-next)

from qa.index.text import sentence_spans  # noqa: E402
from qa.index.terms import STOPWORDS, stems  # noqa: E402

# Three of the even articles are kept out of the reader's training: train/eval_reader.py fits the
# confidence (a calibrator over the reader's outputs) on questions asked of them, which the reader
# never saw (fitted on the questions it was trained on, the calibrator would learn its overconfidence).
CALIBRATION_POSITIONS = (12, 16, 22)  # Jacksonville, Florida; Pharmacy; Victoria (Australia): all in squad2-dev
HARD_NEGATIVES = 4  # per question, from the same article's other paragraphs
OTHER_ARTICLE = 0.35  # share of answerable questions also asked of another article's sentences

# Word pairs swapped to make a question ask for something its paragraph does not say.
ANTONYMS = dict(p for a, b in [
    ("first", "last"), ("largest", "smallest"), ("biggest", "smallest"), ("highest", "lowest"), ("most", "least"),
    ("before", "after"), ("increase", "decrease"), ("increased", "decreased"), ("earliest", "latest"),
    ("north", "south"), ("east", "west"), ("northern", "southern"), ("eastern", "western"), ("won", "lost"),
    ("win", "lose"), ("start", "end"), ("began", "ended"), ("major", "minor"), ("more", "less"),
    ("early", "late"), ("maximum", "minimum"), ("positive", "negative"), ("ancient", "modern"),
    ("public", "private"), ("longest", "shortest"), ("oldest", "newest"), ("best", "worst"), ("top", "bottom"),
    ("rise", "fall"), ("rose", "fell"), ("higher", "lower"), ("larger", "smaller"), ("older", "younger"),
    ("inside", "outside"), ("above", "below"), ("allowed", "forbidden"), ("accepted", "rejected"),
    ("support", "oppose"), ("supported", "opposed"), ("strong", "weak"), ("success", "failure"),
    ("successful", "unsuccessful"), ("legal", "illegal"), ("common", "rare"), ("domestic", "foreign"),
    ("internal", "external"), ("open", "closed"), ("opened", "closed"), ("created", "destroyed"),
    ("built", "demolished"), ("gained", "lost"), ("joined", "left"), ("entered", "left"), ("born", "died"),
    ("male", "female"), ("men", "women"), ("heavy", "light"), ("hot", "cold"), ("warm", "cool"),
    ("upper", "lower"), ("primary", "secondary"), ("full", "empty"), ("rich", "poor"), ("same", "different"),
] for p in ((a, b), (b, a)))
AUX = re.compile(r"\b(is|was|are|were|did|does|do|can|could|will|would|should)\b(?! not\b)", re.I)
NEGATED = {"can": "can't", "will": "won't"}
KIND_WEIGHT = {"swap_name": 3, "swap_year": 4, "swap_number": 4, "antonym": 4, "negation": 1}
NAME = re.compile(r"\b[A-Z][\w'-]*(?: (?:of |the |de |von |van |and |for )?[A-Z][\w'-]*)*")
YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})s?\b")
NUMBER = re.compile(r"\b\d[\d,.]*\b")


def content_stems(text: str) -> set[str]:
    return {s for s in stems(text) if s not in STOPWORDS}


def split_sentences(context: str) -> list[tuple[int, int]]:
    return sentence_spans(context)


def names_in(text: str) -> list[str]:
    """Capitalised runs ("Genghis Khan", "European Court of Justice") past the sentence's first word."""
    out = []
    for m in NAME.finditer(text):
        name = m.group().strip()
        if m.start() == 0:  # the first word is capitalised anyway: drop it
            parts = name.split(None, 1)
            if len(parts) < 2:
                continue
            name = parts[1]
        if name.split()[0].lower() in STOPWORDS or len(name) < 2:
            continue
        out.append(name)
    return out


def even_articles(squad: list[dict]) -> list[dict]:
    """The tuning half's articles the reader trains on (the even positions but the calibration ones)."""
    return [a for i, a in enumerate(squad) if i % 2 == 0 and i not in CALIBRATION_POSITIONS]


def written_articles(with_next: bool = False) -> list[dict]:
    """The SQuAD 2.0 articles we wrote for training (never news-a or news-b)."""
    folders = [WRITTEN, *([NEXT] if with_next else [])]
    return [a for folder in folders for pattern in TRAINING_FILES for path in sorted(folder.glob(pattern))
            for a in json.loads(path.read_text("utf-8"))["data"]]


def perturb(question: str, article_text: str, paragraph: str, pools: dict, rng: random.Random) -> list[tuple[str, str]]:
    """Unanswerable look-alikes of an answerable question (kind, new question), at most one per kind."""
    out = []
    para_low = paragraph.lower()
    # a name swapped for another of the article's names that the paragraph never mentions
    names = [n for n in names_in(question) if n in paragraph]
    if names:
        old = rng.choice(names)
        choices = [n for n in pools["names"] if n.lower() not in para_low and n not in question
                   and len(n.split()) <= len(old.split()) + 1]
        if choices:
            out.append(("swap_name", question.replace(old, rng.choice(choices), 1)))
    years = YEAR.findall(question)
    if years:
        old = rng.choice(years)
        choices = [y for y in pools["years"] if y not in paragraph and y != old]
        if choices:
            out.append(("swap_year", re.sub(rf"\b{old}\b", rng.choice(choices), question, count=1)))
    else:
        nums = [n for n in NUMBER.findall(question) if not YEAR.fullmatch(n)]
        if nums:
            old = rng.choice(nums)
            choices = [n for n in pools["numbers"] if n not in paragraph and n != old]
            if choices:
                out.append(("swap_number", re.sub(rf"\b{re.escape(old)}\b", rng.choice(choices), question, count=1)))
    m = AUX.search(question)
    if m and m.start() < 40:
        word = m.group()
        neg = NEGATED.get(word.lower(), f"{word.lower()}n't")
        if word[0].isupper():
            neg = neg[0].upper() + neg[1:]
        out.append(("negation", question[:m.start()] + neg + question[m.end():]))
    words = re.findall(r"[A-Za-z]+", question)
    swappable = [w for w in words if w in ANTONYMS]  # lower-case only: "Light" in a name stays
    if swappable:
        old = rng.choice(swappable)
        new = ANTONYMS[old.lower()]
        if new not in para_low.split():
            out.append(("antonym", re.sub(rf"\b{old}\b", new, question, count=1)))
    return out


def build(seed: int, with_next: bool = False) -> tuple[list[dict], dict]:
    rng = random.Random(seed)
    squad = json.loads((EVAL / "squad-dev.json").read_text("utf-8"))["data"]
    squad2 = json.loads((EVAL / "squad2-dev.json").read_text("utf-8"))["data"]
    tuning = even_articles(squad)
    titles = {a["title"] for a in tuning}
    impossible: dict[str, list[dict]] = collections.defaultdict(list)  # context -> its unanswerable questions
    for a in squad2:
        if a["title"] not in titles:
            continue
        for p in a["paragraphs"]:
            impossible[p["context"]] += [q for q in p["qas"] if q.get("is_impossible")]
    # written questions over a tuning paragraph join its own; written news reports join as articles
    contexts = {p["context"] for a in tuning for p in a["paragraphs"]}
    written: dict[str, list[dict]] = collections.defaultdict(list)  # context -> its written answerable questions
    counts = collections.Counter()
    for a in written_articles(with_next):
        for p in a["paragraphs"]:
            impossible[p["context"]] += [dict(q, written=True) for q in p["qas"] if q.get("is_impossible")]
            written[p["context"]] += [dict(q, written=True) for q in p["qas"] if not q.get("is_impossible")]
        if a["title"] in titles:
            counts["written_context_not_found"] += sum(p["context"] not in contexts for p in a["paragraphs"])
        else:
            tuning.append({"title": a["title"], "paragraphs": [{"context": p["context"], "qas": []}
                                                               for p in a["paragraphs"]]})
            counts["written_news_articles"] += 1

    # every sentence of the half, with its article and paragraph, for hard negatives and other-article questions
    sentences = []  # (article, paragraph, text, stems)
    for ai, a in enumerate(tuning):
        for pi, p in enumerate(a["paragraphs"]):
            for s, e in split_sentences(p["context"]):
                sentences.append((ai, pi, p["context"][s:e], content_stems(p["context"][s:e])))
    by_article = collections.defaultdict(list)
    for row in sentences:
        by_article[row[0]].append(row)

    def hard_negatives(ai: int, pi: int, q_stems: set[str], answers: list[str], n: int, other: bool = False):
        pool = [r for r in sentences if r[0] != ai] if other else [r for r in by_article[ai] if r[1] != pi]
        scored = sorted(((len(q_stems & r[3]), rng.random(), r[2]) for r in pool
                         if not any(x in r[2] for x in answers)), reverse=True)
        return [t for overlap, _, t in scored[:n] if overlap > 0 or other]

    examples = []
    for ai, a in enumerate(tuning):
        article_text = "\n\n".join(p["context"] for p in a["paragraphs"])
        pools = {
            "names": sorted({n for n in names_in(article_text) if n.lower() not in STOPWORDS}),
            "years": sorted(set(YEAR.findall(article_text))),
            "numbers": sorted({n for n in NUMBER.findall(article_text) if not YEAR.fullmatch(n)}),
        }
        for pi, p in enumerate(a["paragraphs"]):
            ctx = p["context"]
            spans = split_sentences(ctx)
            texts = [ctx[s:e] for s, e in spans]
            for qa in p["qas"] + written.get(ctx, []):
                q = qa["question"].strip()
                answers = [x["text"] if isinstance(x, dict) else x for x in qa.get("answers", [])]
                answers = [x.strip() for x in answers if x.strip()]
                if not answers:
                    continue
                votes = [x for x, _ in collections.Counter(answers).most_common()]
                q_stems = content_stems(q)
                labels = [int(any(x in t for x in answers)) for t in texts]
                if not any(labels):  # the answer crosses a sentence boundary: nothing to point at
                    counts["skipped_crossing"] += 1
                    continue
                # the span: the most voted answer, in the positive sentence holding most of the question's words
                best, span = None, None
                for x in votes:
                    holding = [i for i, t in enumerate(texts) if x in t]
                    if holding:
                        best = max(holding, key=lambda i: (len(q_stems & content_stems(texts[i])), -i))
                        s = texts[best].find(x)
                        span = [s, s + len(x)]
                        break
                cands = [{"text": t, "label": l, "span": span if i == best else None, "from": "paragraph"}
                         for i, (t, l) in enumerate(zip(texts, labels))]
                cands += [{"text": t, "label": 0, "span": None, "from": "article"}
                          for t in hard_negatives(ai, pi, q_stems, answers, HARD_NEGATIVES)]
                kind = "written" if qa.get("written") else "squad"
                examples.append({"question": q, "kind": kind, "article": a["title"], "answerable": True,
                                 "answers": answers, "candidates": cands})
                counts[kind] += 1
                # look-alikes that the paragraph does not answer: labelled none over its own sentences
                made = perturb(q, article_text, ctx, pools, rng)
                if made:
                    kind, new_q = rng.choices(made, weights=[KIND_WEIGHT[k] for k, _ in made])[0]
                    examples.append({"question": new_q, "kind": kind, "article": a["title"], "answerable": False,
                                     "answers": [], "source_question": q,
                                     "candidates": [{"text": t, "label": 0, "span": None, "from": "paragraph"}
                                                    for t in texts]})
                    counts[kind] += 1
                # the same question asked of another article's sentences that share its words
                if rng.random() < OTHER_ARTICLE:
                    other = hard_negatives(ai, pi, q_stems, answers, 8, other=True)
                    examples.append({"question": q, "kind": "other_article", "article": a["title"],
                                     "answerable": False, "answers": [],
                                     "candidates": [{"text": t, "label": 0, "span": None, "from": "other"}
                                                    for t in other]})
                    counts["other_article"] += 1
            for qa in impossible.get(ctx, []):
                q = qa["question"].strip()
                cands = [{"text": t, "label": 0, "span": None, "from": "paragraph"} for t in texts]
                cands += [{"text": t, "label": 0, "span": None, "from": "article"}
                          for t in hard_negatives(ai, pi, content_stems(q), [], HARD_NEGATIVES)]
                kind = "written_impossible" if qa.get("written") else "squad2_impossible"
                examples.append({"question": q, "kind": kind, "article": a["title"],
                                 "answerable": False, "answers": [], "candidates": cands})
                counts[kind] += 1
    rng.shuffle(examples)
    counts["articles"] = len(tuning)
    counts["examples"] = len(examples)
    counts["candidates"] = sum(len(e["candidates"]) for e in examples)
    return examples, dict(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "train" / "out" / "reader-data.jsonl")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--with-next", action="store_true", help="also the sets in train/data/next/")
    args = ap.parse_args()
    examples, counts = build(args.seed, args.with_next)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    main()
