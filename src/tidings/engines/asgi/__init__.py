"""The ASGI engine (see :mod:`tidings.engines`)."""
