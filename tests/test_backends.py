"""Each embedding backend gives the same top results as the plain fp32 path (real model)."""

import numpy as np
import pytest

from qa.embed.model import get_embedder
from qa.web.service import Service

from .conftest import SEEDS
from .test_e2e import QUESTIONS

pytestmark = pytest.mark.slow


def top_results(tmp_path, backend: str) -> list[list[tuple]]:
    svc = Service(tmp_path / backend, "all-MiniLM-L6-v2", backend)
    svc.ingest([SEEDS])
    searcher = svc.searcher()
    return [[(h.citation.article_id, h.citation.start, h.citation.end) for h in searcher.search(q, 3)]
            for q, _ in QUESTIONS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return top_results(tmp_path_factory.mktemp("torch"), "torch")


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "openvino-int8"])
def test_backend_gives_the_same_top_results_as_torch_fp32(tmp_path, reference, backend):
    ref, other = get_embedder(backend="torch"), get_embedder(backend=backend)
    assert other.dim == ref.dim and other.max_tokens == ref.max_tokens
    sample = [q for q, _ in QUESTIONS]
    assert other.count_tokens(sample) == ref.count_tokens(sample)
    cos = np.sum(other.encode(sample) * ref.encode(sample), axis=1)
    got = top_results(tmp_path, backend)
    same_top1 = np.mean([a[0] == b[0] for a, b in zip(reference, got)])
    overlap3 = np.mean([len(set(a) & set(b)) / 3 for a, b in zip(reference, got)])
    print(f"\n{backend}: min cosine to fp32 {cos.min():.4f}, same top-1 {same_top1:.2f}, top-3 overlap {overlap3:.2f}")
    if backend == "onnx":
        assert cos.min() > 0.9999 and got == reference
    else:
        assert cos.min() > 0.97 and same_top1 >= 0.9 and overlap3 >= 0.8


def test_openvino_failure_falls_back_to_onnx_int8(monkeypatch, caplog):
    from qa.embed import model as embed, openvino_backend

    def broken(*a, **k):
        raise RuntimeError("no conversion today")

    monkeypatch.setattr(openvino_backend, "_ensure_ir", broken)
    monkeypatch.setattr(embed, "_cache", {})
    e = embed.get_embedder(backend="openvino-int8")
    assert e.name.endswith("onnx-int8")
    assert "using ONNX Runtime int8 instead" in caplog.text and "no conversion today" in caplog.text
    assert e.encode(["a question"]).shape == (1, e.dim)


def test_counted_texts_are_embedded_from_their_remembered_ids_exactly():
    """encode() reuses the ids count_tokens saw, truncated as the tokenizer would, with the same vectors."""
    from qa.ingest.pipeline import _model_input_counter

    e = get_embedder(backend="onnx-int8")
    texts = ["Assad fled to Moscow.", "Rebels entered Damascus " * 80, "Ünïcödé wörds, punctuation!"]
    fresh = e.encode(texts)
    e.count_tokens(texts)
    assert all(t in e._counted for t in texts)
    assert np.array_equal(e.encode(texts), fresh)
    assert not any(t in e._counted for t in texts)  # used once, then forgotten
    assert e._token_ids([texts[1]]) == [e._tok.encode(texts[1]).ids]  # over-long: truncated alike
    count = _model_input_counter(e, "Syria: ")
    assert count(texts) == e.count_tokens(texts)  # the prefix's pieces left out
    assert count(["Syria: "]) == e.count_tokens(["Syria: "])


def test_questions_run_on_a_session_whose_threads_sleep_and_ingest_on_one_that_spins():
    """A question's threads must not spin after it (the reader's call needs the cores next); an ingest's may."""
    e = get_embedder(backend="onnx-int8")

    def spins(session) -> bool:  # ORT spins unless told not to (the entry is absent then)
        try:
            return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") != "0"
        except RuntimeError:
            return True

    q = "Where did Assad flee to?"
    ids = np.array([e._tok.encode(q).ids], dtype=np.int64)
    assert np.array_equal(e.encode([q]), e._run(ids, np.ones_like(ids)))  # the same model, the same vector
    assert e._quiet is not None and e._quiet is not e._session
    assert not spins(e._quiet) and spins(e._session)
