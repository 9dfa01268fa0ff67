"""Render ``docs/reference/settings.md`` from the settings models, so the reference stays true.

``python -m tidings.settings_reference > docs/reference/settings.md`` regenerates it; a test
fails when the file and the models disagree.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tidings.settings import ConsumerSettings, NamespaceSettings, ProxyEndpoint, ReceiverSettings, Settings

__all__ = ["render_reference"]

_HEAD = """# Settings reference

Settings come from a TOML file (`tidings serve --config tidings.toml`), from `TIDINGS_*`
environment variables (nested keys joined by `__`: `TIDINGS_LIMITS__IDLE_TIMEOUT=30`), and from
`tidings serve` options (`--host`, `--port`, `--broker`). Options beat the environment, which beats
the file. Every problem is reported at start with its key; `tidings config check FILE` reports them
all without starting. This page is generated from the code (`python -m tidings.settings_reference`).
"""


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{json.dumps(value)}`"


def _rows(model: type[BaseModel], prefix: str, env_prefix: str | None) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            continue
        if annotation == ProxyEndpoint | None:  # a section of its own: [proxy.connect] …
            continue
        key = f"{prefix}{name}"
        env = f"`{env_prefix}{name.upper()}`" if env_prefix is not None else "-"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_default(field)} | {env} | {description} |")
    return rows


def _table(title: str, intro: str, rows: list[str]) -> str:
    header = "| key | default | environment | meaning |\n|---|---|---|---|"
    return f"\n## {title}\n\n{intro}\n\n{header}\n" + "\n".join(rows) + "\n"


def render_reference() -> str:
    parts = [_HEAD]
    parts.append(_table("Top level", "Keys at the top of the file.", _rows(Settings, "", "TIDINGS_")))
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            parts.append(
                _table(
                    f"[{name}]",
                    field.description or f"The `[{name}]` section.",
                    _rows(annotation, f"{name}.", f"TIDINGS_{name.upper()}__"),
                )
            )
    parts.append(
        _table(
            "[namespaces.NAME]",
            "Options per namespace (the part of a channel name before the first `:`); "
            "`[namespaces.default]` applies to channels without a namespace and to namespaces "
            "without their own section.",
            _rows(NamespaceSettings, "namespaces.NAME.", None),
        )
    )
    parts.append(
        _table(
            "[proxy.KIND]",
            "One section per proxy to the application's backend: `[proxy.connect]`, "
            "`[proxy.refresh]`, `[proxy.subscribe]`, `[proxy.publish]`, `[proxy.rpc]`; a set "
            "section turns its proxy on (see [proxies](proxy.md)). Environment: "
            "`TIDINGS_PROXY__CONNECT__URL` and so on.",
            _rows(ProxyEndpoint, "proxy.KIND.", None),
        )
    )
    parts.append(
        _table(
            "[receivers.NAME]",
            "Inbound webhook receivers, served at `POST /hooks/NAME`.",
            _rows(ReceiverSettings, "receivers.NAME.", None),
        )
    )
    parts.append(
        _table(
            "[consumers.NAME]",
            "Consumers publishing what a PostgreSQL outbox, a Redis stream, a NATS JetStream stream "
            "or an AMQP queue holds (see [consumers](consumers.md)).",
            _rows(ConsumerSettings, "consumers.NAME.", None),
        )
    )
    return "".join(parts)


if __name__ == "__main__":
    print(render_reference(), end="")
