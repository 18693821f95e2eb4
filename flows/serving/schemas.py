"""The API's documented answers (OpenAPI): the JSON bodies of flows.results.queries as pydantic models, the
error bodies, and per route which status codes and content types it returns.

The models document; they do not validate at run time (the routes hand the query functions' dicts straight
to orjson). The schema-driven test (tests/flows/test_api_schema.py) checks every answer against them.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field


class FastJSON(JSONResponse):
    """JSON by orjson, without FastAPI's encoder pass (NaN and infinities become null, as in the query layer)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class PNGResponse(Response):
    media_type = "image/png"


class SVGResponse(Response):
    media_type = "image/svg+xml"


class Activity(BaseModel):
    type: str | None
    pchembl: float | None


class Interval(BaseModel):
    """A predicted link's conformal interval of pChEMBL at level `nominal` (null for runs without one)."""

    lower: float | None
    upper: float | None
    nominal: float | None


class Domain(BaseModel):
    """A predicted link's applicability domain: Tanimoto to the nearest training compound (same target, any)."""

    nn_tanimoto_target: float | None
    nn_tanimoto_any: float | None
    in_domain: bool | None
    threshold: float


class LinkedCompound(BaseModel):
    """A compound linked to a target: measured (an assay) or predicted (the activity model, its version, and
    the prediction's interval and domain)."""

    id: str
    name: str | None
    canonical_smiles: str
    activity: Activity
    pchembl: float | None
    link: str = Field(description="measured | predicted")
    model_version: str | None
    interval: Interval | None = Field(None, description="predicted links only")
    domain: Domain | None = Field(None, description="predicted links only")


class TargetRow(BaseModel):
    gene: str
    rank: int
    score: float
    evidence: dict[str, float] = Field(description="evidence type -> score in [0, 1]")
    tractability: float
    compounds: list[LinkedCompound]


class TargetsPage(BaseModel):
    run_id: str
    scoring_version: str | None
    weights: dict[str, float] = Field(description="the weights used (every type; 0 for a type not named)")
    total: int = Field(description="genes passing the filters")
    offset: int
    top: int
    rows: list[TargetRow]


class EvidenceTypes(BaseModel):
    types: list[str]
    weights: dict[str, float]
    scoring_version: str | None


class EvidenceRow(BaseModel):
    """One row behind a score: the source, its statistic and raw value, the score it gave, where it came from."""

    source: str | None
    statistic: str | None
    raw_value: float | None
    score: float | None
    row_ref: str | None
    details: Any


class EvidenceOfType(BaseModel):
    type: str
    score: float
    weight: float
    weighted: float
    n_rows: int
    rows: list[EvidenceRow]


class Tractability(BaseModel):
    score: float
    best_pchembl: float | None
    n_active_compounds: int
    rows: list[EvidenceRow]


class TargetExplanation(BaseModel):
    gene: str
    run_id: str
    cohort: str | None
    scoring_version: str | None
    rank: int
    score: float
    evidence: list[EvidenceOfType]
    tractability: Tractability
    compounds: list[LinkedCompound]
    ids: dict[str, str | None] | None = Field(None, description="hgnc_symbol, hgnc_id, ensembl_id")
    activity_models: dict[str, Any] | None = Field(None, description="model version -> the activity model's card")


class HitTarget(BaseModel):
    gene: str
    pchembl: float | None
    activity_type: str | None
    link: str
    model_version: str | None


class SimilarHit(BaseModel):
    id: str
    name: str | None
    canonical_smiles: str
    tanimoto: float
    targets: list[HitTarget]


class SimilarCompounds(BaseModel):
    query: str = Field(description="the query SMILES, standardised")
    run_id: str
    hits: list[SimilarHit]


class Experiment(BaseModel):
    """One fusion experiment row: a model's cross-validated metric (null where it could not be computed)."""

    run_id: str
    name: str | None
    kind: str | None
    strategy: str | None
    modalities: str | None
    task: str | None
    metric: str | None
    mean: float | None
    std: float | None
    n_folds: int | None


class Message(BaseModel):
    """An error: what was wrong, in words."""

    detail: str


class ValidationMessage(BaseModel):
    """422: a parameter out of its range or over a size cap (a list of FastAPI's validation errors, or words)."""

    detail: str | list[dict[str, Any]]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error codes a route can answer (JSON bodies with a `detail`)."""
    what = {400: "malformed input (weights, filters, SMILES)", 401: "no or wrong bearer token (token mode only)",
            404: "unknown gene, or no spatial sample measures it", 422: "a parameter out of range or over a size cap",
            503: "the store has no results DB (yet)"}
    return {c: {"description": what[c], "content": {"application/json": {
        "schema": (ValidationMessage if c == 422 else Message).model_json_schema()}}} for c in codes}


API_ERRORS = (401, 422, 503)  # every /api route: token, size caps, missing DB


def json_route(model: type[BaseModel] | Any, *codes: int) -> dict[str, Any]:
    """Route keyword arguments for a JSON route: its 200 model and its error answers."""
    return {"response_class": FastJSON, "responses": {200: {"model": model}, **error_responses(*API_ERRORS, *codes)}}


def binary_route(media_type: str, description: str, *codes: int, headers: dict[str, Any] | None = None,
                 ) -> dict[str, Any]:
    """Route keyword arguments for a route answering an image (PNG bytes or SVG text) or its errors."""
    body = {"schema": {"type": "string"} if media_type.startswith("image/svg") else
            {"type": "string", "format": "binary"}}
    ok: dict[str, Any] = {"description": description, "content": {media_type: body}}
    if headers:
        ok["headers"] = headers
    cls = PNGResponse if media_type == "image/png" else SVGResponse
    return {"response_class": cls, "responses": {200: ok, **error_responses(*API_ERRORS, *codes)}}


PAGE_ROUTE = {"response_class": HTMLResponse,
              "responses": {200: {"description": "the web page", "content": {"text/html": {"schema": {"type": "string"}}}},
                            **error_responses(401, 422)}}
