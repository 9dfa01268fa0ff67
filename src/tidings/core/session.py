"""One client connection's state, as a table-driven state machine (sans-I/O).

Theory. A connection is ``NEW`` until it is authenticated, either by a token presented with the
upgrade or by a first ``connect`` command; a ``NEW`` connection that sends another command first
is connected anonymously. ``CONNECTED`` connections may subscribe, publish and so on; a further
``connect`` refreshes the token (same user only). ``CLOSED`` is final. Each subscription is
``RECOVERING`` from the moment it is accepted until its history read has been merged (live
publications are buffered meanwhile, see :mod:`tidings.core.recovery`), then ``LIVE``.

:meth:`Session.receive` is the one decision point: it checks the state table, the limits and the
permission rule, updates the state, and returns the command the edge must now carry out, or
raises :class:`~tidings.core.commands.CommandError` (the edge answers an ``error`` frame and keeps
the connection). The edge reports the outcome of I/O back with :meth:`Session.subscribed` and
:meth:`Session.unsubscribe`.

A subscription token's grant (:meth:`Session.grant`) is kept apart from the connection's
credentials, with its own expiry, and counts only while ``now`` is before it: a refreshed
connection token neither drops it nor extends it. When it expires, :meth:`Session.expire_grants`
ends the subscriptions that stood on it alone; :meth:`Session.next_expiry` tells the edge when to
ask (the connection token's expiry or the soonest grant's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from tidings.core.commands import (
    Command,
    CommandError,
    Connect,
    HistoryCmd,
    Ping,
    PresenceCmd,
    PublishCmd,
    Rpc,
    Subscribe,
    Unsubscribe,
    WireStats,
)
from tidings.core.delta import check_delta
from tidings.core.permissions import ANONYMOUS, Capability, Credentials, Namespaces, allowed
from tidings.core.recovery import Recovery
from tidings.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    TidingsError,
    TokenExpired,
    Unauthorized,
)

__all__ = ["Session", "SessionState", "SubState"]


class SessionState(Enum):
    NEW = "new"
    CONNECTED = "connected"
    CLOSED = "closed"


class SubState(Enum):
    RECOVERING = "recovering"
    LIVE = "live"


# (state, command type) -> state after the command is accepted; absent pairs are refused.
_TRANSITIONS: dict[tuple[SessionState, type], SessionState] = {
    (SessionState.NEW, Connect): SessionState.CONNECTED,
    (SessionState.CONNECTED, Connect): SessionState.CONNECTED,
    **{
        (state, cmd): SessionState.CONNECTED
        for state in (SessionState.NEW, SessionState.CONNECTED)
        for cmd in (Subscribe, Unsubscribe, PublishCmd, PresenceCmd, HistoryCmd, Ping, Rpc, WireStats)
    },
}

_CAPABILITY: dict[type, Capability] = {
    Subscribe: Capability.SUBSCRIBE,
    PublishCmd: Capability.PUBLISH,
    PresenceCmd: Capability.PRESENCE,
    HistoryCmd: Capability.HISTORY,
}


@dataclass(slots=True)
class Subscription:
    state: SubState
    recovery: Recovery | None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a subscription token grants on its one channel, until ``expires_at`` (Unix s)."""

    capabilities: frozenset[Capability]
    expires_at: float


class Session:
    """The rules of one connection; see the module docstring for the theory."""

    __slots__ = ("credentials", "grants", "max_subscriptions", "namespaces", "state", "subscriptions")

    def __init__(
        self, namespaces: Namespaces, max_subscriptions: int = 128, credentials: Credentials | None = None
    ) -> None:
        self.namespaces = namespaces
        self.max_subscriptions = max_subscriptions
        self.credentials = credentials or ANONYMOUS
        self.state = SessionState.CONNECTED if credentials is not None else SessionState.NEW
        self.subscriptions: dict[str, Subscription] = {}
        self.grants: dict[str, TokenGrant] = {}  # channel -> subscription token's grant

    def receive(self, command: Command, now: float, *, proxied: bool = False) -> Command:
        """Accept ``command`` (returning it) or raise :class:`CommandError` with the reason.

        ``now`` is Unix time in seconds (token expiry). A publish's data is checked (size, depth)
        by the node, on every path alike (:mod:`tidings.core.payload`). ``proxied``: the
        application's backend has allowed the command (a publish proxy), so the namespace's
        permission rule is not asked; the state, the expiry and the limits still are.
        """
        try:
            return self._receive(command, now, proxied)
        except TidingsError as exc:
            raise CommandError(exc, command.ref) from None

    def _receive(self, command: Command, now: float, proxied: bool) -> Command:
        after = _TRANSITIONS.get((self.state, type(command)))
        if after is None:
            raise BadRequest(f"{type(command).__name__.lower()} is not allowed now")
        if isinstance(command, Connect):
            return command
        if self.expired(now):
            raise TokenExpired("token expired: send connect with a new token")
        self.state = after
        if isinstance(command, Unsubscribe):
            if self.subscriptions.pop(command.channel, None) is None:
                raise NotFound(f"not subscribed to {command.channel}")
            return command
        if isinstance(command, Ping | Rpc | WireStats):
            return command
        channel = command.channel
        options = self.namespaces.for_channel(channel)
        capability = _CAPABILITY[type(command)]
        if not proxied and not allowed(capability, channel, options, self._credentials_for(channel, now)):
            raise Forbidden(f"{capability.value} is not allowed on {channel}")
        if isinstance(command, Subscribe):
            if channel in self.subscriptions:
                raise Conflict(f"already subscribed to {channel}")
            if len(self.subscriptions) >= self.max_subscriptions:
                raise BadRequest(f"at most {self.max_subscriptions} subscriptions per connection")
            if command.delta is not None:
                check_delta(channel, options)
            self.subscriptions[channel] = Subscription(SubState.RECOVERING, Recovery(channel, command.since))
        return command

    def connect(self, credentials: Credentials, now: float) -> None:
        """Adopt (or refresh) credentials after the edge verified a token."""
        if self.state is SessionState.CLOSED:  # CLOSED is final
            raise BadRequest("connect is not allowed now")
        if credentials.expires_at is not None and credentials.expires_at <= now:
            raise TokenExpired("token expired")
        if self.state is SessionState.CONNECTED and self.credentials.user != credentials.user:
            raise Unauthorized("a refreshed token must be for the same user")
        self.credentials = credentials
        self.state = SessionState.CONNECTED

    def grant(self, channel: str, capabilities: frozenset[Capability], expires_at: float) -> None:
        """Grant ``capabilities`` on ``channel`` until ``expires_at`` (a verified subscription
        token); a second token for the channel replaces the first if it lasts longer."""
        held = self.grants.get(channel)
        if held is None or held.expires_at <= expires_at:
            self.grants[channel] = TokenGrant(capabilities, expires_at)

    def _credentials_for(self, channel: str, now: float) -> Credentials:
        """The credentials to judge a command on ``channel`` with: the connection's, plus the
        channel's subscription token grant while it lasts."""
        held = self.grants.get(channel)
        if held is None or held.expires_at <= now:  # expire_grants() drops it and its sub
            return self.credentials
        grants = dict(self.credentials.grants)
        grants[channel] = grants.get(channel, frozenset()) | held.capabilities
        return replace(self.credentials, grants=grants)

    def next_expiry(self) -> float | None:
        """When the connection token or a subscription token grant next expires (Unix s)."""
        times = [grant.expires_at for grant in self.grants.values()]
        if self.credentials.expires_at is not None:
            times.append(self.credentials.expires_at)
        return min(times, default=None)

    def expire_grants(self, now: float) -> list[str]:
        """Drop the grants expired at ``now``; return the subscribed channels that stood on them
        alone (now forgotten: the edge leaves them and tells the client)."""
        ended = []
        for channel in [ch for ch, g in self.grants.items() if g.expires_at <= now]:
            del self.grants[channel]
            if channel in self.subscriptions and not allowed(
                Capability.SUBSCRIBE, channel, self.namespaces.for_channel(channel), self.credentials
            ):
                del self.subscriptions[channel]
                ended.append(channel)
        return ended

    def expired(self, now: float) -> bool:
        expires = self.credentials.expires_at
        return expires is not None and expires <= now

    def recovery(self, channel: str) -> Recovery | None:
        """The channel's pending recovery, while it is RECOVERING (else None)."""
        sub = self.subscriptions.get(channel)
        return sub.recovery if sub is not None else None

    def subscribed(self, channel: str) -> None:
        """The history merge is done: the subscription is LIVE."""
        sub = self.subscriptions.get(channel)
        if sub is not None:
            sub.state, sub.recovery = SubState.LIVE, None

    def unsubscribe(self, channel: str) -> None:
        """Forget ``channel`` (a failed subscribe, or a server-side unsubscribe)."""
        self.subscriptions.pop(channel, None)

    def close(self) -> None:
        self.state = SessionState.CLOSED
        self.subscriptions.clear()
        self.grants.clear()
