"""The presence entry of a client: what the server API and the ``presence`` reply show."""

from __future__ import annotations

from tidings.core.presence import ClientInfo


def test_a_client_shows_its_id_user_and_info():
    entry = ClientInfo("c1", "ann", {"role": "host"})
    assert entry.to_dict() == {"client": "c1", "user": "ann", "info": {"role": "host"}}
    assert ClientInfo("c2", "bob").to_dict()["info"] is None
