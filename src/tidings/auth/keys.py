"""Token keys: what verifies a JWT, loaded from a PEM file or a JWKS (file or URL, cached).

Each :class:`VerificationKey` has a *kind* (``hmac``, ``rsa``, ``ec-p256``, ``ec-p384``,
``ec-p521``, ``okp``); :data:`ALGORITHM_KINDS` says which kind each JWS algorithm needs, and the
verifier (:mod:`tidings.auth.tokens`) only ever pairs an algorithm with keys of that kind. That
table is the per-key-type algorithm allow-list that stops key confusion.

:class:`JWKSCache` is the one piece of I/O in :mod:`tidings.auth`: it fetches a JWKS URL (with
``httpx``, no redirects, 1 MiB cap), caches it, and refetches when stale or when asked (an unknown
``kid``), never more often than ``min_interval``; time is an argument.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm

__all__ = [
    "ALGORITHM_KINDS",
    "JWS",
    "JWKSCache",
    "JWKSFetch",
    "KeyKind",
    "VerificationKey",
    "load_jwks",
    "load_public_key_file",
]

log = logging.getLogger("tidings.auth")

_MIN_RSA_BITS = 2048

KeyKind = Literal["hmac", "rsa", "ec-p256", "ec-p384", "ec-p521", "okp"]

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


JWS = _make_jws()
"""The one PyJWS of tidings: no ``none``, quiet HMAC (sign and verify with it)."""


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


def load_jwks(document: bytes | str | Mapping[str, Any], source: str = "jwks") -> list[VerificationKey]:
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
