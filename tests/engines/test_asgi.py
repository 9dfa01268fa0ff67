"""The ASGI engine (``server.engine = "uvicorn"``, every app made by ``create_app()``) against
the engine conformance suite."""

from __future__ import annotations

from typing import ClassVar

from tests.engines.conformance import EngineConformance


class TestASGIEngine(EngineConformance):
    engine = "asgi"
    differs: ClassVar[dict[str, str]] = {
        "test_a_refused_upgrade_is_answered_with_a_json_error": (
            "the WebSocket handshake is refused by uvicorn and websockets, not by tidings: "
            "text/plain bodies (an empty one for a foreign origin), 400 for version 8 "
            "(RFC 6455: 426 with Sec-WebSocket-Version)"),
    }
