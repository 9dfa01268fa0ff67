"""Presence: who is in a channel, with leases that expire unless refreshed."""

from tidings.presence.base import ClientInfo, PresenceManager

__all__ = ["ClientInfo", "PresenceManager"]
