"""`fusionrx serve --store S [--workers N]`: the HTTP API (OpenAPI at /docs) and the web page at /."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_serve(args: argparse.Namespace) -> int:
    from flows.results.db import db_path
    from flows.serving.security import ApiSettings
    from flows.serving.serve import ACCESS_LOG_NAME, serve

    if not db_path(args.store).exists():
        from fusion.errors import FusionRxError

        raise FusionRxError(f"{db_path(args.store)}: no results DB; run `fusionrx run` on this store first")
    settings = ApiSettings.from_env()
    log = args.access_log or args.store / ACCESS_LOG_NAME
    print(f"[serve] FusionRx on http://{args.host}:{args.port}/ (API docs /docs), store {args.store} (read-only), "
          f"{args.workers} worker(s), {'bearer token required' if settings.token else 'no authentication'}, "
          f"access log {log}")
    serve(args.store, host=args.host, port=args.port, workers=args.workers, access_log=log)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `fusionrx serve`."""
    p = sub.add_parser("serve", help="HTTP API and web page over a store's results DB (read-only)",
                       description="Environment: FUSIONRX_API_TOKEN (every route then needs 'Authorization: Bearer "
                       "TOKEN'), FUSIONRX_API_CORS_ORIGINS (comma-separated origins allowed by CORS; none by default)")
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes (uvicorn workers); one per core")
    p.add_argument("--access-log", type=Path, default=None,
                   help="access log (one JSON line per request: time, method, route template, status, duration; "
                   "no query values); default STORE/logs/api-access.log")
    p.set_defaults(func=_cmd_serve)
