"""Schemathesis against the app's own /openapi.json: no 5xx, and every answer matches the schema.

Schema-valid (positive) and schema-invalid (negative) requests for every
operation, the write operations included, with and without the admin token.
(schemathesis's lazy `from_fixture` loader does not run under pytest 9, so the
operations are driven through their Hypothesis strategies directly.)
"""

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.generation.modes import GenerationMode

from qa.web import create_app
from qa.web.openapi import spec

from .conftest import SEEDS

TOKEN = "fuzz-token"
OPERATIONS = [(path, method.upper()) for path, ops in spec(admin=True)["paths"].items() for method in ops]


@pytest.fixture
def fuzz_app(tmp_path, seeded_index, fake_embedder):
    index = tmp_path / "index"
    shutil.copytree(seeded_index, index)
    app = create_app({"TESTING": True, "INDEX_DIR": str(index), "MODEL": "fake", "EMBEDDER": fake_embedder,
                      "SEEDS_DIR": str(SEEDS), "ADMIN_TOKEN": TOKEN})
    app.extensions["qa"].searcher()  # loaded, as after startup: a 503 "not ready" would be a false alarm
    return app


def _cases():
    for path, method in OPERATIONS:
        yield path, method, GenerationMode.POSITIVE
        op = spec(admin=True)["paths"][path][method.lower()]
        if "requestBody" in op or any("schema" in p and len(p["schema"]) > 1 for p in op.get("parameters", [])):
            yield path, method, GenerationMode.NEGATIVE  # only where there is a constraint to break


@pytest.mark.parametrize("path, method, mode", list(_cases()))
def test_api_matches_its_schema(fuzz_app, path, method, mode):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)  # the service's own description
    operation = schema[path][method]
    # An article the schema allows may still hold no article text once page chrome is stripped
    # ("Subscribe now"): a documented 400 invalid_article that no JSON Schema can predict.
    excluded = [checks.positive_data_acceptance] if operation.label == "POST /api/articles" else []
    tokens = [{"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer wrong"}, None]
    calls = []

    # Derandomized: the same examples every run, so CI is reproducible (drop it locally to explore).
    @settings(max_examples=30, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        headers = tokens[len(calls) % 3] if "security" in operation.definition.raw else None
        calls.append(case)
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    check()
    assert calls
