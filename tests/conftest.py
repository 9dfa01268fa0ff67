from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serving import RunningServer, serve


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A node with default settings plus a small-history namespace ``tiny`` (3 publications)
    and ``chat`` with presence and join/leave messages (off by default)."""
    namespaces = {"tiny": {"history_size": 3}, "chat": {"presence": True, "join_leave": True}}
    with serve(namespaces=namespaces) as running:
        yield running
