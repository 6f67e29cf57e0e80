"""Compare reader folders without a threshold: how well each separates right answers from look-alikes.

    python train/compare_readers.py FOLDER [FOLDER ...]        # after train/eval_reader.py has read each
    python train/compare_readers.py --int8 WEIGHTS.pt FOLDER   # the int8 file against the torch weights

For each folder (qa/search/data/reader, or an export's `final/`), over the held-back replays that
train/eval_reader.py read and cached (train/out/eval/read-<file>-top3.held.pkl): the AUC of the calibrated
confidence between right answers and look-alikes, and between right answers and the other collection's
questions, and the AUC of the reader's margin over its null between right answers and look-alikes. The
figures the issue asks for move with the threshold; these say whether a reader separates better at all.

`--int8`: the answer logit of the torch weights against the folder's int8 model on news-a's questions
(each with its paragraph's sentences, batched as the service batches them, and one sentence a call).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "train"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import eval_reader as E  # noqa: E402
from qa.search.reader import Reader  # noqa: E402


def auc(pos: list[float], neg: list[float]) -> float:
    """Return P(a positive scores above a negative), ties counting half."""
    pos, neg = np.sort(np.asarray(pos, dtype=float)), np.asarray(neg, dtype=float)
    below = np.searchsorted(pos, neg, side="right")
    ties = below - np.searchsorted(pos, neg, side="left")
    return float(((len(pos) - below) + 0.5 * ties).sum() / (len(pos) * len(neg)))


def separation(folder: Path, work: Path, held: list[dict]) -> None:
    """Print a reader folder's AUCs over the held-back replays eval_reader.py read with it."""
    reader = Reader(folder, threads=1)
    cal = reader.meta["calibrator"]
    top = int(cal["candidates"])
    stamp = E.reader_stamp(folder, reader.meta)
    cache = (work / f"read-{stamp}-top{top}").with_suffix(".held.pkl")
    if not cache.exists():
        raise SystemExit(f"{cache} is missing: run train/eval_reader.py --reader {folder} --top {top} first")
    E.read_all(held, reader, "held back", top, cache)
    E.CAL_COLUMNS = tuple(cal["columns"])
    for name, rows in (("squad-dev odd", [r for r in held if not r.get("news")]),
                       ("news-b", [r for r in held if r.get("news")])):
        ch = [E.decide(r, cal["alpha"], cal["candidates"], reader.null_logit) for r in rows]
        conf = [reader.confidence(c["x"]) if c else 0.0 for c in ch]
        margin = [c["margin"] if c else -99.0 for c in ch]
        right = [i for i, (r, c) in enumerate(zip(rows, ch))
                 if r["kind"] == "inside" and c and E.holds(c["text"], r["answers"])]
        look = [i for i, r in enumerate(rows) if r["kind"] == "lookalike"]
        out = [i for i, r in enumerate(rows) if r["kind"] == "outside"]
        pick = lambda v, ix: [v[i] for i in ix]  # noqa: E731
        print(f"{folder} {name}: confidence AUC right vs look-alike {auc(pick(conf, right), pick(conf, look)):.4f}, "
              f"right vs other collection {auc(pick(conf, right), pick(conf, out)):.4f}; margin AUC right vs "
              f"look-alike {auc(pick(margin, right), pick(margin, look)):.4f}", flush=True)


def int8_against_torch(weights: Path, folder: Path) -> None:
    """Print the int8 file's separation and drift against the torch weights it was exported from."""
    import torch
    from train_reader import Reader as Trained

    from qa.index.text import sentence_spans

    rt = Reader(folder, threads=1)
    state = torch.load(weights, map_location="cpu", weights_only=False)
    model = Trained(int(rt.meta["layers"]))
    model.load_state_dict(state["model"])
    model.eval()
    torch.set_num_threads(1)
    rows = []
    for article in json.loads((ROOT / "train" / "data" / "written" / "news-a.json").read_text("utf-8"))["data"]:
        for p in article["paragraphs"]:
            sents = [p["context"][a:b] for a, b in sentence_spans(p["context"])]
            rows += [(q["question"], sents, q["is_impossible"]) for q in p["qas"]]
    got = {"torch fp32": [], "int8, batched": [], "int8, one a call": []}
    for question, sents, impossible in rows:
        ids, types, mask, _, _ = rt.encode(question, sents)
        with torch.no_grad():
            got["torch fp32"].append(model(torch.tensor(ids), torch.tensor(types), torch.tensor(mask))[0].numpy())
        feeds = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        got["int8, batched"].append(rt.run(feeds)[0].reshape(-1))
        alone = []
        for i in range(len(sents)):
            n = int(mask[i].sum())
            alone.append(rt.run({k: v[i:i + 1, :n] for k, v in feeds.items()})[0].reshape(-1)[0])
        got["int8, one a call"].append(np.array(alone))
    impossible = [imp for _, _, imp in rows]
    for name, logits in got.items():
        best = [x.max() for x in logits]
        pos = [b for b, imp in zip(best, impossible) if not imp]
        neg = [b for b, imp in zip(best, impossible) if imp]
        drift = np.abs(np.concatenate(logits) - np.concatenate(got["torch fp32"]))
        same = np.mean([a.argmax() == b.argmax() for a, b in zip(logits, got["torch fp32"])])
        print(f"{name:17s} best logit AUC answerable vs look-alike {auc(pos, neg):.4f}; against torch: mean |drift| "
              f"{drift.mean():.3f}, p90 {np.quantile(drift, 0.9):.3f}, same best sentence {same:.3f} "
              f"({len(rows)} questions)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--work", type=Path, default=ROOT / "train" / "out" / "eval")
    ap.add_argument("--int8", type=Path, default=None, help="a reader.pt: compare its folder's int8 file with it")
    args = ap.parse_args()
    held = None if args.int8 else E.collect_all(args.work)[0]
    for folder in args.folders:
        if args.int8:
            int8_against_torch(args.int8, folder)
        else:
            separation(folder, args.work, held)


if __name__ == "__main__":
    main()
