"""Faithfulness of the slide attention model a run saved (``STORE/models/diagnosis/slide_mil.pt``, the patient
reports' heatmap) on a generated cohort, against the cohort's planted tumour (``DATA/truth.json``, never read by
the pipeline): attention AUC averaged over slides, deletion ratio, the same for random re-initialisations of
the model, and the rank correlation of their maps with the trained one's (fusion.faithfulness).

    PYTHONPATH=$PWD python bench/slide_attention_store.py STORE DATA [--random 10]

e.g. after `make demo`: ``python bench/slide_attention_store.py demo_store demo_data``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.explain_faithfulness import load_slides  # noqa: E402
from fusion.faithfulness import slide_model_faithfulness, summarise_slides  # noqa: E402
from fusion.slide_attention import load_slide_attention  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("data", type=Path, help="the generated cohort's folder (its truth.json)")
    ap.add_argument("--random", type=int, default=10, help="random re-initialisations of the model")
    args = ap.parse_args()
    truth = json.loads((args.data / "truth.json").read_text())
    slides = load_slides(args.store, truth)
    model = load_slide_attention(args.store / "models" / "diagnosis" / "slide_mil.pt")
    patients = sorted(slides)
    bags = {p: slides[p]["bag"] for p in patients}
    f = summarise_slides(slide_model_faithfulness(
        model, bags, {p: slides[p]["inside"] for p in patients}, n_random=5, seed=0,
        baselines=[model.reinitialised(1000 + r) for r in range(args.random)]))
    print(f"{args.store}: {model.version}, {len(patients)} slides")
    print(f"attention AUC {f['attention_auc']:.3f} (random re-initialisations, mean of {args.random}: "
          f"{f['random_model_auc']:.3f}); deletion ratio {f['deletion_ratio']:.2f} (random "
          f"{f['random_model_deletion_ratio']:.2f}); Spearman trained vs random {f['rank_correlation']:+.3f}")


if __name__ == "__main__":
    main()
