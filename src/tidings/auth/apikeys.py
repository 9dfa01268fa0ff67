"""Server API keys: several keys with scopes, checked in constant time.

Scopes: ``publish`` (``POST /api/publish``, ``/api/broadcast``), ``read`` (channels, history,
presence, info) and ``admin`` (webhooks, disconnect, and everything else; ``admin`` implies the
other two). ``api_key`` has every scope; ``[[api_keys]]`` entries name theirs.

Every presented key is compared with every configured key (SHA-256 digests of both, compared with
:func:`hmac.compare_digest`, so neither the length nor the position of a match leaks through
timing), with no early exit. When no key is configured the server API is open, but only to
loopback peers and only to requests that no proxy relayed (DESIGN: open only while bound to
loopback; a reverse proxy on the same host would otherwise make every visitor look local).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tidings.auth.limits import is_loopback_address
from tidings.exceptions import Forbidden, Unauthorized

__all__ = ["SCOPES", "ApiKeyRing", "Scope", "bearer_token", "check_api_key"]

Scope = Literal["publish", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("publish", "read", "admin")

#: Headers a reverse proxy adds; their presence means the loopback peer is not the client.
_PROXY_HEADERS = frozenset({"x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host"})


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header (scheme case-free)."""
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    scopes: frozenset[str]
    name: str


class ApiKeyRing:
    """The configured keys, digested once; :meth:`check` is the whole decision."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, Iterable[str]] | Iterable[tuple[str, Iterable[str], str]]) -> None:
        """``keys``: ``{key: scopes}`` or ``(key, scopes, name)`` triples."""
        entries: list[_Key] = []
        if isinstance(keys, Mapping):
            for key, scopes in keys.items():
                entries.append(_Key(_digest(key), frozenset(scopes), ""))
        else:
            for key, scopes, name in keys:
                entries.append(_Key(_digest(key), frozenset(scopes), name))
        self._keys = tuple(entries)

    @classmethod
    def from_settings(cls, settings: Any) -> ApiKeyRing:
        """The keys of ``settings.api_key`` (every scope) and ``settings.api_keys``."""
        triples: list[tuple[str, Iterable[str], str]] = [(k.key, k.scopes, k.name) for k in settings.api_keys]
        if settings.api_key:
            triples.append((settings.api_key, SCOPES, "api_key"))
        return cls(triples)

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def check(
        self,
        authorization: str | None,
        scope: Scope | None,
        client_host: str | None,
        headers: Iterable[tuple[Any, Any]] | Mapping[str, str] | None = None,
    ) -> str:
        """Let the call through or raise; returns the matching key's name ("" if unnamed/open).

        ``scope`` None lets any configured key through (the API's own description).

        Raises :class:`Unauthorized` (401) when keys are configured and the header is missing or
        names no key, :class:`Forbidden` (403) when the key lacks ``scope``, or when no key is
        configured and the peer is not loopback or the request came through a proxy (``headers``:
        the request's headers, to spot ``X-Forwarded-For`` and kin; pass them).
        """
        if not self._keys:
            if not is_loopback_address(client_host):
                raise Forbidden(
                    "the server API is open only to loopback clients while no api_key is "
                    "configured; set api_key (see `tidings keys create`)"
                )
            if headers is not None and _proxied(headers):
                raise Forbidden(
                    "the server API needs an api_key when reached through a proxy "
                    "(X-Forwarded-For present); set api_key (see `tidings keys create`)"
                )
            return ""
        presented = bearer_token(authorization)
        if presented is None:
            raise Unauthorized("missing API key: send Authorization: Bearer <api key>")
        digest = _digest(presented)
        found: _Key | None = None
        for key in self._keys:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(digest, key.digest):
                found = key
        if found is None:
            raise Unauthorized("invalid API key")
        if scope is not None and scope not in found.scopes and "admin" not in found.scopes:
            raise Forbidden(f"this API key lacks the {scope!r} scope")
        return found.name


def _proxied(headers: Iterable[tuple[Any, Any]] | Mapping[str, str]) -> bool:
    names: Iterable[Any] = headers.keys() if isinstance(headers, Mapping) else (k for k, _ in headers)
    for name in names:
        text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        if text.lower() in _PROXY_HEADERS:
            return True
    return False


def check_api_key(
    settings: Any,
    authorization_header: str | None,
    scope: Scope,
    client_host: str | None,
    headers: Iterable[tuple[Any, Any]] | Mapping[str, str] | None = None,
) -> None:
    """Raise unless the request may use the server API with ``scope`` (:meth:`ApiKeyRing.check`).

    ``client_host`` is the resolved client address (:func:`tidings.auth.limits.client_address`).
    Digests the configured keys on every call; hot paths keep an :class:`ApiKeyRing`.
    """
    ApiKeyRing.from_settings(settings).check(authorization_header, scope, client_host, headers)
