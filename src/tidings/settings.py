"""Settings: a TOML file plus ``TIDINGS_*`` environment variables, validated at start.

Nested keys are joined by ``__`` in the environment (``TIDINGS_LIMITS__IDLE_TIMEOUT=30``).
Precedence: explicit arguments (the CLI's ``--host`` …) > environment > TOML file > defaults.
Every problem is reported with the key it concerns (:func:`load_settings` raises
:class:`SettingsError` listing them all at once).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tidings.core.channels import DEFAULT_NAMESPACE
from tidings.core.payload import MAX_JSON_DEPTH
from tidings.core.permissions import NamespaceOptions, Namespaces

__all__ = [
    "ApiKey",
    "AuthSettings",
    "ConsumerSettings",
    "FlowSettings",
    "Limits",
    "NamespaceSettings",
    "ProxyEndpoint",
    "ProxySettings",
    "ReceiverSettings",
    "SSESettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "WebSocketSettings",
    "WebhookSettings",
    "is_loopback",
    "load_settings",
    "served",
]

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("tidings_config_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Section):
    publish_rate: float = Field(50.0, gt=0, description="Publishes per second per connection.")
    publish_burst: int = Field(100, ge=1, description="Burst of the per-connection publish rate.")
    max_message_bytes: int = Field(65536, ge=64, description="Default size limit of a message's data (JSON).")
    max_json_depth: int = Field(
        64, ge=1, le=MAX_JSON_DEPTH, description="Most nested arrays/objects a message's data may hold."
    )
    max_frame_bytes: int = Field(1048576, ge=1024, description="Largest WebSocket frame accepted.")
    max_request_bytes: int = Field(1048576, ge=1024, description="Largest server API body.")
    max_header_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest request head (request line and headers) on every route; over it: 431.",
    )
    max_message_frames: int = Field(
        1024, ge=1, description="Most frames (fragments) of one WebSocket message; over it: 1009."
    )
    max_connections_per_ip: int = Field(1000, ge=1, description="Concurrent connections per IP.")
    max_connections_per_user: int = Field(100, ge=1, description="Concurrent connections per user.")
    max_subscriptions_per_connection: int = Field(128, ge=1, description="Channels per connection.")
    handshake_timeout: float = Field(10.0, gt=0, description="Seconds to complete a request.")
    idle_timeout: float = Field(60.0, gt=0, description="Seconds without traffic or pong.")
    ping_interval: float = Field(25.0, gt=0, description="Seconds between server pings.")
    outbox_bytes: int = Field(
        1048576, ge=1024, description="Live bytes not yet read by a client before 4008."
    )
    # Kept so that existing files still load; the slow-consumer rule is one, in bytes, on every
    # engine (tidings.machines.backlog.Backlog): the fast engine cannot count messages in a write buffer.
    outbox_messages: int = Field(
        10000, ge=10, description="Deprecated, no effect: the limit is outbox_bytes."
    )
    max_poll_timeout: float = Field(60.0, ge=0, description="Cap of a long poll's timeout.")
    history_limit: int = Field(1000, ge=1, description="Most publications one history read returns.")


class NamespaceSettings(_Section):
    public: bool = Field(True, description="Anonymous clients may subscribe.")
    private: bool = Field(False, description="Only token grants allow anything.")
    client_publish: bool = Field(True, description="Clients may publish over WebSocket.")
    presence: bool = Field(False, description="Presence is kept and may be read.")
    join_leave: bool = Field(False, description="Subscribers get join/leave messages.")
    join_leave_max_subscribers: int = Field(
        100,
        ge=0,
        description="Join/leave messages stop on a node while the channel has more "
        "subscribers there than this (a join storm is not quadratic).",
    )
    history_size: int = Field(100, ge=0, le=1_000_000, description="Publications kept.")
    history_ttl: float = Field(3600.0, ge=0, description="Seconds a publication is kept (0: no TTL).")
    max_message_bytes: int | None = Field(None, ge=64, description="Overrides limits.max_message_bytes.")
    subscribe_proxy: bool = Field(
        False, description="Ask the subscribe proxy ([proxy.subscribe]) who may subscribe here."
    )
    publish_proxy: bool = Field(
        False,
        description="Client publishes here go through the publish proxy ([proxy.publish]), "
        "which decides instead of client_publish and may replace the data.",
    )
    delta: bool = Field(
        False,
        description='Subscribers may ask for delta updates (`"delta": "fossil"`): after a full '
        "publication, the fossil delta of each next one's data.",
    )


Scope = Literal["publish", "read", "admin"]
ALL_SCOPES: list[Scope] = ["publish", "read", "admin"]

_TOKEN_ALGORITHMS = (
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_ORIGIN_RE = re.compile(r"(?:\*|null|[a-z][a-z0-9+.-]*://(?:\*\.)?[^/:*?#@\s]+(?::[0-9]{1,5})?)")


class AuthSettings(_Section):
    """Verification of connection and subscription tokens (``[auth]``; see docs/topics/security.md).

    The HS256 secret stays top-level (``token_secret``); this section adds public keys.
    """

    algorithms: list[str] = Field(
        default_factory=lambda: ["HS256", "RS256", "ES256"],
        description="Accepted token algorithms; each is used only with a key of its own type.",
    )
    public_key_file: Path | None = Field(
        None, description="PEM public key or certificate (RS*/PS*/ES*/EdDSA)."
    )
    jwks_url: str | None = Field(None, description="JWKS document URL, cached and refreshed on unknown kid.")
    jwks_file: Path | None = Field(None, description="JWKS document file.")
    audience: str | list[str] | None = Field(None, description="Required aud claim (any of).")
    issuer: str | None = Field(None, description="Required iss claim.")
    leeway: float = Field(0.0, ge=0, le=600, description="Clock skew allowed on exp/nbf (s).")
    jwks_cache_ttl: float = Field(300.0, gt=0, description="Seconds a fetched JWKS is fresh.")
    jwks_refresh_interval: float = Field(30.0, ge=0, description="Least seconds between refetches.")
    jwks_timeout: float = Field(5.0, gt=0, description="Seconds to fetch the JWKS.")

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg not in _TOKEN_ALGORITHMS:
                choices = ", ".join(_TOKEN_ALGORITHMS)
                raise ValueError(f"unknown or unsafe algorithm {alg!r}; choose from {choices}")
        if not value:
            raise ValueError("list at least one algorithm")
        return value

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("use an https:// (or http:// for a local service) URL")
        return value


class ProxyEndpoint(_Section):
    """One proxy to the application's backend (``[proxy.connect]`` …; docs/reference/proxy.md)."""

    url: str = Field(description="Where tidings POSTs the proxy's JSON requests (http:// or https://).")
    timeout: float = Field(
        3.0, gt=0, le=60, description="Seconds for the backend's answer, waiting for a free slot included."
    )
    forward_headers: list[str] = Field(
        default_factory=lambda: ["Cookie", "Authorization", "X-Request-ID"],
        description="The client's request headers sent along (X-Forwarded-For, the client's "
        "address, always is).",
    )
    skip_with_token: bool = Field(
        True,
        description="connect proxy only: a client with a valid connection token is not asked "
        "about (false: the proxy is asked too).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("use an http:// or https:// URL")
        return value

    @field_validator("forward_headers")
    @classmethod
    def _headers(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}", name):
                raise ValueError(f"{name!r} is not a header name")
        return value


class ProxySettings(_Section):
    """The proxies to the application's backend (docs/reference/proxy.md): each set section
    (``[proxy.connect]``, ``[proxy.refresh]``, ``[proxy.subscribe]``, ``[proxy.publish]``,
    ``[proxy.rpc]``) turns one on."""

    max_concurrency: int = Field(
        64,
        ge=1,
        le=10000,
        description="Most proxy requests in flight at once, all proxies together (one "
        "connection pool); more wait for a slot within their timeout.",
    )
    connect: ProxyEndpoint | None = None
    refresh: ProxyEndpoint | None = None
    subscribe: ProxyEndpoint | None = None
    publish: ProxyEndpoint | None = None
    rpc: ProxyEndpoint | None = None


class ApiKey(_Section):
    key: str = Field(min_length=16, description="The key (at least 16 characters).")
    scopes: list[Scope] = Field(default_factory=lambda: list(ALL_SCOPES), description="What the key may do.")
    name: str = Field("", description="A label for people.")


class SSESettings(_Section):
    retry_ms: int = Field(2000, ge=0, description="retry: opening every SSE stream's ready event.")
    heartbeat: float = Field(15.0, gt=0, description="Most seconds an idle stream goes without a write.")
    max_duration: float = Field(
        0.0,
        ge=0,
        description="Seconds before the server ends an SSE or NDJSON stream so the "
        "client reconnects and resumes by cursor (0: never), e.g. to rebalance load.",
    )
    compression: bool = Field(
        False,
        description="Content-Encoding gzip (or deflate) for SSE and NDJSON streams whose client "
        "sends an Accept-Encoding that allows it; every event is flushed at once, and a "
        "publication is compressed once for every stream of its channel alone.",
    )
    compression_level: int = Field(
        6, ge=1, le=9, description="zlib level of compressed streams (1: fastest, 9: smallest)."
    )


class ServerSettings(_Section):
    engine: Literal["fast", "uvicorn"] = Field(
        "fast",
        description="fast: tidings answers /ws, /sse, /stream, /poll and POST /api/publish "
        "on sockets it owns, below ASGI; uvicorn: all through ASGI.",
    )
    debug_echo: bool = Field(False, description="fast engine: serve /ws-echo (for the Autobahn suite).")
    coalesce_writes: bool = Field(
        True, description="fast engine: one socket write per connection per loop iteration."
    )


class WebSocketSettings(_Section):
    enabled: bool = Field(True, description="Serve the WebSocket endpoint /ws.")
    compression: bool = Field(
        True,
        description="Accept permessage-deflate (RFC 7692) when the client offers it; "
        "each publication is compressed once and shared (docs/topics/compression.md).",
    )
    compression_threshold: int = Field(
        256, ge=0, description="Messages shorter than this many bytes go uncompressed."
    )


class FlowSettings(_Section):
    enabled: bool = Field(
        True,
        description="Hold a publish's answer while the node's deliveries lag (measured by "
        "WebSocket pings behind the data on the fast engine).",
    )
    lag_target: float = Field(
        0.01, gt=0, le=10, description="Seconds of delivery lag above which publish answers wait."
    )
    max_hold: float = Field(0.1, ge=0, le=60, description="Longest a publish answer waits.")
    sentinels: int = Field(
        3, ge=1, le=64, description="Connections probed at a time; the lag is their median."
    )
    sentinel_term: float = Field(2.0, gt=0, description="Seconds a connection stays a sentinel.")


class WebhookSettings(_Section):
    allow_private: list[str] = Field(default_factory=list, description="SSRF allow list (CIDRs).")
    retry_schedule: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        description="Delay before retry n, in seconds; the first attempt is immediate.",
    )
    timeout: float = Field(15.0, gt=0, description="Seconds for one delivery attempt.")
    jitter: float = Field(0.2, ge=0, le=1, description="Relative jitter of retry delays.")
    concurrency_per_endpoint: int = Field(4, ge=1, description="Attempts in flight per endpoint.")
    disable_after: float = Field(5 * 86400.0, gt=0, description="Seconds failing before disable.")
    rotation_grace: float = Field(86400.0, ge=0, description="Seconds an old secret still signs.")
    store: str = Field(
        "",
        description="Where the delivery queue lives: '' follows the broker (memory: in memory; "
        "sqlite:///x.db: x-webhooks.db beside it; Redis: in that Redis), 'memory', or a SQLite "
        "file (one node per file).",
    )
    retry_after_max: float = Field(3600.0, ge=0, description="Largest Retry-After honoured.")
    throttle_floor: float = Field(60.0, ge=0, description="Least delay after a 429 or a timeout.")
    response_cap: int = Field(65536, ge=1024, description="Bytes of a response body read at most.")
    synchronous: Literal["normal", "full"] = Field(
        "normal", description="SQLite synchronous: normal (process crash) or full (power loss)."
    )
    inbound_dedup_ttl: float = Field(
        3 * 86400.0, gt=0, description="Seconds an inbound delivery id is remembered."
    )
    ca_file: str = Field("", description="PEM CA bundle for https endpoints ('' = system CAs).")
    lease: float = Field(
        30.0,
        gt=0,
        description="Redis queue: seconds a node holds a delivery without renewing "
        "(a dead node's deliveries go to another node after this).",
    )
    poll_interval: float = Field(
        1.0,
        gt=0,
        description="Redis queue: seconds between polls for due deliveries and lease "
        "renewals (at most a third of the lease is used).",
    )

    dispatcher: Literal["auto", "process", "inline"] = Field(
        "auto",
        description="Where outbound deliveries run: 'process' (a child process of the node, "
        "off the publishers' core), 'inline' (on the node's event loop), 'auto' (process under "
        "tidings serve, inline in an app that mounts tidings). A queue in memory is always inline.",
    )
    dispatcher_nice: int = Field(
        2, ge=0, le=19, description="CPU priority the dispatcher process lowers itself by (os.nice)."
    )

    @field_validator("allow_private")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value


class ReceiverSettings(_Section):
    provider: Literal["github", "stripe", "standard", "hmac"]
    secret: str | list[str] = Field(description="Secret, or several during a rotation.")
    channel: str = Field(description="Target channel template, e.g. github:{event}.")
    tolerance: float = Field(300.0, gt=0, description="Timestamp tolerance in seconds.")
    header: str = Field("X-Signature", description="hmac provider: the signature header.")
    algorithm: Literal["sha256", "sha1", "sha512"] = Field("sha256", description="hmac provider: digest.")
    event_header: str | None = Field(None, description="hmac provider: header naming the event type.")
    id_header: str | None = Field(
        None, description="hmac provider: the header carrying a delivery id (dedup)."
    )


ConsumerKind = Literal["postgres", "redis_stream", "nats_jetstream", "amqp"]
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(?:\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
_URL_SCHEMES: dict[str, tuple[str, ...]] = {
    "postgres": ("postgresql://", "postgres://"),
    "redis_stream": ("redis://", "rediss://", "unix://"),
    "nats_jetstream": ("nats://", "tls://"),
    "amqp": ("amqp://", "amqps://"),
}
# What each kind reads from: the keys it needs besides url (see docs/reference/consumers.md).
_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "postgres": ("table",),
    "redis_stream": ("stream",),
    "nats_jetstream": ("stream",),
    "amqp": ("queue",),
}


class ConsumerSettings(_Section):
    """One consumer (``[consumers.NAME]``): where it reads messages to publish from."""

    kind: ConsumerKind = Field(description="postgres, redis_stream, nats_jetstream or amqp.")
    url: str = Field(
        description="The source: postgresql://…, redis://…, nats://…, amqp://… (credentials may "
        "come from the environment: TIDINGS_CONSUMERS__NAME__URL)."
    )
    enabled: bool = Field(True, description="Run this consumer on this node.")
    table: str = Field("tidings_outbox", description="postgres: the outbox table ([schema.]name).")
    stream: str = Field("", description="redis_stream: the stream key; nats_jetstream: the stream name.")
    subject: str = Field("", description="nats_jetstream: the filter subject ('' = the whole stream).")
    durable: str = Field("tidings", description="nats_jetstream: the durable consumer's name.")
    group: str = Field("tidings", description="redis_stream: the consumer group.")
    queue: str = Field("", description="amqp: the queue to consume.")
    dead_letter: str = Field(
        "",
        description="Where messages that cannot be published go, with their error: a table "
        "(postgres; '' = TABLE_dead), a stream (redis_stream; '' = STREAM:dead), a subject "
        "(nats_jetstream; '' = tidings.dead.STREAM) or a queue (amqp; '' = QUEUE.dead).",
    )
    channels: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Channel patterns this consumer may publish to (* = any run of characters); "
        "a message for another channel is dead-lettered as forbidden.",
    )
    batch_size: int = Field(
        100, ge=1, le=10000, description="Most messages taken at once (amqp: the prefetch is twice it)."
    )
    poll_interval: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="Most seconds between two looks at the source when nothing wakes the consumer "
        "(postgres: the fallback of LISTEN/NOTIFY).",
    )
    claim_idle: float = Field(
        30.0,
        gt=0,
        description="redis_stream: seconds a message stays pending with a dead consumer before "
        "another takes it (XAUTOCLAIM); nats_jetstream: the ack wait.",
    )
    max_message_bytes: int = Field(
        1048576, ge=64, description="Largest message accepted; a bigger one is dead-lettered."
    )
    retry_base: float = Field(0.2, gt=0, description="First delay (s) before reaching a lost source again.")
    retry_max: float = Field(10.0, gt=0, description="Longest delay (s) between two attempts.")

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.fullmatch(r"[A-Za-z0-9_.:@/=\-*]{1,200}", pattern):
                raise ValueError(f"{pattern!r} is not a channel pattern")
        return value

    @model_validator(mode="after")
    def _source(self) -> ConsumerSettings:
        if not self.url.startswith(_URL_SCHEMES[self.kind]):
            schemes = ", ".join(_URL_SCHEMES[self.kind])
            raise ValueError(f"url: kind {self.kind} needs a URL starting with {schemes}")
        for key in _SOURCE_KEYS[self.kind]:
            if not getattr(self, key):
                raise ValueError(f"{key}: kind {self.kind} needs it")
        if self.kind == "postgres":
            for key in ("table", "dead_letter"):
                value = getattr(self, key)
                if value and _IDENTIFIER_RE.fullmatch(value) is None:
                    raise ValueError(
                        f"{key}: {value!r} is not a table name ([schema.]name, letters, digits, _)"
                    )
        if self.retry_max < self.retry_base:
            raise ValueError("retry_max: must be at least retry_base")
        return self


class Settings(BaseSettings):
    """Every setting of a node (see docs/reference/settings.md)."""

    model_config = SettingsConfigDict(
        env_prefix="TIDINGS_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8600, ge=0, le=65535, description="Port to bind (0: any free port).")
    broker: str = Field("memory", description="memory, sqlite:///path.db, redis://…, redis-cluster://…")
    api_key: str | None = Field(None, min_length=16, description="Server API key with every scope.")
    api_keys: list[ApiKey] = Field(default_factory=list, description="Further keys with scopes.")
    token_secret: str | None = Field(None, min_length=16, description="HS256 token secret.")
    allowed_origins: list[str] = Field(default_factory=list, description="Origins allowed.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose X-Forwarded-For is believed.",
    )
    metrics_allow: list[str] = Field(
        default_factory=list,
        description="CIDRs whose clients may read /metrics without an API key (a scraper's "
        "network); others need a key with the read scope, or loopback while no key is set.",
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)
    insecure: bool = Field(False, description="Allow a non-loopback bind without secrets.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="Log lines: text or json.")
    access_log: bool = Field(
        False,
        description="One INFO line per HTTP request and per poll (tidings.access); off, "
        "they are DEBUG lines.",
    )
    demo: bool = Field(True, description="Serve the demo pages at /.")
    websocket: WebSocketSettings = Field(
        default_factory=WebSocketSettings,
        description="The WebSocket endpoint /ws. `websocket = false` (a boolean, as before "
        "this section) is `websocket.enabled = false`.",
    )
    drain_timeout: float = Field(10.0, ge=0, description="Seconds to drain on SIGTERM.")
    limits: Limits = Field(default_factory=Limits, description="Limits against abuse and overload.")
    sse: SSESettings = Field(default_factory=SSESettings, description="Server-Sent Events.")
    namespaces: dict[str, NamespaceSettings] = Field(
        default_factory=dict, description="Options by namespace (see [namespaces.NAME])."
    )
    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings, description="Outbound webhook delivery."
    )
    receivers: dict[str, ReceiverSettings] = Field(
        default_factory=dict, description="Inbound webhook receivers (see [receivers.NAME])."
    )
    server: ServerSettings = Field(default_factory=ServerSettings, description="How `tidings serve` serves.")
    flow: FlowSettings = Field(
        default_factory=FlowSettings, description="Publisher flow control (see docs/topics/flow.md)."
    )
    proxy: ProxySettings = Field(
        default_factory=ProxySettings,
        description="Proxies to the application's backend (see docs/reference/proxy.md).",
    )
    consumers: dict[str, ConsumerSettings] = Field(
        default_factory=dict,
        description="Consumers publishing what they read from a database outbox or a queue "
        "(see [consumers.NAME] and docs/reference/consumers.md).",
    )

    @field_validator("consumers")
    @classmethod
    def _consumer_names(cls, value: dict[str, ConsumerSettings]) -> dict[str, ConsumerSettings]:
        for name in value:
            if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) is None:
                raise ValueError(f"consumer name {name!r}: use 1-64 of A-Z a-z 0-9 _ -")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get()
        if path is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))

    @field_validator("websocket", mode="before")
    @classmethod
    def _websocket(cls, value: Any) -> Any:
        # the key was a boolean before it became a section: websocket = false still works
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if _ORIGIN_RE.fullmatch(origin.strip().rstrip("/").lower()) is None:
                raise ValueError(
                    f"origin {origin!r} is not scheme://host[:port] (or *, null, "
                    "https://*.example.com); no path"
                )
        return value

    @field_validator("trusted_proxies", "metrics_allow")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
        return value

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        if value != "memory" and not value.startswith(
            ("sqlite:///", "redis://", "rediss://", "redis-cluster://")
        ):
            raise ValueError(
                "use memory, sqlite:///path.db, redis://host:port/db or redis-cluster://host:port"
            )
        return value

    @model_validator(mode="after")
    def _webhook_store(self) -> Settings:
        if self.webhooks.store and self.broker.startswith(("redis://", "rediss://", "redis-cluster://")):
            raise ValueError(
                "webhooks.store: with a Redis broker the webhook queue lives in that Redis, "
                "shared by every node; remove webhooks.store"
            )
        return self

    @model_validator(mode="after")
    def _proxied_namespaces(self) -> Settings:
        for name, ns in self.namespaces.items():
            for flag, proxy in (("subscribe_proxy", "subscribe"), ("publish_proxy", "publish")):
                if getattr(ns, flag) and getattr(self.proxy, proxy) is None:
                    raise ValueError(f"namespaces.{name}.{flag} needs [proxy.{proxy}] with a url")
        return self

    @model_validator(mode="after")
    def _safe_bind(self) -> Settings:
        if (
            not is_loopback(self.host)
            and not self.insecure
            and not (self.token_secret and (self.api_key or self.api_keys))
        ):
            raise ValueError(
                f"host {self.host!r} is not loopback: set token_secret and api_key, "
                "or pass --insecure to serve without them"
            )
        return self

    def namespace_rules(self) -> Namespaces:
        """The core's view of the namespaces (message limits resolved)."""

        def convert(ns: NamespaceSettings) -> NamespaceOptions:
            return NamespaceOptions(
                public=ns.public,
                private=ns.private,
                client_publish=ns.client_publish,
                presence=ns.presence,
                join_leave=ns.join_leave,
                join_leave_max_subscribers=ns.join_leave_max_subscribers,
                history_size=ns.history_size,
                history_ttl=ns.history_ttl,
                max_message_bytes=ns.max_message_bytes or self.limits.max_message_bytes,
                subscribe_proxy=ns.subscribe_proxy,
                publish_proxy=ns.publish_proxy,
                delta=ns.delta,
            )

        options = {name: convert(ns) for name, ns in self.namespaces.items()}
        default = options.get(DEFAULT_NAMESPACE) or convert(NamespaceSettings())
        return Namespaces(options, default)

    def api_key_scopes(self) -> dict[str, frozenset[str]]:
        """Every configured API key with its scopes."""
        keys: dict[str, frozenset[str]] = {k.key: frozenset(k.scopes) for k in self.api_keys}
        if self.api_key:
            keys[self.api_key] = frozenset({"publish", "read", "admin"})
        return keys


class SettingsError(Exception):
    """Invalid settings; ``problems`` lists ``(key, message)`` pairs, all of them."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {key}: {message}" for key, message in problems)
        super().__init__(f"invalid settings ({len(problems)} problems):\n{lines}")


def served(settings: Settings) -> Settings:
    """``settings`` as ``tidings serve`` runs them: ``webhooks.dispatcher = "auto"`` becomes
    ``"process"`` (deliveries in a child process, off the publishers' core); an app that mounts
    tidings itself keeps ``"auto"``, which delivers inline."""
    hooks = settings.webhooks
    in_memory = hooks.store == "memory" or (not hooks.store and settings.broker == "memory")
    if hooks.dispatcher != "auto" or in_memory:  # a queue in memory is one process's
        return settings
    webhooks = hooks.model_copy(update={"dispatcher": "process"})
    return settings.model_copy(update={"webhooks": webhooks})


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _field_in_message(key: str, message: str) -> tuple[str, str]:
    """A section's own check names the field it concerns first (``"url: …"``): into the key."""
    field, sep, rest = message.partition(": ")
    if (
        sep
        and key.startswith("consumers.")
        and key.count(".") == 1
        and field in ConsumerSettings.model_fields
    ):
        return f"{key}.{field}", rest
    return key, message


@contextmanager
def _config_file(path: Path | None) -> Iterator[None]:
    token = _CONFIG_FILE.set(path)
    try:
        yield
    finally:
        _CONFIG_FILE.reset(token)


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config`` (TOML), the environment and ``overrides`` (None values ignored).

    Raises :class:`SettingsError` naming every bad key.
    """
    path = Path(config) if config is not None else None
    if path is not None and not path.is_file():
        raise SettingsError([("--config", f"no such file: {path}")])
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        with _config_file(path):
            return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "(settings)"
            message = error["msg"].removeprefix("Value error, ")
            key, message = _field_in_message(key, message)
            problems.append((key, message))
        raise SettingsError(problems) from None
    except ValueError as exc:  # a TOML syntax error
        raise SettingsError([(str(path), f"not valid TOML: {exc}")]) from None
