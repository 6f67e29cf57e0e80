"""The web stage: the Flask app (JSON API and pages as blueprints), OpenAPI, and the WSGI server."""

from __future__ import annotations

import logging
from pathlib import Path

from . import api, mcp, metrics, pages, service


def project_root() -> Path:
    """The checkout this package runs from, or the working directory when installed elsewhere."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def create_app(test_config: dict | None = None):
    """Create the Flask app: JSON API, search page, and the shared search service."""
    from flask import Flask

    from ..embed.model import DEFAULT_MODEL
    from ..search.searcher import SearchConfig

    app = Flask(__name__)
    defaults = SearchConfig()
    app.config.from_mapping(
        INDEX_DIR=str(project_root() / "index"),
        SEEDS_DIR=str(project_root() / "seeds"),
        MODEL=DEFAULT_MODEL,
        BACKEND="openvino-int8",  # "onnx-int8", fp32 "onnx" and plain "torch" stay available (QA_BACKEND)
        LEXICAL_WEIGHT=defaults.lexical_weight,
        DENSE_WEIGHT=defaults.dense_weight,
        SENTENCE_WEIGHT=defaults.sentence_weight,
        LEXICAL_SENTENCE_WEIGHT=defaults.lexical_sentence_weight,
        CANDIDATES=defaults.candidates,
        TITLE_WEIGHT=defaults.title_weight,
        MAX_QUERY_CHARS=defaults.max_query_chars,
        MAX_K=defaults.max_k,
        READER=defaults.reader,  # QA_READER=false: the feature models alone choose the answer and decide null
        READER_LEADS=defaults.reader_leads,  # QA_READER_LEADS=false: the reader's answer does not move its passage first
        MAX_CONTENT_LENGTH=64 * 1024,
        STATS_FROM_FOLDERS=True,  # `qa serve --ray`: BM25 statistics read from the shard folders (false: asked)
        ROWS_FROM_FOLDERS=True,  # ... and the best passages' rows and sentences (false: the shards send them)
        ADMIN_TOKEN=None,
        EMBEDDER=None,  # tests inject a fake here
    )
    # QA_INDEX_DIR, QA_MODEL, QA_LEXICAL_WEIGHT, ... (values parsed as JSON when they can be)
    app.config.from_prefixed_env("QA")
    if test_config:
        app.config.update(test_config)
    app.json.sort_keys = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    service.init_app(app)
    api.init_app(app)
    metrics.init_app(app)  # GET /metrics; times and counts every request
    mcp.init_app(app)  # /mcp: the search as MCP tools (streamable HTTP)
    app.register_blueprint(pages.pages)
    return app
