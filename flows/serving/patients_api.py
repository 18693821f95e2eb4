"""The API's patient routes (a FastAPI APIRouter that flows.serving.api includes): the store's patients, one
patient's report (the JSON of flows.patients.build.build_report), the report as a self-contained HTML page and
its figures one by one (PNG) for the web page's patient view.

Reports and figures are computed on first request and kept per process (LRU) until the run's outputs change
(the results DB or a deployed model is replaced). An unknown patient is a 404 naming it; a results DB with no
run's store around it (no manifest.parquet) has no patients.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, HTTPException, Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from flows.serving import schemas as sc
from fusion.errors import QueryError

MAX_PATIENT_CHARS = 64
CACHE_PATIENTS = 32   # reports (and their figures) kept per process
EMBEDDINGS = "embeddings"  # STORE/embeddings/<modality>.parquet, patient-indexed (flows.tasks)


class PatientRow(BaseModel):
    patient_id: str
    diagnosis: str | None = Field(description="the recorded primary diagnosis (clinical table)")
    modalities: list[str] = Field(description="the fusion modalities the store has for the patient")


class PatientReport(BaseModel):
    """A patient's report (flows.patients.build.build_report); parts the patient lacks are null."""

    model_config = ConfigDict(extra="allow")
    patient_id: str
    diagnosis: dict[str, Any] | None = None
    survival: dict[str, Any] | None = None
    modality_contributions: dict[str, Any] | None = None
    slide: dict[str, Any] | None = None
    radiology: dict[str, Any] | None = None
    spatial: dict[str, Any] | None = None
    neighbours: list[dict[str, Any]] | None = None
    targets: list[dict[str, Any]] | None = None
    run: dict[str, Any] | None = None


def _state(store: Path) -> tuple:
    """What a report depends on that a run replaces: the results DB and the deployed models' files."""
    from flows.results.db import db_path

    files = [db_path(store), *sorted((Path(store) / "models").glob("*/model.*")),
             *sorted((Path(store) / EMBEDDINGS).glob("*.parquet"))]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file())


class _Cache:
    """Per-process LRU of computed values keyed by (kind, patient), dropped when the store's state changes.
    Concurrent requests for one key wait for the first one's value (a page asks for 5 figures at once)."""

    def __init__(self, store: Path, size: int = CACHE_PATIENTS) -> None:
        self.store, self.size = store, size
        self._items: OrderedDict[tuple[str, str], tuple[tuple, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[tuple[str, str], threading.Lock] = {}

    def _lookup(self, key: tuple[str, str], state: tuple) -> tuple[bool, Any]:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == state:
                self._items.move_to_end(key)
                return True, hit[1]
            return False, None

    def get(self, kind: str, pid: str, make: Callable[[], Any]) -> Any:
        state, key = _state(self.store), (kind, pid)
        found, value = self._lookup(key, state)
        if found:
            return value
        with self._lock:
            making = self._making.setdefault(key, threading.Lock())
        with making:  # one computation per key; other patients' requests go on meanwhile
            found, value = self._lookup(key, state)
            if found:
                return value
            value = make()
            with self._lock:
                self._items[key] = (state, value)
                while len(self._items) > self.size * 2:
                    self._items.popitem(last=False)
        return value


def _patient_param() -> str:
    return PathParam(..., min_length=1, max_length=MAX_PATIENT_CHARS, description="patient id",
                     examples=["TCGA-FX-0001"])


def patients_router(store: str | Path) -> APIRouter:
    """The patient routes over one store: /api/patients, /api/patients/{id}, .../report, .../figures/NAME.png."""
    from flows.patients.render import FIGURES

    store = Path(store)
    router = APIRouter()
    cache = _Cache(store)
    not_found = {404: {"description": "unknown patient or figure", "content": {"application/json": {
        "schema": sc.Message.model_json_schema()}}}}

    def listing() -> list[dict[str, Any]]:
        from flows.patients.build import list_patients

        try:
            return cache.get("list", "", lambda: list_patients(store))
        except QueryError:  # a results DB without a run's store around it (no manifest): no patients to report
            if (store / "manifest.parquet").is_file():
                raise
            return []

    def known(pid: str) -> None:
        ids = [p["patient_id"] for p in listing()]
        if pid not in ids:
            raise HTTPException(404, f"patient {pid!r} is not among the {len(ids)} patients of this store's run "
                                     "(GET /api/patients lists them)")

    def report(pid: str) -> dict:
        from flows.patients.build import build_report

        known(pid)
        return cache.get("report", pid, lambda: build_report(store, pid))

    def figures(pid: str) -> dict[str, bytes]:
        from flows.patients.render import report_figures

        rep = report(pid)
        return cache.get("figures", pid, lambda: report_figures(rep, store))

    @router.get("/api/patients", summary="The store's patients, their recorded diagnosis and modalities",
                **sc.json_route(list[PatientRow]))
    def patients() -> Response:
        return sc.FastJSON(listing())

    @router.get("/api/patients/{patient_id}", summary="One patient's report: prediction, explanations, evidence",
                response_class=sc.FastJSON,
                responses={200: {"model": PatientReport}, **sc.error_responses(*sc.API_ERRORS), **not_found})
    def patient(patient_id: str = _patient_param()) -> Response:
        return sc.FastJSON(report(patient_id))

    @router.get("/api/patients/{patient_id}/report", summary="One patient's report as a self-contained HTML page",
                response_class=HTMLResponse,
                responses={200: {"description": "the report page (images inline)",
                                 "content": {"text/html": {"schema": {"type": "string"}}}},
                           **sc.error_responses(*sc.API_ERRORS), **not_found})
    def patient_page(patient_id: str = _patient_param()) -> HTMLResponse:
        from flows.patients.render import report_html

        return HTMLResponse(report_html(report(patient_id), figures(patient_id)))

    @router.get("/api/patients/{patient_id}/figures/{name}.png", summary="One figure of a patient's report (PNG)",
                response_class=sc.PNGResponse,
                responses={200: {"description": "the figure (PNG)",
                                 "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
                           **sc.error_responses(*sc.API_ERRORS), **not_found})
    def patient_figure(patient_id: str = _patient_param(),
                       name: str = PathParam(..., description=f"one of {', '.join(FIGURES)}")) -> Response:
        if name not in FIGURES:
            raise HTTPException(404, f"no figure {name!r}; figures are {list(FIGURES)}")
        drawn = figures(patient_id)
        if name not in drawn:
            raise HTTPException(404, f"patient {patient_id!r} has no {name} figure (that part of the report is "
                                     f"empty); drawn: {sorted(drawn)}")
        return sc.PNGResponse(drawn[name])

    return router
