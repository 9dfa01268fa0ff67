"""The ASGI engine (``server.engine = "uvicorn"``, every app made by ``create_app()``) against
the engine conformance suite."""

from __future__ import annotations

from typing import ClassVar

from tests.engines.conformance import EngineConformance


class TestASGIEngine(EngineConformance):
    engine = "asgi"
    differs: ClassVar[dict[str, str]] = {
        "test_the_close_line_of_a_websocket_says_who_ended_it_and_how[client-vanishes]": (
            "issue 18: close info: a client gone without a close frame is logged as 1005 "
            "(uvicorn's code for no status); the other engine says 1000 (normal), RFC 6455 7.1.5 "
            "says 1006"),
        "test_a_refused_upgrade_is_answered_with_a_json_error": (
            "the WebSocket handshake is refused by uvicorn and websockets, not by tidings: "
            "text/plain bodies (an empty one for a foreign origin), 400 for version 8 "
            "(RFC 6455: 426 with Sec-WebSocket-Version)"),
    }
