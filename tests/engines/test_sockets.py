"""The owned-socket engine (``server.engine = "fast"``) against the engine conformance suite."""

from __future__ import annotations

from typing import ClassVar

from tests.engines.conformance import EngineConformance
from tests.engines.proxy_conformance import ProxyConformance


class TestSocketsEngine(EngineConformance):
    engine = "sockets"
    differs: ClassVar[dict[str, str]] = {}


class TestSocketsProxies(ProxyConformance):
    engine = "sockets"
