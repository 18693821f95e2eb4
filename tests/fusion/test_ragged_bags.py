"""Ragged slide bags: padded only inside a mini-batch, standardised over valid instances, and a model trained
on them equals the same model trained on cohort-padded bags."""

import numpy as np
import torch

from flows.stages.fusion_experiments import bag_modality
from fusion.attribution import feature_attribution
from fusion.data import ModalityData, MultimodalDataset
from fusion.model import FusionModel
from fusion.train import TrainConfig, fit, predict
from imaging.mil import GatedAttentionMIL


def _bags(seed=0, n=12, d=4):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, n)
    lengths[3] = 500  # one big slide
    bags = {f"p{i}": rng.normal(i % 2, 1.0, (t, d)).astype(np.float32) for i, t in enumerate(lengths)}
    del bags["p5"]  # a patient without a slide
    return [f"p{i}" for i in range(n)], bags


def test_bags_are_padded_per_batch_only():
    patients, bags = _bags()
    wsi = bag_modality("wsi", bags, patients)
    assert wsi.is_ragged and wsi.present.tolist() == [p in bags for p in patients]
    ds = MultimodalDataset(patients, {"wsi": wsi})
    small = ds.to_batch([0, 1])["wsi"]
    assert small["values"].shape == (2, max(len(bags["p0"]), len(bags["p1"])), 4)  # not 500
    assert small["mask"].sum(1).tolist() == [len(bags["p0"]), len(bags["p1"])]
    assert torch.equal(small["values"][0, : len(bags["p0"])], torch.from_numpy(bags["p0"]))
    big = ds.to_batch([3, 5])["wsi"]
    assert big["values"].shape[1] == 500 and big["mask"][1].sum() == 0 and not big["present"][1]
    assert ds.subset([4, 5]).modalities["wsi"].values[1].shape == (0, 4)


def test_standardise_uses_the_valid_instances_of_present_training_patients():
    patients, bags = _bags()
    ds = MultimodalDataset(patients, {"wsi": bag_modality("wsi", bags, patients)})
    train = [0, 1, 2, 5, 6]
    inst = np.concatenate([bags[patients[i]] for i in train if patients[i] in bags])
    mean, std = inst.mean(0), inst.std(0)
    z = ds.standardise(train).modalities["wsi"]
    np.testing.assert_allclose(z.values[7].numpy(), (bags["p7"] - mean) / std, rtol=1e-4, atol=1e-5)


def test_training_on_ragged_bags_equals_training_on_padded_bags():
    patients, bags = _bags()
    y = np.array([i % 2 for i in range(len(patients))])
    ragged = MultimodalDataset(patients, {"wsi": bag_modality("wsi", bags, patients)}, y=y)
    t_max = max(len(b) for b in bags.values())
    values = torch.zeros(len(patients), t_max, 4)
    mask = torch.zeros(len(patients), t_max, dtype=torch.bool)
    for i, p in enumerate(patients):
        if p in bags:
            values[i, : len(bags[p])] = torch.from_numpy(bags[p])
            mask[i, : len(bags[p])] = True
    padded = MultimodalDataset(patients, {"wsi": ModalityData("wsi", values, mask.any(1), mask)}, y=y)
    preds, attrs = [], []
    for ds in (ragged, padded):
        torch.manual_seed(0)
        model = FusionModel.for_dataset(ds, ["wsi"], "single", 1, embed_dim=8, modality_dropout=0.0, dropout=0.0,
                                        encoder_factories={"wsi": lambda d: GatedAttentionMIL(d, 8, 8, dropout=0.0)})
        fit(model, ds.standardise(np.arange(10)), np.arange(10),
            TrainConfig(epochs=5, batch_size=4, seed=0, device="cpu", num_threads=1))
        preds.append(predict(model, ds.standardise(np.arange(10)), np.arange(12)))
        attrs += [feature_attribution(model, ds.standardise(np.arange(10)), "wsi", np.arange(12), chunk=c)
                  for c in (3, 64)]
    for a in attrs[1:]:  # chunked or not, ragged or padded: the same attribution
        np.testing.assert_allclose(a, attrs[0], rtol=1e-4)
    np.testing.assert_allclose(preds[0], preds[1], rtol=1e-4, atol=1e-5)
    assert preds[0][:10][y[:10] == 1].mean() > preds[0][:10][y[:10] == 0].mean()  # it learned the planted shift
