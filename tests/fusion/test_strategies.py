"""Tests for fusion.strategies and fusion.model: shapes, masking of missing modalities, registry, dropout."""

import pytest
import torch
from torch import nn

from fusion.errors import FusionConfigError, FusionRxError
from fusion.model import FusionModel, modality_dropout_mask
from fusion.strategies import FUSION_STRATEGIES, AttentionFusion, FusionStrategy, build_strategy, register_strategy

B, M, H, N_OUT = 6, 3, 16, 2
PRESENT = torch.tensor(
    [[True, True, True], [True, False, True], [False, True, False], [False, False, True], [True, True, False], [False, False, False]]
)


# strategies over pooled embeddings (instance-level ones such as 'coattention' need bag tokens: tested via FusionModel)
POOLED = sorted(n for n, c in FUSION_STRATEGIES.items() if not getattr(c, "instance_level", False))


def _n_mod(name):
    return 1 if name == "single" else M


@pytest.mark.parametrize("name", POOLED)
def test_output_shape(name):
    torch.manual_seed(0)
    m = _n_mod(name)
    strat = build_strategy(name, n_modalities=m, embed_dim=H, n_outputs=N_OUT).eval()
    out = strat(torch.randn(B, m, H), PRESENT[:, :m])
    assert out.shape == (B, N_OUT)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", POOLED)
def test_missing_modality_values_do_not_change_outputs(name):
    torch.manual_seed(0)
    m = _n_mod(name)
    present = PRESENT[:, :m]
    strat = build_strategy(name, n_modalities=m, embed_dim=H, n_outputs=N_OUT).eval()
    z = torch.randn(B, m, H)
    z2 = z.clone()
    z2[~present] = torch.randn(int((~present).sum()), H) * 100.0 + 7.0  # rewrite only the missing slots
    z3 = z.clone()
    z3[~present] = float("nan")
    out, out2, out3 = strat(z, present), strat(z2, present), strat(z3, present)
    assert torch.equal(out, out2)
    assert torch.equal(out, out3)
    # ...while a present modality's values do matter (the check above can fail)
    z4 = z.clone()
    z4[0, 0] += 3.0 * torch.randn(H)  # not a constant shift (LayerNorm would remove that)
    assert not torch.allclose(strat(z4, present)[0], out[0])


def _batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, 4, dtype=torch.bool)
    mask[:, 3] = False
    return {
        "rna": {"values": torch.randn(n, 7, generator=g), "mask": None, "present": torch.tensor([True, False, True, False, True])},
        "ct": {"values": torch.randn(n, 3, generator=g), "mask": None, "present": torch.tensor([True, True, False, False, True])},
        "wsi": {"values": torch.randn(n, 4, 5, generator=g), "mask": mask, "present": torch.tensor([False, True, True, True, True])},
    }


@pytest.mark.parametrize("name", sorted(set(FUSION_STRATEGIES) - {"single"}))
def test_model_ignores_values_of_missing_modalities_and_invalid_instances(name):
    torch.manual_seed(1)
    model = FusionModel(["rna", "ct", "wsi"], {"rna": 7, "ct": 3, "wsi": 5}, name, 1, embed_dim=8, bag_modalities=["wsi"]).eval()
    batch = _batch()
    out = model(batch)
    changed = _batch(seed=5)
    for mod in changed:  # keep the present rows, rewrite the absent ones
        p = batch[mod]["present"]
        changed[mod]["values"][p] = batch[mod]["values"][p]
    changed["wsi"]["values"][:, 3] = 1e4  # invalid bag instances
    out2 = model(changed)
    assert out.shape == (5, 1)
    assert torch.equal(out, out2)


def test_single_model_on_bag_modality():
    torch.manual_seed(0)
    model = FusionModel(["wsi"], {"wsi": 5}, "single", 3, embed_dim=8, bag_modalities=["wsi"]).eval()
    out = model(_batch())
    assert out.shape == (5, 3)
    # patient 0 lacks the modality: gets the learned constant
    assert torch.equal(out[0], model.strategy.empty_output.detach())


def test_unknown_strategy_lists_known_names():
    with pytest.raises(FusionRxError) as info:
        build_strategy("bogus", n_modalities=2, embed_dim=4, n_outputs=1)
    msg = str(info.value)
    assert "bogus" in msg
    for name in ("attention", "early", "kronecker", "late", "single"):
        assert name in msg
    with pytest.raises(FusionConfigError, match="exactly one modality"):
        build_strategy("single", n_modalities=2, embed_dim=4, n_outputs=1)


def test_register_new_strategy_is_one_class():
    @register_strategy("mean_pool_test")
    class MeanPool(FusionStrategy):
        def __init__(self, n_modalities, embed_dim, n_outputs):
            super().__init__(n_modalities, embed_dim, n_outputs)
            self.head = nn.Linear(embed_dim, n_outputs)

        def forward(self, z, present):
            z = self._check(z, present)
            w = present.float().unsqueeze(-1)
            return self.head((z * w).sum(1) / w.sum(1).clamp_min(1))

    try:
        model = FusionModel(["rna", "ct"], {"rna": 7, "ct": 3}, "mean_pool_test", 1, embed_dim=4)
        assert model(_batch()).shape == (5, 1)
        with pytest.raises(FusionConfigError, match="already registered"):
            register_strategy("mean_pool_test")(AttentionFusion)
    finally:
        FUSION_STRATEGIES.pop("mean_pool_test")


def test_modality_dropout_never_drops_all_present():
    torch.manual_seed(0)
    present = torch.rand(2000, 4) < 0.5
    kept = modality_dropout_mask(present, p=0.9)
    assert not (kept & ~present).any()  # only drops, never adds
    had_any = present.any(1)
    assert kept[had_any].any(1).all()
    assert not kept[~had_any].any()
    dropped_frac = 1 - kept.sum() / present.sum()
    assert dropped_frac > 0.5  # dropout actually happened


def test_attention_weights_skip_missing_modalities():
    torch.manual_seed(0)
    strat = build_strategy("attention", n_modalities=M, embed_dim=H, n_outputs=1, n_layers=2).eval()
    w = strat.cls_attention(torch.randn(B, M, H), PRESENT)
    assert w.shape == (B, M)
    assert (w[~PRESENT] == 0).all()
    assert (w[PRESENT] > 0).all()
    assert (w.sum(1) <= 1 + 1e-6).all()


def test_kronecker_stays_tractable_for_many_modalities():
    strat = build_strategy("kronecker", n_modalities=6, embed_dim=8, n_outputs=1)
    n_params = sum(p.numel() for p in strat.parameters())
    assert (strat.k + 1) ** 6 <= 1024
    assert n_params < 100_000
    present = torch.ones(3, 6, dtype=torch.bool)
    present[0, 2:] = False
    assert strat.eval()(torch.randn(3, 6, 8), present).shape == (3, 1)


def test_encoder_factory_used_and_projected():
    class MeanMIL(nn.Module):
        def __init__(self, in_dim):
            super().__init__()
            self.lin = nn.Linear(in_dim, 11)

        def forward(self, x, mask):
            w = mask.float().unsqueeze(-1)
            return self.lin((x * w).sum(1) / w.sum(1))

    model = FusionModel(
        ["rna", "wsi"], {"rna": 7, "wsi": 5}, "early", 1, embed_dim=8, bag_modalities=["wsi"], encoder_factories={"wsi": MeanMIL}
    )
    assert isinstance(model.encoders["wsi"].encoder, MeanMIL)
    assert model.eval()(_batch()).shape == (5, 1)
    with pytest.raises(FusionConfigError, match="unknown modalities"):
        FusionModel(["rna"], {"rna": 7}, "single", 1, encoder_factories={"wsi": MeanMIL})


@pytest.mark.parametrize("name", sorted(n for n, c in FUSION_STRATEGIES.items() if c.tune_grid))
def test_every_tune_grid_candidate_builds_and_masks_missing_modalities(name):
    """Each width of a strategy's tune_grid (fusion.tuning) gives a working model that still ignores the values of
    missing modalities; grid keys are ExperimentOptions fields."""
    from fusion.tuning import option_candidates

    cands = option_candidates(name, tune=True)
    assert len(cands) > 1
    for cand in cands:
        dim = cand.get("embed_dim", H)
        torch.manual_seed(0)
        strat = build_strategy(name, n_modalities=M, embed_dim=dim, n_outputs=N_OUT).eval()
        z = torch.randn(B, M, dim)
        noisy = torch.where(PRESENT.unsqueeze(-1), z, torch.randn(B, M, dim) * 100)
        out = strat(z, PRESENT)
        assert out.shape == (B, N_OUT) and torch.isfinite(out).all()
        assert torch.allclose(out, strat(noisy, PRESENT), atol=1e-5)
