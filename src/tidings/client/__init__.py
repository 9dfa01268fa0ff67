"""Python clients of tidings: :class:`Client` (async), :class:`SyncClient`, and the server API."""

from tidings.client.api import AsyncServerAPI, ServerAPI
from tidings.client.client import Client, Subscription
from tidings.client.sync import SyncClient

__all__ = ["AsyncServerAPI", "Client", "ServerAPI", "Subscription", "SyncClient"]
