"""Every end-to-end test runs against both engines: the fast path and the ASGI path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serving import ENGINE


@pytest.fixture(autouse=True, params=["fast", "asgi"])
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    token = ENGINE.set(request.param)
    try:
        yield request.param
    finally:
        ENGINE.reset(token)
