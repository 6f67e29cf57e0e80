"""Run it like a service (#31), in process with the fake embedder: /metrics, the MCP tools, /mcp.

The same over real processes (two gunicorn workers, `qa mcp` on stdio, /mcp on `qa serve`) is in
test_operations_process.py; the container in test_container.py.
"""

import asyncio
import json
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qa.index import MANIFEST_NAME
from qa.index.stats import STATS_NAME
from qa.ingest.articles import Article
from qa.web import metrics as web_metrics
from qa.web.mcp import build_server

TOKEN = "ops-token"


def scrape(client) -> dict:
    """/metrics as {(name, ((label, value), ...)): value}."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(samples, endpoint, method, status):
    return value(samples, "qa_http_requests_total", endpoint=endpoint, method=method, status=str(status))


@pytest.fixture
def admin_client(tmp_path, seeded_index, fake_embedder):
    import shutil

    from qa.web import create_app

    from .conftest import SEEDS

    index = tmp_path / "index"
    shutil.copytree(seeded_index, index)
    app = create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder,
                      "SEEDS_DIR": str(SEEDS), "ADMIN_TOKEN": TOKEN})
    return app.test_client()


def test_metrics_count_requests_by_route_method_and_status(client):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/api/search?q=Where+did+Assad+flee+to%3F&k=2").status_code == 200
    assert client.get("/api/search").status_code == 400  # no q
    assert client.get("/api/search?q=x&from=2024-13-01").status_code == 400
    assert client.get("/api/articles/nope").status_code == 404
    assert client.get("/api/articles/assad-lands-in-russia").status_code == 200
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)

    def delta(*args):
        return requests_of(after, *args) - requests_of(before, *args)

    assert delta("/api/search", "GET", 200) == 3
    assert delta("/api/search", "GET", 400) == 2  # a failing request is counted, by its status
    assert delta("/api/articles/<article_id>", "GET", 404) == 1  # the route, not the path: labels stay few
    assert delta("/api/articles/<article_id>", "GET", 200) == 1
    assert delta("unmatched", "GET", 404) == 1
    assert delta("/metrics", "GET", 200) == 1  # the first scrape
    searches = 3 + 2
    took = (value(after, "qa_http_request_duration_seconds_count", endpoint="/api/search")
            - value(before, "qa_http_request_duration_seconds_count", endpoint="/api/search"))
    assert took == searches
    answered = sum(value(after, "qa_answers_total", kind=k) - value(before, "qa_answers_total", kind=k)
                   for k in ("answer", "null"))
    assert answered == 3  # one per search that ran: the refused ones never reached an answer


def test_index_gauges_equal_readyz_and_follow_a_new_snapshot(admin_client, tmp_path):
    client = admin_client
    assert ("qa_index_articles", ()) not in scrape(client)  # before the first load there is nothing to report
    client.application.extensions["qa"].searcher()  # loaded, as after startup
    ready = client.get("/readyz").get_json()
    got = scrape(client)
    manifest = json.loads((tmp_path / "index" / MANIFEST_NAME).read_text())
    assert value(got, "qa_index_articles") == ready["articles"] == 2
    assert value(got, "qa_index_passages") == ready["passages"]
    assert value(got, "qa_index_generation") == ready["generation"]
    assert value(got, "qa_index_segments") == len(manifest["segments"]) >= 1
    assert value(got, "qa_index_published_timestamp_seconds") == pytest.approx(
        (tmp_path / "index" / MANIFEST_NAME).stat().st_mtime, abs=1e-3)
    # What writers did: the seeds' ingest, from the index folder's ingests.json.
    assert value(got, "qa_ingest_articles_total", result="added") == 2
    assert value(got, "qa_ingest_runs_total") == 1
    assert value(got, "qa_ingest_last_finished_timestamp_seconds") > 0

    r = client.post("/api/articles", json={"id": "ferry", "title": "Ferry", "text": "The ferry sailed at noon."},
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201
    ready2 = client.get("/readyz").get_json()
    got = scrape(client)
    assert ready2["generation"] > ready["generation"]
    assert (value(got, "qa_index_articles"), value(got, "qa_index_passages"), value(got, "qa_index_generation")) \
        == (ready2["articles"], ready2["passages"], ready2["generation"]) == (3, ready2["passages"], ready2["generation"])
    assert value(got, "qa_ingest_articles_total", result="added") == 3
    assert value(got, "qa_ingest_last_articles", result="added") == 1
    assert value(got, "qa_ingest_runs_total") == 2


def test_a_failed_reload_is_counted_and_the_old_snapshot_still_counted(client, app):
    app.extensions["qa"].searcher()  # loaded, as after startup
    before = scrape(client)
    index_dir = app.extensions["qa"].index_dir
    (index_dir / MANIFEST_NAME).write_text('{"model": "fake", "generation": 99')  # torn: not JSON
    after = scrape(client)
    assert value(after, "qa_index_reload_errors_total") - value(before, "qa_index_reload_errors_total") == 1
    assert value(after, "qa_index_generation") == value(before, "qa_index_generation")  # still serving it
    assert client.get("/readyz").get_json()["generation"] == value(after, "qa_index_generation")


def test_ingest_counts_are_kept_by_every_writer(tmp_path, fake_embedder):
    from qa.index.stats import read_stats
    from qa.web.service import Service

    from .conftest import SEEDS

    svc = Service(tmp_path / "ix", "fake", embedder=fake_embedder)
    svc.ingest([SEEDS])
    svc.ingest([SEEDS, tmp_path / "missing.txt"])  # both seeds unchanged; one path fails
    svc.add(Article(id="ferry", title="Ferry", text="The ferry sailed at noon."))
    svc.add(Article(id="ferry", title="Ferry", text="The ferry sailed at one."))
    stats = read_stats(svc.index_dir)
    assert stats["runs"] == 4
    assert stats["articles"] == {"added": 3, "updated": 1, "duplicate": 2, "failed": 1}
    assert stats["last"]["updated"] == 1
    (svc.index_dir / STATS_NAME).write_text("{torn")
    assert read_stats(svc.index_dir)["runs"] == 0  # a damaged file costs the counts, nothing else


def test_metrics_dir_is_made_and_removed(tmp_path, monkeypatch):
    monkeypatch.delenv(web_metrics.MULTIPROC_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with web_metrics.metrics_dir() as path:
        assert os.environ[web_metrics.MULTIPROC_ENV] == path and os.path.isdir(path)
        assert os.path.dirname(path) == str(tmp_path)
    assert not os.path.exists(path) and web_metrics.MULTIPROC_ENV not in os.environ
    # An operator's own folder is kept, but an earlier run's counts are not.
    own = tmp_path / "own"
    own.mkdir()
    (own / "counter_123.db").write_bytes(b"old")
    (own / "notes.txt").write_text("mine")
    monkeypatch.setenv(web_metrics.MULTIPROC_ENV, str(own))
    with web_metrics.metrics_dir() as path:
        assert path == str(own) and sorted(p.name for p in own.iterdir()) == ["notes.txt"]
    assert own.is_dir()


# --- MCP ------------------------------------------------------------------------------------------

def call(server, name: str, args: dict):
    from mcp import Client

    async def go():
        async with Client(server) as c:
            return await c.list_tools(), await c.call_tool(name, args)

    return asyncio.run(go())


def test_mcp_search_is_the_apis_answer_as_structured_content_and_text(app, client):
    svc = app.extensions["qa"]
    tools, res = call(build_server(lambda: svc), "search", {"question": "Who is the leader of HTS?", "k": 3})
    assert {t.name for t in tools.tools} == {"search", "get_article"}
    for t in tools.tools:
        assert t.annotations.read_only_hint is True and t.annotations.destructive_hint is False
    search_tool = next(t for t in tools.tools if t.name == "search")
    assert set(search_tool.input_schema["properties"]) == {"question", "k", "source", "from", "to", "sort"}
    assert search_tool.input_schema["required"] == ["question"]
    assert not res.is_error
    api = client.get("/api/search?q=Who+is+the+leader+of+HTS%3F&k=3").get_json()
    out = res.structured_content
    api.pop("took_ms")
    assert out == api  # /api/search's JSON, answer (with span when it has one) and passages with citations
    text = res.content[0].text
    for r in out["results"]:
        c = r["citation"]
        assert f"[{c['article_id']} chars {c['start']}-{c['end']}]" in text and r["text"] in text
    if out["answer"] is not None:
        assert text.startswith("Answer: " + out["answer"]["text"])


def test_mcp_search_takes_the_apis_filters_and_reports_bad_ones(app):
    svc = app.extensions["qa"]
    server = build_server(lambda: svc)
    _, res = call(server, "search", {"question": "Assad", "from": "2030-01-01"})
    assert not res.is_error and res.structured_content["results"] == []
    _, res = call(server, "search", {"question": "Assad", "from": "2024-12-08", "to": "2024-12-08", "sort": "newest"})
    assert not res.is_error and res.structured_content["results"]
    _, res = call(server, "search", {"question": "Assad", "from": "2024-13-01"})
    assert res.is_error and "invalid_date" in res.content[0].text
    _, res = call(server, "search", {"question": "Assad", "k": 0})
    assert res.is_error


def test_mcp_get_article(app, client):
    svc = app.extensions["qa"]
    _, res = call(build_server(lambda: svc), "get_article", {"id": "assad-lands-in-russia"})
    assert not res.is_error
    assert res.structured_content == client.get("/api/articles/assad-lands-in-russia").get_json()
    assert res.structured_content["text"] in res.content[0].text
    _, res = call(build_server(lambda: svc), "get_article", {"id": "nope"})
    assert res.is_error and "article_not_found" in res.content[0].text


def test_mcp_http_endpoint_answers_posts_only(client):
    r = client.get("/mcp")
    assert r.status_code == 405 and r.get_json()["error"]["code"] == "method_not_allowed"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    r = client.post("/mcp", json=body, headers={"Accept": "application/json, text/event-stream",
                                               "MCP-Protocol-Version": "2025-06-18"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.content_type.startswith("application/json")
    assert {t["name"] for t in r.get_json()["result"]["tools"]} == {"search", "get_article"}
    assert r.headers["X-Content-Type-Options"] == "nosniff"  # the app's hooks apply to /mcp as to any route
