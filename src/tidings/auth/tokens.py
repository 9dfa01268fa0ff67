"""Connection and subscription tokens (JWT): verification with pinned algorithms, and minting.

Keys and algorithms
-------------------
A :class:`TokenVerifier` holds the configured keys, each with a *kind* (``hmac``, ``rsa``,
``ec-p256`` …), and the ``[auth] algorithms`` allow-list. A token's ``alg`` must be in the
allow-list, and it is verified **only with keys of the kind that algorithm needs**: ``HS*`` only
with ``token_secret``, ``RS*``/``PS*`` only with RSA public keys, ``ES256`` only with P-256 keys,
and so on. So ``alg: none`` is refused, and the classic key confusion (an ``HS256`` token whose
"secret" is the RSA public key, which anybody has) never reaches an HMAC check with that key.
Headers that carry keys (``jwk``, ``jku``, ``x5u``, ``x5c``) are ignored: keys come from settings.

Keys come from ``token_secret`` (HS256/384/512), ``[auth] public_key_file`` (PEM public key or
certificate) and a JWKS document (``jwks_file``, or ``jwks_url`` fetched, cached for
``jwks_cache_ttl`` and refetched when a token names an unknown ``kid``, at most once per
``jwks_refresh_interval``, so random ``kid`` values cannot make the hub hammer the identity
provider). A JWKS ``kid`` selects the key; without ``kid`` every key of the right kind is tried.

Claims
------
Connection token: ``sub`` (user id; a string, may be empty for an anonymous holder of grants),
``exp`` (required, Unix seconds), ``nbf`` (optional), ``aud``/``iss`` (checked when ``[auth]
audience`` / ``issuer`` are set; a token with ``aud`` is refused when no audience is configured,
as RFC 7519 §4.1.3 asks), ``channels`` (grants: ``{"pattern": ["subscribe", "publish",
"presence", "history"]}``) and ``info`` (any JSON; shown in presence). It must not carry
``channel``, which marks a subscription token. A subscription token carries ``sub``,
``channel`` and ``exp`` (``info`` optional) and no ``channels``; it grants ``subscribe``,
``presence`` and ``history`` on that one channel, to that one user.

Errors
------
Every refusal raises :class:`~tidings.exceptions.Unauthorized` (code ``unauthorized``, 401) with a
message saying what is wrong, or its subclass :class:`~tidings.exceptions.TokenExpired` (same code;
WebSocket close 4001) for an expired token. A subscription token for another channel or user
raises :class:`~tidings.exceptions.Forbidden`. A JWKS that cannot be fetched while no keys are
cached raises :class:`~tidings.exceptions.Unavailable` (503, temporary): the client is not at fault.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from tidings.auth.keys import (
    ALGORITHM_KINDS,
    JWS,
    JWKSCache,
    JWKSFetch,
    KeyKind,
    VerificationKey,
    load_jwks,
    load_public_key_file,
)
from tidings.core.channels import validate_channel, validate_pattern
from tidings.core.permissions import Capability, Credentials
from tidings.exceptions import BadRequest, Forbidden, TokenExpired, Unauthorized, Unavailable

__all__ = [
    "ALGORITHM_KINDS",
    "DEFAULT_ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "SUBSCRIPTION_CAPABILITIES",
    "JWKSCache",
    "KeyKind",
    "SubscriptionGrant",
    "TokenVerifier",
    "VerificationKey",
    "grants_to_claim",
    "load_jwks",
    "load_public_key_file",
    "mint_token",
    "parse_grants",
]

log = logging.getLogger("tidings.auth")

DEFAULT_ALGORITHMS: tuple[str, ...] = ("HS256", "RS256", "ES256")
#: Tokens longer than this are refused before any parsing (8 KiB is a generous header budget).
MAX_TOKEN_LENGTH = 8192
#: What a subscription token grants on its channel.
SUBSCRIPTION_CAPABILITIES = frozenset({Capability.SUBSCRIBE, Capability.PRESENCE, Capability.HISTORY})
#: How many keys an unkeyed (no ``kid``) token may be tried against.
_MAX_CANDIDATES = 4


# -------------------------------------------------------------------------------------- claims


def parse_grants(claim: object) -> dict[str, frozenset[Capability]]:
    """The ``channels`` claim as grants; raises :class:`Unauthorized` naming the problem."""
    if claim is None:
        return {}
    if not isinstance(claim, Mapping):
        raise Unauthorized('invalid token: claim "channels" must be an object {pattern: [caps]}')
    grants: dict[str, frozenset[Capability]] = {}
    for pattern, caps in claim.items():
        try:
            validate_pattern(pattern)
        except BadRequest:
            raise Unauthorized(
                f'invalid token: claim "channels" has an invalid pattern {str(pattern)[:60]!r}'
            ) from None
        if not isinstance(caps, list):
            raise Unauthorized(f'invalid token: claim "channels"[{pattern!r}] must be a list')
        try:
            grants[pattern] = frozenset(Capability(c) for c in caps)
        except ValueError:
            raise Unauthorized(
                f'invalid token: claim "channels"[{pattern!r}] lists an unknown capability; '
                f"use {', '.join(c.value for c in Capability)}"
            ) from None
    return grants


@dataclass(frozen=True, slots=True)
class SubscriptionGrant:
    """A verified subscription token: ``user`` may read ``channel`` until ``expires_at``."""

    user: str
    channel: str
    expires_at: float
    info: Any = None
    capabilities: frozenset[Capability] = SUBSCRIPTION_CAPABILITIES

    def credentials(self) -> Credentials:
        """The grant as :class:`Credentials` (for ``allowed()``): this one channel only."""
        return Credentials(
            user=self.user,
            grants={self.channel: self.capabilities},
            expires_at=self.expires_at,
            info=self.info,
        )


def _iso(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthorized(f'invalid token: claim "{name}" must be a number (Unix seconds)')
    return float(value)


# ------------------------------------------------------------------------------------ verifier

_PYJWT_MESSAGES: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "signature does not verify"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed for this key"),
    (jwt.InvalidKeyError, "no usable key for this token"),
    (jwt.DecodeError, "malformed token"),
)


class TokenVerifier:
    """Verifies connection and subscription tokens against the configured keys.

    Build it once per node (:meth:`from_settings`); it is cheap to call. ``verify_*_nowait``
    use only keys at hand (secret, key file, JWKS file, JWKS cache); the ``async`` forms also
    fetch a JWKS URL when the cache is stale or a ``kid`` is unknown. ``now`` is Unix seconds
    (default: ``time.time()``); JWKS refresh timing uses ``time.monotonic()`` unless
    ``monotonic`` is given.
    """

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        keys: Sequence[VerificationKey] = (),
        jwks: JWKSCache | None = None,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = [a for a in algorithms if a not in ALGORITHM_KINDS]
        if unknown:
            raise ValueError(f"unknown or unsafe algorithms: {unknown}")
        self.algorithms = tuple(algorithms)
        self._static: list[VerificationKey] = list(keys)
        if secret:
            raw = secret.encode() if isinstance(secret, str) else secret
            if len(raw) < 32:
                log.warning("token_secret is %d bytes; use at least 32 random bytes for HS256", len(raw))
            self._static.append(VerificationKey(raw, "hmac", source="token_secret"))
        self.jwks = jwks
        self.audience = [audience] if isinstance(audience, str) else audience
        self.issuer = issuer
        self.leeway = leeway
        self._monotonic = monotonic
        if not self._static and jwks is None:
            log.info("no token keys configured: every token will be refused")

    @classmethod
    def from_settings(cls, settings: Any, *, fetch: JWKSFetch | None = None) -> TokenVerifier:
        """The verifier of ``token_secret`` and ``[auth]``; ``ValueError`` for a bad key file."""
        auth = settings.auth
        keys: list[VerificationKey] = []
        if auth.public_key_file is not None:
            keys.append(load_public_key_file(auth.public_key_file))
        if auth.jwks_file is not None:
            path = Path(auth.jwks_file)
            keys.extend(load_jwks(path.read_bytes(), source=str(path)))
        jwks = None
        if auth.jwks_url:
            jwks = JWKSCache(
                auth.jwks_url,
                max_age=auth.jwks_cache_ttl,
                min_interval=auth.jwks_refresh_interval,
                timeout=auth.jwks_timeout,
                fetch=fetch,
            )
        return cls(
            secret=settings.token_secret,
            keys=keys,
            jwks=jwks,
            algorithms=auth.algorithms,
            audience=auth.audience,
            issuer=auth.issuer,
            leeway=auth.leeway,
        )

    @property
    def configured(self) -> bool:
        """Whether any key is configured (otherwise every token is refused)."""
        return bool(self._static) or self.jwks is not None

    # -- the steps ------------------------------------------------------------------------

    def _header(self, token: object) -> tuple[str, str, str | None]:
        """(token, alg, kid) after the checks that need no key."""
        if not isinstance(token, str) or not token.strip():
            raise Unauthorized("missing token")
        token = token.strip()
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized(f"invalid token: longer than {MAX_TOKEN_LENGTH} characters")
        try:
            header = JWS.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("invalid token: malformed (not a signed JWT)") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise Unauthorized('invalid token: header has no "alg"')
        if alg.lower() == "none":
            raise Unauthorized("invalid token: unsigned tokens (alg none) are not accepted")
        if alg not in self.algorithms:
            raise Unauthorized(
                f"invalid token: algorithm {alg[:20]} is not allowed (allowed: {', '.join(self.algorithms)})"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized('invalid token: header "kid" must be a string')
        return token, alg, kid

    def _candidates(self, alg: str, kid: str | None) -> list[VerificationKey]:
        kind = ALGORITHM_KINDS[alg]
        pool = [*self._static, *(self.jwks.keys_nowait() if self.jwks else ())]
        fitting = [k for k in pool if k.kind == kind and (k.alg is None or k.alg == alg)]
        if kind == "hmac":
            return fitting  # the secret has no kid
        if kid is not None:
            keyed = [k for k in fitting if k.kid == kid]
            # a kid that names no JWKS key may still be meant for the key file
            return keyed or [k for k in fitting if k.kid is None]
        return fitting[:_MAX_CANDIDATES]

    def _wants_refresh(self, alg: str, kid: str | None) -> bool:
        if self.jwks is None or ALGORITHM_KINDS[alg] == "hmac":
            return False
        now = self._monotonic()
        if self.jwks.stale(now):
            return True
        if kid is None:
            return False
        return not any(k.kid == kid for k in self.jwks.keys_nowait())

    async def _refresh_for(self, alg: str, kid: str | None) -> None:
        if self.jwks is None:
            return
        now = self._monotonic()
        had_keys = bool(self.jwks.keys_nowait())
        await self.jwks.refresh(now, force=True)
        if not had_keys and not self.jwks.keys_nowait() and not self._candidates(alg, kid):
            raise Unavailable("cannot fetch the token keys (JWKS) to check this token; retry shortly")

    def _claims(self, token: str, alg: str, kid: str | None) -> dict[str, Any]:
        candidates = self._candidates(alg, kid)
        if not candidates:
            if kid is not None:
                raise Unauthorized(f"invalid token: no key with kid {kid[:60]!r} for {alg}")
            raise Unauthorized(f"invalid token: no key configured for {alg}")
        payload: bytes | None = None
        for key in candidates:
            try:
                decoded = JWS.decode_complete(token, key.key, algorithms=[alg])
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise Unauthorized(f"invalid token: {_describe(exc)}") from None
            payload = decoded["payload"]
            break
        if payload is None:
            raise Unauthorized("invalid token: signature does not verify")
        try:
            claims = json.loads(payload)
        except (ValueError, RecursionError):
            raise Unauthorized("invalid token: payload is not JSON") from None
        if not isinstance(claims, dict):
            raise Unauthorized("invalid token: payload is not a JSON object")
        return claims

    def _check_standard(self, claims: Mapping[str, Any], now: float) -> float:
        """Check exp, nbf, iat, aud, iss, sub; return exp."""
        exp = _number(claims, "exp")
        if exp is None:
            raise Unauthorized('invalid token: claim "exp" is required')
        if exp <= now - self.leeway:
            raise TokenExpired(f"token expired at {_iso(exp)}; get a new token and reconnect")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + self.leeway:
            raise Unauthorized(f"invalid token: not valid before {_iso(nbf)}")
        _number(claims, "iat")
        if "sub" not in claims:
            raise Unauthorized('invalid token: claim "sub" is required')
        if not isinstance(claims["sub"], str):
            raise Unauthorized('invalid token: claim "sub" must be a string')
        self._check_audience(claims.get("aud"))
        if self.issuer is not None:
            iss = claims.get("iss")
            if iss is None:
                raise Unauthorized('invalid token: claim "iss" is required')
            if iss != self.issuer:
                raise Unauthorized(f"invalid token: issuer {str(iss)[:100]!r} is not accepted")
        return exp

    def _check_audience(self, aud: object) -> None:
        if self.audience is None:
            if aud:
                raise Unauthorized(
                    'invalid token: it names an audience ("aud") but none is configured ([auth] audience)'
                )
            return
        if not aud:
            raise Unauthorized('invalid token: claim "aud" is required')
        values = [aud] if isinstance(aud, str) else aud
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise Unauthorized('invalid token: claim "aud" must be a string or list of strings')
        if not any(v in self.audience for v in values):
            raise Unauthorized("invalid token: audience does not match")

    def _connection(self, claims: Mapping[str, Any], now: float) -> Credentials:
        exp = self._check_standard(claims, now)
        if "channel" in claims:
            raise Unauthorized(
                'invalid token: this is a subscription token (it has a "channel" claim); '
                "send it with the subscribe request, not to connect"
            )
        return Credentials(
            user=claims["sub"],
            grants=parse_grants(claims.get("channels")),
            expires_at=exp,
            info=claims.get("info"),
        )

    def _subscription(
        self, claims: Mapping[str, Any], channel: str | None, user: str | None, now: float
    ) -> SubscriptionGrant:
        exp = self._check_standard(claims, now)
        granted = claims.get("channel")
        if not isinstance(granted, str):
            raise Unauthorized('invalid token: subscription tokens need a "channel" claim')
        if "channels" in claims:
            raise Unauthorized('invalid token: a subscription token must not carry "channels" grants')
        try:
            validate_channel(granted)
        except BadRequest:
            raise Unauthorized('invalid token: claim "channel" is not a channel name') from None
        if channel is not None and granted != channel:
            raise Forbidden(f"subscription token is for channel {granted!r}, not {channel!r}")
        if user is not None and claims["sub"] != user:
            raise Forbidden("subscription token was issued to another user")
        return SubscriptionGrant(claims["sub"], granted, exp, claims.get("info"))

    # -- the public API -------------------------------------------------------------------

    def verify_connection_nowait(self, token: str, now: float | None = None) -> Credentials:
        """The credentials of a connection token, using only keys at hand; raises Unauthorized."""
        token, alg, kid = self._header(token)
        claims = self._claims(token, alg, kid)
        return self._connection(claims, time.time() if now is None else now)

    async def verify_connection(self, token: str, now: float | None = None) -> Credentials:
        """Like :meth:`verify_connection_nowait`, refreshing the JWKS first when needed."""
        token, alg, kid = self._header(token)
        if self._wants_refresh(alg, kid):
            await self._refresh_for(alg, kid)
        claims = self._claims(token, alg, kid)
        return self._connection(claims, time.time() if now is None else now)

    def verify_subscription_nowait(
        self,
        token: str,
        *,
        channel: str | None,
        user: str | None,
        now: float | None = None,
    ) -> SubscriptionGrant:
        """The grant of a subscription token for ``channel`` held by ``user``.

        Pass the channel being subscribed and the connection's user; ``None`` skips that check
        (only for tools). Raises Unauthorized (bad token) or Forbidden (other channel or user).
        """
        token, alg, kid = self._header(token)
        claims = self._claims(token, alg, kid)
        return self._subscription(claims, channel, user, time.time() if now is None else now)

    async def verify_subscription(
        self,
        token: str,
        *,
        channel: str | None,
        user: str | None,
        now: float | None = None,
    ) -> SubscriptionGrant:
        """Like :meth:`verify_subscription_nowait`, refreshing the JWKS first when needed."""
        token, alg, kid = self._header(token)
        if self._wants_refresh(alg, kid):
            await self._refresh_for(alg, kid)
        claims = self._claims(token, alg, kid)
        return self._subscription(claims, channel, user, time.time() if now is None else now)


def _describe(exc: jwt.PyJWTError) -> str:
    for kind, message in _PYJWT_MESSAGES:
        if isinstance(exc, kind):
            return message
    return str(exc) or type(exc).__name__


# -------------------------------------------------------------------------------------- minting


def mint_token(
    claims: Mapping[str, Any],
    key: str | bytes | Any,
    *,
    algorithm: str = "HS256",
    kid: str | None = None,
) -> str:
    """Sign ``claims`` (for development tools and tests; production tokens come from your app).

    ``key`` is the HS secret, or a ``cryptography`` private key for RS/PS/ES/EdDSA.
    """
    if algorithm not in ALGORITHM_KINDS:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    headers: dict[str, Any] = {"typ": "JWT"}
    if kid is not None:
        headers["kid"] = kid
    payload = json.dumps(dict(claims), separators=(",", ":")).encode()
    return JWS.encode(payload, key, algorithm=algorithm, headers=headers)


def grants_to_claim(grants: Mapping[str, Iterable[Capability | str]]) -> dict[str, list[str]]:
    """Grants as the ``channels`` claim (the inverse of :func:`parse_grants`)."""
    return {pattern: sorted(str(c) for c in caps) for pattern, caps in grants.items()}
