"""`fusionrx serve --store S`: the HTTP API (OpenAPI at /docs) and the web page at /."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from flows.serving.api import create_app
    from flows.results.db import db_path

    if not db_path(args.store).exists():
        from fusion.errors import FusionRxError

        raise FusionRxError(f"{db_path(args.store)}: no results DB; run `fusionrx run` on this store first")
    print(f"[serve] FusionRx on http://{args.host}:{args.port}/ (API docs /docs), store {args.store} (read-only)")
    uvicorn.run(create_app(args.store), host=args.host, port=args.port, log_level="warning")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `fusionrx serve`."""
    p = sub.add_parser("serve", help="HTTP API and web page over a store's results DB (read-only)")
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=_cmd_serve)
