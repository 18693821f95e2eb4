"""Bag modalities in experiment specs: the store's slide-tile bags, CLAM-style folders for table specs,
clear errors naming the key, and the CLI running MIL / co-attention on the store's slides."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from flows.experiments.inputs import load_experiment
from flows.experiments.spec import load_spec
from fusion.errors import SpecError
from imaging.tile_encoder import TileFeatures
from tests.fusion.planted_bags import planted_bags

DENSITY = "hematoxylin_density"  # flows.stages.pathology.CELLULARITY_DATASET


def _write(folder: Path, spec: dict) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    """A store with expression embeddings, a clinical table with the planted label and STORE/wsi/<patient>.h5
    tile features (+ hematoxylin density) of the planted bags; one slide file is corrupt."""
    data = planted_bags(n=40, seed=7, flat_shift=0.25)
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "clinical").mkdir()
    (tmp_path / "wsi").mkdir()
    data.features["expr"].dropna().to_parquet(tmp_path / "embeddings" / "expression.parquet")
    pd.DataFrame({"grade": np.where(data.target["label"] == 1, "high", "low")}, index=data.patients).to_parquet(
        tmp_path / "clinical" / "clinical.parquet")
    for pid, bag in data.bags["wsi"].items():
        path = tmp_path / "wsi" / f"{pid}.h5"
        TileFeatures(bag[:, :-1], np.zeros((len(bag), 2)), 256, 0.5, f"{pid}.svs").save_h5(path)
        with h5py.File(path, "a") as f:
            f.create_dataset(DENSITY, data=bag[:, -1])
    (tmp_path / "wsi" / "P999.h5").write_bytes(b"not an HDF5 file")
    return tmp_path


def _spec(store: Path, **kw) -> dict:
    return {"name": "bags", "store": str(store), "id": "patient_id",
            "modalities": {"expression": "*", "wsi": {"bags": "wsi"}}, "task": {"kind": "classification",
                                                                              "label": "grade"}, "folds": 2, **kw}


def test_store_slide_bags_are_read_with_their_density_and_a_bad_file_is_skipped(store, caplog):
    spec = load_spec(_write(store, _spec(store)))
    assert spec.modalities == {"expression": "*"} and spec.bags["wsi"]["bags"] == "wsi"
    data, splits, hashes = load_experiment(spec)
    truth = planted_bags(n=40, seed=7, flat_shift=0.25)
    assert sorted(data.bags["wsi"]) == sorted(truth.bags["wsi"])  # P999's corrupt file skipped
    pid = next(iter(truth.bags["wsi"]))
    np.testing.assert_array_equal(data.bags["wsi"][pid], truth.bags["wsi"][pid])  # features + density column
    assert "P999.h5" in caplog.text
    assert str(store / "wsi" / f"{pid}.h5") in hashes
    assert set(data.patients) == set(truth.patients)  # patients with a bag but no embedding are kept


@pytest.mark.parametrize("change,key", [
    ({"modalities": {"expression": "*", "wsi": {"bag": "wsi"}}}, "modalities.wsi.bag"),
    ({"modalities": {"expression": "*", "wsi": {"slide_column": "x"}}}, "modalities.wsi.bags"),
    ({"modalities": {"expression": "*", "wsi": {"bags": "slides"}}}, "modalities.wsi.bags"),
    ({"modalities": {"expression": "*"}, "strategies": ["late", "coattention"]}, "strategies"),
    ({"modalities": {"wsi": {"bags": "wsi"}}, "strategies": ["coattention"]}, "strategies"),
])
def test_bag_spec_errors_name_the_key(store, change, key):
    with pytest.raises(SpecError, match=rf"spec.yaml: key '{key}'"):
        load_experiment(load_spec(_write(store, _spec(store, **change))))


def test_table_spec_with_a_clam_folder_concatenates_a_patients_slides(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "feats").mkdir()
    rows = []
    bags = {}
    for i in range(12):
        pid = f"C{i:02d}"
        parts = []
        for s in range(1 + (i % 2)):  # odd patients have two slides, one .h5 and one .pt
            sid = f"{pid}-DX{s}"
            x = rng.normal(size=(int(rng.integers(3, 9)), 5)).astype(np.float32)
            if s == 0:
                with h5py.File(tmp_path / "feats" / f"{sid}.h5", "w") as f:
                    f.create_dataset("features", data=x)
                    f.create_dataset("coords", data=np.zeros((len(x), 2)))
            else:
                torch.save(torch.from_numpy(x), tmp_path / "feats" / f"{sid}.pt")
            parts.append(x)
            rows.append({"case_id": pid, "slide_id": f"{sid}.svs", "label": "a" if i < 6 else "b", "g1": rng.normal()})
        bags[pid] = np.concatenate(parts)
    pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)
    spec = {"name": "clam", "table": "table.csv", "id": "case_id", "folds": 2, "strategies": ["coattention"],
            "modalities": {"rna": "g*", "wsi": {"bags": "feats", "slide_column": "slide_id"}},
            "task": {"kind": "classification", "label": "label"}}
    data, _, hashes = load_experiment(load_spec(_write(tmp_path, spec)))
    assert sorted(data.bags["wsi"]) == sorted(bags)
    for pid, bag in bags.items():
        np.testing.assert_array_equal(data.bags["wsi"][pid], bag)
    assert sum(p.endswith(".pt") for p in hashes) == 6
    bad = {**spec, "modalities": {"rna": "g*", "wsi": {"bags": "feats", "slide_column": "slide"}}}
    with pytest.raises(SpecError, match=r"key 'modalities.wsi.slide_column': column 'slide' not in the table"):
        load_experiment(load_spec(_write(tmp_path, bad)))


def test_cli_runs_mil_and_coattention_on_the_store_slides(store, capsys, monkeypatch):
    import flows.experiments.bags as eb
    from flows.cli import main
    from imaging.mil import GatedAttentionMIL

    built = []
    real = eb.mil_encoder_factories

    def recording(bags, embed_dim, **kw):
        return {m: (lambda d, f=f: built.append(f(d)) or built[-1]) for m, f in real(bags, embed_dim, **kw).items()}

    monkeypatch.setattr(eb, "mil_encoder_factories", recording)
    spec = _spec(store, strategies=["coattention"], options={"epochs": 3, "robustness": False})
    rc = main(["experiment", str(_write(store, spec)), "--store", str(store), "--format", "json", "--no-mlflow"])
    assert rc == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["baseline:logistic", "single:expression", "single:wsi", "fusion:coattention"]
    assert rows["fusion:coattention"]["modalities"] == ["expression", "wsi"]
    assert all(len(r["folds"]) == 2 and np.isfinite(r["folds"]).all() for r in rows.values())
    # the runner injects gated-attention MIL for the slide bag: one per fold of single:wsi (co-attention embeds
    # the tiles itself); each sees the 7 tile features + the density column
    assert len(built) == 2 and all(isinstance(m, GatedAttentionMIL) and m.in_dim == 8 for m in built)
