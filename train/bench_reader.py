"""What the reader costs a question: Reader.score over 10, 20 and 40 candidate sentences, in process.

    python train/bench_reader.py [--questions 100] [--threads 1 2]

Questions and sentences from squad-dev's held-back (odd) articles: each question with its paragraph's
sentences and then the article's other sentences up to the count (as the five best passages give).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from qa.index.text import sentence_spans  # noqa: E402
from qa.search.reader import Reader  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--counts", type=int, nargs="+", default=[10, 20, 40])
    args = ap.parse_args()
    data = json.loads((ROOT.parent / "shared" / "eval" / "squad-dev.json").read_text("utf-8"))["data"]
    rng = random.Random(7)
    cases = []
    for i, a in enumerate(data):
        if i % 2 == 0:
            continue
        sents = [p["context"][s:e] for p in a["paragraphs"] for s, e in sentence_spans(p["context"])]
        for p in a["paragraphs"]:
            for qa in p["qas"]:
                cases.append((qa["question"], [p["context"][s:e] for s, e in sentence_spans(p["context"])], sents))
    cases = rng.sample(cases, args.questions)
    for threads in args.threads:
        reader = Reader(threads=threads)
        for n in args.counts:
            times = []
            for q, own, rest in cases:
                cands = (own + [s for s in rest if s not in own])[:n]
                t = time.perf_counter()
                reader.score(q, cands)
                times.append(1000 * (time.perf_counter() - t))
            times.sort()
            print(f"threads {threads}, {n} candidates: p50 {statistics.median(times):.1f} ms, "
                  f"p90 {times[int(0.9 * len(times))]:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
