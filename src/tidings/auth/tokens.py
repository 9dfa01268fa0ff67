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

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm

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

KeyKind = Literal["hmac", "rsa", "ec-p256", "ec-p384", "ec-p521", "okp"]

DEFAULT_ALGORITHMS: tuple[str, ...] = ("HS256", "RS256", "ES256")
#: Tokens longer than this are refused before any parsing (8 KiB is a generous header budget).
MAX_TOKEN_LENGTH = 8192
#: What a subscription token grants on its channel.
SUBSCRIPTION_CAPABILITIES = frozenset(
    {Capability.SUBSCRIBE, Capability.PRESENCE, Capability.HISTORY}
)
#: How many keys an unkeyed (no ``kid``) token may be tried against.
_MAX_CANDIDATES = 4
_MIN_RSA_BITS = 2048

#: Which key kind each algorithm verifies with: the allow-list per key type.
ALGORITHM_KINDS: Mapping[str, KeyKind] = {
    "HS256": "hmac", "HS384": "hmac", "HS512": "hmac",
    "RS256": "rsa", "RS384": "rsa", "RS512": "rsa",
    "PS256": "rsa", "PS384": "rsa", "PS512": "rsa",
    "ES256": "ec-p256", "ES384": "ec-p384", "ES512": "ec-p521",
    "EdDSA": "okp",
}  # fmt: skip


class _HMAC(HMACAlgorithm):
    """PyJWT's HMAC without the per-call short-key warning (we warn once, at configuration)."""

    def check_key_length(self, key: bytes) -> str | None:
        return None


def _make_jws() -> jwt.PyJWS:
    jws = jwt.PyJWS()
    jws.unregister_algorithm("none")
    for name, hash_alg in (
        ("HS256", HMACAlgorithm.SHA256),
        ("HS384", HMACAlgorithm.SHA384),
        ("HS512", HMACAlgorithm.SHA512),
    ):
        jws.unregister_algorithm(name)
        jws.register_algorithm(name, _HMAC(hash_alg))
    return jws


_JWS = _make_jws()


# ---------------------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key: the verifying material, its kind, and its JWKS ``kid``/``alg`` if any."""

    key: Any = field(repr=False)
    kind: KeyKind
    kid: str | None = None
    alg: str | None = None  # a JWK's "alg" pins the key to that one algorithm
    source: str = ""

    @classmethod
    def from_public_key(
        cls, key: Any, *, kid: str | None = None, alg: str | None = None, source: str = ""
    ) -> VerificationKey:
        """Wrap a ``cryptography`` public key; raises ``ValueError`` for unusable ones."""
        kind: KeyKind
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < _MIN_RSA_BITS:
                raise ValueError(f"RSA key of {key.key_size} bits is too small (use >= 2048)")
            kind = "rsa"
        elif isinstance(key, ec.EllipticCurvePublicKey):
            curves: dict[str, KeyKind] = {
                "secp256r1": "ec-p256", "secp384r1": "ec-p384", "secp521r1": "ec-p521",
            }  # fmt: skip
            found = curves.get(key.curve.name)
            if found is None:
                raise ValueError(f"unsupported elliptic curve {key.curve.name}")
            kind = found
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            kind = "okp"
        else:
            raise ValueError(f"unsupported public key type {type(key).__name__}")
        if alg is not None and ALGORITHM_KINDS.get(alg) != kind:
            raise ValueError(f"key declares alg {alg!r}, which does not fit a {kind} key")
        return cls(key, kind, kid, alg, source)


def load_public_key_file(path: str | Path) -> VerificationKey:
    """The key of a PEM file holding a public key or an X.509 certificate.

    Raises ``ValueError`` with the reason (a private key, a small RSA key, not PEM…).
    """
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path} holds a private key; give the public key (openssl pkey -pubout)")
    public: Any
    try:
        if b"BEGIN CERTIFICATE" in data:
            public = x509.load_pem_x509_certificate(data).public_key()
        else:
            public = load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"{path} is not a PEM public key or certificate: {exc}") from None
    return VerificationKey.from_public_key(public, source=str(path))


def load_jwks(
    document: bytes | str | Mapping[str, Any], source: str = "jwks"
) -> list[VerificationKey]:
    """The usable signature keys of a JWKS document (RFC 7517).

    Skips, with a log line, symmetric (``oct``) keys (a published document must not carry
    secrets, and accepting one would let whoever controls it mint HS tokens), keys whose ``use``
    is not ``sig``, and keys PyJWT cannot load. Raises ``ValueError`` if the document is not a
    JWKS at all.
    """
    if isinstance(document, bytes | str):
        try:
            document = json.loads(document)
        except ValueError:
            raise ValueError(f"{source}: not JSON") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError(f"{source}: not a JWKS document (no 'keys' list)")
    keys: list[VerificationKey] = []
    for index, jwk in enumerate(document["keys"]):
        where = f"{source} key {index}"
        if not isinstance(jwk, Mapping):
            log.warning("%s: not an object; skipped", where)
            continue
        if jwk.get("kty") == "oct":
            log.warning("%s: symmetric (oct) key in a JWKS; skipped", where)
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        alg = jwk.get("alg")
        try:
            if not isinstance(kid, str | None) or not isinstance(alg, str | None):
                raise ValueError("kid and alg must be strings")
            if alg is not None and alg not in ALGORITHM_KINDS:
                raise ValueError(f"unsupported alg {alg!r}")
            public = jwt.PyJWK(dict(jwk)).key
            keys.append(VerificationKey.from_public_key(public, kid=kid, alg=alg, source=where))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s: unusable (%s); skipped", where, exc)
    return keys


JWKSFetch = Callable[[str, float], Awaitable[bytes]]
_MAX_JWKS_BYTES = 1 << 20


async def _httpx_fetch(url: str, seconds: float) -> bytes:
    import httpx  # imported here: only deployments with jwks_url need it

    async with (
        httpx.AsyncClient(timeout=seconds, follow_redirects=False) as client,
        client.stream("GET", url, headers={"Accept": "application/json"}) as response,
    ):
        response.raise_for_status()
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _MAX_JWKS_BYTES:
                raise ValueError("JWKS document larger than 1 MiB")
        return bytes(body)


class JWKSCache:
    """The keys of a JWKS URL, fetched lazily, cached, refreshed on demand with a rate limit.

    Time is an argument (``now``, any monotonic seconds). :meth:`keys_nowait` answers from the
    cache; :meth:`refresh` fetches when the cache is stale (older than ``max_age``) or when
    ``force`` asks (an unknown ``kid``) and the last attempt is at least ``min_interval`` old.
    Concurrent refreshes share one fetch. A failed fetch keeps the old keys (and counts for the
    rate limit, so an unreachable provider is not hammered either).
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: float = 300.0,
        min_interval: float = 30.0,
        timeout: float = 5.0,
        fetch: JWKSFetch | None = None,
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.min_interval = min_interval
        self.timeout = timeout
        self._fetch = fetch or _httpx_fetch
        self._keys: tuple[VerificationKey, ...] = ()
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._inflight: asyncio.Future[bool] | None = None
        self.fetches = 0
        self.last_error: str | None = None

    def keys_nowait(self) -> tuple[VerificationKey, ...]:
        """The cached keys (possibly stale, possibly none)."""
        return self._keys

    def stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self.max_age

    def may_refresh(self, now: float) -> bool:
        """Whether the rate limit lets a fetch happen at ``now``."""
        return self._attempted_at is None or now - self._attempted_at >= self.min_interval

    async def refresh(self, now: float, *, force: bool = False) -> bool:
        """Fetch if stale (or ``force``) and the rate limit allows; return whether keys were loaded.

        A caller arriving while a fetch runs waits for that fetch and shares its result. Never
        raises for a failed fetch (see :attr:`last_error`); cancelling a caller does not cancel
        the fetch the others wait for.
        """
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        if not (force or self.stale(now)) or not self.may_refresh(now):
            return False
        self._attempted_at = now
        self.fetches += 1
        task = asyncio.ensure_future(self._load(now))
        self._inflight = task
        task.add_done_callback(self._fetch_done)
        return await asyncio.shield(task)

    def _fetch_done(self, task: asyncio.Future[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _load(self, now: float) -> bool:
        try:
            body = await self._fetch(self.url, self.timeout)
            keys = load_jwks(body, source=self.url)
        except Exception as exc:  # any failure: keep the old keys, say why
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("JWKS fetch from %s failed: %s", self.url, self.last_error)
            return False
        self.last_error = None
        self._fetched_at = now
        self._keys = tuple(keys)
        return True


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
                log.warning(
                    "token_secret is %d bytes; use at least 32 random bytes for HS256", len(raw)
                )
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
            header = _JWS.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("invalid token: malformed (not a signed JWT)") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise Unauthorized('invalid token: header has no "alg"')
        if alg.lower() == "none":
            raise Unauthorized("invalid token: unsigned tokens (alg none) are not accepted")
        if alg not in self.algorithms:
            raise Unauthorized(
                f"invalid token: algorithm {alg} is not allowed "
                f"(allowed: {', '.join(self.algorithms)})"
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
        assert self.jwks is not None
        now = self._monotonic()
        had_keys = bool(self.jwks.keys_nowait())
        await self.jwks.refresh(now, force=True)
        if not had_keys and not self.jwks.keys_nowait() and not self._candidates(alg, kid):
            raise Unavailable(
                "cannot fetch the token keys (JWKS) to check this token; retry shortly"
            )

    def _claims(self, token: str, alg: str, kid: str | None) -> dict[str, Any]:
        candidates = self._candidates(alg, kid)
        if not candidates:
            if kid is not None:
                raise Unauthorized(f"invalid token: no key with kid {kid!r} for {alg}")
            raise Unauthorized(f"invalid token: no key configured for {alg}")
        payload: bytes | None = None
        for key in candidates:
            try:
                decoded = _JWS.decode_complete(token, key.key, algorithms=[alg])
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
                    'invalid token: it names an audience ("aud") but none is configured '
                    "([auth] audience)"
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
                "invalid token: this is a subscription token (it has a \"channel\" claim); "
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
            raise Unauthorized(
                'invalid token: a subscription token must not carry "channels" grants'
            )
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
    return _JWS.encode(payload, key, algorithm=algorithm, headers=headers)


def grants_to_claim(grants: Mapping[str, Iterable[Capability | str]]) -> dict[str, list[str]]:
    """Grants as the ``channels`` claim (the inverse of :func:`parse_grants`)."""
    return {pattern: sorted(str(c) for c in caps) for pattern, caps in grants.items()}
