from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.commands import (
    CommandError,
    Connect,
    HistoryCmd,
    Ping,
    PresenceCmd,
    PublishCmd,
    Subscribe,
    Unsubscribe,
)
from tidings.core.events import Page
from tidings.core.permissions import (
    ANONYMOUS,
    Capability,
    Credentials,
    NamespaceOptions,
    Namespaces,
)
from tidings.core.position import Position
from tidings.core.session import Session, SessionState, SubState
from tidings.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    TidingsError,
    TokenExpired,
    Unauthorized,
)

from .helpers import EPOCH, pub

NOW = 1_700_000_000.0
NAMESPACES = Namespaces(
    {
        "chat": NamespaceOptions(client_publish=True, presence=True, max_message_bytes=100),
        "secret": NamespaceOptions(private=True),
    }
)
ALICE = Credentials(user="alice", expires_at=NOW + 60)


def session(credentials: Credentials | None = None, **kwargs: int) -> Session:
    return Session(NAMESPACES, credentials=credentials, **kwargs)


def refusal(s: Session, command: object, now: float = NOW, **kwargs: int) -> Exception:
    with pytest.raises(CommandError) as info:
        s.receive(command, now, **kwargs)  # type: ignore[arg-type]
    assert info.value.ref == getattr(command, "ref", None)
    return info.value.error


def test_a_session_without_credentials_starts_new_and_anonymous():
    s = session()
    assert s.state is SessionState.NEW
    assert s.credentials is ANONYMOUS


def test_a_session_with_credentials_starts_connected():
    assert session(ALICE).state is SessionState.CONNECTED


def test_connect_is_accepted_when_new_and_the_edge_then_adopts_the_credentials():
    s = session()
    command = Connect(1, "token")
    assert s.receive(command, NOW) is command
    assert s.state is SessionState.NEW  # until the edge has verified the token
    s.connect(ALICE, NOW)
    assert s.state is SessionState.CONNECTED
    assert s.credentials is ALICE


def test_a_new_session_sending_another_command_first_is_connected_anonymously():
    s = session()
    s.receive(Ping(1), NOW)
    assert s.state is SessionState.CONNECTED
    assert s.credentials.anonymous


def test_connect_refreshes_the_token_of_the_same_user():
    s = session(ALICE)
    s.receive(Connect(2, "new"), NOW)
    fresh = Credentials(user="alice", expires_at=NOW + 3600)
    s.connect(fresh, NOW)
    assert s.credentials is fresh


def test_connect_refuses_a_token_of_another_user():
    s = session(ALICE)
    with pytest.raises(Unauthorized, match="same user"):
        s.connect(Credentials(user="bob"), NOW)


def test_connect_refuses_expired_credentials():
    with pytest.raises(TokenExpired):
        session().connect(Credentials(user="alice", expires_at=NOW), NOW)


def test_connect_accepts_credentials_without_expiry():
    s = session()
    s.connect(Credentials(user="alice"), NOW)
    assert not s.expired(NOW + 10**9)


def test_commands_after_the_token_expired_are_refused_with_token_expired():
    s = session(ALICE)
    assert isinstance(refusal(s, Ping(3), now=NOW + 60), TokenExpired)
    assert s.expired(NOW + 60)
    assert not s.expired(NOW + 59)


def test_a_connect_is_still_accepted_after_the_token_expired():
    s = session(ALICE)
    command = Connect(4, "fresh")
    assert s.receive(command, NOW + 3600) is command


@pytest.mark.parametrize(
    "command",
    [
        Connect(1, None),
        Ping(1),
        Subscribe(1, "chat:a", None),
        Unsubscribe(1, "chat:a"),
        PublishCmd(1, "chat:a", 1, "message"),
        PresenceCmd(1, "chat:a"),
        HistoryCmd(1, "chat:a", None, 10),
    ],
)
def test_a_closed_session_refuses_every_command(command: object):
    s = session(ALICE)
    s.close()
    error = refusal(s, command)
    assert isinstance(error, BadRequest)
    assert "not allowed now" in str(error)


def test_subscribe_starts_recovering_with_the_since_position():
    s = session()
    since = Position(EPOCH, 3)
    s.receive(Subscribe(1, "chat:lobby", since), NOW)
    sub = s.subscriptions["chat:lobby"]
    assert sub.state is SubState.RECOVERING
    recovery = s.recovery("chat:lobby")
    assert recovery is not None
    assert recovery.since == since
    assert recovery.channel == "chat:lobby"


def test_subscribed_makes_the_subscription_live_and_drops_the_recovery():
    s = session()
    s.receive(Subscribe(1, "chat:lobby", None), NOW)
    recovery = s.recovery("chat:lobby")
    assert recovery is not None
    recovery.buffer(pub(1))
    assert recovery.finish(Page([], Position(EPOCH, 0))).publications == [pub(1)]
    s.subscribed("chat:lobby")
    assert s.subscriptions["chat:lobby"].state is SubState.LIVE
    assert s.recovery("chat:lobby") is None


def test_subscribed_and_unsubscribe_on_an_unknown_channel_do_nothing():
    s = session()
    s.subscribed("chat:nowhere")
    s.unsubscribe("chat:nowhere")
    assert s.subscriptions == {}
    assert s.recovery("chat:nowhere") is None


def test_subscribing_twice_is_a_conflict():
    s = session()
    s.receive(Subscribe(1, "chat:lobby", None), NOW)
    assert isinstance(refusal(s, Subscribe(2, "chat:lobby", None)), Conflict)


def test_subscriptions_are_limited_per_connection():
    s = session(max_subscriptions=2)
    s.receive(Subscribe(1, "chat:a", None), NOW)
    s.receive(Subscribe(2, "chat:b", None), NOW)
    error = refusal(s, Subscribe(3, "chat:c", None))
    assert isinstance(error, BadRequest)
    assert "at most 2" in str(error)


def test_unsubscribe_forgets_the_subscription():
    s = session()
    s.receive(Subscribe(1, "chat:lobby", None), NOW)
    command = Unsubscribe(2, "chat:lobby")
    assert s.receive(command, NOW) is command
    assert "chat:lobby" not in s.subscriptions


def test_unsubscribe_from_a_channel_not_subscribed_is_not_found():
    assert isinstance(refusal(session(), Unsubscribe(1, "chat:lobby")), NotFound)


def test_the_edge_can_unsubscribe_after_a_failed_subscribe():
    s = session()
    s.receive(Subscribe(1, "chat:lobby", None), NOW)
    s.unsubscribe("chat:lobby")
    assert s.subscriptions == {}


def test_subscribe_to_a_private_namespace_without_a_grant_is_forbidden():
    error = refusal(session(ALICE), Subscribe(1, "secret:x", None))
    assert isinstance(error, Forbidden)
    assert "subscribe is not allowed on secret:x" in str(error)


def test_subscribe_to_a_private_namespace_with_a_grant_is_accepted():
    creds = Credentials(user="alice", grants={"secret:*": frozenset({Capability.SUBSCRIBE})})
    s = session(creds)
    s.receive(Subscribe(1, "secret:x", None), NOW)
    assert "secret:x" in s.subscriptions


TOKEN_CAPS = frozenset({Capability.SUBSCRIBE, Capability.HISTORY, Capability.PRESENCE})


def test_a_subscription_token_grant_ends_at_its_expiry():
    s = session(ALICE)
    s.grant("secret:x", TOKEN_CAPS, NOW + 2)
    assert s.next_expiry() == NOW + 2  # before the connection token's NOW + 60
    s.receive(Subscribe(1, "secret:x", None), NOW)
    s.receive(HistoryCmd(2, "secret:x", None, 10), NOW + 1)
    s.receive(Unsubscribe(3, "secret:x"), NOW + 1)
    # after exp the grant is gone, whatever the client does
    assert isinstance(refusal(s, Subscribe(4, "secret:x", None), NOW + 2), Forbidden)
    assert isinstance(refusal(s, HistoryCmd(5, "secret:x", None, 10), NOW + 3), Forbidden)
    assert s.expire_grants(NOW + 3) == []  # nothing subscribed stood on it
    assert s.grants == {} and s.next_expiry() == NOW + 60


def test_without_a_connection_token_expiry_only_the_grants_expire():
    s = session(Credentials(user="alice"))  # e.g. an API key: no exp
    assert s.next_expiry() is None
    s.grant("secret:x", TOKEN_CAPS, NOW + 5)
    s.grant("secret:y", TOKEN_CAPS, NOW + 2)
    assert s.next_expiry() == NOW + 2


def test_an_expired_grant_ends_the_subscriptions_it_alone_allowed():
    creds = Credentials(
        user="alice", grants={"chat:*": frozenset({Capability.SUBSCRIBE})}, expires_at=NOW + 60
    )
    s = session(creds)
    s.grant("secret:x", TOKEN_CAPS, NOW + 2)
    s.grant("chat:y", TOKEN_CAPS, NOW + 2)
    s.receive(Subscribe(1, "secret:x", None), NOW)
    s.receive(Subscribe(2, "chat:y", None), NOW)
    assert s.expire_grants(NOW + 1.9) == []
    assert s.expire_grants(NOW + 2) == ["secret:x"]  # chat:y is still granted by the token
    assert list(s.subscriptions) == ["chat:y"]


def test_a_refreshed_connection_token_keeps_a_grant_but_does_not_extend_it():
    s = session(ALICE)
    s.grant("secret:x", TOKEN_CAPS, NOW + 2)
    s.connect(Credentials(user="alice", expires_at=NOW + 600), NOW + 1)
    s.receive(HistoryCmd(1, "secret:x", None, 10), NOW + 1)
    assert isinstance(refusal(s, HistoryCmd(2, "secret:x", None, 10), NOW + 2), Forbidden)


def test_a_longer_subscription_token_replaces_a_shorter_one_not_the_reverse():
    s = session(ALICE)
    s.grant("secret:x", TOKEN_CAPS, NOW + 2)
    s.grant("secret:x", TOKEN_CAPS, NOW + 10)
    s.grant("secret:x", TOKEN_CAPS, NOW + 5)
    assert s.grants["secret:x"].expires_at == NOW + 10


def test_publish_is_refused_where_clients_may_not_publish():
    assert isinstance(refusal(session(), PublishCmd(1, "news:x", 1, "message")), Forbidden)


def test_presence_and_history_follow_the_namespace_options():
    s = session()
    assert s.receive(PresenceCmd(1, "chat:lobby"), NOW) == PresenceCmd(1, "chat:lobby")
    assert isinstance(refusal(s, PresenceCmd(2, "news:x")), Forbidden)
    history = HistoryCmd(3, "chat:lobby", None, 10)
    assert s.receive(history, NOW) is history


def test_close_is_final_and_drops_subscriptions():
    s = session()
    s.receive(Subscribe(1, "chat:lobby", None), NOW)
    s.close()
    assert s.state is SessionState.CLOSED
    assert s.subscriptions == {}


def test_connect_cannot_reopen_a_closed_session():
    s = session()
    s.close()
    with pytest.raises(BadRequest, match="not allowed now"):
        s.connect(ALICE, NOW)
    assert s.state is SessionState.CLOSED


COMMANDS = st.one_of(
    st.builds(Connect, st.none(), st.none()),
    st.builds(Ping, st.integers(0, 5)),
    st.builds(
        Subscribe, st.integers(0, 5), st.sampled_from(["chat:a", "chat:b", "secret:x", "news:c"]), st.none()
    ),
    st.builds(Unsubscribe, st.integers(0, 5), st.sampled_from(["chat:a", "chat:b", "news:c"])),
    st.builds(
        PublishCmd, st.integers(0, 5), st.sampled_from(["chat:a", "news:c"]), st.none(), st.just("message")
    ),
    st.builds(PresenceCmd, st.integers(0, 5), st.sampled_from(["chat:a", "news:c"])),
    st.builds(HistoryCmd, st.integers(0, 5), st.sampled_from(["chat:a", "news:c"]), st.none(), st.just(10)),
    st.just("close"),
    st.just("connect-alice"),
    st.just("connect-bob"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(COMMANDS, st.integers(0, 120)), max_size=25))
def test_the_state_machine_keeps_its_invariants_for_any_command_sequence(steps: list[tuple[object, int]]):
    s = session(max_subscriptions=2)
    seen_states = [s.state]
    for command, dt in steps:
        now = NOW + dt
        before = s.state
        if command == "close":
            s.close()
        elif isinstance(command, str):
            user = command.removeprefix("connect-")
            with contextlib.suppress(TidingsError):
                s.connect(Credentials(user=user, expires_at=NOW + 60), now)
        else:
            error: CommandError | None = None
            try:
                accepted = s.receive(command, now)  # type: ignore[arg-type]
            except CommandError as exc:
                error = exc
            if error is None:
                assert accepted is command
            else:
                assert isinstance(error.error, TidingsError)
                assert error.ref == command.ref  # type: ignore[attr-defined]
            if before is SessionState.CLOSED:
                assert s.state is SessionState.CLOSED
        assert len(s.subscriptions) <= 2
        assert "secret:x" not in s.subscriptions  # private, and nobody holds a grant
        if s.state is SessionState.CLOSED:
            assert s.subscriptions == {}
        seen_states.append(s.state)
    # NEW only at the start, CLOSED only at the end
    order = [SessionState.NEW, SessionState.CONNECTED, SessionState.CLOSED]
    ranks = [order.index(state) for state in seen_states]
    assert ranks == sorted(ranks)


def test_a_proxied_publish_skips_the_permission_rule_but_not_the_state() -> None:
    from tidings.core.commands import Rpc

    closed = Namespaces({"room": NamespaceOptions(client_publish=False, publish_proxy=True)})
    session = Session(closed)
    command = PublishCmd(1, "room:a", {"x": 1}, "message")
    with pytest.raises(CommandError, match="publish is not allowed"):
        session.receive(command, 0.0)
    assert session.receive(command, 0.0, proxied=True) is command
    assert session.receive(Rpc(2, "m", None), 0.0) == Rpc(2, "m", None)
    expiring = Session(closed, credentials=Credentials(user="u", expires_at=1.0))
    with pytest.raises(CommandError, match="token expired"):
        expiring.receive(command, 5.0, proxied=True)


def test_delta_is_refused_in_a_namespace_without_the_option():
    s = Session(Namespaces({"ticks": NamespaceOptions(delta=True)}))
    error = refusal(s, Subscribe(1, "chat:lobby", None, delta="fossil"))
    assert isinstance(error, Forbidden) and "delta" in str(error)
    assert "chat:lobby" not in s.subscriptions
    s.receive(Subscribe(2, "ticks:acme", None, delta="fossil"), NOW)
    assert "ticks:acme" in s.subscriptions
