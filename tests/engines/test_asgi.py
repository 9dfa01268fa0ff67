"""The ASGI engine (``server.engine = "uvicorn"``, every app made by ``create_app()``) against
the engine conformance suite."""

from __future__ import annotations

from typing import ClassVar

from tests.engines.conformance import EngineConformance
from tests.engines.proxy_conformance import ProxyConformance


class TestASGIEngine(EngineConformance):
    engine = "asgi"
    differs: ClassVar[dict[str, str]] = {}


class TestASGIProxies(ProxyConformance):
    engine = "asgi"
