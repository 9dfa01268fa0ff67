"""``tidings.hub``: the channel → subscribers index and the synchronous fan-out."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from tidings.core.events import Page
from tidings.core.position import Position
from tidings.core.recovery import Recovery
from tidings.core.wire.deflate import negotiate
from tidings.core.wire.frames import EncodedPublication
from tidings.hub import Hub

from .helpers import EPOCH, OTHER_EPOCH, pub

CH = "chat:lobby"


class Recorder:
    def __init__(self, hub: Hub | None = None, unsubscribe_on_deliver: bool = False) -> None:
        self.delivered: list[EncodedPublication] = []
        self.controls: list[tuple[str, dict[str, Any]]] = []
        self.hub = hub
        self.unsubscribe_on_deliver = unsubscribe_on_deliver

    def deliver(self, publication: EncodedPublication) -> None:
        self.delivered.append(publication)
        if self.unsubscribe_on_deliver and self.hub is not None:
            self.hub.remove(publication.publication.channel, self)

    def control(self, channel: str, message: dict[str, Any]) -> None:
        self.controls.append((channel, message))


def test_fan_out_without_subscribers_encodes_nothing():
    assert Hub().fan_out(pub(1)) is None


def test_fan_out_hands_the_same_encoded_publication_to_every_live_subscriber():
    hub = Hub()
    a, b = Recorder(), Recorder()
    for sub in (a, b):
        hub.add_recovering(CH, sub, Recovery(CH, None))
        hub.promote(CH, sub)
    encoded = hub.fan_out(pub(1))
    assert encoded is not None
    assert a.delivered == [encoded]
    assert b.delivered == [encoded]
    assert a.delivered[0] is b.delivered[0]
    assert hub.deliveries == 2


def test_recovering_subscribers_buffer_instead_of_receiving():
    hub = Hub()
    sub = Recorder()
    recovery = Recovery(CH, None)
    assert hub.add_recovering(CH, sub, recovery) is True
    assert hub.is_recovering(CH, sub)
    assert hub.fan_out(pub(1)) is None
    assert sub.delivered == []
    assert recovery.finish(Page([], Position(EPOCH, 0))).publications == [pub(1)]
    hub.promote(CH, sub)
    assert not hub.is_recovering(CH, sub)
    hub.fan_out(pub(2))
    assert [e.publication for e in sub.delivered] == [pub(2)]


def test_add_recovering_says_whether_the_channel_is_new_here():
    hub = Hub()
    a, b = Recorder(), Recorder()
    assert hub.add_recovering(CH, a, Recovery(CH, None)) is True
    assert hub.add_recovering(CH, b, Recovery(CH, None)) is False
    hub.promote(CH, a)
    assert hub.add_recovering(CH, Recorder(), Recovery(CH, None)) is False


def test_promote_keeps_other_recovering_subscribers():
    hub = Hub()
    a, b = Recorder(), Recorder()
    hub.add_recovering(CH, a, Recovery(CH, None))
    hub.add_recovering(CH, b, Recovery(CH, None))
    hub.promote(CH, a)
    assert hub.is_recovering(CH, b)
    assert hub.channels() == {CH: 2}


def test_promote_without_recovering_adds_a_live_subscriber():
    hub = Hub()
    sub = Recorder()
    hub.promote(CH, sub)
    assert hub.subscriber_count(CH) == 1


def test_remove_reports_when_the_channel_has_no_subscriber_left():
    hub = Hub()
    a, b = Recorder(), Recorder()
    hub.add_recovering(CH, a, Recovery(CH, None))
    hub.promote(CH, a)
    hub.add_recovering(CH, b, Recovery(CH, None))
    assert hub.remove(CH, a) is False
    assert hub.remove(CH, b) is True
    assert not hub.has_channel(CH)
    assert hub.remove(CH, a) is True  # removing twice is harmless
    assert hub.channels() == {}


def test_remove_of_an_unknown_subscriber_keeps_the_others():
    hub = Hub()
    a = Recorder()
    hub.promote(CH, a)
    assert hub.remove(CH, Recorder()) is False
    assert hub.subscriber_count(CH) == 1


def test_a_subscriber_that_unsubscribes_during_delivery_does_not_break_the_fan_out():
    hub = Hub()
    quitter = Recorder(hub, unsubscribe_on_deliver=True)
    stayer = Recorder()
    hub.promote(CH, quitter)
    hub.promote(CH, stayer)
    hub.fan_out(pub(1))
    assert len(quitter.delivered) == 1
    assert len(stayer.delivered) == 1
    assert hub.deliveries == 2  # both were delivered to, though one left meanwhile
    hub.fan_out(pub(2))
    assert len(quitter.delivered) == 1
    assert len(stayer.delivered) == 2


def test_control_reaches_live_subscribers_only():
    hub = Hub()
    live, recovering = Recorder(), Recorder()
    hub.promote(CH, live)
    hub.add_recovering(CH, recovering, Recovery(CH, None))
    message = {"op": "join", "channel": CH}
    hub.control(CH, message)
    hub.control("chat:empty", message)
    assert live.controls == [(CH, message)]
    assert recovering.controls == []


def test_channels_and_counts_include_live_and_recovering():
    hub = Hub()
    hub.promote("a", Recorder())
    hub.add_recovering("b", Recorder(), Recovery("b", None))
    hub.add_recovering("a", Recorder(), Recovery("a", None))
    assert hub.channels() == {"a": 2, "b": 1}
    assert hub.subscriber_count("a") == 2
    assert hub.subscriber_count("zzz") == 0
    assert hub.has_channel("b")
    assert not hub.has_channel("zzz")


# CATCHING: the broker's link lagging behind the history read -----------------------------------


def test_a_subscriber_promoted_at_a_position_drops_what_the_link_hands_over_up_to_it():
    hub = Hub()
    sub = Recorder()
    hub.add_recovering(CH, sub, Recovery(CH, Position(EPOCH, 1)))
    hub.promote(CH, sub, Position(EPOCH, 3))  # history gave it 2 and 3; the link has not yet
    for offset in (2, 3, 4, 5):
        hub.fan_out(pub(offset))
    assert [e.publication.offset for e in sub.delivered] == [4, 5]


def test_a_catching_subscriber_drops_another_epoch_until_a_gap_notice_announces_it():
    hub = Hub()
    sub = Recorder()
    hub.promote(CH, sub, Position(EPOCH, 3))
    hub.fan_out(pub(3, epoch=OTHER_EPOCH))  # the link still handing over an older epoch
    assert sub.delivered == []
    notice = {"op": "gap", "channel": CH, "epoch": OTHER_EPOCH, "requested": 4, "available_from": 1}
    hub.control(CH, notice)
    hub.fan_out(pub(1, epoch=OTHER_EPOCH))
    assert sub.controls == [(CH, notice)]
    assert [e.publication.position for e in sub.delivered] == [Position(OTHER_EPOCH, 1)]


def test_a_catching_subscriber_is_not_told_of_a_gap_its_history_covered():
    hub = Hub()
    sub = Recorder()
    hub.promote(CH, sub, Position(EPOCH, 9))
    covered = {"op": "gap", "channel": CH, "epoch": EPOCH, "requested": 3, "available_from": 8}
    hub.control(CH, covered)
    hub.fan_out(pub(9))
    assert (sub.controls, sub.delivered) == ([], [])
    lost = {"op": "gap", "channel": CH, "epoch": EPOCH, "requested": 3, "available_from": 12}
    hub.control(CH, lost)
    assert sub.controls == [(CH, lost)]


def test_a_catching_subscriber_gets_join_and_leave_and_counts_until_removed():
    hub = Hub()
    sub = Recorder()
    hub.promote(CH, sub, Position(EPOCH, 0))
    join = {"op": "join", "channel": CH}
    hub.control(CH, join)
    assert sub.controls == [(CH, join)]
    assert hub.channels() == {CH: 1}
    assert hub.subscriber_count(CH) == 1
    assert hub.subscriptions_by_transport() == {"other": 1}
    assert hub.remove(CH, sub) is True
    assert not hub.has_channel(CH)
    hub.fan_out(pub(1))
    assert sub.delivered == []


def test_a_notice_before_a_generation_skips_subscribers_whose_read_began_in_it():
    hub = Hub()
    before, after = Recorder(), Recorder()
    hub.add_recovering(CH, before, Recovery(CH, None))
    hub.promote(CH, before)  # generation 0: read before the link went down
    hub.generation += 1  # the link went down
    hub.add_recovering(CH, after, Recovery(CH, None))
    hub.promote(CH, after, Position(OTHER_EPOCH, 0), generation=1)  # read the store since
    notice = {"op": "gap", "channel": CH, "epoch": OTHER_EPOCH, "requested": 12, "available_from": None}
    hub.control(CH, notice, before_generation=hub.generation)
    assert before.controls == [(CH, notice)]
    assert after.controls == []


class Compressing(Recorder):
    """A subscriber whose client negotiated permessage-deflate (it asks for the shared frame)."""

    def __init__(self) -> None:
        super().__init__()
        self.previous: list[EncodedPublication | None] = []  # each one's link, during its fan-out

    def deliver(self, publication: EncodedPublication) -> None:
        super().deliver(publication)
        self.previous.append(publication.previous)
        deflate = negotiate("permessage-deflate", 0)
        assert deflate is not None
        publication.ws_deflated(deflate, chained=publication.previous is not None)


def test_the_last_publication_is_kept_for_chaining_only_where_a_subscriber_compressed_it():
    hub = Hub()
    hub.chain_compression = True
    plain, compressing = Recorder(), Compressing()
    for channel, sub in (("plain:a", plain), ("zip:a", compressing)):
        hub.add_recovering(channel, sub, Recovery(channel, None))
        hub.promote(channel, sub)
    hub.fan_out(pub(1, channel="plain:a"))
    first = hub.fan_out(pub(1, channel="zip:a"))
    assert "plain:a" not in hub._last  # 10,000 idle channels keep nothing
    second = hub.fan_out(pub(2, channel="zip:a"))
    assert second is not None and compressing.previous == [None, first] and hub._last["zip:a"] is second
    assert second.previous is None  # once fanned out: no chain of publications stays alive


def test_the_publication_kept_for_chaining_keeps_only_what_the_next_one_refers_to():
    """An idle channel's last publication, kept for the next one's chained frame and delta,
    drops its data (Python objects, 11 KB for a 1 KB ticker) and the WebSocket frames its
    fan-out built; the next publication's chained frame still reads as the client expects."""
    hub = Hub()
    hub.chain_compression = True
    compressing = Compressing()
    hub.add_recovering("zip:a", compressing, Recovery("zip:a", None))
    hub.promote("zip:a", compressing)
    data = {"rows": [{"id": i, "price": 100.5 + i} for i in range(30)]}
    first = hub.fan_out(pub(1, channel="zip:a", data=data))
    assert first is not None and hub._last["zip:a"] is first
    assert first.publication.data is None and not first.ws_compressed
    assert first.publication.offset == 1 and b'"price":129.5' in first.body
    data2 = {"rows": [{"id": i, "price": 100.75 + i} for i in range(30)]}
    second = hub.fan_out(pub(2, channel="zip:a", data=data2))
    assert second is not None and compressing.previous == [None, first]
    deflate = negotiate("permessage-deflate", 0)
    assert deflate is not None
    window = zlib.decompressobj(-15)
    window.decompress(deflate.compress(first._ws_payload()) + b"\x00\x00\xff\xff")
    second.previous = first  # as during its fan-out
    chained = second.ws_deflated(deflate, chained=True)
    body = chained[2:] if chained[1] < 126 else chained[4:]
    assert len(chained) * 3 < len(second.ws_frame)
    assert orjson.loads(window.decompress(body + b"\x00\x00\xff\xff"))["data"] == data2
