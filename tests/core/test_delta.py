"""Delta updates in core: the refusals, the per-connection rule, the encoded delta (once per
publication), the client's decoder, and the hub linking each publication to the previous one."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from tidings.core.delta import (
    DeltaDecoder,
    DeltaError,
    DeltaSubscriptions,
    check_delta,
    data_text,
    parse_delta,
)
from tidings.core.fossil import apply
from tidings.core.permissions import NamespaceOptions
from tidings.core.wire.frames import EncodedPublication
from tidings.exceptions import BadRequest, Forbidden
from tidings.hub import Hub

from .helpers import OTHER_EPOCH, pub

CH = "chat:lobby"
BIG = {"text": "x" * 300, "n": 0, "tail": "y" * 100}


def big(n: int, **extra: Any) -> dict[str, Any]:
    return {**BIG, "n": n, **extra}


def chained(*encoded: EncodedPublication) -> list[EncodedPublication]:
    for before, after in itertools.pairwise(encoded):
        after.previous = before
    return list(encoded)


def test_parse_delta() -> None:
    assert parse_delta(None) is None
    assert parse_delta("fossil") == "fossil"
    for bad in ("xdelta", 1, ""):
        with pytest.raises(BadRequest, match="unknown delta kind"):
            parse_delta(bad)


def test_check_delta() -> None:
    check_delta(CH, NamespaceOptions(delta=True))
    with pytest.raises(Forbidden, match="not enabled on chat:lobby"):
        check_delta(CH, NamespaceOptions())


def test_the_delta_is_computed_once_and_applies_to_the_previous_data_text() -> None:
    first, second = chained(EncodedPublication(pub(1, data=big(1))), EncodedPublication(pub(2, data=big(2))))
    delta = second.delta
    assert delta is not None and second.delta is delta  # once
    assert second.previous is first  # kept until the hub links the next one (chained frames use it too)
    message = orjson.loads(delta.body)
    assert message["delta"] is True and message["offset"] == 2 and message["channel"] == CH
    assert apply(first.data_text, message["data"].encode()) == second.data_text
    # every transport's bytes of the delta, built from its body
    assert orjson.loads(delta.ws_text)["op"] == "message"
    assert b'"delta":true' in delta.sse and b'"delta":true' in delta.ndjson
    assert orjson.loads(delta.with_cursor("c"))["cursor"] == "c"


def test_no_delta_without_a_previous_publication() -> None:
    assert EncodedPublication(pub(1, data=big(1))).delta is None


def test_no_delta_when_it_is_not_smaller() -> None:
    _, second = chained(EncodedPublication(pub(1, data=big(1))), EncodedPublication(pub(2, data=[1])))
    assert second.delta is None


def test_no_delta_when_it_is_not_valid_utf8() -> None:
    # the literal of the delta starts inside the two bytes of "é" (a copy ends inside it)
    source = {"a": "z" * 40 + "\u00e9" + "q" * 40}
    target = {"a": "z" * 40 + "\u00e8" + "q" * 40}
    _, second = chained(EncodedPublication(pub(1, data=source)), EncodedPublication(pub(2, data=target)))
    assert second.delta is None


def test_line_breaks_stay_escaped_in_deltas() -> None:
    first, second = chained(
        EncodedPublication(pub(1, data=big(1))), EncodedPublication(pub(2, data=big(2, s="a\u2028b")))
    )
    delta = second.delta
    assert delta is not None
    assert "\u2028".encode() not in delta.body
    decoded = apply(first.data_text, orjson.loads(delta.body)["data"].encode())
    assert decoded == second.data_text and orjson.loads(decoded)["s"] == "a\u2028b"


def test_data_text_of_messages() -> None:
    data = {"k": ',"data":1,"cursor":"x'}
    encoded = EncodedPublication(pub(1, event='e,"data":', data=data))
    assert orjson.loads(encoded.data_text) == data
    assert data_text(encoded.body) == encoded.data_text  # no cursor
    assert data_text(encoded.ws_text.encode()) == encoded.data_text
    assert data_text(encoded.ndjson.strip()) == encoded.data_text


def test_subscriptions_rule() -> None:
    subs = DeltaSubscriptions()
    assert not subs
    e1, e2, e3, e4 = chained(*(EncodedPublication(pub(n, data=big(n))) for n in range(1, 5)))
    other = EncodedPublication(pub(1, channel="other:x", data=big(1)))
    assert subs.outgoing(other) is other  # not a delta subscription
    subs.add(CH)
    assert subs and CH in subs and "other:x" not in subs
    assert subs.outgoing(e1) is e1  # first: in full
    assert subs.outgoing(e2) is e2.delta  # next offset: the delta
    subs.restart(CH)
    subs.restart("other:x")  # not a delta subscription: nothing to do
    assert subs.outgoing(e3) is e3  # after a replay or gap: in full
    assert subs.outgoing(e4) is e4.delta
    e6 = EncodedPublication(pub(6, data=big(6)))
    e6.previous = EncodedPublication(pub(5, data=big(5)))
    assert subs.outgoing(e6) is e6  # offset 5 missed: in full
    e7 = EncodedPublication(pub(7, epoch=OTHER_EPOCH, data=big(7)))
    e7.previous = e6
    assert subs.outgoing(e7) is e7  # another epoch: in full
    e8 = EncodedPublication(pub(8, epoch=OTHER_EPOCH, data=[8]))
    e8.previous = e7
    assert subs.outgoing(e8) is e8  # no delta to send (not smaller): in full
    subs.discard(CH)
    subs.discard(CH)
    assert not subs


def test_decoder_applies_deltas_and_refuses_one_without_a_base() -> None:
    e1, e2, e3 = chained(*(EncodedPublication(pub(n, data=big(n))) for n in range(1, 4)))
    decoder = DeltaDecoder()
    full = orjson.loads(e1.ws_text)
    assert decoder.decode(full, e1.ws_text.encode()) is full
    for encoded in (e2, e3):
        delta = encoded.delta
        assert delta is not None
        decoded = decoder.decode(orjson.loads(delta.ws_text), delta.ws_text.encode())
        assert decoded == orjson.loads(encoded.ws_text)
    assert decoder.applied == 2
    decoder.reset()
    delta = e3.delta
    assert delta is not None
    with pytest.raises(DeltaError, match="without the publication"):
        decoder.decode(orjson.loads(delta.ws_text), delta.ws_text.encode())
    with pytest.raises(DeltaError, match="without the publication"):
        decoder.decode({"delta": True, "data": 1}, b"")


def test_decoder_refuses_a_delta_that_does_not_apply() -> None:
    _, e2 = chained(*(EncodedPublication(pub(n, data=big(n))) for n in range(1, 3)))
    decoder = DeltaDecoder()
    other = EncodedPublication(pub(1, data=big(1, extra="zz")))
    decoder.decode(orjson.loads(other.ws_text), other.ws_text.encode())
    delta = e2.delta
    assert delta is not None
    with pytest.raises(DeltaError):
        decoder.decode(orjson.loads(delta.ws_text), delta.ws_text.encode())


# the hub ----------------------------------------------------------------------------------


class Recorder:
    """Records whether each publication had a delta when it was delivered (a delta is built
    during its fan-out, or never)."""

    def __init__(self) -> None:
        self.delivered: list[EncodedPublication] = []
        self.deltas: list[bool] = []

    def deliver(self, publication: EncodedPublication) -> None:
        self.delivered.append(publication)
        self.deltas.append(publication.delta is not None)

    def control(self, channel: str, message: dict[str, Any]) -> None:
        pass


def test_hub_links_consecutive_publications_of_delta_channels_only() -> None:
    hub = Hub()
    hub.delta_enabled = lambda channel: channel.startswith("chat:")
    chat, plain = Recorder(), Recorder()
    hub.promote(CH, chat)
    hub.promote("plain:x", plain)
    for n in (1, 2, 4, 5):
        hub.fan_out(pub(n, data=big(n)))
    hub.fan_out(pub(6, epoch=OTHER_EPOCH, data=big(6)))
    hub.fan_out(pub(1, channel="plain:x", data=big(1)))
    hub.fan_out(pub(2, channel="plain:x", data=big(2)))
    assert chat.deltas == [False, True, False, True, False]  # 1, 2, (gap) 4, 5, (epoch) 6
    assert plain.deltas == [False, False]
    assert hub.remove(CH, chat) and CH not in hub._last


def test_hub_without_delta_namespaces_keeps_nothing() -> None:
    hub = Hub()
    hub.promote(CH, Recorder())
    hub.fan_out(pub(1, data=big(1)))
    encoded = hub.fan_out(pub(2, data=big(2)))
    assert encoded is not None and encoded.delta is None and not hub._last


def test_hub_keeps_the_last_publication_while_the_channel_has_subscribers() -> None:
    hub = Hub()
    hub.delta_enabled = lambda channel: True
    a, b = Recorder(), Recorder()
    hub.promote(CH, a)
    hub.promote(CH, b)
    hub.fan_out(pub(1, data=big(1)))
    assert not hub.remove(CH, a) and CH in hub._last
    assert hub.remove(CH, b) and CH not in hub._last
