"""The core and the transports' machines are sans-I/O: importing them must not import any I/O or
framework library.

Each check runs in a fresh interpreter, so modules imported by other tests do not count.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tidings.core
import tidings.machines

FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "select",
    "sqlite3",
    "http",
    "urllib.request",
    "anyio",
    "starlette",
    "uvicorn",
    "redis",
    "httpx",
    "websockets",
    "fastapi",
    "uvloop",
    "hypercorn",
    "h11",
    "h2",
    "wsproto",
    "aiohttp",
    "requests",
    "urllib3",
    "trio",
    "socketserver",
    "multiprocessing",
    "concurrent.futures",
    "threading",
    "subprocess",
    "email",
    "smtplib",
    "ftplib",
    "telnetlib",
    "xmlrpc",
    "pydantic",
    "typer",
    "jwt",
    "prometheus_client",
}
SRC = Path(tidings.core.__file__).resolve().parents[2]


def core_modules() -> list[str]:
    """Every module of the sans-I/O packages: ``tidings.core`` and ``tidings.machines``."""
    names = ["tidings.core", "tidings.machines"]
    for package in (tidings.core, tidings.machines):
        prefix = package.__name__ + "."
        names.extend(info.name for info in pkgutil.walk_packages(package.__path__, prefix))
    return sorted(names)


def imported_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC)},
        timeout=60,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def forbidden_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_the_core_has_every_module_this_test_imports():
    names = core_modules()
    for expected in (
        "tidings.core.session",
        "tidings.core.history",
        "tidings.core.wire.sse",
        "tidings.core.wire.websocket",
        "tidings.machines.backlog",
    ):
        assert expected in names
    # a typo or a new subpackage would otherwise go unchecked
    assert len(names) >= 15


def test_core_modules_import_no_io_library():
    """Every core module, with the ``tidings`` package itself kept out of the picture."""
    imports = "\n".join(f"import {name}" for name in core_modules())
    # Stand in for tidings/__init__.py so only core (and what it imports) runs.
    stub = (
        "import types\n"
        f"pkg = types.ModuleType('tidings'); pkg.__path__ = [{str(SRC / 'tidings')!r}]\n"
        "sys.modules['tidings'] = pkg\n"
    )
    modules = imported_after(stub + imports)
    assert "tidings.core.session" in modules
    assert not any(
        m.startswith(
            (
                "tidings.node",
                "tidings.server",
                "tidings.hub",
                "tidings.engines",
                "tidings.transports",
                "tidings.settings",
            )
        )
        for m in modules
    )
    assert forbidden_in(modules) == []


def test_importing_the_core_as_users_do_imports_no_io_library():
    """``import tidings.core.x`` also runs ``tidings/__init__.py``: it must stay light too."""
    modules = imported_after("\n".join(f"import {name}" for name in core_modules()))
    assert forbidden_in(modules) == []


@pytest.mark.parametrize("name", ["Node", "create_app", "Settings", "load_settings"])
def test_the_package_still_offers_its_heavy_names(name: str):
    import tidings

    assert getattr(tidings, name) is not None
    assert name in tidings.__all__
