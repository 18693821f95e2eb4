"""The API app served by uvicorn in a thread on a free loopback port, for the tests that drive it over HTTP
(a browser, a plain client); stopped and joined on exit."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def serve_store(store: Path, timeout_s: float = 30.0) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of ``create_app(store)`` while the block runs."""
    import uvicorn

    from flows.serving.api import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t_end = time.time() + timeout_s
    while not server.started and time.time() < t_end:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
