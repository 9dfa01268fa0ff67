"""Transports: thin adapters between the wire (ASGI messages) and sessions, the hub and the node."""
