"""Gated attention MIL: masking is exact and a planted key instance is found and attended to."""

import numpy as np
import pytest
import torch
from torch import nn

from imaging.mil import GatedAttentionMIL, pad_bags


def test_masked_instances_get_zero_attention_and_do_not_change_output():
    torch.manual_seed(0)
    mil = GatedAttentionMIL(in_dim=6, embed_dim=8, attn_dim=5).eval()
    x = torch.randn(3, 7, 6)
    lengths = [7, 4, 1]
    mask = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    weights = mil.attention(x, mask)
    assert weights.shape == (3, 7)
    assert torch.all(weights[~mask] == 0)
    assert torch.allclose(weights.sum(1), torch.ones(3))
    assert torch.allclose(weights[2, 0], torch.tensor(1.0))  # a bag of one attends to it fully
    out = mil(x, mask)
    garbage = x.clone()
    garbage[~mask] = torch.randn(int((~mask).sum()), 6) * 1e4
    garbage[1, 5] = float("nan")
    assert torch.equal(mil(garbage, mask), out)
    # each padded bag equals the same bag given alone, unpadded
    for b, n in enumerate(lengths):
        alone = mil(x[b : b + 1, :n])
        assert torch.allclose(alone, out[b : b + 1], atol=1e-6)


def test_attention_matches_the_gated_formula_by_hand():
    torch.manual_seed(1)
    mil = GatedAttentionMIL(in_dim=4, embed_dim=3, attn_dim=2, dropout=0.0).eval()
    x = torch.randn(1, 5, 4)
    h = torch.relu(mil.instance[0](x))
    score = mil.attn_w(torch.tanh(mil.attn_v(h)) * torch.sigmoid(mil.attn_u(h))).squeeze(-1)
    a = torch.softmax(score, dim=1)
    assert torch.allclose(mil.attention(x), a, atol=1e-6)
    assert torch.allclose(mil(x), (a[..., None] * h).sum(1), atol=1e-6)


def test_empty_bag_embeds_to_zero_and_bad_shapes_raise():
    mil = GatedAttentionMIL(in_dim=3).eval()
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    out = mil(x, mask)
    assert torch.isfinite(out).all() and torch.all(out[1] == 0)
    with pytest.raises(ValueError, match="mask"):
        mil(x, mask[:, :3])
    with pytest.raises(ValueError, match=r"\[B,T,3\]"):
        mil(torch.randn(2, 4, 5))


def test_pad_bags():
    x, mask = pad_bags([np.ones((2, 3)), np.zeros((5, 3)), np.full((1, 3), 2.0)])
    assert x.shape == (3, 5, 3) and mask.sum(1).tolist() == [2, 5, 1]
    assert x[0, 2:].abs().sum() == 0 and x[2, 0, 0] == 2.0


def make_bags(rng, n_bags, d=8):
    """Bags of 5-30 N(0,1) instances; positive bags hide one key instance shifted by +5 along a fixed direction."""
    direction = np.zeros(d)
    direction[0] = 5.0
    bags, labels, keys = [], [], []
    for _ in range(n_bags):
        n = int(rng.integers(5, 31))
        bag = rng.standard_normal((n, d))
        y = int(rng.integers(0, 2))
        k = int(rng.integers(0, n))
        if y:
            bag[k] += direction
        bags.append(bag)
        labels.append(y)
        keys.append(k if y else -1)
    return bags, np.array(labels), np.array(keys)


def test_learns_to_attend_to_the_planted_positive_instance():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    bags, labels, _ = make_bags(rng, 256)
    x, mask = pad_bags(bags)
    y = torch.tensor(labels, dtype=torch.float32)
    mil = GatedAttentionMIL(in_dim=8, embed_dim=16, attn_dim=16, dropout=0.1)
    head = nn.Linear(16, 1)
    opt = torch.optim.Adam(list(mil.parameters()) + list(head.parameters()), lr=3e-3)
    for _ in range(300):
        idx = torch.randint(0, len(bags), (32,))
        logit = head(mil(x[idx], mask[idx])).squeeze(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logit, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    mil.eval()
    test_bags, test_labels, test_keys = make_bags(np.random.default_rng(1), 200)
    tx, tmask = pad_bags(test_bags)
    with torch.no_grad():
        prob = torch.sigmoid(head(mil(tx, tmask)).squeeze(-1)).numpy()
        weights = mil.attention(tx, tmask).numpy()
    accuracy = ((prob > 0.5) == test_labels).mean()
    assert accuracy > 0.9
    pos = np.flatnonzero(test_labels == 1)
    # the key instance gets the largest weight in (almost) every positive bag, far above uniform
    assert (weights[pos].argmax(1) == test_keys[pos]).mean() > 0.9
    assert weights[pos, test_keys[pos]].mean() > 0.5
