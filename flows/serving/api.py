"""The FusionRx HTTP API and web page (FastAPI): ranked targets with custom weights and filters, one
target's explanation, similar compounds, structure drawings, spatial pictures and experiments.

Every endpoint calls the same query functions as the CLI (flows.results.queries); the results DB is only ever
opened read-only. Bad input is a 4xx with a message, never a 500.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from flows.results.queries import MAX_PAGE, MAX_SIMILAR, explain_target, ranked_targets, similar_compounds
from flows.results.ranking import EVIDENCE_TYPES, ScoringError, parse_weights
from fusion.errors import FusionRxError, MoleculeError, QueryError

WEB = Path(__file__).with_name("web")


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


def create_app(store: str | Path) -> FastAPI:
    """The app serving one store's results DB (read-only)."""
    store = Path(store)
    app = FastAPI(title="FusionRx", version="1",
                  description="Ranked drug targets, their evidence and linked compounds, and fusion experiments.")
    _register_error_handlers(app)
    _register_target_routes(app, store)
    _register_compound_routes(app, store)
    _register_experiment_routes(app, store)
    _register_web_routes(app)
    return app


def _register_error_handlers(app: FastAPI) -> None:
    """Map FusionRx errors to HTTP answers: bad queries 400/404 (503 without a DB), bad input 400, others 503."""

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, exc: QueryError) -> JSONResponse:
        msg = str(exc)
        status = (503 if "no results DB" in msg else
                  404 if "is not among the ranked genes" in msg or "not measured" in msg else 400)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(ScoringError)
    @app.exception_handler(MoleculeError)
    async def _bad_input(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(FusionRxError)
    async def _no_results(_: Request, exc: FusionRxError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)


def _register_target_routes(app: FastAPI, store: Path) -> None:
    """/api/targets (ranked, filtered, paged), /api/evidence-types, one target and its spatial picture."""

    @app.get("/api/targets", summary="Ranked targets (custom weights, score/evidence/compound filters, paging)")
    def targets(top: int = Query(20, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0, le=10**9),
                weights: str | None = Query(None, description="TYPE:W,... replaces the configured weights; "
                                            "a type not named gets 0"),
                min_score: float | None = Query(None, ge=0.0, le=1.0),
                evidence_min: str | None = Query(None, description="TYPE:X,... least score per evidence type"),
                has_compound: bool = False) -> dict[str, Any]:
        w = None
        if weights is not None:
            try:
                w = parse_weights(weights.replace(":", "="))
            except ScoringError as exc:
                raise HTTPException(400, str(exc)) from None
        return ranked_targets(store, top=top, offset=offset, weights=w, min_score=min_score,
                              has_compound=has_compound, evidence_min=_floats(evidence_min, "evidence_min"))

    @app.get("/api/evidence-types", summary="The evidence types and the configured weights")
    def evidence_types() -> dict[str, Any]:
        page = ranked_targets(store, top=1)
        return {"types": list(EVIDENCE_TYPES), "weights": page["weights"], "scoring_version": page["scoring_version"]}

    @app.get("/api/targets/{gene}", summary="One target: every evidence row behind its score, its compounds")
    def target(gene: str) -> dict[str, Any]:
        return explain_target(store, gene)

    @app.get("/api/targets/{gene}/spatial.png", summary="The target's expression over the spatial samples "
             "(header X-Spatial-Samples: the samples drawn, URL-quoted)")
    def target_spatial(gene: str) -> Response:
        from flows.serving.spatial_figure import draw_spatial_panels, gene_spatial_panels

        explain_target(store, gene, compounds_per_target=0)  # 404 for a gene that is not ranked
        panels = gene_spatial_panels(store, gene)
        return Response(draw_spatial_panels(panels, gene), media_type="image/png",
                        headers={"X-Spatial-Samples": quote(",".join(p.sample for p in panels), safe=",")})


def _register_compound_routes(app: FastAPI, store: Path) -> None:
    """/api/compounds/similar (Morgan/Tanimoto neighbours) and /api/compounds/depict.svg (2D drawing)."""

    @app.get("/api/compounds/similar", summary="Nearest compounds by Morgan/Tanimoto and their targets")
    def similar(smiles: str = Query(..., min_length=1, max_length=2000), top: int = Query(10, ge=1, le=MAX_SIMILAR)):
        return similar_compounds(store, smiles, top=top)

    @app.get("/api/compounds/depict.svg", summary="A 2D structure drawing (SVG) of a SMILES")
    def depict(smiles: str = Query(..., min_length=1, max_length=2000), width: int = Query(260, ge=16, le=1200),
               height: int = Query(200, ge=16, le=1200)) -> Response:
        from molecules.depict import smiles_to_svg

        return Response(smiles_to_svg(smiles, width, height), media_type="image/svg+xml")


def _register_experiment_routes(app: FastAPI, store: Path) -> None:
    """/api/experiments: the latest run's fusion experiments (NaN metrics as null)."""

    @app.get("/api/experiments", summary="Fusion experiments of the latest run (CV metric per model)")
    def experiments() -> list[dict[str, Any]]:
        from flows.results.db import query_experiments

        rows = query_experiments(store)
        return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]


def _register_web_routes(app: FastAPI) -> None:
    """The web page (/) and its static files (/static/NAME, only files directly inside web/)."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        path = (WEB / name).resolve()
        if path.parent != WEB.resolve() or not path.is_file():
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(path)
