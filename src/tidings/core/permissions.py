"""Who may do what on a channel: namespace options, token grants, and the one decision rule.

A capability on a channel is allowed when the connection's credentials grant it (a pattern in the
token's ``channels`` claim naming the capability), or when the channel's namespace opens it to
everyone: ``subscribe`` (and so ``history`` and ``presence`` reads) is open to anonymous clients
when ``public``, to any authenticated client when not ``private``; ``publish`` likewise, and only
with ``client_publish``. In a ``private`` namespace only grants count. ``presence`` additionally
needs the namespace's ``presence`` option, ``history`` a history size above zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tidings.core.channels import DEFAULT_NAMESPACE, namespace_of, pattern_matches

__all__ = ["ANONYMOUS", "Capability", "Credentials", "NamespaceOptions", "Namespaces", "allowed"]


class Capability(StrEnum):
    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"
    PRESENCE = "presence"
    HISTORY = "history"


@dataclass(frozen=True, slots=True)
class NamespaceOptions:
    """The rules of one namespace (settings ``[namespaces.NAME]``)."""

    public: bool = True
    private: bool = False
    client_publish: bool = False
    presence: bool = False
    join_leave: bool = False
    join_leave_max_subscribers: int = 100
    history_size: int = 100
    history_ttl: float = 3600.0
    max_message_bytes: int = 65536
    #: The application's backend decides subscribes / client publishes here (``[proxy.*]``).
    subscribe_proxy: bool = False
    publish_proxy: bool = False
    delta: bool = False


@dataclass(frozen=True, slots=True)
class Namespaces:
    """Options by namespace name; a namespace without its own entry follows ``default``."""

    options: Mapping[str, NamespaceOptions] = field(default_factory=dict)
    default: NamespaceOptions = NamespaceOptions()

    def for_channel(self, channel: str) -> NamespaceOptions:
        ns = namespace_of(channel)
        found = self.options.get(ns)
        if found is not None:
            return found
        return self.options.get(DEFAULT_NAMESPACE, self.default)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who a connection is: ``user`` ("" when anonymous), grants, expiry (Unix s) and ``info``."""

    user: str = ""
    grants: Mapping[str, frozenset[Capability]] = field(default_factory=dict)
    expires_at: float | None = None
    info: Any = None

    @property
    def anonymous(self) -> bool:
        return not self.user

    def granted(self, capability: Capability, channel: str) -> bool:
        return any(
            capability in caps and pattern_matches(pattern, channel) for pattern, caps in self.grants.items()
        )


ANONYMOUS = Credentials()


def allowed(
    capability: Capability, channel: str, options: NamespaceOptions, credentials: Credentials
) -> bool:
    """Whether ``credentials`` may use ``capability`` on ``channel`` (see the module docstring)."""
    if capability is Capability.PRESENCE and not options.presence:
        return False
    if capability is Capability.HISTORY and options.history_size <= 0:
        return False
    if credentials.granted(capability, channel):
        return True
    if options.private:
        return capability is not Capability.PUBLISH and credentials.granted(Capability.SUBSCRIBE, channel)
    open_to_caller = options.public or not credentials.anonymous
    if capability is Capability.PUBLISH:
        return options.client_publish and open_to_caller
    return open_to_caller
