"""Typed clients of the server API: :class:`AsyncServerAPI` and its sync twin :class:`ServerAPI`.

Errors come back as the exceptions of :mod:`tidings.exceptions` (the JSON ``error.code`` picks
the class), so callers handle ``Unavailable`` or ``Forbidden`` the same way as the server raises
them. Connection failures raise :class:`tidings.exceptions.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tidings.core.channels import validate_channel
from tidings.core.events import Gap, Publication
from tidings.core.position import Position
from tidings.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    Internal,
    NotFound,
    RateLimited,
    TidingsError,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
)

__all__ = ["ERROR_TYPES", "AsyncServerAPI", "History", "ServerAPI", "error_from_response"]

# an error's JSON ``code`` -> the exception it stands for (the HTTP API's and WebSocket replies')
ERROR_TYPES: dict[str, type[TidingsError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        RateLimited,
        Unavailable,
        Internal,
    )
}


def error_from_response(response: httpx.Response) -> TidingsError:
    """The tidings exception an error response stands for."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "internal", f"HTTP {response.status_code}: {response.text[:200]}"
    if response.status_code == 422 and code == "bad_request":
        return Unprocessable(message)
    return ERROR_TYPES.get(code, Internal)(message)


class History:
    """A history read: publications (oldest first), the channel's position, and any gap."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.channel: str = body["channel"]
        self.position = Position(body["epoch"], body["offset"])
        self.publications = [Publication.from_dict(p) for p in body["publications"]]
        gap = body.get("gap")
        self.gap = (
            Gap(gap["channel"], gap["epoch"], gap["requested"], gap["available_from"], self.position)
            if gap
            else None
        )


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_from_response(response)
    return None if response.status_code == 204 else response.json()


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass(frozen=True, slots=True)
class _Op:
    """One API call, described once and run by either client (no parallel stacks by hand)."""

    method: str
    path: str
    parse: Callable[[Any], Any]
    json: Any = None
    params: dict[str, Any] | None = None


def _publish(channel: str, data: Any, event: str, idempotency_key: str | None) -> _Op:
    body: dict[str, Any] = {"channel": validate_channel(channel), "data": data, "event": event}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    return _Op("POST", "/api/publish", dict, json=body)


def _broadcast(channels: list[str], data: Any, event: str, idempotency_key: str | None) -> _Op:
    body: dict[str, Any] = {"channels": [validate_channel(c) for c in channels], "data": data, "event": event}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    return _Op("POST", "/api/broadcast", lambda b: list(b["results"]), json=body)


def _history(channel: str, since: int | None, epoch: str | None, limit: int) -> _Op:
    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        params["since"] = since
    if epoch is not None:
        params["epoch"] = epoch
    return _Op("GET", f"/api/channels/{validate_channel(channel)}/history", History, params=params)


def _presence(channel: str) -> _Op:
    return _Op("GET", f"/api/channels/{validate_channel(channel)}/presence", lambda b: list(b["clients"]))


_CHANNELS = _Op("GET", "/api/channels", lambda b: list(b["channels"]))
_INFO = _Op("GET", "/api/info", dict)


def _disconnect(user: str) -> _Op:
    return _Op("POST", "/api/disconnect", lambda b: int(b["disconnected"]), json={"user": user})


def _webhooks(method: str, path: str, json: Any) -> _Op:
    return _Op(method, f"/api/webhooks{path}", lambda b: b, json=json)


# applications, event types, app messages, portal links (docs/reference/webhooks.md) ---------------


def _create_app(name: str, app_id: str | None, metadata: dict[str, Any] | None) -> _Op:
    body: dict[str, Any] = {"name": name}
    if app_id is not None:
        body["id"] = app_id
    if metadata is not None:
        body["metadata"] = metadata
    return _Op("POST", "/api/webhooks/apps", dict, json=body)


def _app_endpoint(
    app_id: str,
    url: str,
    event_types: list[str] | None,
    channels: list[str] | None,
    rate_limit: float | None,
    description: str,
) -> _Op:
    body: dict[str, Any] = {"url": url, "description": description}
    for key, value in (("event_types", event_types), ("channels", channels), ("rate_limit", rate_limit)):
        if value is not None:
            body[key] = value
    return _Op("POST", f"/api/webhooks/apps/{app_id}/endpoints", dict, json=body)


def _event_type(name: str, description: str, schema: dict[str, Any] | None) -> _Op:
    body: dict[str, Any] = {"name": name, "description": description}
    if schema is not None:
        body["schema"] = schema
    return _Op("POST", "/api/webhooks/event-types", dict, json=body)


def _send(app_id: str, event_type: str, payload: Any, idempotency_key: str | None) -> _Op:
    body: dict[str, Any] = {"event_type": event_type, "payload": payload}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    return _Op("POST", f"/api/webhooks/apps/{app_id}/messages", dict, json=body)


def _portal(app_id: str, expiry: float, read_only: bool) -> _Op:
    body = {"expiry": expiry, "read_only": read_only}
    return _Op("POST", f"/api/webhooks/apps/{app_id}/portal", dict, json=body)


def _revoke_portal(app_id: str) -> _Op:
    return _Op("DELETE", f"/api/webhooks/apps/{app_id}/portal", lambda _: None)


_LIST_APPS = _Op("GET", "/api/webhooks/apps", lambda b: list(b["apps"]))


def _event_types(include_archived: bool) -> _Op:
    params = {"include_archived": "true"} if include_archived else None
    return _Op("GET", "/api/webhooks/event-types", lambda b: list(b["event_types"]), params=params)


class AsyncServerAPI:
    """``async with AsyncServerAPI(url, api_key=…) as api: await api.publish(…)``."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout
        )

    async def __aenter__(self) -> AsyncServerAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _run(self, op: _Op) -> Any:
        try:
            response = await self._client.request(op.method, op.path, json=op.json, params=op.params)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the server: {exc}") from None
        return op.parse(_check(response))

    async def publish(
        self, channel: str, data: Any, *, event: str = "message", idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Publish; returns ``{"channel", "offset", "epoch", "id", "duplicate"}``."""
        result: dict[str, Any] = await self._run(_publish(channel, data, event, idempotency_key))
        return result

    async def broadcast(
        self, channels: list[str], data: Any, *, event: str = "message", idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run(_broadcast(channels, data, event, idempotency_key))
        return result

    async def history(
        self, channel: str, *, since: int | None = None, epoch: str | None = None, limit: int = 100
    ) -> History:
        result: History = await self._run(_history(channel, since, epoch, limit))
        return result

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run(_presence(channel))
        return result

    async def channels(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run(_CHANNELS)
        return result

    async def disconnect(self, user: str) -> int:
        result: int = await self._run(_disconnect(user))
        return result

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(_INFO)
        return result

    async def webhooks(self, method: str, path: str = "", json: Any = None) -> Any:
        """Webhook management: ``await api.webhooks("POST", json={"url": …, "channels": […]})``."""
        return await self._run(_webhooks(method, path, json))

    async def create_app(
        self, name: str, *, app_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create an application (``app_id``: your own id; Conflict if it exists)."""
        result: dict[str, Any] = await self._run(_create_app(name, app_id, metadata))
        return result

    async def apps(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run(_LIST_APPS)
        return result

    async def create_app_endpoint(
        self,
        app_id: str,
        url: str,
        *,
        event_types: list[str] | None = None,
        channels: list[str] | None = None,
        rate_limit: float | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """Add an endpoint to an app; the answer carries its ``secret``."""
        op = _app_endpoint(app_id, url, event_types, channels, rate_limit, description)
        result: dict[str, Any] = await self._run(op)
        return result

    async def create_event_type(
        self, name: str, *, description: str = "", schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(_event_type(name, description, schema))
        return result

    async def event_types(self, *, include_archived: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run(_event_types(include_archived))
        return result

    async def send(
        self, app_id: str, event_type: str, payload: Any, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Send a message to an app; Unprocessable if the payload misses its event type's schema."""
        result: dict[str, Any] = await self._run(_send(app_id, event_type, payload, idempotency_key))
        return result

    async def portal(self, app_id: str, *, expiry: float = 3600, read_only: bool = False) -> dict[str, Any]:
        """A portal link for the app's customer: ``{"url", "token", "expires_at", "app_id"}``."""
        result: dict[str, Any] = await self._run(_portal(app_id, expiry, read_only))
        return result

    async def revoke_portal(self, app_id: str) -> None:
        """Make every portal link of the app issued so far stop working (new ones work)."""
        await self._run(_revoke_portal(app_id))


class ServerAPI:
    """The synchronous twin of :class:`AsyncServerAPI`, for scripts."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30) -> None:
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout)

    def __enter__(self) -> ServerAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _run(self, op: _Op) -> Any:
        try:
            response = self._client.request(op.method, op.path, json=op.json, params=op.params)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the server: {exc}") from None
        return op.parse(_check(response))

    def publish(
        self, channel: str, data: Any, *, event: str = "message", idempotency_key: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._run(_publish(channel, data, event, idempotency_key))
        return result

    def broadcast(
        self, channels: list[str], data: Any, *, event: str = "message", idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._run(_broadcast(channels, data, event, idempotency_key))
        return result

    def history(
        self, channel: str, *, since: int | None = None, epoch: str | None = None, limit: int = 100
    ) -> History:
        result: History = self._run(_history(channel, since, epoch, limit))
        return result

    def presence(self, channel: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._run(_presence(channel))
        return result

    def channels(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._run(_CHANNELS)
        return result

    def disconnect(self, user: str) -> int:
        result: int = self._run(_disconnect(user))
        return result

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self._run(_INFO)
        return result

    def webhooks(self, method: str, path: str = "", json: Any = None) -> Any:
        return self._run(_webhooks(method, path, json))

    def create_app(
        self, name: str, *, app_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._run(_create_app(name, app_id, metadata))
        return result

    def apps(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._run(_LIST_APPS)
        return result

    def create_app_endpoint(
        self,
        app_id: str,
        url: str,
        *,
        event_types: list[str] | None = None,
        channels: list[str] | None = None,
        rate_limit: float | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        op = _app_endpoint(app_id, url, event_types, channels, rate_limit, description)
        result: dict[str, Any] = self._run(op)
        return result

    def create_event_type(
        self, name: str, *, description: str = "", schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._run(_event_type(name, description, schema))
        return result

    def event_types(self, *, include_archived: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._run(_event_types(include_archived))
        return result

    def send(
        self, app_id: str, event_type: str, payload: Any, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._run(_send(app_id, event_type, payload, idempotency_key))
        return result

    def portal(self, app_id: str, *, expiry: float = 3600, read_only: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._run(_portal(app_id, expiry, read_only))
        return result

    def revoke_portal(self, app_id: str) -> None:
        self._run(_revoke_portal(app_id))
