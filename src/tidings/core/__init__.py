"""The sans-I/O rules of tidings: no sockets, no asyncio, no clock (time is an argument).

Server and Python client share these modules, so the two cannot drift apart.
"""
