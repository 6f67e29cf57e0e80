"""Run it like a service (#31), for real: one `qa serve` with two gunicorn workers and the real model.

- /metrics is exact over both workers: 60 searches are 60 whichever worker answers the scrape;
- a failing request is counted by its status; the index gauges equal /readyz, before and after a write;
- the folder for the workers' metric files is made by `qa serve` and gone when it stops;
- the MCP tools with the SDK's own clients: streamable HTTP at /mcp, and stdio through `qa mcp`.
"""

import asyncio
import http.client
import json
import os
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ROOT, qa_server

pytestmark = pytest.mark.slow

TOKEN = "ops-live-token"
QUESTION = "Who is the leader of HTS?"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("ops")
    tmp = root / "tmp"  # the server's TMPDIR: where it makes the folder for its workers' metric files
    tmp.mkdir()
    index = root / "index"  # new: the server builds it from seeds/
    env = {"QA_WORKERS": "2", "QA_ADMIN_TOKEN": TOKEN, "TMPDIR": str(tmp)}
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # else qa serve would use that folder instead of its own
    with qa_server(index, env=env) as (port, log):
        folders = list(tmp.glob("qa-metrics-*"))
        assert len(folders) == 1, folders
        yield {"port": port, "index": index, "metrics_dir": folders[0], "log": log}
    assert not folders[0].exists(), "qa serve left its metric files behind"


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def scrape(port) -> dict:
    status, body = request(port, "GET", "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def searches(samples, status=200) -> float:
    return value(samples, "qa_http_requests_total", endpoint="/api/search", method="GET", status=str(status))


def test_sixty_searches_are_sixty_over_two_workers(live):
    port = live["port"]
    before = scrape(port)
    questions = [QUESTION, "Where did Assad flee to?", "What is the capital of France?"]
    errors = []

    def client(n: int) -> None:
        for j in range(10):  # a new connection each time: gunicorn's workers take turns accepting
            q = urllib.parse.quote(questions[(n + j) % 3])
            status, _ = request(port, "GET", f"/api/search?q={q}&k=2")
            if status != 200:
                errors.append(status)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # Both workers answered some: each keeps its own counter file (named by its pid).
    pids = {p.stem.split("_")[-1] for p in live["metrics_dir"].glob("counter_*.db")}
    assert len(pids) == 2, pids
    seen = []
    for _ in range(6):  # whichever worker answers the scrape, the sum is the same
        after = scrape(port)
        seen.append(searches(after) - searches(before))
        answers = sum(value(after, "qa_answers_total", kind=k) - value(before, "qa_answers_total", kind=k)
                      for k in ("answer", "null"))
        assert answers == 60
        took = (value(after, "qa_http_request_duration_seconds_count", endpoint="/api/search")
                - value(before, "qa_http_request_duration_seconds_count", endpoint="/api/search"))
        assert took == 60
    assert seen == [60] * 6
    print(f"\n60 searches over 2 workers ({sorted(pids)}): /metrics said {seen}")


def test_failing_requests_are_counted_by_status(live):
    port = live["port"]
    before = scrape(port)
    for _ in range(3):
        assert request(port, "GET", "/api/search")[0] == 400  # no q
    assert request(port, "GET", "/api/articles/no-such-article")[0] == 404
    assert request(port, "POST", "/api/search", body=b"{", headers={"Content-Type": "application/json"})[0] == 400
    after = scrape(port)

    def delta(endpoint, method, status):
        labels = {"endpoint": endpoint, "method": method, "status": str(status)}
        return value(after, "qa_http_requests_total", **labels) - value(before, "qa_http_requests_total", **labels)

    assert delta("/api/search", "GET", 400) == 3
    assert delta("/api/articles/<article_id>", "GET", 404) == 1
    assert delta("/api/search", "POST", 400) == 1


def test_index_gauges_equal_readyz_before_and_after_a_write(live):
    port = live["port"]

    def check() -> dict:
        for _ in range(4):  # both workers, whichever answers each
            got = scrape(port)
            ready = json.loads(request(port, "GET", "/readyz")[1])
            manifest = json.loads((live["index"] / "manifest.json").read_text())
            assert value(got, "qa_index_articles") == ready["articles"] == manifest["articles"]
            assert value(got, "qa_index_passages") == ready["passages"] == manifest["passages"]
            assert value(got, "qa_index_generation") == ready["generation"] == manifest["generation"]
            assert value(got, "qa_index_segments") == len(manifest["segments"])
        return got

    got = check()
    assert value(got, "qa_index_articles") == 2
    assert value(got, "qa_ingest_articles_total", result="added") == 2  # the seeds, built by qa serve
    article = {"id": "ops-ferry", "title": "Kelvik ferry returns",
               "text": "The Kelvik ferry returned to service on Monday after a year of repairs."}
    status, _ = request(port, "POST", "/api/articles", body=json.dumps(article).encode(),
                        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    assert status == 201
    got = check()
    assert value(got, "qa_index_articles") == 3
    assert value(got, "qa_ingest_articles_total", result="added") == 3
    assert value(got, "qa_ingest_last_articles", result="added") == 1
    assert value(got, "qa_index_reload_errors_total") == 0


def _check_tools(session) -> None:
    """search and get_article on the seeds, through an initialized ClientSession."""
    async def go():
        tools = await session.list_tools()
        assert {t.name for t in tools.tools} == {"search", "get_article"}
        res = await session.call_tool("search", {"question": QUESTION, "k": 3})
        assert not res.is_error, res.content
        out = res.structured_content
        answer = out["answer"]
        assert answer is not None, out
        c = answer["citation"]
        assert c["article_id"] == "assad-lands-in-russia", answer
        assert res.content[0].text.startswith("Answer: " + answer["text"])
        assert 1 <= len(out["results"]) <= 3
        art = await session.call_tool("get_article", {"id": c["article_id"]})
        assert not art.is_error
        text = art.structured_content["text"]
        assert text[c["start"]:c["end"]] == answer["text"]  # the citation points at the article's own words
        for r in out["results"]:
            if r["citation"]["article_id"] == c["article_id"]:
                assert text[r["citation"]["start"]:r["citation"]["end"]] == r["text"]
        missing = await session.call_tool("get_article", {"id": "no-such-article"})
        assert missing.is_error and "article_not_found" in missing.content[0].text
    return go()


def test_mcp_over_streamable_http(live):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def main():
        async with streamable_http_client(f"http://127.0.0.1:{live['port']}/mcp") as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await _check_tools(session)

    asyncio.run(main())
    got = scrape(live["port"])
    assert value(got, "qa_http_requests_total", endpoint="/mcp", method="POST", status="200") >= 4


def test_mcp_over_stdio(live):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "qa", "mcp", "--index", str(live["index"])],
                                   cwd=str(ROOT), env={"HF_HUB_OFFLINE": "1", **{k: v for k, v in os.environ.items()
                                                                               if k.startswith(("QA_CACHE", "HOME"))}})
    errlog = open(Path(live["index"]).parent / "mcp-stdio.log", "w")

    async def main():
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await _check_tools(session)

    try:
        asyncio.run(asyncio.wait_for(main(), 300))
    finally:
        errlog.close()
