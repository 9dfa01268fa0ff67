"""The owned-socket engine (see :mod:`tidings.engines`)."""
