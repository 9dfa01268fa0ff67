"""The transports' rules, one sans-I/O machine per transport family (no asyncio, no sockets, no
clock reads: time is passed in).

Each machine takes events (publications, gaps, ``tick(now)``, bytes buffered, the peer gone,
token expiry, a drain) and answers with actions (bytes to write, the farewell, a close, the next
time to wake it). The engines (:mod:`tidings.engines`) are drivers that move bytes, timers and
events between the network and these machines.
"""
