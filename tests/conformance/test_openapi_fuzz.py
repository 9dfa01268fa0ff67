"""Schemathesis against the running server's ``/api/openapi.json``: no 5xx, every error well shaped.

Each operation of the server API gets schema-valid requests (positive) and schema-violating ones
(negative). Whatever comes in, the answer is below 500, and every 4xx body is the one error shape
``{"error": {"code": <known code>, "message": <str>}}`` served as JSON.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
from typing import Any
from urllib.parse import urlsplit

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")

# Every schemathesis module is imported now, at collection: schemathesis imports many lazily, and
# pytest rewrites them (schemathesis is a pytest plugin); parsing one deep in a running test's
# stack has hit CPython 3.11's "SystemError: AST constructor recursion depth mismatch" here.
for _info in pkgutil.walk_packages(schemathesis.__path__, "schemathesis."):
    with contextlib.suppress(Exception):
        importlib.import_module(_info.name)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from tests.serving import RunningServer, serve  # noqa: E402

CODES = {
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "too_large",
    "rate_limited",
    "unavailable",
    "internal",
}
# Examples per operation and generation mode: make test runs a bounded fuzz (every operation, both
# modes; hypothesis tries the boundary values first), make test-long the deep one;
# TIDINGS_SCHEMATHESIS_EXAMPLES sets the short one.
EXAMPLES = int(os.environ.get("TIDINGS_SCHEMATHESIS_EXAMPLES", "25"))
LONG_EXAMPLES = 150
API_KEY = "schemathesis-key-0123456789"


def check_answer(case: Any, response: Any) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if not urlsplit(response.request.url).path.startswith("/api/"):
        # A path parameter of dot segments ("../..") that the HTTP client resolved: the request
        # left the API (GET / is the HTML console), so its shape is not the API's. Rare: a
        # flaky failure when drawn.
        return
    if response.status_code >= 400:
        content_type = response.headers.get("content-type") or [""]
        assert content_type[0].startswith("application/json"), where
        body = response.json()
        assert set(body) == {"error"}, where
        assert set(body["error"]) == {"code", "message"}, where
        assert body["error"]["code"] in CODES, where
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], where
    elif response.status_code == 204:  # a DELETE of what an earlier example created
        assert response.text == "", where
    else:
        try:
            json.loads(response.text)  # every other success is JSON
        except ValueError:
            raise AssertionError(f"not JSON: {where}") from None


# The keys of a path parameter's schema that constrain nothing a request could violate.
NO_CONSTRAINT = {"type", "title", "description"}


def violable(operation: Any) -> bool:
    """Whether negative generation can break the operation's schema: not when all it takes is
    plain string path parameters (any string is one). Hypothesis would search about a second of
    CPU per such operation before it gives up (Unsatisfiable), whatever the example count."""
    if operation.body or operation.query or operation.headers or operation.cookies:
        return True
    for parameter in operation.path_parameters:
        schema = parameter.definition.get("schema", {})
        if schema.get("type") != "string" or set(schema) - NO_CONSTRAINT:
            return True
    return False


def fuzz(
    server: RunningServer,
    modes: list[Any],
    examples: int,
    headers: dict[str, str] | None = None,
    schema_headers: dict[str, str] | None = None,
) -> int:
    # the document follows the API key like the API itself
    schema = schemathesis.openapi.from_url(f"{server.url}/api/openapi.json", headers=schema_headers or {})
    base = f"{server.url}/api"
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in modes:
            if mode is schemathesis.GenerationMode.NEGATIVE and not violable(operation):
                continue

            @settings(
                max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                if headers:
                    case.headers = {**(case.headers or {}), **headers}
                check_answer(case, case.call(base_url=base, timeout=10))

            try:
                run()
            except Unsatisfiable:
                assert mode is not schemathesis.GenerationMode.POSITIVE  # nothing to violate
    return operations


# The webhook applications' routes (issue 22) about doubled the operations: at 40 examples, about
# 140 s and 110 s on the loaded CI machine, past the suite's 120 s per test.
FUZZ_TIMEOUT = 360
DEPTHS = [
    pytest.param(EXAMPLES, id="short", marks=pytest.mark.timeout(FUZZ_TIMEOUT)),
    pytest.param(LONG_EXAMPLES, id="long", marks=[pytest.mark.long, pytest.mark.timeout(3000)]),
]


@pytest.mark.parametrize("examples", DEPTHS)
def test_the_server_api_answers_fuzzed_requests_without_5xx_and_in_the_error_shape(examples: int):
    modes = list(schemathesis.GenerationMode)
    with serve(namespaces={"tiny": {"history_size": 3}}) as server:
        assert fuzz(server, modes, examples) >= 7


@pytest.mark.parametrize("examples", DEPTHS)
def test_with_an_api_key_unauthenticated_fuzzed_requests_get_401_in_the_error_shape(examples: int):
    key = {"Authorization": f"Bearer {API_KEY}"}
    with serve(api_key=API_KEY) as server:
        # without the key every schema-valid request stops at the key check (401, whatever its
        # parameters): a quarter of the examples per operation covers it
        unauthenticated = max(5, examples // 4)
        assert fuzz(server, [schemathesis.GenerationMode.POSITIVE], unauthenticated, schema_headers=key) >= 7
        assert fuzz(server, list(schemathesis.GenerationMode), examples, headers=key, schema_headers=key) >= 7
