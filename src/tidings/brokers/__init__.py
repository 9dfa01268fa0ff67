"""Brokers: pub/sub plus history, behind one protocol (:class:`tidings.brokers.base.Broker`)."""

from tidings.brokers.base import Broker, BrokerHandler, PublishResult

__all__ = ["Broker", "BrokerHandler", "PublishResult"]
