"""One patient's report (the JSON of flows.patients.build) -> a self-contained HTML page, its figures and the
exports other tools open: the MIL attention as QuPath GeoJSON over the slide, the ROI as a DICOM SEG over the CT.

- `report_figures(report, store)`: the figures as PNG bytes by name (probabilities, contributions,
  slide_attention, pet_ct, spatial; a figure whose input the patient lacks is left out).
- `report_html(report, figures)`: the page, every image inline as a base64 PNG data URI.
- `attention_geojson(slide)`: a FeatureCollection of tile Polygons in level-0 px that QuPath imports
  (properties.objectType 'tile', classification, measurements).
- `roi_on_ct(report, store)` / `write_roi_seg(roi, path)`: the ROI the pipeline measured (the mask its radiology
  stage kept, else placed again by the one ROI path, imaging.roi.measure_rois over the patient's DICOM), and
  written as a highdicom SEG referencing the CT.
- `render_report(report, store, out_dir)`: all of it into out_dir (each file atomically).
"""

from __future__ import annotations

import base64
import html
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from flows.patients.figures import figure as _figure, need as _need, png as _png
from flows.patients.render_radiology import RoiOnCt, pet_ct_png, roi_on_ct, write_roi_seg  # noqa: F401 (re-exported)
from flows.store.atomic import atomic_path
from fusion.errors import FusionDataError

FIGURES = ("probabilities", "contributions", "slide_attention", "pet_ct", "spatial")
ATTENTION_MEASUREMENT = "MIL attention"
TOP_FRACTION = 0.10          # tiles classified 'Top attention' in the GeoJSON
TOP_TILES_SHOWN = 5          # tile crops drawn beside the heatmap
THUMB_PX = 1000              # longest side of the slide thumbnail
GEOJSON_NAMESPACE = uuid.UUID("6f1c1d2e-4b7a-5e0c-9a63-2f0e5d1c7b11")  # stable feature ids across reruns


# ---- small charts ---------------------------------------------------------------------------------------------

def probabilities_png(diagnosis: dict) -> bytes:
    """Bar chart of the calibrated class probabilities, the predicted class highlighted."""
    probs = _need(diagnosis, "probabilities", "diagnosis")
    predicted = diagnosis.get("predicted")
    names, values = list(probs), [float(v) for v in probs.values()]
    fig = _figure(5.0, 0.5 + 0.4 * len(names))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(names, values, color=["#b00020" if n == predicted else "#3b7dd8" for n in names])
    for i, v in enumerate(values):
        ax.text(min(v + 0.01, 0.9), i, f"{v:.3f}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("calibrated probability")
    ax.set_title(f"diagnosis: {predicted} ({diagnosis.get('model', '')})", fontsize=9)
    return _png(fig)


def contributions_png(contrib: dict) -> bytes:
    """Waterfall of the exact Shapley values: base value, one step per modality, the predicted probability."""
    base = float(_need(contrib, "base_value", "modality_contributions"))
    values = {k: float(v) for k, v in _need(contrib, "values", "modality_contributions").items()}
    order = sorted(values, key=lambda k: -abs(values[k]))
    fig = _figure(5.5, 0.8 + 0.4 * (len(order) + 2))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(0, base, color="#888")
    level = base
    for i, m in enumerate(order, start=1):
        v = values[m]
        ax.barh(i, v, left=level, color="#2a7d3f" if v >= 0 else "#b00020")
        ax.text(max(level, level + v) + 0.005, i, f"{v:+.3f}", va="center", fontsize=8)
        level += v
    ax.barh(len(order) + 1, level, color="#1f3b57")
    ax.text(level + 0.005, len(order) + 1, f"{level:.3f}", va="center", fontsize=8)
    levels = base + np.concatenate([[0.0], np.cumsum([values[m] for m in order])])
    lo, hi = min(0.0, float(levels.min())), max(0.0, float(levels.max()))
    ax.set_xlim(lo - 0.05 * (hi - lo), hi + 0.2 * (hi - lo) + 1e-9)  # room for the value labels
    ax.set_yticks(range(len(order) + 2), ["base value", *order, "prediction"])
    ax.invert_yaxis()
    ax.set_xlabel(f"probability of class {contrib['target_class']}" if contrib.get("target_class") is not None
                  else "risk (log-hazard)")
    ax.set_title("modality contributions (exact Shapley values)", fontsize=9)
    return _png(fig)


# ---- slide: thumbnail, attention heatmap, top tiles ------------------------------------------------------------

def _tiles(slide: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy [T, 2] level-0 px, size [T] px, attention [T]; NaN where the report has none) of the slide tiles."""
    tiles = _need(slide, "tiles", "slide")
    if not tiles:
        raise FusionDataError("patient report: slide.tiles is empty")
    try:
        xy = np.array([[t["x"], t["y"]] for t in tiles], dtype=np.int64)
        size = np.array([t["size_px"] for t in tiles], dtype=np.int64)
        att = np.array([np.nan if t["attention"] is None else t["attention"] for t in tiles], dtype=np.float64)
    except KeyError as exc:
        raise FusionDataError(f"patient report: a slide tile lacks key {exc.args[0]!r} (x, y, size_px, attention)"
                              ) from None
    return xy, size, att


def _thumbnail(slide_obj, max_px: int) -> tuple[np.ndarray, float]:
    """RGB thumbnail [h, w, 3] of the whole slide and its level-0 px per thumbnail px."""
    from PIL import Image

    w0, h0 = slide_obj.level_dimensions[0]
    level = max((i for i, (w, h) in enumerate(slide_obj.level_dimensions) if max(w, h) >= max_px), default=0)
    img = slide_obj.read_region((0, 0), level, slide_obj.level_dimensions[level]).convert("RGB")
    img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    return np.asarray(img), w0 / img.size[0]


def slide_attention_png(slide: dict, top: int = TOP_TILES_SHOWN) -> bytes:
    """The slide thumbnail under the tiles' MIL attention (colour) with the `top` tiles outlined and numbered,
    and those tiles at full resolution below."""
    from matplotlib.patches import Rectangle

    from imaging.slide import open_slide

    xy, size, att = _tiles(slide)
    has_attention = bool(np.isfinite(att).any())
    order = np.argsort(-np.nan_to_num(att, nan=-np.inf), kind="stable")[:top] if has_attention else []
    with open_slide(_need(slide, "path", "slide")) as s:
        thumb, down = _thumbnail(s, THUMB_PX)
        crops = [np.asarray(s.read_region((int(xy[i, 0]), int(xy[i, 1])), 0, (int(size[i]),) * 2).convert("RGB"))
                 for i in order]
    heat = np.full(thumb.shape[:2], np.nan)
    for (x, y), sz, a in zip(xy, size, att):
        r0, c0 = int(y / down), int(x / down)
        heat[r0:max(r0 + 1, int((y + sz) / down)), c0:max(c0 + 1, int((x + sz) / down))] = a
    fig = _figure(8.0, 8.0 * thumb.shape[0] / thumb.shape[1] + 2.2)
    grid = fig.add_gridspec(2, max(len(crops), 1), height_ratios=[4.0, 1.0])
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(thumb)
    if has_attention:
        image = ax.imshow(np.ma.masked_invalid(heat), cmap="inferno", alpha=0.55, vmin=float(np.nanmin(att)),
                          vmax=float(np.nanmax(att)))  # the slide's own range: near-uniform weights still differ
        fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label="MIL attention")
    for rank, i in enumerate(order, start=1):
        ax.add_patch(Rectangle((xy[i, 0] / down, xy[i, 1] / down), size[i] / down, size[i] / down, fill=False,
                               edgecolor="cyan", linewidth=1.5))
        ax.text(xy[i, 0] / down, xy[i, 1] / down, str(rank), color="cyan", fontsize=8, va="bottom")
    ax.set_axis_off()
    what = (f"attention over {len(att)} tiles (top {len(order)} outlined)" if has_attention
            else f"{len(att)} tiles; no tile attention (the deployed model has none, or takes no slide)")
    ax.set_title(f"{Path(slide['path']).name}: {what}", fontsize=9)
    for rank, (i, crop) in enumerate(zip(order, crops), start=1):
        cax = fig.add_subplot(grid[1, rank - 1])
        cax.imshow(crop)
        cax.set_axis_off()
        cax.set_title(f"#{rank} ({xy[i, 0]}, {xy[i, 1]})\nattention {att[i]:.4f}", fontsize=7)
    return _png(fig)


def attention_geojson(slide: dict, patient_id: str = "") -> dict:
    """The tiles as a GeoJSON FeatureCollection QuPath imports over the slide (File > Import objects): one
    'tile' object per tile, a Polygon in level-0 px, measurement 'MIL attention' (colour it with Measure >
    Show measurement maps), class 'Top attention' for the top 10 % tiles and 'Attention' for the others (no
    measurements when the report has no attention: JSON has no NaN)."""
    xy, size, att = _tiles(slide)
    has_attention = bool(np.isfinite(att).any())
    n_top = max(1, int(np.ceil(TOP_FRACTION * len(att)))) if has_attention else 0
    rank = np.empty(len(att), dtype=np.int64)
    rank[np.argsort(-np.nan_to_num(att, nan=-np.inf), kind="stable")] = np.arange(1, len(att) + 1)
    features = []
    for i, ((x, y), s, a) in enumerate(zip(xy.tolist(), size.tolist(), att.tolist())):
        top = rank[i] <= n_top
        measurements = {ATTENTION_MEASUREMENT: a, "attention rank": int(rank[i])} if np.isfinite(a) else {}
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(GEOJSON_NAMESPACE, f"{patient_id}/{slide['path']}/{x},{y},{s}")),
            "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]]},
            "properties": {"objectType": "tile",
                           "classification": {"name": "Top attention" if top else "Attention",
                                              "color": [255, 64, 0] if top else [90, 140, 220]},
                           "measurements": measurements},
        })
    return {"type": "FeatureCollection", "features": features}


# ---- spatial --------------------------------------------------------------------------------------------------

def _sample_name(sample: str) -> str:
    """A spatial sample's name: its patient folder for a sample `run` wrote (spatial/<patient>/sample.h5ad)."""
    path = Path(sample)
    return path.parent.name if path.name == "sample.h5ad" else path.name


def spatial_png(spatial: dict) -> bytes:
    """The sample's spots (grey; spatial['spots'] when the report lists them all, else the sample's h5ad when
    spatial['sample'] is its path) with the tumour-region spots in red, and the top genes' log2 fold change."""
    sample = str(_need(spatial, "sample", "spatial"))
    tumour = _need(spatial, "tumour_spots", "spatial")
    genes = spatial.get("top_genes") or []
    xy = None
    if spatial.get("spots"):
        xy = np.array([[s["x"], s["y"]] for s in spatial["spots"]], dtype=float)
    elif sample.endswith(".h5ad") and Path(sample).is_file():
        import anndata as ad

        a = ad.read_h5ad(sample, backed="r")
        try:
            xy = np.asarray(a.obsm["spatial"], dtype=float)
        finally:
            a.file.close()
    fig = _figure(9.0, 4.0)
    ax = fig.add_subplot(1, 2, 1)
    if xy is not None:
        ax.scatter(xy[:, 0], xy[:, 1], s=5, color="#bbb", label=f"all spots ({len(xy)})")
    if tumour:
        t = np.array([[s["x"], s["y"]] for s in tumour], dtype=float)
        ax.scatter(t[:, 0], t[:, 1], s=7, color="#d62728", label=f"tumour region ({len(t)})")
    ax.set_aspect("equal")
    ax.invert_yaxis()  # image rows grow downwards
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"spatial sample {_sample_name(sample)} ({spatial.get('coords', 'px')})", fontsize=9)
    gx = fig.add_subplot(1, 2, 2)
    if genes:
        gx.barh([g["gene"] for g in genes], [float(g["log2fc"]) for g in genes], color="#3b7dd8")
        gx.invert_yaxis()
    gx.set_xlabel("log2 fold change, tumour region vs rest")
    gx.set_title("top genes in the tumour region", fontsize=9)
    return _png(fig)


# ---- the report -----------------------------------------------------------------------------------------------

def report_figures(report: dict, store: Path, roi: RoiOnCt | None = None) -> dict[str, bytes]:
    """The report's figures as PNG bytes by name (FIGURES order); a figure whose part of the report is null
    (no slide, no radiology, no spatial sample) is left out. `roi`: the ROI already placed (render_report)."""
    out = {}
    if report.get("diagnosis"):
        out["probabilities"] = probabilities_png(report["diagnosis"])
    if report.get("modality_contributions"):
        out["contributions"] = contributions_png(report["modality_contributions"])
    if report.get("slide"):
        out["slide_attention"] = slide_attention_png(report["slide"])
    if report.get("radiology"):
        out["pet_ct"] = pet_ct_png(roi if roi is not None else roi_on_ct(report, store))
    if report.get("spatial"):
        out["spatial"] = spatial_png(report["spatial"])
    return out


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else _e("-" if value is None else value)


def _evidence(value: Any) -> Any:
    """An evidence value for a table cell: a mutation list as 'a; b' ('none' when empty)."""
    return ("; ".join(map(str, value)) or "none") if isinstance(value, list) else value


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_num(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(figures: dict[str, bytes], name: str, alt: str) -> str:
    if name not in figures:
        return ""
    data = base64.b64encode(figures[name]).decode("ascii")
    return f'<img class="figure" id="fig-{name}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


_STYLE = """body{font-family:system-ui,sans-serif;margin:16px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;border-bottom:1px solid #ddd;margin-top:22px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border-bottom:1px solid #ddd;padding:2px 8px;
text-align:left}img.figure{max-width:100%;display:block;margin:6px 0}.note{color:#555;font-size:12px}"""


def _sections(r: dict, figures: dict[str, bytes], exports: dict[str, str]) -> list[str]:
    out = []
    d = r.get("diagnosis")
    if d:
        out.append(f"<h2>Diagnosis</h2><p>predicted <b>{_e(d.get('predicted'))}</b> by {_e(d.get('model'))} "
                   f"(version {_e(d.get('version'))}); probabilities calibrated on the training folds.</p>"
                   + _img(figures, "probabilities", "calibrated class probabilities"))
    s = r.get("survival")
    if s:
        out.append(f"<h2>Survival</h2><p>risk (log-hazard) {_num(s.get('risk'))}, percentile "
                   f"{_num(s.get('risk_percentile'), 1)} of the cohort, by {_e(s.get('model'))} "
                   f"(version {_e(s.get('version'))}).</p>")
    c = r.get("modality_contributions")
    if c:
        out.append("<h2>Which modality carried it</h2><p class='note'>Exact Shapley values over the patient's "
                   "modalities: base value + contributions = the predicted probability.</p>"
                   + _img(figures, "contributions", "modality contributions"))
    sl = r.get("slide")
    if sl:
        link = f" <a href='{_e(exports['geojson'])}'>attention.geojson</a> (QuPath: File &gt; Import objects)" \
            if "geojson" in exports else ""
        out.append(f"<h2>Where the model looked in the slide</h2><p>{_e(Path(sl['path']).name)}, "
                   f"{_num(sl.get('mpp'))} µm/px, {len(sl['tiles'])} tiles.{link}</p>"
                   + _img(figures, "slide_attention", "slide attention heatmap"))
    rad = r.get("radiology")
    if rad:
        roi = rad.get("roi") or {}
        link = f" <a href='{_e(exports['seg'])}'>roi_seg.dcm</a> (DICOM SEG over the CT)" if "seg" in exports else ""
        phen = [[k, v] for k, v in (rad.get("phenotypes") or {}).items()]
        out.append(f"<h2>PET/CT</h2><p>ROI {_e(roi.get('label'))} ({_e(roi.get('source'))}), "
                   f"{_num(roi.get('volume_ml'), 2)} ml.{link}</p>" + _img(figures, "pet_ct", "PET/CT with ROI")
                   + _table(["phenotype", "value"], phen))
    sp = r.get("spatial")
    if sp:
        genes = [[g["gene"], g["log2fc"]] for g in sp.get("top_genes") or []]
        out.append(f"<h2>Spatial transcriptomics</h2><p>{len(sp.get('tumour_spots') or [])} tumour-region spots "
                   f"in sample {_e(_sample_name(str(sp.get('sample'))))}.</p>" + _img(figures, "spatial", "spatial map")
                   + _table(["gene", "log2 fold change"], genes))
    nb = r.get("neighbours") or []
    if nb:
        out.append("<h2>Nearest patients (fused embedding)</h2>"
                   + _table(["patient", "distance", "diagnosis"],
                            [[n.get("patient_id"), n.get("distance"), n.get("diagnosis")] for n in nb]))
    tg = r.get("targets") or []
    if tg:
        keys = ["expression_z", "copy_number", "mutation", "spatial_enrichment"]
        out.append("<h2>Ranked targets: this patient's own evidence</h2>"
                   + _table(["rank", "gene", "score", *[k.replace("_", " ") for k in keys]],
                            [[t.get("rank"), t.get("gene"), t.get("score"),
                              *[_evidence((t.get("evidence") or {}).get(k)) for k in keys]] for t in tg], "targets"))
    return out


def report_html(report: dict, figures: dict[str, bytes], exports: dict[str, str] | None = None) -> str:
    """The self-contained page: every figure an inline data: URI; `exports` (geojson, seg) are links by file name."""
    pid = _need(report, "patient_id", "report")
    run = report.get("run") or {}
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>FusionRx patient {_e(pid)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>FusionRx patient report: {_e(pid)}</h1>"
            + "".join(_sections(report, figures, exports or {}))
            + f"<p class='note'>run {_e(run.get('run_id'))} · code {_e(run.get('code_version'))}</p></body></html>")


def render_report(report: dict, store: Path, out_dir: Path) -> Path:
    """Write out_dir/report.html (self-contained) and beside it each figure as NAME.png, attention.geojson (when
    the patient has a slide) and roi_seg.dcm (when it has a CT with a measured ROI); returns the HTML's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roi = roi_on_ct(report, store) if report.get("radiology") else None
    figures = report_figures(report, store, roi)
    for name, png in figures.items():
        with atomic_path(out_dir / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    exports = {}
    if report.get("slide"):
        with atomic_path(out_dir / "attention.geojson") as tmp:
            tmp.write_text(json.dumps(attention_geojson(report["slide"], report["patient_id"])))
        exports["geojson"] = "attention.geojson"
    if roi is not None and roi.mask is not None:
        write_roi_seg(roi, out_dir / "roi_seg.dcm", str((report.get("run") or {}).get("code_version") or ""))
        exports["seg"] = "roi_seg.dcm"
    page = out_dir / "report.html"
    with atomic_path(page) as tmp:
        tmp.write_text(report_html(report, figures, exports), encoding="utf-8")
    return page
