from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serving import RunningServer, serve


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A node with default settings plus a small-history namespace ``tiny`` (3 publications)."""
    with serve(namespaces={"tiny": {"history_size": 3}}) as running:
        yield running
