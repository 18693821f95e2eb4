"""What guards the HTTP API: optional bearer-token authentication, CORS (off unless configured) and a cap on
the size of a request's URL, read from the environment so that every worker process of `fusionrx serve`
gets the same settings.

    FUSIONRX_API_TOKEN=secret          every route (the /api routes, the page, its files, the docs) answers
                                       401 without `Authorization: Bearer secret`
    FUSIONRX_API_CORS_ORIGINS=a,b      browsers on these origins may call the API (none by default)
    FUSIONRX_API_ACCESS_LOG=PATH       the access log's file (flows.serving.access_log)

The middlewares are plain ASGI callables (no per-request Starlette machinery): they run on every request of
a server that answers a few hundred requests a second on two cores.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from fusion.errors import FusionRxError

TOKEN_ENV = "FUSIONRX_API_TOKEN"
CORS_ENV = "FUSIONRX_API_CORS_ORIGINS"
ACCESS_LOG_ENV = "FUSIONRX_API_ACCESS_LOG"
MAX_QUERY_BYTES = 4096    # a request's whole query string (the longest legitimate one, a 2000-char SMILES, fits)
MAX_PATH_BYTES = 512      # a request's path

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ApiSettings:
    """How one API app is guarded and logged (None / empty: off)."""

    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    access_log: Path | None = None
    max_query_bytes: int = MAX_QUERY_BYTES
    max_path_bytes: int = MAX_PATH_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ApiSettings":
        """Settings from FUSIONRX_API_TOKEN, FUSIONRX_API_CORS_ORIGINS and FUSIONRX_API_ACCESS_LOG.

        Raises:
            FusionRxError: the token variable is set but empty or blank (an empty secret would be no secret;
                unset the variable to serve without authentication).
        """
        env = os.environ if environ is None else environ
        token = env.get(TOKEN_ENV)
        if token is not None and not token.strip():
            raise FusionRxError(f"{TOKEN_ENV} is set but empty: give the token, or unset it to serve without one")
        origins = tuple(o.strip() for o in env.get(CORS_ENV, "").split(",") if o.strip())
        log = env.get(ACCESS_LOG_ENV, "").strip()
        return cls(token=token.strip() if token else None, cors_origins=origins,
                   access_log=Path(log) if log else None)


async def send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer a request with a small JSON body without going through the app."""
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class BearerTokenMiddleware:
    """401 for every HTTP request without `Authorization: Bearer <token>` (compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    def authorised(self, scope: Scope) -> bool:
        """Whether the request carries the token (any other scheme, a missing header or a wrong token: no)."""
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        scheme, _, credentials = given.strip().partition(b" ")
        # compare_digest on both branches: the time taken tells nothing about the token
        match = hmac.compare_digest(credentials.strip(), self._expected)
        return scheme.lower() == b"bearer" and match

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.authorised(scope):
            await self.app(scope, receive, send)
            return
        await send_json(send, 401, {"detail": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"},
                        [(b"www-authenticate", b'Bearer realm="fusionrx"')])


class RequestSizeMiddleware:
    """422 with a message for a request whose query string or path is over the caps (before any parsing)."""

    def __init__(self, app: ASGIApp, max_query_bytes: int = MAX_QUERY_BYTES,
                 max_path_bytes: int = MAX_PATH_BYTES) -> None:
        self.app = app
        self.max_query_bytes = max_query_bytes
        self.max_path_bytes = max_path_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            n_query = len(scope.get("query_string", b""))
            n_path = len(scope.get("raw_path") or scope.get("path", "").encode())
            if n_query > self.max_query_bytes:
                await send_json(send, 422, {"detail": f"query string of {n_query} bytes: at most "
                                                      f"{self.max_query_bytes} are accepted"})
                return
            if n_path > self.max_path_bytes:
                await send_json(send, 422, {"detail": f"path of {n_path} bytes: at most {self.max_path_bytes} "
                                                      "are accepted"})
                return
        await self.app(scope, receive, send)
