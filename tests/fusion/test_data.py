"""Tests for fusion.data: validation errors, subsetting, selection, fold-safe standardisation, from_frames."""

import numpy as np
import pandas as pd
import pytest
import torch

from fusion.data import ModalityData, MultimodalDataset
from fusion.errors import FusionDataError, FusionRxError


def _vec(name, values, present):
    return ModalityData(name, torch.tensor(values, dtype=torch.float32), torch.tensor(present))


def test_modality_validation_names_modality_and_field():
    with pytest.raises(FusionDataError, match=r"modality 'ct', field 'present'"):
        ModalityData("ct", torch.zeros(4, 3), torch.ones(5, dtype=torch.bool))
    with pytest.raises(FusionDataError, match=r"modality 'ct', field 'values'.*float32"):
        ModalityData("ct", torch.zeros(4, 3, dtype=torch.float64), torch.ones(4, dtype=torch.bool))
    with pytest.raises(FusionDataError, match=r"modality 'wsi', field 'instance_mask'.*required"):
        ModalityData("wsi", torch.zeros(4, 2, 3), torch.ones(4, dtype=torch.bool))
    mask = torch.ones(4, 2, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(FusionDataError, match=r"modality 'wsi'.*no valid instance \(first row 1\)"):
        ModalityData("wsi", torch.zeros(4, 2, 3), torch.ones(4, dtype=torch.bool), instance_mask=mask)
    values = torch.zeros(4, 3)
    values[2, 1] = float("nan")
    with pytest.raises(FusionDataError, match=r"modality 'ct', field 'values'.*NaN.*first row 2"):
        ModalityData("ct", values, torch.ones(4, dtype=torch.bool))
    # errors belong to the shared hierarchy
    assert issubclass(FusionDataError, FusionRxError)


def test_dataset_validation():
    ct = _vec("ct", np.zeros((3, 2)), [True, True, False])
    with pytest.raises(FusionDataError, match=r"modality 'ct', field 'values': expected 4 rows"):
        MultimodalDataset(["a", "b", "c", "d"], {"ct": ct})
    with pytest.raises(FusionDataError, match=r"'a' occurs more than once"):
        MultimodalDataset(["a", "b", "a"], {"ct": ct})
    with pytest.raises(FusionDataError, match=r"modality 'pet': key differs"):
        MultimodalDataset(["a", "b", "c"], {"pet": ct})
    with pytest.raises(FusionDataError, match=r"y: expected 3 labels"):
        MultimodalDataset(["a", "b", "c"], {"ct": ct}, y=np.array([0, 1]))
    with pytest.raises(FusionDataError, match=r"unknown modality \['rna'\]"):
        MultimodalDataset(["a", "b", "c"], {"ct": ct}).select(["rna"])


def test_subset_and_select_keep_rows_aligned():
    ct = _vec("ct", [[1, 1], [2, 2], [3, 3]], [True, False, True])
    rna = _vec("rna", [[10], [20], [30]], [True, True, True])
    ds = MultimodalDataset(["a", "b", "c"], {"ct": ct, "rna": rna}, y=np.array([0, 1, 0]))
    sub = ds.subset([2, 0])
    assert sub.patients == ["c", "a"]
    assert sub.modalities["ct"].values[:, 0].tolist() == [3.0, 1.0]
    assert sub.modalities["rna"].values[:, 0].tolist() == [30.0, 10.0]
    assert sub.y.tolist() == [0, 0]
    sel = ds.select(["rna"])
    assert sel.modality_names == ["rna"] and sel.patients == ds.patients
    assert ds.presence().tolist() == [[True, True], [False, True], [True, True]]


def test_standardise_uses_present_training_rows_only():
    # rows: 0,1,2 train (row 1 absent, holds a decoy that must not count); 3 test with an outlier
    values = [[1.0, 5.0], [100.0, -100.0], [3.0, 5.0], [1000.0, 7.0]]
    ct = _vec("ct", values, [True, False, True, True])
    ds = MultimodalDataset(["a", "b", "c", "d"], {"ct": ct}, y=np.array([0, 1, 0, 1]))
    out = ds.standardise([0, 1, 2])
    z = out.modalities["ct"].values
    # training present rows 0 and 2: mean (2, 5), population std (1, 0 -> 1)
    assert z[0].tolist() == [-1.0, 0.0]
    assert z[2].tolist() == [1.0, 0.0]
    assert z[1].tolist() == [0.0, 0.0]  # absent row stays exactly 0
    assert z[3].tolist() == [998.0, 2.0]  # test row scaled with training statistics, not its own
    mean, std = out.meta["standardise"]["ct"]
    assert mean.tolist() == [2.0, 5.0] and std.tolist() == [1.0, 1.0]
    # the original dataset is untouched
    assert ds.modalities["ct"].values[1, 0] == 100.0


def test_standardise_bags_use_valid_instances_of_training_patients():
    values = torch.tensor([[[0.0], [2.0]], [[4.0], [50.0]], [[9.0], [9.0]]])
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    wsi = ModalityData("wsi", values, torch.tensor([True, True, True]), instance_mask=mask)
    ds = MultimodalDataset(["a", "b", "c"], {"wsi": wsi})
    z = ds.standardise([0, 1]).modalities["wsi"].values
    # valid training instances 0, 2, 4: mean 2, std sqrt(8/3)
    s = np.sqrt(8 / 3)
    np.testing.assert_allclose(z[0, :, 0].numpy(), [-2 / s, 0.0], rtol=1e-6)
    assert z[1, 1, 0] == 0.0  # invalid instance zeroed
    np.testing.assert_allclose(z[2, :, 0].numpy(), [7 / s, 7 / s], rtol=1e-6)


def test_standardise_without_present_training_rows_raises():
    ct = _vec("ct", [[1.0], [2.0]], [False, True])
    ds = MultimodalDataset(["a", "b"], {"ct": ct})
    with pytest.raises(FusionDataError, match=r"modality 'ct': no present training patient"):
        ds.standardise([0])


def test_from_frames_marks_missing_rows_absent():
    ct = pd.DataFrame({"hu_mean": [40.0, 55.0], "volume_ml": [3.0, 4.0]}, index=["p2", "p1"])
    rna = pd.DataFrame({"EGFR": [1.0, 2.0, 3.0]}, index=["p1", "p3", "zzz"])
    y = pd.Series([1, 0, 1], index=["p3", "p2", "p1"])
    ds = MultimodalDataset.from_frames({"ct": ct, "rna": rna}, ["p1", "p2", "p3"], y=y)
    assert ds.modalities["ct"].present.tolist() == [True, True, False]
    assert ds.modalities["ct"].values.tolist() == [[55.0, 4.0], [40.0, 3.0], [0.0, 0.0]]
    assert ds.modalities["rna"].present.tolist() == [True, False, True]
    assert ds.modalities["rna"].values[:, 0].tolist() == [1.0, 0.0, 2.0]
    assert ds.modalities["ct"].feature_names == ["hu_mean", "volume_ml"]
    assert ds.y.tolist() == [1, 0, 1] and ds.y.dtype == torch.int64


def test_from_frames_rejects_nan_and_duplicates():
    bad = pd.DataFrame({"x": [1.0, np.nan]}, index=["p1", "p2"])
    with pytest.raises(FusionDataError, match=r"modality 'ct': patient 'p2' has NaN"):
        MultimodalDataset.from_frames({"ct": bad}, ["p1", "p2"])
    dup = pd.DataFrame({"x": [1.0, 2.0]}, index=["p1", "p1"])
    with pytest.raises(FusionDataError, match=r"modality 'ct', index: patient 'p1' has more than one row"):
        MultimodalDataset.from_frames({"ct": dup}, ["p1"])
