"""The one error tree of tidings.

::

    TidingsError                 code            http  temporary
    ├── BadRequest               bad_request      400
    │   ├── InvalidCursor        bad_request      400
    │   └── Unprocessable        bad_request      422
    ├── Unauthorized             unauthorized     401
    │   └── TokenExpired         unauthorized     401
    ├── Forbidden                forbidden        403
    ├── NotFound                 not_found        404
    ├── Conflict                 conflict         409
    ├── TooLarge                 too_large        413
    ├── RateLimited              rate_limited     429   yes
    ├── Unavailable              unavailable      503   yes
    ├── Internal                 internal         500
    └── StartupError             startup_failed   503

Every error carries what an edge needs to answer a client: ``code`` (the JSON ``error.code``),
``http_status`` and ``temporary`` (a retry may succeed). Foreign exceptions are translated once, at
the boundary (``server/errors.py``); the core and the hub raise only these.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Internal",
    "InvalidCursor",
    "NotFound",
    "RateLimited",
    "StartupError",
    "TidingsError",
    "TokenExpired",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
]


class TidingsError(Exception):
    """Base of every error tidings raises on purpose."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    temporary: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code.replace("_", " "))
        self.message = message or self.code.replace("_", " ")

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The JSON error shape every HTTP answer and WebSocket error reply uses."""
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(TidingsError):
    code = "bad_request"
    http_status = 400


class InvalidCursor(BadRequest):
    """A cursor that does not decode; the client should drop it and start from the present."""


class Unprocessable(BadRequest):
    """Well-formed, but refused by what it must match (a webhook payload and its event type's
    JSON Schema): the message says what did not match."""

    http_status = 422


class Unauthorized(TidingsError):
    code = "unauthorized"
    http_status = 401


class TokenExpired(Unauthorized):
    """The connection token's ``exp`` has passed; the client should fetch a new one."""


class Forbidden(TidingsError):
    code = "forbidden"
    http_status = 403


class NotFound(TidingsError):
    code = "not_found"
    http_status = 404


class Conflict(TidingsError):
    code = "conflict"
    http_status = 409


class TooLarge(TidingsError):
    code = "too_large"
    http_status = 413


class RateLimited(TidingsError):
    code = "rate_limited"
    http_status = 429
    temporary = True


class Unavailable(TidingsError):
    code = "unavailable"
    http_status = 503
    temporary = True


class Internal(TidingsError):
    code = "internal"
    http_status = 500


class StartupError(TidingsError):
    """A node that cannot start as it is set up (a Redis Cluster node given as ``redis://``, a
    webhook store another node holds). ``message`` is one line that says what to do: the server
    prints it instead of a traceback."""

    code = "startup_failed"
    http_status = 503
