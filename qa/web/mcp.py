"""The search as Model Context Protocol tools, for assistants: `qa mcp` (stdio) and /mcp on `qa serve`.

Two read-only tools, built with the official SDK (`mcp`, its MCPServer):

- `search(question, k=5, source=None, from=None, to=None, sort="relevance")`: /api/search's JSON as
  structured content (the answer with its span when the answer has one, and citation; the passages with
  theirs), and the same as readable text;
- `get_article(id)`: the article's metadata, text and passages' offsets (/api/articles/ID).

Over HTTP the SDK's app is an ASGI app and `qa serve` is gunicorn's WSGI, so each worker runs the app on
an event loop thread of its own and hands it each /mcp request (`_Bridge`). It runs stateless, answering
JSON rather than event streams: any worker can answer any request, as with the rest of the API, and an
MCP request passes through the same hooks (headers, /metrics) as any other.

The SDK is imported only when a tool server is built: `qa ask` and friends never pay for it.
"""

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

from flask import Flask, Response, current_app, request

from ..errors import NotFound, QAError
from .service import Service

PATH = "/mcp"
NAME = "qa-news"
INSTRUCTIONS = ("Search a collection of news articles with a plain-English question. `search` gives the sentence "
                "that answers it (or none: answer is null) and the passages around it, each with a citation to "
                "the exact characters of its article; `get_article` gives an article's whole text. Nothing is "
                "generated: quote the answer and cite it.")
REQUEST_TIMEOUT = 120.0  # seconds an MCP request may take in a worker before it is answered 504


def search_result(svc: Service, question: str, k: int = 5, source=None, from_=None, to=None,
                  sort=None) -> tuple[dict, Any]:
    """/api/search's JSON for a question (less took_ms), and the answer object (None when null)."""
    from ..search import filters
    from ..search.searcher import validate

    q, k = validate(question, k, svc.cfg)
    where, sort = filters.parse(source, from_, to, sort)
    searcher = svc.searcher()
    with searcher.index.reading():
        got = searcher.ask(q, k, where, sort)
    return {"query": q, **got.to_dict()}, got.answer


def _where(c: dict) -> str:
    meta = " · ".join(str(x) for x in (c.get("title"), c.get("source"), c.get("published")) if x)
    return f"{meta} [{c['article_id']} chars {c['start']}-{c['end']}]"


def search_text(result: dict) -> str:
    """The search result as text an assistant (or a person) reads: answer, then the passages, with citations."""
    a = result.get("answer")
    lines = []
    if a is None:
        lines.append("No answer in the collection; the closest passages:")
    else:
        span = a.get("span")
        short = f" (in short: {a['text'][span['start']:span['end']]})" if span else ""
        lines += [f"Answer: {a['text']}{short}",
                  f"  {_where(a['citation'])} confidence {a['confidence']:.2f}"]
    for r in result.get("results", []):
        lines += ["", f"{r['rank']}. {_where(r['citation'])} score {r['score']:.3f}", r["text"]]
    if not result.get("results"):
        lines.append("No passages match.")
    return "\n".join(lines)


def article_text(art: dict) -> str:
    meta = [f"{k}: {art[k]}" for k in ("id", "title", "source", "author", "published", "url") if art.get(k)]
    return "\n".join([*meta, "", art["text"]])


def _models():
    """Pydantic models for the tools' output schemas (loose: fields added later to the API pass through)."""
    from pydantic import BaseModel, ConfigDict

    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")

    class Span(Open):
        start: int
        end: int

    class Citation(Open):
        article_id: str
        title: str | None = None
        url: str | None = None
        source: str | None = None
        published: str | None = None
        start: int
        end: int
        href: str | None = None

    class AnswerOut(Open):
        text: str
        confidence: float
        citation: Citation
        span: Span | None = None

    class ResultOut(Open):
        rank: int
        score: float
        text: str
        citation: Citation

    class SearchOut(Open):
        query: str
        answer: AnswerOut | None
        results: list[ResultOut]

    class PassageOut(Open):
        id: int
        start: int
        end: int

    class ArticleOut(Open):
        id: str
        title: str | None = None
        url: str | None = None
        source: str | None = None
        author: str | None = None
        published: str | None = None
        text: str
        passages: list[PassageOut]

    return SearchOut, ArticleOut


def build_server(service: Callable[[], Service], on_answer: Callable[[Any], None] | None = None, lifespan=None):
    """The MCP server with its two tools over `service()`'s index; `on_answer(answer)` after each search."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import CallToolResult, TextContent, ToolAnnotations
    from pydantic import Field

    from .. import __version__

    SearchOut, ArticleOut = _models()
    server = MCPServer(NAME, title="News question answering", version=__version__, instructions=INSTRUCTIONS,
                       log_level="WARNING", lifespan=lifespan)
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                open_world_hint=False)

    def search(
        question: Annotated[str, Field(description="The question, in plain English", min_length=1, max_length=1000)],
        k: Annotated[int, Field(description="How many passages", ge=1, le=50)] = 5,
        source: Annotated[str | list[str] | None, Field(description="Only articles from this source (or these)")]
        = None,
        from_: Annotated[str | None, Field(alias="from", description="Published on or after (YYYY-MM-DD)")] = None,
        to: Annotated[str | None, Field(description="Published on or before (YYYY-MM-DD)")] = None,
        sort: Annotated[Literal["relevance", "newest"] | None,
                        Field(description="relevance (default), or the same passages newest first")] = None,
    ) -> Annotated[CallToolResult, SearchOut]:
        """Answer a question from the news articles: the sentence that answers it (or null when none does),
        with its confidence and citation, and the passages that answer it best, each with its citation
        (article id, title, source, date, and character offsets into the article's text)."""
        try:
            result, answer = search_result(service(), question, k, source, from_, to, sort)
        except QAError as e:
            raise ToolError(f"{e.code}: {e.message}") from None
        if on_answer is not None:
            on_answer(answer)
        return CallToolResult(content=[TextContent(type="text", text=search_text(result))],
                              structured_content=result)

    server.add_tool(_from_alias(search), annotations=read_only)

    @server.tool(annotations=read_only)
    def get_article(
        id: Annotated[str, Field(description="The article's id, as in a citation's article_id")],
    ) -> Annotated[CallToolResult, ArticleOut]:
        """One article: its title, source, author, date, URL, whole text, and its passages' offsets."""
        try:
            art = service().searcher().index.article(id)
            if art is None:
                raise NotFound(f"no article with id {id!r}", code="article_not_found")
        except QAError as e:
            raise ToolError(f"{e.code}: {e.message}") from None
        return CallToolResult(content=[TextContent(type="text", text=article_text(art))], structured_content=art)

    return server


def _from_alias(fn: Callable) -> Callable:
    """`fn` as a tool whose argument `from_` is called `from` (a Python keyword) by clients.

    The SDK names the argument by its alias in the schema, and also when it calls the function."""
    import functools
    import inspect

    @functools.wraps(fn)
    def tool(**kwargs):
        if "from" in kwargs:
            kwargs["from_"] = kwargs.pop("from")
        return fn(**kwargs)

    tool.__signature__ = inspect.signature(fn)
    return tool


def serve_stdio(svc: Service) -> None:
    """`qa mcp`: serve the tools on stdin/stdout until the client closes them.

    The model and index load in the background as the server starts, so the first question is quick;
    a question asked before then waits for the load."""
    from contextlib import asynccontextmanager

    def warm() -> None:
        try:
            from ..search.reader import warm_up

            warm_up(svc.cfg.reader)
            svc.searcher(wait=True).search("warm up", 1)
        except Exception:  # noqa: BLE001 - the first tool call reports what is wrong
            pass

    @asynccontextmanager
    async def lifespan(_server):
        threading.Thread(target=warm, name="qa-mcp-load", daemon=True).start()
        yield {}

    build_server(lambda: svc, lifespan=lifespan).run()  # the SDK points fd 1 at stderr meanwhile: nothing but the protocol reaches stdout


# --- /mcp on qa serve -----------------------------------------------------------------------------

class _Bridge:
    """The SDK's streamable-HTTP app (stateless, JSON answers) on an event loop thread of this process."""

    def __init__(self, server):
        import logging

        from mcp.server.transport_security import TransportSecuritySettings

        logging.getLogger("mcp").setLevel(logging.WARNING)  # not a line per request at INFO
        self.server = server
        # Host/Origin checks guard a server that holds something a web page must not reach; these tools
        # read exactly what GET /api/search serves to anyone, with no checks, so they would add nothing.
        self.app = server.streamable_http_app(
            streamable_http_path=PATH, stateless_http=True, json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:  # started on the first request: after gunicorn's fork, in the worker
            if self._loop is None:
                loop, started = asyncio.new_event_loop(), concurrent.futures.Future()
                threading.Thread(target=loop.run_until_complete, args=(self._run(started),), name="qa-mcp",
                                 daemon=True).start()
                started.result(30)
                self._loop = loop
            return self._loop

    async def _run(self, started: concurrent.futures.Future) -> None:
        try:
            async with self.server.session_manager.run():
                started.set_result(None)
                await asyncio.Event().wait()  # for the life of the process
        except BaseException as e:
            if not started.done():
                started.set_exception(e)
            raise

    def __call__(self, environ: dict, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        future = asyncio.run_coroutine_threadsafe(self._exchange(_scope(environ, body), body), self.loop())
        try:
            return future.result(REQUEST_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise QAError("the MCP request took too long", code="timeout", status=504) from None

    async def _exchange(self, scope: dict, body: bytes):
        status, headers, chunks = 500, [], []
        done, given = asyncio.Event(), False

        async def receive():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()  # the client "disconnects" once its whole answer is written
            return {"type": "http.disconnect"}

        async def send(message):
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.app(scope, receive, send)
        finally:
            done.set()
        return status, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers], b"".join(chunks)


def _scope(environ: dict, body: bytes) -> dict:
    """An ASGI HTTP scope for a WSGI request."""
    headers = [(k[5:].replace("_", "-").lower().encode("latin-1"), v.encode("latin-1"))
               for k, v in environ.items() if k.startswith("HTTP_")]
    if environ.get("CONTENT_TYPE"):
        headers.append((b"content-type", environ["CONTENT_TYPE"].encode("latin-1")))
    headers.append((b"content-length", str(len(body)).encode()))
    server = (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT") or 80))
    client = (environ.get("REMOTE_ADDR", ""), int(environ.get("REMOTE_PORT") or 0))
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": environ["REQUEST_METHOD"], "scheme": environ.get("wsgi.url_scheme", "http"),
            "path": PATH, "raw_path": PATH.encode(), "root_path": "",
            "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
            "headers": headers, "server": server, "client": client}


_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def mcp_view():
    app = current_app._get_current_object()
    bridge = app.extensions.get("qa_mcp")
    if bridge is None:
        with _bridge_lock:
            bridge = app.extensions.get("qa_mcp")
            if bridge is None:
                from .metrics import count_answer

                bridge = app.extensions["qa_mcp"] = _Bridge(build_server(lambda: app.extensions["qa"], count_answer))
    status, headers, body = bridge(request.environ, request.get_data(cache=False))
    return Response(body, status=status, headers=[(k, v) for k, v in headers if k.lower() not in _HOP])


_bridge_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """/mcp: the tools over streamable HTTP (the SDK is loaded on the first request)."""
    app.add_url_rule(PATH, "mcp", mcp_view, methods=["POST"])  # no event streams: GET is 405, as MCP allows
