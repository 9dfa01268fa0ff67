"""Registry of peer adapters. To add one: write peers/<name>.py with a Peer subclass, list it
here."""

from .base import Peer
from .node_ws import NodeWs
from .pushpin import Pushpin, PushpinDefault
from .rawref import RawRef
from .socketio import SocketIO, SocketIOLegacyWs
from .starlette import StarletteWs
from .tidings import Tidings, TidingsAfter, TidingsBefore, TidingsDefaults

PEERS: dict[str, type[Peer]] = {
    p.name: p
    for p in (
        Tidings,
        TidingsDefaults,
        TidingsBefore,
        TidingsAfter,
        NodeWs,
        SocketIO,
        SocketIOLegacyWs,
        StarletteWs,
        Pushpin,
        PushpinDefault,
        RawRef,
    )
}


def get_peer(name: str, rundir: str) -> Peer:
    return PEERS[name](rundir)
