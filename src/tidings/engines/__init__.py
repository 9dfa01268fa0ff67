"""The serving engines: drivers that move bytes, timers and events between the network and the
transports' machines.

- :mod:`tidings.engines.sockets`: the owned-socket engine, the default of ``tidings serve``. It
  answers ``/ws``, ``/sse``, ``/stream``, ``/poll`` and ``POST /api/publish`` on sockets it owns
  below ASGI (inside uvicorn) and hands every other request to the ASGI app.
- :mod:`tidings.engines.asgi`: the ASGI endpoints, what every app that mounts ``create_app()``
  runs (and ``tidings serve --engine uvicorn``).
"""
