"""Portal tokens: short-lived bearer tokens scoped to one application.

``POST /api/webhooks/apps/{app}/portal`` (admin key) mints one; the app's customer opens
``/portal#token=…`` (the token rides in the fragment, which browsers never send, so it stays out
of access logs and Referer headers) and the page calls the app's routes with
``Authorization: Bearer tdp_…``. The token is a JWT (HS256) whose ``sub`` is the app id, signed
with a secret that the webhook store makes once and every node shares (see
:mod:`tidings.webhooks.app_store`), so any node verifies what another minted.

What a token may do is decided by :class:`Caller`, one place for every route: an admin key does
everything; a portal token reads and manages its own app's endpoints, attempts and messages (not
when ``read_only``), reads the event-type catalog, and nothing else: another app's routes answer
403, an expired or tampered token 401. ``DELETE …/apps/{app}/portal`` revokes every token of the
app issued until then (the app records the time; a token's ``iat`` must not be before it), so a
link sent to the wrong person, or a customer who left, stops working at once on every node.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from tidings.exceptions import Forbidden, TokenExpired, Unauthorized
from tidings.webhooks.app_store import AppStore

__all__ = ["AUDIENCE", "PREFIX", "Caller", "PortalTokens"]

PREFIX = "tdp_"
AUDIENCE = "tidings-portal"
MAX_TTL = 7 * 24 * 3600.0
DEFAULT_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls an app route: the admin key (``app_id`` None) or a portal token."""

    app_id: str | None = None
    read_only: bool = False
    expires_at: float | None = None

    @property
    def portal(self) -> bool:
        return self.app_id is not None

    def need_admin(self) -> None:
        if self.app_id is not None:
            raise Forbidden("this needs the admin API key: a portal token manages one app's endpoints")

    def need_app(self, app_id: str, *, write: bool = False) -> None:
        if self.app_id is not None and self.app_id != app_id:
            raise Forbidden("this portal token is for another application")
        if write and self.read_only:
            raise Forbidden("this portal token is read-only")


class PortalTokens:
    """Mint and verify portal tokens with the store's shared secret."""

    def __init__(self, store: AppStore) -> None:
        self.store = store
        self._key: str | None = None

    async def _secret(self) -> str:
        if self._key is None:
            self._key = await self.store.portal_key()
        return self._key

    async def issue(
        self, app_id: str, *, ttl: float = DEFAULT_TTL, read_only: bool = False
    ) -> tuple[str, float]:
        """A token for ``app_id`` valid ``ttl`` seconds from now, and when it expires."""
        now = time.time()
        expires_at = now + ttl
        claims = {
            "sub": app_id,
            "aud": AUDIENCE,
            "iat": now,  # not rounded: a token minted just after a revocation must pass
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
            "ro": read_only,
        }
        return PREFIX + jwt.encode(claims, await self._secret(), algorithm="HS256"), expires_at

    async def verify(self, token: str) -> Caller:
        """The caller a token stands for; raises TokenExpired / Unauthorized."""
        try:
            claims = jwt.decode(
                token.removeprefix(PREFIX),
                await self._secret(),
                algorithms=["HS256"],
                audience=AUDIENCE,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired(
                "this portal link has expired: ask the service that sent it for a new one"
            ) from None
        except jwt.InvalidTokenError:
            raise Unauthorized("this portal token is not valid") from None
        app = await self.store.get_app(str(claims["sub"]))
        if app is not None and float(claims.get("iat", 0.0)) < app.portal_not_before:
            raise Unauthorized("this portal link was revoked: ask the service that sent it for a new one")
        return Caller(str(claims["sub"]), bool(claims.get("ro", False)), float(claims["exp"]))
