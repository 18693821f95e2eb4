"""Are the explanations faithful? Measured on generated cohorts against the planted truth (truth.json).

Usage: PYTHONPATH=. python bench/explain_faithfulness.py [--seeds 0 1 2] [--patients 64] [--quick]
       [--slides-only] [--work DIR] [--out bench/explain_faithfulness.json] [--merge]
Per seed: a cohort from flows.synthetic.cohort.generate_cohort, one pipeline run over it (run config RUN_CONFIG:
the real stages and frozen encoders, the fusion experiments cut down: they are not measured here; the
5 CV folds kept, since a modality enters the fusion data only when a CV fold allows it), then over
the run's store (STORE/wsi/<patient>.h5 tiles, STORE/embeddings/<modality>.parquet, labels from truth.json's
subtype, the same as the clinical file's primary diagnosis):
- slide figures of the report's slide attention model (fusion.slide_attention: tile features centred on their
  slide's median tile, 3 gated-attention MILs trained on whole bags, 100 epochs, attention and probabilities
  averaged) and of the same with one MIL, each beside the same network re-initialised at random
  (RANDOM_MODELS times);
- slide figures of a slide-only diagnosis MIL (FusionModel over 'wsi', gated-attention MIL encoder) trained on
  whole bags and trained as the run trains slide bags (32 random tiles per step, fusion_bag_instances), and of the
  fused model (every modality, attention fusion, the same MIL encoder for slides), each beside the same network
  re-initialised at random: attention AUC (tile centre in the planted tumour, mean over slides), deletion ratio
  (top-10% attended tiles vs as many random tiles, 10 random draws), Spearman correlation of the trained and
  random attention maps;
- modality share hit rate: among patients whose planted signal for their subtype is much stronger in one
  modality (fusion.faithfulness.planted_evidence, margin MARGIN nats), how often that modality gets the
  largest Shapley value of P(true subtype), beside chance (1 / number of the patient's modalities); and the same
  on a controlled dataset where one modality carries the label for a known half of the patients.
Models are trained on every patient (explanations of the deployed kind of model, not a CV estimate).
--quick: one seed, 40 patients. --work DIR keeps (and reuses) the cohorts and stores. --merge adds the cohorts
measured to those already in --out (same seed: replaced) and records the command beside the earlier ones.
tests/fusion/test_faithfulness.py measures the e2e_run store with the same functions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fusion.data import ModalityData, MultimodalDataset  # noqa: E402
from fusion.explain import fusion_model_shapley  # noqa: E402
from fusion.faithfulness import (dominant_modality, planted_evidence, reinitialised, slide_faithfulness,  # noqa: E402
                                 slide_model_faithfulness, summarise_slides, tiles_in_tumour)
from fusion.model import FusionModel  # noqa: E402
from fusion.slide_attention import SlideAttentionConfig, fit_slide_attention  # noqa: E402
from fusion.train import TrainConfig, fit  # noqa: E402

RUN_CONFIG = """\
cv_repeats: 1
fusion_epochs: 4
strategies: [early]
single_modalities: [wsi]
survival_experiments: false
activity_steps: 10
"""
MARGIN = 1.0  # nats of planted evidence by which the dominant modality beats the runner-up
EMBED = 16
RANDOM_MODELS = 20  # re-initialisations of each trained network (a random MIL's AUC swings with its seed)


# ------------------------------------------------------------------------------------------ inputs
def load_slides(store: Path, truth: dict) -> dict[str, dict]:
    """Per patient with a feature file and a planted slide: its MIL bag [T, d+1] (tile features +
    hematoxylin density, as the fusion stage builds it), and bool [T] 'tile centre in the planted tumour'."""
    from flows.stages.pathology import load_tile_table, slide_bag

    out = {}
    for pid, t in sorted(truth["slides"].items()):
        h5 = Path(store) / "wsi" / f"{pid}.h5"
        if not h5.exists():
            continue
        coords, size0, _ = load_tile_table(h5)
        out[pid] = {"bag": slide_bag(h5), "inside": tiles_in_tumour(coords, size0, t["tumour_circle"],
                                                                     t["tissue_ellipse"])}
    return out


def labels(truth: dict, patients: list[str]) -> np.ndarray:
    """Subtype class ids (truth's diagnosis order) of ``patients``."""
    classes = truth["diagnoses"]
    return np.array([classes.index(truth["subtype"][p]) for p in patients], dtype=np.int64)


def slide_dataset(slides: dict[str, dict], truth: dict) -> MultimodalDataset:
    """Slide-only dataset (ragged bags, standardised over every patient) with the subtype labels."""
    patients = sorted(slides)
    ds = MultimodalDataset(patients, {"wsi": ModalityData.from_bags("wsi", [slides[p]["bag"] for p in patients])},
                           y=labels(truth, patients))
    return ds.standardise(np.arange(len(patients)))


def fused_dataset(store: Path, slides: dict[str, dict], truth: dict) -> MultimodalDataset:
    """Every modality of the run: the vector embeddings STORE/embeddings/*.parquet and the slide bags."""
    frames = {p.stem: pd.read_parquet(p) for p in sorted((Path(store) / "embeddings").glob("*.parquet"))}
    frames = {k: f.set_axis(f.index.astype(str)) for k, f in frames.items()}
    patients = sorted(set().union(*[set(f.index) for f in frames.values()], slides) & set(truth["subtype"]))
    ds = MultimodalDataset.from_frames(frames, patients, y=labels(truth, patients))
    mods = dict(ds.modalities)
    mods["wsi"] = ModalityData.from_bags("wsi", [slides[p]["bag"] if p in slides else None for p in patients])
    ds = MultimodalDataset(patients, mods, y=ds.y)
    return ds.standardise(np.arange(len(patients)))


# ---------------------------------------------------------------------------------------- models
def train(ds: MultimodalDataset, modalities: list[str], strategy: str, seed: int, epochs: int,
          modality_dropout: float = 0.2, encoders_from: FusionModel | None = None,
          max_instances: int | None = None) -> FusionModel:
    """A diagnosis model over ``modalities`` (gated-attention MIL for slides) fitted on every patient
    (``modality_dropout`` for more than one modality; the run's default 0.2). ``encoders_from``: start the
    encoders of the modalities that model also has from its trained weights (e.g. the slide MIL of a
    slide-only model), then train everything. ``max_instances``: MIL instance sampling at each step (the run's
    ``fusion_bag_instances``, 32 by default); None trains on whole bags."""
    from imaging.mil import GatedAttentionMIL

    factories = {"wsi": lambda d: GatedAttentionMIL(d, embed_dim=EMBED, attn_dim=EMBED)} if "wsi" in modalities else {}
    n_classes = int(ds.y.max()) + 1
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FusionModel.for_dataset(ds, modalities, strategy, n_classes, embed_dim=EMBED,
                                        encoder_factories=factories, task="multiclass", hidden=16, dropout=0.1,
                                        modality_dropout=modality_dropout if len(modalities) > 1 else 0.0)
    if encoders_from is not None:
        for m in set(modalities) & set(encoders_from.modalities):
            model.encoders[m].load_state_dict(encoders_from.encoders[m].state_dict())
    return fit(model, ds, np.arange(ds.n_patients), TrainConfig(epochs=epochs, lr=3e-3, weight_decay=1e-2,
                                                               seed=seed, num_threads=1,
                                                               max_instances=max_instances))


def slide_figures(model: FusionModel, ds: MultimodalDataset, slides: dict[str, dict], seed: int,
                  n_random: int = 10, n_random_models: int = RANDOM_MODELS) -> dict[str, object]:
    """Attention AUC, deletion ratio, and beside them the same network re-initialised ``n_random_models``
    times (seeds seed + 1000 + r): each random model's AUC and deletion ratio, the mean Spearman correlation
    of its maps with the trained model's."""
    index = {p: i for i, p in enumerate(ds.patients)}
    truth = {index[p]: s["inside"] for p, s in slides.items() if p in index}
    baselines = [reinitialised(model, seed + 1000 + r) for r in range(n_random_models)]
    return summarise_slides(slide_faithfulness(model, ds, truth, n_random=n_random, seed=seed, baselines=baselines))


def mil_factory():
    """The report's slide MIL encoder, as the run builds it (flows.experiments.bags): gated attention, EMBED wide."""
    from functools import partial

    from imaging.mil import GatedAttentionMIL

    return partial(GatedAttentionMIL, embed_dim=EMBED, attn_dim=EMBED, dropout=0.1)


def slide_attention_figures(slides: dict[str, dict], truth: dict, seed: int,
                            config: SlideAttentionConfig | None = None, n_random: int = 10,
                            n_random_models: int = RANDOM_MODELS) -> dict[str, object]:
    """The report's slide attention model (fusion.slide_attention) fitted on every slide with its subtype
    label (training seed ``seed``), and its figures beside ``n_random_models`` re-initialisations (seeds
    seed + 1000 + r): attention AUC, deletion ratio, Spearman trained vs random; plus its training accuracy."""
    patients = sorted(slides)
    bags = {p: slides[p]["bag"] for p in patients}
    y = dict(zip(patients, labels(truth, patients).tolist()))
    config = config or SlideAttentionConfig(seed=seed)
    model = fit_slide_attention(bags, y, truth["diagnoses"], mil_factory(), config)
    baselines = [model.reinitialised(seed + 1000 + r) for r in range(n_random_models)]
    rows = slide_model_faithfulness(model, bags, {p: slides[p]["inside"] for p in patients}, n_random=n_random,
                                    seed=seed, baselines=baselines)
    return {**summarise_slides(rows), "train_accuracy": model.info["train_accuracy"], "members": config.members,
            "epochs": config.epochs}


def modality_hits(model: FusionModel, ds: MultimodalDataset, truth: dict, margin: float = MARGIN) -> dict[str, float]:
    """Hit rate of 'the modality with the much stronger planted signal gets the largest Shapley value of
    P(true subtype)' among the patients that have such a modality, beside chance."""
    cfg = truth["config"]
    name = {"ct": "ct", "pet": "pet", "wsi": "wsi", "expression": "expression", "spatial": "spatial"}
    hits, chance = [], []
    presence = ds.presence(model.modalities).numpy()
    for i, pid in enumerate(ds.patients):
        have = [m for j, m in enumerate(model.modalities) if presence[i, j] and m in name]
        if len(have) < 2:
            continue
        y = int(ds.y[i])
        ev = planted_evidence({m: truth["signals"][name[m]][pid] for m in have}, y, cfg["n_diagnoses"],
                              cfg["signal_shift"])
        dom = dominant_modality(ev, margin)
        if dom is None:
            continue
        phi = fusion_model_shapley(model, ds, i, target=y)["values"]
        hits.append(max(have, key=lambda m: phi[m]) == dom)
        chance.append(1.0 / len(have))
    return {"n_dominant": len(hits), "hit_rate": float(np.mean(hits)) if hits else float("nan"),
            "chance": float(np.mean(chance)) if chance else float("nan")}


def controlled_dataset(n: int = 120, seed: int = 0) -> tuple[MultimodalDataset, np.ndarray]:
    """Two modalities 'a' and 'b' (8 features each) and a binary label: for the first half of the patients
    only 'a' carries the label (b is noise), for the second half only 'b'; an indicator feature says which
    half. Returns the standardised dataset and the carrying modality per patient (0 = 'a', 1 = 'b')."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    carrier = (np.arange(n) >= n // 2).astype(int)
    a, b = rng.normal(size=(n, 8)), rng.normal(size=(n, 8))
    sign = 2.0 * y - 1.0
    a[carrier == 0, 0] += 2.5 * sign[carrier == 0]
    b[carrier == 1, 0] += 2.5 * sign[carrier == 1]
    a[:, 1] = b[:, 1] = carrier  # which modality to trust
    patients = [f"P{i:04d}" for i in range(n)]
    ds = MultimodalDataset.from_frames({"a": pd.DataFrame(a, index=patients), "b": pd.DataFrame(b, index=patients)},
                                       patients, y=y)
    return ds.standardise(np.arange(n)), carrier


def controlled_hits(seed: int = 0, epochs: int = 150) -> dict[str, float]:
    """Modality share hit rate on ``controlled_dataset``: the carrying modality gets the largest Shapley value
    of P(true class); chance 0.5. The same for the re-initialised network."""
    import torch

    ds, carrier = controlled_dataset(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FusionModel.for_dataset(ds, ["a", "b"], "early", 1, embed_dim=EMBED, task="binary", hidden=16,
                                        modality_dropout=0.0)
    fit(model, ds, np.arange(ds.n_patients), TrainConfig(epochs=epochs, seed=seed, num_threads=1))
    rand = reinitialised(model, seed + 1000)
    out = {}
    for tag, m in (("trained", model), ("random", rand)):
        phi = [fusion_model_shapley(m, ds, i, target=int(ds.y[i]))["values"] for i in range(ds.n_patients)]
        top = [int(v["b"] > v["a"]) for v in phi]
        out[f"{tag}_hit_rate"] = float(np.mean(np.array(top) == carrier))
    out["chance"] = 0.5
    return out


# -------------------------------------------------------------------------------------- measuring
def measure_store(store: Path, truth: dict, seed: int = 0, slide_epochs: int = 60, fused_epochs: int = 60,
                  fused: bool = True) -> dict:
    """Every figure of the faithfulness table for one run's store (see the module docstring)."""
    slides = load_slides(store, truth)
    if not slides:
        raise FileNotFoundError(f"{store}/wsi: no tile-feature file of a planted slide")
    t0 = time.perf_counter()
    out = {"slide_attention": slide_attention_figures(slides, truth, seed), "seconds": {}}
    out["seconds"]["slide_attention"] = round(time.perf_counter() - t0, 1)
    out["slide_attention_single"] = slide_attention_figures(slides, truth, seed, SlideAttentionConfig(seed=seed,
                                                                                                      members=1))
    # before: the same MIL on the raw tile features (not centred per slide), whole bags
    t0 = time.perf_counter()
    sds = slide_dataset(slides, truth)
    mil = train(sds, ["wsi"], "single", seed, slide_epochs)
    out["slide_mil"] = slide_figures(mil, sds, slides, seed)
    out["seconds"]["slide_mil"] = round(time.perf_counter() - t0, 1)
    # the same MIL trained as the run's fusion experiments train slide bags (32 random tiles per step)
    sampled = train(sds, ["wsi"], "single", seed, slide_epochs, max_instances=32)
    out["slide_mil_sampled32"] = slide_figures(sampled, sds, slides, seed)
    if fused:
        t0 = time.perf_counter()
        fds = fused_dataset(store, slides, truth)
        fm = train(fds, fds.modality_names, "attention", seed, fused_epochs)
        out["fused"] = slide_figures(fm, fds, slides, seed)
        out["fused"]["modalities"] = fds.modality_names
        out["modality_share"] = modality_hits(fm, fds, truth)
        out["modality_share_random_model"] = modality_hits(reinitialised(fm, seed + 1000), fds, truth)
        out["seconds"]["fused"] = round(time.perf_counter() - t0, 1)
    return out


def run_cohort(seed: int, n_patients: int, work: Path) -> tuple[Path, dict]:
    """Generate a cohort and run the pipeline over it; (store, truth)."""
    from flows.console import quiet_prefect_env

    quiet_prefect_env()
    from flows.pipeline import run_pipeline
    from flows.synthetic.cohort import CohortConfig, generate_cohort

    data, store = work / "data", work / "store"
    truth = generate_cohort(data, CohortConfig(n_patients=n_patients, seed=seed, frac_spatial=0.6),
                            progress=lambda m: None)
    cfg = work / "run.yaml"
    cfg.write_text(RUN_CONFIG)
    run_pipeline(data / "data_catalog.yaml", store, config_path=cfg, verbosity="quiet")
    return store, json.loads(json.dumps(truth))


def run_slides_only(seed: int, n_patients: int, work: Path) -> tuple[Path, dict]:
    """Generate a cohort and run only the pathology stage's functions over its slides (plan, frozen builtin
    tile encoder, STORE/wsi/<patient>.h5 as the pipeline writes them); (store, truth). For slide figures only."""
    from flows.config import RunConfig
    from flows.stages.pathology import discover_slides, extract_features, plan_slide
    from flows.synthetic.cohort import CohortConfig, generate_cohort
    from imaging.pretrained_encoder import TileEncoderSpec, load_encoder

    data, store = work / "data", work / "store"
    truth = generate_cohort(data, CohortConfig(n_patients=n_patients, seed=seed), progress=lambda m: None)
    cfg = RunConfig()
    encoder = load_encoder(TileEncoderSpec.from_config(cfg.tile_encoder))
    (store / "wsi").mkdir(parents=True, exist_ok=True)
    for pid, path in discover_slides(data / "slides", "*.tiff").items():
        plan = plan_slide(pid, path, cfg.tile_size, cfg.target_mpp, cfg.min_tissue, cfg.seed)
        extract_features(plan, encoder, store / "wsi" / f"{pid}.h5")
    return store, json.loads(json.dumps(truth))


def table(results: dict) -> str:
    """The faithfulness table (markdown): per seed and model, trained vs random network."""
    lines = ["| seed | model | slides | attention AUC (trained / random re-inits: mean [range] (n)) | "
             "deletion ratio (trained / random) | Spearman trained vs random | "
             "modality share hit rate (trained / random / chance, n) |",
             "|---|---|---|---|---|---|---|"]
    for seed, r in results["cohorts"].items():
        for key, label in (("slide_attention", "**report's slide attention model** (slide-centred, 3 MILs)"),
                           ("slide_attention_single", "the same with one MIL"),
                           ("slide_mil", "slide-only MIL on raw features, whole bags"),
                           ("slide_mil_sampled32", "slide-only MIL, 32 sampled tiles/step"),
                           ("fused", "fused (attention), whole bags")):
            if key not in r:
                continue
            f = r[key]
            share = ""
            if key == "fused":
                s, sr = r["modality_share"], r["modality_share_random_model"]
                share = f"{s['hit_rate']:.2f} / {sr['hit_rate']:.2f} / {s['chance']:.2f}, n={s['n_dominant']}"
            aucs = f["random_model_aucs"]
            rand = f"{f['random_model_auc']:.3f} [{min(aucs):.2f}-{max(aucs):.2f}] ({len(aucs)})"
            lines.append(f"| {seed} | {label} | {f['n_slides']} | {f['attention_auc']:.3f} / {rand} | "
                         f"{f['deletion_ratio']:.2f} / {f['random_model_deletion_ratio']:.2f} | "
                         f"{f['rank_correlation']:.3f} | {share} |")
    c = results.get("controlled")
    if c is None:
        return "\n".join(lines)
    lines.append(f"| controlled | early fusion, 2 modalities | - | - | - | - | {c['trained_hit_rate']:.2f} / "
                 f"{c['random_hit_rate']:.2f} / {c['chance']:.2f}, n=120 |")
    return "\n".join(lines)


def measure(seeds: list[int], n_patients: int, command: str, work: Path | None = None,
            slides_only: bool = False) -> dict:
    """Every cohort's figures, the controlled check and the table. Cohorts and stores go to a temp folder, or
    with ``work`` to work/seed<k>-n<patients> (kept; a finished one is measured again without rebuilding).
    ``slides_only``: the pathology stage only (run_slides_only), slide figures only."""
    results: dict = {"command": command, "patients": n_patients, "cohorts": {}}
    t_all = time.perf_counter()
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix=f"faith{seed}-") as tmp:
            folder = Path(tmp) if work is None else Path(work) / f"seed{seed}-n{n_patients}"
            t0 = time.perf_counter()
            built = folder / "store" / ("wsi" if slides_only else "embeddings")
            done = built.is_dir() and (folder / "data" / "truth.json").is_file()
            if done:
                store, truth = folder / "store", json.loads((folder / "data" / "truth.json").read_text())
            else:
                folder.mkdir(parents=True, exist_ok=True)
                store, truth = (run_slides_only if slides_only else run_cohort)(seed, n_patients, folder)
            run_s = time.perf_counter() - t0
            res = measure_store(store, truth, seed=seed, fused=not slides_only)
            res["seconds"]["cohort_and_run"] = None if done else round(run_s, 1)
            results["cohorts"][str(seed)] = res
            print(json.dumps({seed: res}, indent=1), flush=True)
    results["controlled"] = controlled_hits()
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    results["table"] = table(results)
    return results


def run(quick: bool = False) -> list[dict]:
    """Rows for `python -m bench`: per cohort, the report's slide attention model's attention AUC beside the
    random networks' (ratio), its deletion ratio beside the random-tile removal (baseline 1), and the fused model's
    modality share hit rate beside chance."""
    seeds, n = ([0], 40) if quick else ([0, 1, 2], 64)
    cmd = "PYTHONPATH=. python bench/explain_faithfulness.py" + (" --quick" if quick else "")
    res = measure(seeds, n, cmd)
    rows = []
    for seed, r in res["cohorts"].items():
        m = r["slide_attention"]
        rows += [{"what": f"slide attention AUC vs planted tumour (seed {seed}, {m['n_slides']} slides)",
                  "ours": m["attention_auc"], "baseline": m["random_model_auc"],
                  "baseline_name": f"same model re-initialised ({RANDOM_MODELS} seeds)",
                  "ratio": m["attention_auc"] / m["random_model_auc"], "unit": "AUC", "command": cmd},
                 {"what": f"slide attention deletion: top-10% attended vs random tiles (seed {seed})",
                  "ours": m["deletion_ratio"], "baseline": 1.0, "baseline_name": "random tiles",
                  "ratio": m["deletion_ratio"], "unit": "x |change|", "command": cmd}]
        if "modality_share" in r:
            s = r["modality_share"]
            rows.append({"what": f"fused model: dominant planted modality gets the top Shapley value (seed {seed}, "
                                 f"n={s['n_dominant']})", "ours": s["hit_rate"], "baseline": s["chance"],
                         "baseline_name": "chance", "ratio": s["hit_rate"] / s["chance"], "unit": "hit rate",
                         "command": cmd})
    return rows


def merge_results(old: dict, new: dict) -> dict:
    """``new``'s cohorts added to ``old``'s (a seed in both: ``new``'s), each cohort carrying the command and
    patient count that measured it; ``commands`` lists every command once; the controlled check and the
    seconds are ``new``'s; the table is rebuilt."""
    def tagged(res: dict) -> dict:
        return {k: {"command": res.get("command"), "patients": res.get("patients"), **c}
                for k, c in res["cohorts"].items()}

    commands = list(old.get("commands") or ([old["command"]] if old.get("command") else []))
    if new["command"] not in commands:
        commands.append(new["command"])
    cohorts = {**tagged(old), **tagged(new)}
    out = {"commands": commands, "cohorts": cohorts, "controlled": new.get("controlled", old.get("controlled")),
           "seconds": new.get("seconds")}
    out["table"] = table(out)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--patients", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="one seed, 40 patients")
    ap.add_argument("--out", default=str(ROOT / "bench" / "explain_faithfulness.json"))
    ap.add_argument("--slides-only", action="store_true",
                    help="pathology stage only (no pipeline run): the slide MIL figures, no fused model")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep each cohort and store under WORK/seed<k>-n<patients> (reused when finished)")
    ap.add_argument("--merge", action="store_true",
                    help="add the cohorts measured to those already in --out (same seed: replaced)")
    args = ap.parse_args(argv)
    seeds, n = (args.seeds[:1], 40) if args.quick else (args.seeds, args.patients)
    argv = sys.argv[1:] if argv is None else argv
    results = measure(seeds, n, "PYTHONPATH=. python bench/explain_faithfulness.py " + " ".join(argv), args.work,
                      args.slides_only)
    if args.merge and Path(args.out).is_file():
        results = merge_results(json.loads(Path(args.out).read_text()), results)
    print(results["table"])
    Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
