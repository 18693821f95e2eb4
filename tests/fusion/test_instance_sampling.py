"""MIL instance sampling at training time (fusion.train.sample_instances)."""

import torch

from fusion.train import sample_instances


def test_each_bag_keeps_k_distinct_valid_instances_and_short_bags_keep_all():
    lengths = [10, 3, 7]
    x = torch.zeros(3, 10, 2)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    for i, n in enumerate(lengths):
        x[i, :n, 0] = torch.arange(1, n + 1, dtype=torch.float32) + 100 * i  # a unique id per real instance
        mask[i, :n] = True
    batch = {"wsi": {"values": x, "mask": mask, "present": torch.ones(3, dtype=torch.bool)},
             "ct": {"values": torch.ones(3, 4), "mask": None, "present": torch.ones(3, dtype=torch.bool)}}
    gen = torch.Generator().manual_seed(0)
    out = sample_instances(batch, ["wsi"], 4, gen)
    assert out["ct"] is batch["ct"]
    vals, m = out["wsi"]["values"][..., 0], out["wsi"]["mask"]
    assert vals.shape == (3, 4) and m.shape == (3, 4)
    for i, n in enumerate(lengths):
        real = vals[i][m[i]].tolist()
        assert len(real) == min(n, 4) and len(set(real)) == len(real)  # no padding drawn, no repeats
        assert all(100 * i < v <= 100 * i + n for v in real)
    draws = [tuple(sorted(sample_instances(batch, ["wsi"], 4, gen)["wsi"]["values"][0, :, 0].tolist()))
             for _ in range(30)]
    assert len(set(draws)) > 10  # a new random subset at every step
    assert sample_instances(batch, ["wsi"], 10, gen)["wsi"]["values"] is x  # bags no longer than k: untouched
