"""What the import graph must say that import-linter's contracts (pyproject.toml, ``make lint``)
cannot: no function-local imports but the few that say why, and uvicorn's and websockets' private
modules imported by one module only, whose supported versions are pyproject.toml's.

Read from the source (an ``ast`` walk of src/tidings), so nothing here depends on what a test
happened to import first.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidings
from tidings.engines.uvicorn_internals import SUPPORTED, unsupported_versions

SRC = Path(tidings.__file__).resolve().parent
PYPROJECT = SRC.parents[1] / "pyproject.toml"

# (module, function, imported module) -> why the import is made there and not at the top. Anything
# else imported inside a function hides a cycle or a layer crossing: move it, or pass it in.
LOCAL_IMPORTS = {
    (
        "tidings/cli.py",
        "serve",
        "tidings.server.run",
    ): "the whole server is a second of imports every other CLI command would pay for nothing",
    ("tidings/cli.py", "serve", "tidings.server.http2"): "Hypercorn, only for --http2",
    ("tidings/cli.py", "subscribe", "tidings.client.subscribe"): "the client, only for this command",
    (
        "tidings/config_cli.py",
        "effective",
        "tidings.webhooks.service",
    ): "the webhook service (FastAPI, the node), for one key of `tidings config`",
    ("tidings/node.py", "make_broker", "tidings.brokers.sqlite"): "imported only when configured",
    (
        "tidings/node.py",
        "make_broker",
        "tidings.brokers.redis",
    ): "imported only when configured: redis-py is a second of imports",
    ("tidings/server/http2.py", "run_http2", "uvloop"): "uvloop is not on every platform",
    **{
        ("tidings/consumers/cli.py", function, "tidings.consumers.service"): "the node, only for "
        "these commands (the CLI's other commands would pay a second of imports)"
        for function in ("init", "run", "_probe")
    },
    ("tidings/outbox.py", "_sqlalchemy_statement", "sqlalchemy"): "the caller's library, not a dependency",
    ("tidings/outbox.py", "write_django", "django.db"): "the caller's library, not a dependency",
}

INTERNALS = "tidings/engines/uvicorn_internals.py"


def modules() -> Iterator[tuple[str, ast.Module, list[str]]]:
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text("utf-8")
        yield f"tidings/{path.relative_to(SRC).as_posix()}", ast.parse(text), text.splitlines()


def imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert node.level == 0, "tidings imports absolutely"
    return [node.module or ""]


def local_imports() -> Iterator[tuple[str, str, str, int]]:
    """(module, function, imported module, line) of every import inside a function."""
    for name, tree, _ in modules():
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        for module in imported(node):
                            yield name, function.name, module, node.lineno


def test_function_local_imports_are_only_the_few_that_say_why():
    found = {(name, function, module) for name, function, module, _ in local_imports()}
    assert found - LOCAL_IMPORTS.keys() == set(), "move these to the top, or say why here"
    assert LOCAL_IMPORTS.keys() - found == set(), "gone: take them off the list"


def test_each_kept_local_import_says_why_where_it_is():
    sources = {name: lines for name, _, lines in modules()}
    for name, _, module, line in local_imports():
        lines = sources[name]
        said = "#" in lines[line - 1] or lines[line - 2].strip().startswith("#")
        assert said, f"{name}:{line}: import of {module} without a comment saying why it is here"


def test_every_module_of_the_package_is_walked():
    names = [name for name, _, _ in modules()]
    assert INTERNALS in names and "tidings/core/session.py" in names
    assert len(names) > 100


def test_the_walk_finds_a_local_import():
    tree = ast.parse("def f():\n    import json\n")
    nodes = [node for node in ast.walk(tree.body[0]) if isinstance(node, ast.Import)]
    assert [imported(node) for node in nodes] == [["json"]]


def private_imports(name: str, tree: ast.Module) -> list[str]:
    """uvicorn below its top level (``uvicorn.Config``, ``uvicorn.Server`` are public), and
    ``websockets`` outside the Python client (which uses its public client)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for module in imported(node):
                websockets = module.split(".")[0] == "websockets"
                if module.startswith("uvicorn.") or (websockets and not name.startswith("tidings/client/")):
                    found.append(module)
    return found


def test_uvicorn_and_websockets_internals_are_imported_by_one_module():
    outside = {
        name: found
        for name, tree, _ in modules()
        if name != INTERNALS and (found := private_imports(name, tree))
    }
    assert outside == {}
    internals = ast.parse((SRC / "engines/uvicorn_internals.py").read_text("utf-8"))
    assert "uvicorn.protocols.http.httptools_impl" in private_imports(INTERNALS, internals)


def pyproject_bounds() -> dict[str, tuple[str, str]]:
    bounds = {}
    for dependency in tomllib.loads(PYPROJECT.read_text("utf-8"))["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", dependency)
        assert name is not None
        lowest = re.search(r">=\s*([0-9][^,;\s]*)", dependency)
        below = re.search(r"<\s*([0-9][^,;\s]*)", dependency)
        if name.group(0) in SUPPORTED:
            assert lowest and below, f"{dependency}: needs a lower and an upper bound"
            bounds[name.group(0)] = (lowest.group(1), below.group(1))
    return bounds


def test_the_supported_versions_are_the_ones_pyproject_allows():
    assert pyproject_bounds() == SUPPORTED


def test_the_installed_versions_are_supported():
    assert unsupported_versions() == []


@pytest.mark.parametrize(
    ("installed", "found"),
    [
        ({}, []),
        ({"uvicorn": "99.0.0"}, ["uvicorn 99.0.0"]),
        ({"uvicorn": "0.1"}, ["uvicorn 0.1"]),
        ({"websockets": "1.0"}, ["websockets 1.0"]),
        ({"uvicorn": "0.0.1", "websockets": "99.0rc1"}, ["uvicorn 0.0.1", "websockets 99.0rc1"]),
    ],
)
def test_a_version_outside_the_range_is_named(installed: dict[str, str], found: list[str]):
    versions = {name: lowest for name, (lowest, _) in SUPPORTED.items()} | installed
    assert unsupported_versions(versions.__getitem__) == found


def test_the_first_version_past_the_range_is_outside_it():
    versions = {name: below + ".0" for name, (_, below) in SUPPORTED.items()}
    assert unsupported_versions(versions.__getitem__) == [f"{name} {v}" for name, v in versions.items()]


def test_a_missing_package_is_named():
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    assert unsupported_versions(missing) == [f"{name} (not installed)" for name in SUPPORTED]
