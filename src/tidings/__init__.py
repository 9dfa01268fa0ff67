"""tidings: a realtime event hub (placeholder on the webhooks branch; main's version wins)."""

from tidings._version import __version__

__all__ = ["__version__"]
