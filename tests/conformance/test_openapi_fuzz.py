"""Schemathesis against the running server's ``/api/openapi.json``: no 5xx, every error well shaped.

Each operation of the server API gets schema-valid requests (positive) and schema-violating ones
(negative). Whatever comes in, the answer is below 500, and every 4xx body is the one error shape
``{"error": {"code": <known code>, "message": <str>}}`` served as JSON.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
from typing import Any

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
EXAMPLES = int(os.environ.get("TIDINGS_SCHEMATHESIS_EXAMPLES", "40"))
API_KEY = "schemathesis-key-0123456789"


def check_answer(case: Any, response: Any) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        content_type = response.headers.get("content-type") or [""]
        assert content_type[0].startswith("application/json"), where
        body = response.json()
        assert set(body) == {"error"}, where
        assert set(body["error"]) == {"code", "message"}, where
        assert body["error"]["code"] in CODES, where
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], where
    else:
        response.json()  # every success is JSON


def fuzz(
    server: RunningServer,
    modes: list[Any],
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

            @settings(
                max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
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


# The webhook applications' routes (issue 22) about doubled the operations: about 140 s and 110 s
# on the loaded CI machine, past the suite's 120 s per test.
FUZZ_TIMEOUT = 360


@pytest.mark.timeout(FUZZ_TIMEOUT)
def test_the_server_api_answers_fuzzed_requests_without_5xx_and_in_the_error_shape():
    modes = list(schemathesis.GenerationMode)
    with serve(namespaces={"tiny": {"history_size": 3}}) as server:
        assert fuzz(server, modes) >= 7


@pytest.mark.timeout(FUZZ_TIMEOUT)
def test_with_an_api_key_unauthenticated_fuzzed_requests_get_401_in_the_error_shape():
    key = {"Authorization": f"Bearer {API_KEY}"}
    with serve(api_key=API_KEY) as server:
        assert fuzz(server, [schemathesis.GenerationMode.POSITIVE], schema_headers=key) >= 7
        assert fuzz(server, list(schemathesis.GenerationMode), headers=key, schema_headers=key) >= 7
