"""The consumers of one node (``[consumers.NAME]``), started and stopped with the server.

:class:`ConsumerService` builds one :class:`~tidings.consumers.runner.Runner` per enabled
consumer; the app's lifespan starts them after the node and stops them before it (and at the
start of a drain, so a node going away stops taking messages first). Each kind's module is
imported only when a consumer of that kind is configured (its client library may not be
installed: ``pip install 'tidings[postgres]'`` …).
"""

from __future__ import annotations

import importlib
from typing import Any

from tidings.consumers.base import Consumer
from tidings.consumers.runner import ConsumerState, Runner
from tidings.exceptions import StartupError
from tidings.node import Node
from tidings.settings import ConsumerSettings

__all__ = ["KINDS", "ConsumerService", "make_consumer"]

#: kind -> (module, class, the extra that installs its client library)
KINDS: dict[str, tuple[str, str, str]] = {
    "postgres": ("tidings.consumers.postgres", "PostgresConsumer", "postgres"),
    "redis_stream": ("tidings.consumers.redis_stream", "RedisStreamConsumer", "redis"),
    "nats_jetstream": ("tidings.consumers.nats_jetstream", "NatsJetStreamConsumer", "nats"),
    "amqp": ("tidings.consumers.amqp", "AmqpConsumer", "amqp"),
}


def make_consumer(name: str, settings: ConsumerSettings) -> Consumer:
    """The consumer of ``settings.kind``; StartupError when its module or library is missing."""
    module_name, class_name, extra = KINDS[settings.kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StartupError(
            f"consumer {name}: kind {settings.kind} needs {exc.name or 'a library'}: "
            f"pip install 'tidings[{extra}]'"
        ) from None
    cls: type[Consumer] = getattr(module, class_name)
    return cls(name, settings)


class ConsumerService:
    """Every enabled consumer of ``node.settings``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.runners: list[Runner] = []
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        runners = [
            Runner(self.node, make_consumer(name, settings))
            for name, settings in self.node.settings.consumers.items()
            if settings.enabled
        ]
        self.runners = runners
        self._started = True
        for runner in runners:
            runner.start()
        if runners:
            self.node.drain_hooks.append(self._on_drain)
            self.node.metrics.watch_consumers(self.states)

    async def _on_drain(self, seconds_left: float) -> None:
        await self.stop()

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.stop()

    def states(self) -> list[ConsumerState]:
        return [runner.state for runner in self.runners]

    def unreachable(self) -> list[ConsumerState]:
        """The consumers whose last attempt to reach their source failed (not those starting)."""
        return [state for state in self.states() if not state.connected and state.error is not None]

    def snapshot(self) -> list[dict[str, Any]]:
        return [state.to_dict() for state in self.states()]
