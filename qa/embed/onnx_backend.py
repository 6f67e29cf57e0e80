"""ONNX Runtime embedding backend for sentence-transformers BERT-style models.

``OnnxEmbedder`` embeds text with an ONNX Runtime export of a local
sentence-transformers folder (a BERT-style transformer, mean pooling, L2
normalisation), optionally dynamically quantised to int8.

Runtime dependencies: ``onnxruntime``, ``tokenizers``, ``numpy``.  The first
use of a model (or of a changed model) also needs ``torch`` + ``transformers``
(export) and ``onnx`` (graph fusion and quantisation); those are imported only
inside the export functions.

The cache directory holds, per model-weights hash and settings::

    <name>-<key>-fp32.onnx    exported (and, for BERT, ORT-fused) fp32 graph
    <name>-<key>-int8.onnx    dynamic int8 quantisation of the above
    weights-sha256.json       memo of weight-file hashes by (size, mtime)

Files are written under a temporary name and moved into place with
``os.replace``, so a crash never leaves a half-written model behind; nothing is
pickled.  The graph takes ``input_ids`` and ``attention_mask`` (int64, shape
``(batch, seq)``) and returns ``last_hidden_state`` and ``sentence_embedding``
(mean-pooled over the mask, L2-normalised, computed inside the graph).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from array import array
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

__all__ = ["OnnxEmbedder"]

# Bump when the export / fusion / quantisation recipe changes: old cache files
# are then ignored (a new key) rather than silently reused.
_RECIPE_VERSION = 2  # 2: Add + LayerNormalization instead of SkipLayerNormalization
_OPSET = 17
# Dynamic int8 settings (chosen by measurement on all-MiniLM-L6-v2; see the
# report that came with this module).  Only MatMul/Attention nodes with
# constant weights are quantised; the word-embedding Gather, LayerNorms, GELU,
# softmax and the pooling stay fp32.
_QUANT_SETTINGS = {
    "op_types": ["MatMul", "Attention"],
    "per_channel": True,
    "reduce_range": False,
    "weight_type": "QInt8",
}
_OUTPUT = "sentence_embedding"
BATCH_TOKENS = 512  # word pieces per model call when embedding many texts
# Counted texts whose ids are kept for encode(): an ingest needs about two batches' worth;
# more only holds memory in a long-running server (a few MB at this size).
COUNTED_MAX = 20_000
_WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")

_export_lock = threading.Lock()  # one export at a time within a process
_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # honours taskset/cgroup cpusets
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class OnnxEmbedder:
    """Embed text with an ONNX Runtime export of a sentence-transformers BERT-style model (mean pooling, L2-normalised)."""

    runtime = "onnx"

    def __init__(
        self,
        model_dir: str | Path,
        cache_dir: str | Path,
        quantize: bool = True,
        threads: int | None = None,
        spin: bool = True,
    ) -> None:
        self.model_dir = Path(model_dir).resolve()
        self.spin = spin
        self.cache_dir = Path(cache_dir)
        self.quantize = bool(quantize)

        config = _read_json(self.model_dir / "config.json")
        st_config = _read_json(self.model_dir / "sentence_bert_config.json", default={})
        _check_pooling(self.model_dir)

        self.dim: int = int(config["hidden_size"])
        max_seq = int(st_config.get("max_seq_length") or 512)
        max_pos = int(config.get("max_position_embeddings") or max_seq)
        self.max_tokens: int = min(max_seq, max_pos)

        folder = self.model_dir.name
        if folder in ("model", "models") and self.model_dir.parent.name:
            # pip-packaged models live in <package>/model: use the package name.
            folder = self.model_dir.parent.name
        self.name: str = f"{folder}/{self.runtime}-{'int8' if self.quantize else 'fp32'}"

        # Two tokenizers so neither is ever reconfigured after construction
        # (reconfiguring a shared Tokenizer is not thread-safe).  tokenizer.json
        # files often carry their own truncation/padding (this one: fixed
        # padding to 128, truncation at 128), so both are reset explicitly.
        tok_path = self.model_dir / "tokenizer.json"
        self._tok = Tokenizer.from_file(str(tok_path))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=self.max_tokens)  # counts [CLS]/[SEP]
        self._tok_full = Tokenizer.from_file(str(tok_path))
        self._tok_full.no_padding()
        self._tok_full.no_truncation()
        # Ids of texts counted but not yet embedded: an ingest counts every sentence (as the
        # model will see it) to size its windows, then embeds it, and tokenizing twice cost
        # the model thread about 0.3 s of a 4.3 s ingest. Bounded, oldest out first.
        self._counted: dict[str, array] = {}
        self._counted_lock = threading.Lock()

        self._open(config, int(threads) if threads else _default_threads())

    def _open(self, config: dict, threads: int) -> None:
        """Build (first use) or find the cached model file and start the runtime on it."""
        self.model_path: Path = _ensure_model(self.model_dir, self.cache_dir, config, self.quantize)
        self._threads = threads
        # InferenceSession.run is thread-safe: several server threads may call
        # encode() concurrently on one instance.
        self._session = self._new_session(self.spin)
        # Questions (one text a call) get a session whose threads sleep after each call: spinning, they
        # take the cores the reader's call needs next. Opened on the first one-text call (an ingest's batches
        # seldom make one): it holds about 56 MB more.
        self._quiet = None if self.spin else self._session
        self._quiet_lock = threading.Lock()
        self._outputs = [_OUTPUT]

    def _new_session(self, spin: bool) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self._threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if not spin:  # threads that spin after a call take the cores what comes next needs
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(
            str(self.model_path), so, providers=["CPUExecutionProvider"],
            # ORT's SkipLayerNormalization kernel ran 12 fused nodes slower than Add +
            # LayerNormalization: one question 1.34 -> 1.05 ms (int8, one thread), same vectors.
            disabled_optimizers=_DISABLED_OPTIMIZERS,
        )

    def _question_session(self) -> ort.InferenceSession:
        if self._quiet is None:
            with self._quiet_lock:
                if self._quiet is None:
                    self._quiet = self._new_session(spin=False)
        return self._quiet

    # ------------------------------------------------------------------ API

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Word pieces per text, including [CLS]/[SEP], without truncation."""
        if not texts:
            return []
        encodings = self._tok_full.encode_batch(list(texts))
        with self._counted_lock:
            counted = self._counted
            for text, enc in zip(texts, encodings):
                counted[text] = array("i", enc.ids)  # 4 bytes an id, not a list of int objects
            while len(counted) > COUNTED_MAX:
                del counted[next(iter(counted))]
        return [len(e.ids) for e in encodings]

    def encode(self, texts: list[str], batch_size: int = 32, batch_tokens: int = BATCH_TOKENS) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows; inputs truncated at max_tokens."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a string")
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if n == 1:  # query fast path: no sorting, no padding, no copies
            ids = np.array([self._tok.encode(texts[0]).ids], dtype=np.int64)
            return self._run(ids, np.ones_like(ids), self._question_session())

        out = np.empty((n, self.dim), dtype=np.float32)
        for idx, ids, mask in self._batches(texts, batch_size, batch_tokens):
            out[idx] = self._run(ids, mask)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, max_tokens={self.max_tokens}, model={str(self.model_path)!r})"

    # ------------------------------------------------------------ internals

    width_multiple = 1  # pad batch widths up to a multiple of this

    def _batches(self, texts: list[str], batch_size: int, batch_tokens: int):
        """Yield (row indices, input ids, attention mask) batches, longest texts first."""
        tokens = self._token_ids(texts)
        n = len(tokens)
        lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=n)
        # Longest first (stable), so each batch pads only to its own longest text.
        order = np.argsort(-lengths, kind="stable")
        start, m = 0, self.width_multiple
        while start < n:
            width = -(-int(lengths[order[start]]) // m) * m
            # Batches of about batch_tokens word pieces keep the activations in
            # cache: 512 ran 16% faster than a fixed 32 texts on 125k tokens.
            rows = max(1, min(int(batch_size), int(batch_tokens) // width))
            idx = order[start : start + rows]
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, j in enumerate(idx):
                k = int(lengths[j])
                ids[row, :k] = tokens[j]
                mask[row, :k] = 1
            yield idx, ids, mask
            start += len(idx)

    def _token_ids(self, texts: list[str]) -> list[Sequence[int]]:
        """Each text's ids, truncated to max_tokens: remembered from count_tokens where possible."""
        with self._counted_lock:
            found = [self._counted.pop(t, None) for t in texts]
        missing = [i for i, ids in enumerate(found) if ids is None]
        for i, enc in zip(missing, self._tok.encode_batch([texts[i] for i in missing]) if missing else ()):
            found[i] = enc.ids
        m = self.max_tokens  # as the tokenizer truncates one sequence: [CLS], the first m - 2, [SEP]
        return [ids if len(ids) <= m else ids[:m - 1] + ids[-1:] for ids in found]

    def _run(self, ids: np.ndarray, mask: np.ndarray, session: ort.InferenceSession | None = None) -> np.ndarray:
        (emb,) = (session or self._session).run(self._outputs, {"input_ids": ids, "attention_mask": mask})
        return np.asarray(emb, dtype=np.float32)


# ---------------------------------------------------------------- model setup


def _read_json(path: Path, default: dict | None = None) -> dict:
    if default is not None and not path.exists():
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _check_pooling(model_dir: Path) -> None:
    """Refuse folders whose pooling is not the mean pooling this graph computes."""
    modules = _read_json(model_dir / "modules.json", default={"_": None})
    if not isinstance(modules, list):
        return
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            cfg = _read_json(model_dir / module.get("path", "") / "config.json", default={})
            modes = {k for k, v in cfg.items() if k.startswith("pooling_mode") and v}
            if modes and modes != {"pooling_mode_mean_tokens"}:
                raise ValueError(f"{model_dir}: only mean pooling is supported, got {sorted(modes)}")


def _weight_files(model_dir: Path) -> list[Path]:
    for pattern in _WEIGHT_PATTERNS:
        files = sorted(p for p in model_dir.glob(pattern) if p.is_file())
        if files:
            return files
    raise FileNotFoundError(f"no model weights ({' or '.join(_WEIGHT_PATTERNS)}) in {model_dir}")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _weights_digest(model_dir: Path, cache_dir: Path) -> str:
    """sha256 over the weight files, memoised by (path, size, mtime_ns) so loads stay fast."""
    memo_path = cache_dir / "weights-sha256.json"
    try:
        memo = _read_json(memo_path, default={})
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    changed = False
    for path in _weight_files(model_dir):
        st = path.stat()
        key = str(path.resolve())
        entry = memo.get(key)
        if not (entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns):
            entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256_file(path)}
            memo[key] = entry
            changed = True
        h.update(path.name.encode() + b"\0" + entry["sha256"].encode() + b"\0")
    if changed:
        with contextlib.suppress(OSError):
            with _atomic_path(memo_path, suffix=".json") as tmp:
                tmp.write_text(json.dumps(memo, indent=1, sort_keys=True), encoding="utf-8")
    return h.hexdigest()


def _cache_key(model_dir: Path, cache_dir: Path, quantize: bool) -> str:
    settings = {
        "recipe": _RECIPE_VERSION,
        "opset": _OPSET,
        "weights": _weights_digest(model_dir, cache_dir),
        "config": hashlib.sha256((model_dir / "config.json").read_bytes()).hexdigest(),
        # fusion and quantisation output depend on the onnxruntime release
        "onnxruntime": ".".join(ort.__version__.split(".")[:2]),
    }
    if quantize:
        settings["quant"] = _QUANT_SETTINGS
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def _atomic_path(final: Path, suffix: str = ".onnx") -> Iterator[Path]:
    """Yield a temp path next to ``final``; on success fsync + os.replace it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; other users (the server) must read it
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise exports across processes (POSIX flock; best effort elsewhere)."""
    with _export_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        with open(path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _ensure_model(model_dir: Path, cache_dir: Path, config: dict, quantize: bool) -> Path:
    """Return the cached ONNX file for these weights/settings, building it if missing."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_dir.name)
    if stem in ("model", "models"):
        stem = f"{model_dir.parent.name}-{stem}"
    fp32_path = cache_dir / f"{stem}-{_cache_key(model_dir, cache_dir, False)}-fp32.onnx"
    target = fp32_path
    if quantize:
        target = cache_dir / f"{stem}-{_cache_key(model_dir, cache_dir, True)}-int8.onnx"
    if target.exists():
        return target
    with _file_lock(cache_dir / ".export.lock"):
        if target.exists():  # another process/thread finished it meanwhile
            return target
        if not fp32_path.exists():
            with _atomic_path(fp32_path) as tmp:
                _export_fp32(model_dir, tmp, config)
        if quantize:
            with _atomic_path(target) as tmp:
                _quantize(fp32_path, tmp)
    return target


def pooled_model(model_dir: Path, with_hidden: bool = True):
    """The packaged PyTorch model with mean pooling and L2 normalisation in the graph, for export."""
    import torch  # lazy: export only
    import transformers
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            hidden = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = pooled / pooled.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-12)
            return (hidden, pooled) if with_hidden else pooled

    progress = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        # eager attention: the sdpa graph does not match ORT's Attention fusion
        model = AutoModel.from_pretrained(
            str(model_dir), attn_implementation="eager", dtype=torch.float32
        ).eval()
    finally:
        if progress:
            transformers.utils.logging.enable_progress_bar()
    return Pooled(model).eval()


def _export_fp32(model_dir: Path, out_path: Path, config: dict) -> None:
    """torch.onnx.export of AutoModel + in-graph mean pooling/L2, then ORT BERT fusion."""
    import torch

    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0, 0]])
    mask = (ids != 0).to(torch.int64)
    seq_axes = {0: "batch", 1: "sequence"}
    raw_path = out_path.with_name(out_path.name + ".raw.onnx")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # dynamo=False: the TorchScript exporter needs no onnxscript and
            # gives a graph that ORT's BERT fusions recognise.
            torch.onnx.export(
                pooled_model(model_dir),
                (ids, mask),
                str(raw_path),
                dynamo=False,
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state", _OUTPUT],
                dynamic_axes={
                    "input_ids": seq_axes,
                    "attention_mask": seq_axes,
                    "last_hidden_state": seq_axes,
                    _OUTPUT: {0: "batch"},
                },
                opset_version=_OPSET,
                do_constant_folding=True,
            )
        _fuse_bert(raw_path, out_path, config)
    finally:
        with contextlib.suppress(FileNotFoundError):
            raw_path.unlink()


@contextlib.contextmanager
def _logging_off(level: int):
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _fuse_bert(raw_path: Path, out_path: Path, config: dict) -> None:
    """Offline ORT transformer fusion (Attention, EmbedLayerNorm, LayerNorm, BiasGelu; not SkipLayerNorm).

    Falls back to the plain export when the fusion does not recognise every
    layer (a non-BERT architecture); ORT's own session-level optimisations
    still apply to that graph.
    """
    import shutil

    try:
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import FusionOptions

        options = FusionOptions("bert")
        options.enable_skip_layer_norm = False  # slower on CPU than what it fuses; see _open()
        # The optimizer logs every step at INFO through the root logger's handlers.
        with warnings.catch_warnings(), _logging_off(logging.INFO):
            warnings.simplefilter("ignore")
            fused = optimizer.optimize_model(
                str(raw_path),
                model_type="bert",
                num_heads=int(config["num_attention_heads"]),
                hidden_size=int(config["hidden_size"]),
                opt_level=0,
                use_gpu=False,
                optimization_options=options,
            )
            stats = fused.get_fused_operator_statistics()
            if config.get("model_type") == "bert" and stats.get("Attention", 0) == int(config["num_hidden_layers"]):
                fused.save_model_to_file(str(out_path))
                return
    except Exception:  # noqa: BLE001 - fusion is an optimisation, never a requirement
        pass
    shutil.copyfile(raw_path, out_path)


def _quantize(fp32_path: Path, out_path: Path) -> None:
    import onnx  # noqa: F401 - needed by onnxruntime.quantization
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a "consider pre-processing" warning on the root logger.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(fp32_path),
                str(out_path),
                op_types_to_quantize=list(_QUANT_SETTINGS["op_types"]),
                per_channel=bool(_QUANT_SETTINGS["per_channel"]),
                reduce_range=bool(_QUANT_SETTINGS["reduce_range"]),
                weight_type=getattr(QuantType, str(_QUANT_SETTINGS["weight_type"])),
                # Fused com.microsoft ops defeat ONNX shape inference; without this
                # quantize_dynamic raises "Unable to find data type for weight_name".
                extra_options={"DefaultTensorType": TensorProto.FLOAT},
            )
    finally:
        logging.disable(previous)
