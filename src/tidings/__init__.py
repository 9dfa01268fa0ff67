"""tidings: a realtime event hub. Publish once; every subscriber gets it, over the push
technique that suits it (WebSocket, SSE, HTTP streaming, long and short polling, webhooks)."""

from tidings._version import __version__
from tidings.client import AsyncServerAPI, Client, ServerAPI, SyncClient
from tidings.core.events import Gap, Publication
from tidings.core.position import Position
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
