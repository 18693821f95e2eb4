"""The FusionRx HTTP API and web page (FastAPI): ranked targets with custom weights and filters, one
target's explanation, similar compounds, structure drawings, spatial pictures and experiments.

Every endpoint calls the same query functions as the CLI (flows.results.queries); the results DB is only ever
opened read-only, and read once per state of its file (the queries answer from a snapshot in memory, so
requests run side by side; a run's swap of the file is seen by the next request). Bad input is a 4xx with a
message, never a 500; every answer (status, content type, body) is documented in the OpenAPI schema
(flows.serving.schemas). Guards and the access log wrap the app
(flows.serving.security, flows.serving.access_log): optional bearer token, CORS only when configured, caps on
the URL's size, one log line per request with the route template and never the query.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from flows.results.db import db_path
from flows.results.queries import (MAX_PAGE, MAX_SIMILAR, explain_target, ranked_targets, run_experiments,
                                   similar_compounds)
from flows.results.ranking import EVIDENCE_TYPES, ScoringError, parse_weights
from flows.serving import schemas as sc
from flows.serving.access_log import AccessLogMiddleware
from flows.serving.patients_api import patients_router
from flows.serving.security import ApiSettings, BearerTokenMiddleware, RequestSizeMiddleware
from fusion.errors import FusionRxError, MoleculeError, QueryError

WEB = Path(__file__).with_name("web")
MAX_GENE_CHARS = 64       # a gene symbol in a path
MAX_SPEC_CHARS = 1000     # a weights / evidence_min string (TYPE:X pairs)
MAX_SMILES_CHARS = 2000
WEIGHTS_EXAMPLE = "rna_expression:1,copy_number:0.5"

def _floats(text: str | None, what: str) -> dict[str, float] | None:
    """'TYPE:X,TYPE=X' -> {TYPE: X} (either separator); 400 on anything malformed."""
    if text is None or not text.strip():
        return None
    out = {}
    for part in text.split(","):
        key, sep, value = part.replace("=", ":").partition(":")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise HTTPException(400, f"{what}: expected TYPE:NUMBER pairs separated by commas, found {part!r}") from None
        if not sep:
            raise HTTPException(400, f"{what}: expected TYPE:NUMBER, found {part!r}")
    return out


def create_app(store: str | Path, settings: ApiSettings | None = None) -> FastAPI:
    """The app serving one store's results DB (read-only), guarded and logged as ``settings`` say (default:
    from the environment, see flows.serving.security)."""
    store = Path(store)
    settings = ApiSettings.from_env() if settings is None else settings
    app = FastAPI(title="FusionRx", version="1",
                  description="Ranked drug targets, their evidence and linked compounds, and fusion experiments.")
    _register_error_handlers(app, store)
    _register_target_routes(app, store)
    _register_compound_routes(app, store)
    _register_experiment_routes(app, store)
    app.include_router(patients_router(store))
    _register_web_routes(app)
    _guard(app, settings)
    return app


def _guard(app: FastAPI, settings: ApiSettings) -> None:
    """Wrap the app, outermost first: access log, CORS (if configured), bearer token (if set), size caps."""
    from starlette.middleware.cors import CORSMiddleware

    app.add_middleware(RequestSizeMiddleware, max_query_bytes=settings.max_query_bytes,
                       max_path_bytes=settings.max_path_bytes)
    if settings.token:
        app.add_middleware(BearerTokenMiddleware, token=settings.token)
        _document_bearer(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET"],
                           allow_headers=["Authorization"], expose_headers=["X-Spatial-Samples"])
    app.add_middleware(AccessLogMiddleware, routes=app.router.routes, path=settings.access_log)


def _document_bearer(app: FastAPI) -> None:
    """Token mode: the schema says every operation needs `Authorization: Bearer <token>`."""
    scheme = {"type": "http", "scheme": "bearer",
              "description": "the token the server was started with (FUSIONRX_API_TOKEN)"}
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = scheme
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_NOT_FOUND = re.compile(r"gene .* is not (among the ranked genes of run \S+|measured in any spatial sample of .*)",
                        re.DOTALL)


def query_error_status(msg: str, store: Path) -> int:
    """HTTP status of a QueryError's message: 503 without a results DB, 404 for a gene that is not ranked or
    not measured, 400 otherwise. Matched on the message's fixed parts, never on the words a client sent
    (a gene named 'no results DB' is a 404, not a 503)."""
    if msg.startswith(f"{db_path(store)}: no results DB"):
        return 503
    return 404 if _NOT_FOUND.fullmatch(msg) else 400


def _register_error_handlers(app: FastAPI, store: Path) -> None:
    """Map FusionRx errors to HTTP answers: bad queries 400/404 (503 without a DB), bad input 400, others 503."""

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=query_error_status(str(exc), store))

    @app.exception_handler(ScoringError)
    @app.exception_handler(MoleculeError)
    async def _bad_input(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(FusionRxError)
    async def _no_results(_: Request, exc: FusionRxError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)


def _gene_param() -> str:
    return PathParam(..., min_length=1, max_length=MAX_GENE_CHARS, description="gene symbol (case-insensitive)",
                     examples=["EGFR"])


def _register_target_routes(app: FastAPI, store: Path) -> None:
    """/api/targets (ranked, filtered, paged), /api/evidence-types, one target and its spatial picture."""

    @app.get("/api/targets", summary="Ranked targets (custom weights, score/evidence/compound filters, paging)",
             **sc.json_route(sc.TargetsPage, 400))
    def targets(top: int = Query(20, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0, le=10**9),
                weights: str | None = Query(None, max_length=MAX_SPEC_CHARS, examples=[WEIGHTS_EXAMPLE],
                                            description="TYPE:W,... replaces the configured weights; "
                                            "a type not named gets 0"),
                min_score: float | None = Query(None, ge=0.0, le=1.0),
                evidence_min: str | None = Query(None, max_length=MAX_SPEC_CHARS, examples=["rna_expression:0.5"],
                                                 description="TYPE:X,... least score per evidence type"),
                has_compound: bool = False) -> Response:
        w = None
        if weights is not None:
            try:
                w = parse_weights(weights.replace(":", "="))
            except ScoringError as exc:
                raise HTTPException(400, str(exc)) from None
        return sc.FastJSON(ranked_targets(store, top=top, offset=offset, weights=w, min_score=min_score,
                                          has_compound=has_compound,
                                          evidence_min=_floats(evidence_min, "evidence_min")))

    @app.get("/api/evidence-types", summary="The evidence types and the configured weights",
             **sc.json_route(sc.EvidenceTypes))
    def evidence_types() -> Response:
        page = ranked_targets(store, top=1)
        return sc.FastJSON({"types": list(EVIDENCE_TYPES), "weights": page["weights"],
                            "scoring_version": page["scoring_version"]})

    @app.get("/api/targets/{gene}", summary="One target: every evidence row behind its score, its compounds",
             **sc.json_route(sc.TargetExplanation, 400, 404))
    def target(gene: str = _gene_param()) -> Response:
        return sc.FastJSON(explain_target(store, gene))

    samples_header = {"X-Spatial-Samples": {"description": "the samples drawn, URL-quoted, comma-separated",
                                            "schema": {"type": "string"}}}

    @app.get("/api/targets/{gene}/spatial.png", summary="The target's expression over the spatial samples "
             "(header X-Spatial-Samples: the samples drawn, URL-quoted)",
             **sc.binary_route("image/png", "spot maps (PNG)", 400, 404, headers=samples_header))
    def target_spatial(gene: str = _gene_param()) -> Response:
        from flows.serving.spatial_figure import draw_spatial_panels, gene_spatial_panels

        explain_target(store, gene, compounds_per_target=0)  # 404 for a gene that is not ranked
        panels = gene_spatial_panels(store, gene)
        return sc.PNGResponse(draw_spatial_panels(panels, gene),
                              headers={"X-Spatial-Samples": quote(",".join(p.sample for p in panels), safe=",")})


def _register_compound_routes(app: FastAPI, store: Path) -> None:
    """/api/compounds/similar (Morgan/Tanimoto neighbours) and /api/compounds/depict.svg (2D drawing)."""

    smiles_param = Query(..., min_length=1, max_length=MAX_SMILES_CHARS, examples=["CC(=O)Oc1ccccc1C(=O)O"])

    @app.get("/api/compounds/similar", summary="Nearest compounds by Morgan/Tanimoto and their targets",
             **sc.json_route(sc.SimilarCompounds, 400))
    def similar(smiles: str = smiles_param, top: int = Query(10, ge=1, le=MAX_SIMILAR)) -> Response:
        return sc.FastJSON(similar_compounds(store, smiles, top=top))

    @app.get("/api/compounds/depict.svg", summary="A 2D structure drawing (SVG) of a SMILES",
             **sc.binary_route("image/svg+xml", "the drawing (SVG)", 400))
    def depict(smiles: str = smiles_param, width: int = Query(260, ge=16, le=1200),
               height: int = Query(200, ge=16, le=1200)) -> Response:
        from molecules.depict import smiles_to_svg

        return sc.SVGResponse(smiles_to_svg(smiles, width, height))


def _register_experiment_routes(app: FastAPI, store: Path) -> None:
    """/api/experiments: the latest run's fusion experiments (NaN metrics as null)."""

    @app.get("/api/experiments", summary="Fusion experiments of the latest run (CV metric per model)",
             **sc.json_route(list[sc.Experiment]))
    def experiments() -> Response:
        rows = run_experiments(store)
        return sc.FastJSON([{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows])


def _register_web_routes(app: FastAPI) -> None:
    """The web page (/) and its static files (/static/NAME, only files directly inside web/)."""

    @app.get("/", summary="The web page", **sc.PAGE_ROUTE)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        path = (WEB / name).resolve()
        if path.parent != WEB.resolve() or not path.is_file():
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(path)
