import pytest


def test_search_get_returns_cited_passages(client):
    r = client.get("/api/search", query_string={"q": "Who is the HTS leader?", "k": 3})
    assert r.status_code == 200
    body = r.get_json()
    assert body["query"] == "Who is the HTS leader?" and isinstance(body["took_ms"], float)
    assert 1 <= len(body["results"]) <= 3
    assert any("al-Golani" in res["text"] for res in body["results"])
    top = body["results"][0]
    art = client.get(f"/api/articles/{top['citation']['article_id']}").get_json()
    for res in body["results"]:
        c = res["citation"]
        if c["article_id"] == art["id"]:
            assert art["text"][c["start"]:c["end"]] == res["text"]
        for h in res["highlight"]:
            assert 0 <= h["start"] < h["end"] <= len(res["text"])
        assert c["href"] == f"/articles/{c['article_id']}#p-{res['passage_id']}"
    assert [r["rank"] for r in body["results"]] == list(range(1, len(body["results"]) + 1))


def test_search_post(client):
    r = client.post("/api/search", json={"q": "Where did Assad flee to?", "k": 2})
    assert r.status_code == 200
    assert len(r.get_json()["results"]) == 2


def test_results_never_overlap(client):
    results = client.get("/api/search?q=Assad Moscow Russia&k=50").get_json()["results"]
    seen = {}
    for res in results:
        c = res["citation"]
        for s, e in seen.get(c["article_id"], []):
            assert min(e, c["end"]) - max(s, c["start"]) <= 0.5 * min(e - s, c["end"] - c["start"])
        seen.setdefault(c["article_id"], []).append((c["start"], c["end"]))


@pytest.mark.parametrize("method, url, kw, status, code", [
    ("get", "/api/search", {}, 400, "missing_query"),
    ("get", "/api/search?q=", {}, 400, "empty_query"),
    ("get", "/api/search?q=hi&k=0", {}, 400, "k_out_of_range"),
    ("get", "/api/search?q=hi&k=10000", {}, 400, "k_out_of_range"),
    ("get", "/api/search?q=hi&k=abc", {}, 400, "invalid_k"),
    ("get", "/api/search?q=" + "x" * 1001, {}, 400, "query_too_long"),
    ("post", "/api/search", {"data": "q=hi"}, 415, "unsupported_media_type"),
    ("post", "/api/search", {"data": "{bad", "content_type": "application/json"}, 400, "invalid_json"),
    ("post", "/api/search", {"json": [1, 2]}, 400, "invalid_json"),
    ("post", "/api/search", {"json": {"k": 3}}, 400, "missing_query"),
    ("post", "/api/search", {"json": {"q": "hi", "k": "x" * 10}}, 400, "invalid_k"),
    ("post", "/api/search", {"data": "{\"q\": \"" + "a" * 70000 + "\"}", "content_type": "application/json"}, 413, "request_entity_too_large"),
    ("get", "/api/articles/nope", {}, 404, "article_not_found"),
    ("get", "/articles/nope", {}, 404, "article_not_found"),
    ("get", "/no/such/route", {}, 404, "not_found"),
    ("delete", "/api/search", {}, 405, "method_not_allowed"),
])
def test_errors_are_json(client, method, url, kw, status, code):
    r = getattr(client, method)(url, **kw)
    assert r.status_code == status
    assert r.is_json
    err = r.get_json()["error"]
    assert err["code"] == code and err["message"]


def test_article_endpoint(client):
    art = client.get("/api/articles/assad-lands-in-russia").get_json()
    assert set(art) == {"id", "title", "url", "source", "author", "published", "text", "passages"}
    for p in art["passages"]:
        assert 0 <= p["start"] < p["end"] <= len(art["text"])


def test_health_ready_openapi(client):
    assert client.get("/healthz").get_json()["status"] == "ok"
    client.get("/api/search?q=x")
    assert client.get("/readyz").status_code == 200
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.") and "/api/search" in spec["paths"]


def test_pages_render_and_escape(client):
    r = client.get("/?q=Who+is+the+HTS+leader%3F")
    assert r.status_code == 200 and b"<mark>" in r.data and b"al-Golani" in r.data
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    r = client.get("/?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert b"<script>alert(1)" not in r.data
    page = client.get("/articles/assad-lands-in-russia")
    assert page.status_code == 200 and b'id="p-' in page.data


def test_cli_ask_json(runner):
    import json

    result = runner.invoke(["ask", "Who is the HTS leader?", "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert len(body["results"]) == 2


def test_cli_ingest_reports_failures_and_duplicates(runner, tmp_path):
    (tmp_path / "a.txt").write_text("A title\nSome article body text here.")
    (tmp_path / "b.txt").write_text("A title\nSome article body text here.")  # the same words, another file
    (tmp_path / "c.jsonl").write_text("not json\n")
    result = runner.invoke(["ingest", str(tmp_path), "-q"])
    assert result.exit_code == 1
    assert "2 articles added, 0 updated, 0 skipped as duplicates, 1 failed" in result.output
    (tmp_path / "b.txt").write_text("A title\nSome article body text here, corrected.")
    result = runner.invoke(["ingest", str(tmp_path), "-q"])
    assert "0 articles added, 1 updated, 1 skipped as duplicates, 1 failed" in result.output
    assert "c.jsonl:1" in result.output
