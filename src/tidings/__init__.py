"""tidings: a realtime event hub. Publish once; every subscriber gets it, over the push
technique that suits it (WebSocket, SSE, HTTP streaming, long and short polling, webhooks)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from tidings._version import __version__
from tidings.core.events import Gap, Publication
from tidings.core.position import Position

if TYPE_CHECKING:
    from tidings.client import AsyncServerAPI, Client, ServerAPI, SyncClient
    from tidings.node import Node
    from tidings.server.app import create_app
    from tidings.settings import Settings, load_settings

__all__ = [
    "AsyncServerAPI",
    "Client",
    "Gap",
    "Node",
    "Position",
    "Publication",
    "ServerAPI",
    "Settings",
    "SyncClient",
    "__version__",
    "create_app",
    "load_settings",
]

# The server side and the clients are imported on first use, so that ``import tidings.core`` (sans-I/O, shared
# with clients) does not pull in asyncio, Starlette and the rest.
_LAZY = {
    "AsyncServerAPI": "tidings.client",
    "Client": "tidings.client",
    "ServerAPI": "tidings.client",
    "SyncClient": "tidings.client",
    "Node": "tidings.node",
    "create_app": "tidings.server.app",
    "Settings": "tidings.settings",
    "load_settings": "tidings.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidings' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
