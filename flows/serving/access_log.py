"""The API's access log: one JSON line per request with the time, method, route template, status and duration.

Nothing a client typed is written: no query string, no path parameters (a gene symbol or, on a site's own
deployment, anything that identifies a patient): the path is logged as the template of the route it matched
(`/api/targets/{gene}`), `<unmatched>` when none did. Lines go to the `fusionrx.access` logger and, when a file
is configured, appended to it (O_APPEND: the worker processes of one server share the file, one write per line).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterable

from starlette.routing import BaseRoute, Match

from flows.serving.security import ASGIApp, Receive, Scope, Send

LOGGER = "fusionrx.access"
UNMATCHED = "<unmatched>"


def route_template(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """The path template of the route a request matches (`/api/targets/{gene}`), or `<unmatched>`."""
    probe = {**scope, "method": scope.get("method", "GET")}
    partial = None
    for route in routes:
        match, _ = route.matches(probe)
        if match == Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
        if match == Match.PARTIAL and partial is None:  # the path matched, the method did not (405)
            partial = str(getattr(route, "path", UNMATCHED))
    return partial or UNMATCHED


class AccessLogMiddleware:
    """Write one access-log line per HTTP request, whatever answered it (the app, a guard, an error)."""

    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute], path: Path | None = None) -> None:
        self.app = app
        self.routes = routes
        self.logger = logging.getLogger(LOGGER)
        self.file_handler: logging.Handler | None = None
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file_handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=False)
            self.file_handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, entry: dict[str, Any]) -> None:
        """Emit one line (JSON) to the logger's handlers and to the file."""
        record = self.logger.makeRecord(LOGGER, logging.INFO, __file__, 0, json.dumps(entry), None, None)
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.handle(record)
        if self.file_handler is not None:
            self.file_handler.handle(record)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, t0 = time.time(), time.perf_counter()
        status = [500]  # what the client sees if the app dies before answering

        async def send_and_note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.write({"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
                        + f".{int(started % 1 * 1000):03d}Z",
                        "method": str(scope.get("method", ""))[:16], "route": route_template(self.routes, scope),
                        "status": status[0], "duration_ms": round((time.perf_counter() - t0) * 1e3, 3)})
