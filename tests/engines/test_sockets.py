"""The owned-socket engine (``server.engine = "fast"``) against the engine conformance suite."""

from __future__ import annotations

from typing import ClassVar

from tests.engines.conformance import EngineConformance


class TestSocketsEngine(EngineConformance):
    engine = "sockets"
    differs: ClassVar[dict[str, str]] = {}
