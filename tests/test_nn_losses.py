"""Tests for skmat.nn.losses and skmat.nn.fusion.

Expected values come from plain-Python loop implementations written here from the formulas
(not from the functions under test), evaluated on small explicit vectors.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch

from skmat.nn.fusion import ConcatFusion, MeanFusion, make_fusion
from skmat.nn.losses import (
    LOSSES,
    ContrastiveLoss,
    all_pairs_loss,
    anchored_loss,
    barlow_loss,
    clip_loss,
    l2_normalize,
    tensor_loss,
)

# Three views of three materials, two dimensions: small enough to follow by hand.
A = [[1.0, 0.0], [0.6, 0.8], [-1.0, 1.0]]
B = [[0.8, 0.6], [0.0, 1.0], [-1.0, -0.2]]
C = [[1.0, 1.0], [0.2, -1.0], [-0.5, 0.5]]


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(u, v):
    return sum(x * y for x, y in zip(u, v))


def _neg_log_softmax(scores, target):
    top = max(scores)
    log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
    return log_sum - scores[target]


def ref_clip(a, b, t):
    a, b = [_unit(v) for v in a], [_unit(v) for v in b]
    n = len(a)
    s = [[_dot(a[i], b[j]) / t for j in range(n)] for i in range(n)]
    rows = sum(_neg_log_softmax(s[i], i) for i in range(n)) / n
    cols = sum(_neg_log_softmax([s[j][i] for j in range(n)], i) for i in range(n)) / n
    return (rows + cols) / 2


def ref_tensor(a, b, c, t):
    a, b, c = ([_unit(v) for v in x] for x in (a, b, c))
    n, dim = len(a), len(a[0])
    s = {
        (i, j, k): sum(a[i][d] * b[j][d] * c[k][d] for d in range(dim)) / t
        for i in range(n)
        for j in range(n)
        for k in range(n)
    }
    pairs = [(p, q) for p in range(n) for q in range(n)]
    total = 0.0
    for axis in range(3):
        for q in range(n):
            scores, target = [], None
            for idx, (p1, p2) in enumerate(pairs):
                key = [p1, p2]
                key.insert(axis, q)
                scores.append(s[tuple(key)])
                if p1 == q and p2 == q:
                    target = idx
            total += _neg_log_softmax(scores, target) / n
    return total / 3


def _standardize(z, eps):
    n, dim = len(z), len(z[0])
    out = [[0.0] * dim for _ in range(n)]
    for d in range(dim):
        col = [z[b][d] for b in range(n)]
        mean = sum(col) / n
        var = sum((x - mean) ** 2 for x in col) / n
        for b in range(n):
            out[b][d] = (col[b] - mean) / math.sqrt(var + eps)
    return out


def ref_barlow(zs, lam, eps=1e-5):
    zs = [_standardize(z, eps) for z in zs]
    n, dim = len(zs[0]), len(zs[0][0])
    loss = 0.0
    for idx in np.ndindex(*([dim] * len(zs))):
        corr = sum(math.prod(z[b][d] for z, d in zip(zs, idx)) for b in range(n)) / n
        if len(set(idx)) == 1:
            loss += (1 - corr) ** 2
        else:
            loss += lam * corr**2
    return loss


def _emb(**views):
    return {
        name: torch.tensor(value, dtype=torch.float64, requires_grad=True)
        for name, value in views.items()
    }


def _random_views(names, n=6, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        v: torch.randn(n, dim, generator=gen, dtype=torch.float64, requires_grad=True)
        for v in names
    }


# --------------------------------------------------------------------------- hand values


def test_clip_matches_hand_computation():
    expected = ref_clip(A, B, 0.5)
    assert clip_loss(_emb(a=A, b=B), None, 0.5).item() == pytest.approx(expected, rel=1e-10)
    # tensor temperature and explicit views on a 3-view dict give the same number
    temperature = torch.tensor(0.5, dtype=torch.float64)
    got = clip_loss(_emb(a=A, b=B, c=C), None, temperature, views=("a", "b"))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_clip_without_views_needs_exactly_two():
    with pytest.raises(ValueError, match="views"):
        clip_loss(_emb(a=A, b=B, c=C), None, 0.5)


def test_all_pairs_matches_hand_computation():
    expected = (ref_clip(A, B, 0.3) + ref_clip(A, C, 0.3) + ref_clip(B, C, 0.3)) / 3
    got = all_pairs_loss(_emb(a=A, b=B, c=C), None, 0.3)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_anchored_matches_hand_computation():
    expected = (ref_clip(C, A, 0.3) + ref_clip(C, B, 0.3)) / 2
    got = anchored_loss(_emb(a=A, b=B, c=C), None, 0.3, anchor="c")
    assert got.item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="anchor"):
        anchored_loss(_emb(a=A, b=B), None, 0.3)  # default anchor "structure" is absent


def test_tensor_matches_hand_computation():
    expected = ref_tensor(A, B, C, 0.4)
    assert tensor_loss(_emb(a=A, b=B, c=C), None, 0.4).item() == pytest.approx(expected, rel=1e-10)


def test_tensor_with_two_views_is_clip():
    got = tensor_loss(_emb(a=A, b=B), None, 0.4)
    assert got.item() == pytest.approx(ref_clip(A, B, 0.4), rel=1e-10)


def test_barlow_two_way_matches_hand_computation():
    expected = ref_barlow([A, B], lam=0.1)
    got = barlow_loss(_emb(a=A, b=B), None, 0.07, lambda_offdiag=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_barlow_three_way_matches_hand_computation():
    expected = ref_barlow([A, B, C], lam=0.1)
    got = barlow_loss(_emb(a=A, b=B, c=C), None, 0.07, lambda_offdiag=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_barlow_ignores_temperature():
    emb = _emb(a=A, b=B, c=C)
    assert barlow_loss(emb, None, 0.01).item() == barlow_loss(emb, None, 5.0).item()


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_reach_every_view_and_the_temperature(name):
    views = ("structure", "xrd") if name == "clip" else ("structure", "xrd", "composition")
    emb = _random_views(views)
    criterion = ContrastiveLoss(name, temperature=0.2).double()
    loss = criterion(emb, None)
    loss.backward()
    for view, tensor in emb.items():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), view
        assert tensor.grad.abs().sum() > 0, view
    grad = criterion.log_temperature.grad
    if name == "barlow":  # Barlow Twins ignores the temperature
        assert grad == 0
    else:
        assert grad is not None and grad.abs() > 0


# --------------------------------------------------------------------------- missing views


def _options(name):
    return {"clip": {"views": ("a", "b")}, "anchored": {"anchor": "a"}}.get(name, {})


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_view_missing_for_whole_batch_is_finite_and_backpropagates(name):
    emb = _random_views("abc")
    with torch.no_grad():
        emb["c"][:] = float("nan")  # what a missing view holds must not matter
    present = {v: torch.full((6,), v != "c") for v in "abc"}
    loss = LOSSES[name](emb, present, 0.1, **_options(name))
    assert torch.isfinite(loss)
    loss.backward()
    for tensor in emb.values():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    assert emb["c"].grad.abs().sum() == 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_nothing_co_present_gives_connected_zero(name):
    emb = _random_views("abc")
    # every pair shares at most one row: no pair or triple can be scored
    present = {
        "a": torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.bool),
        "b": torch.tensor([0, 1, 0, 1, 0, 0], dtype=torch.bool),
        "c": torch.tensor([0, 0, 1, 0, 1, 1], dtype=torch.bool),
    }
    temperature = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    loss = LOSSES[name](emb, present, temperature, **_options(name))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() == 0 for t in emb.values())


def test_partial_presence_equals_loss_on_co_present_rows():
    emb = _random_views("abc", n=8)
    keep_c = torch.tensor([1, 1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    keep_b = torch.tensor([1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    present = {"a": torch.ones(8, dtype=torch.bool), "b": keep_b, "c": keep_c}
    both = keep_b & keep_c

    def sub(rows, *views):
        return {v: emb[v][rows] for v in views}

    got = clip_loss(emb, present, 0.2, views=("a", "c")).item()
    assert got == pytest.approx(clip_loss(sub(keep_c, "a", "c"), None, 0.2).item(), rel=1e-12)

    pair_rows = {("a", "b"): keep_b, ("a", "c"): keep_c, ("b", "c"): both}
    expected = np.mean([clip_loss(sub(r, *p), None, 0.2).item() for p, r in pair_rows.items()])
    assert all_pairs_loss(emb, present, 0.2).item() == pytest.approx(expected, rel=1e-12)

    anchored_pairs = (("a", "b"), ("a", "c"))
    expected = np.mean([clip_loss(sub(pair_rows[p], *p), None, 0.2).item() for p in anchored_pairs])
    assert anchored_loss(emb, present, 0.2, anchor="a").item() == pytest.approx(expected, rel=1e-12)

    for loss in (tensor_loss, barlow_loss):
        expected = loss(sub(both, "a", "b", "c"), None, 0.2).item()
        assert loss(emb, present, 0.2).item() == pytest.approx(expected, rel=1e-12)


def test_more_than_three_views_average_over_triples():
    emb = _random_views("abcd")
    for loss in (tensor_loss, barlow_loss):
        triples = combinations("abcd", 3)
        expected = np.mean([loss({v: emb[v] for v in t}, None, 0.2).item() for t in triples])
        assert loss(emb, None, 0.2).item() == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", ["clip", "all_pairs", "anchored", "tensor", "barlow"])
def test_aligned_embeddings_score_lower_than_shuffled(name):
    gen = torch.Generator().manual_seed(1)
    n, dim = 64, 4
    base = torch.randn(n, dim, generator=gen)
    # The three-view scores are cubic forms, not maximised by three identical vectors: the
    # TensorCLIP positive sum_d a_d**3 of a unit vector can be negative, and the 3-way Barlow
    # diagonal is a standardised third moment. Identical views score best when the TensorCLIP
    # embeddings are non-negative, and the Barlow features have skewness 1 (Gamma(4)).
    if name == "tensor":
        base = base.abs()
    if name == "barlow":
        torch.manual_seed(1)
        base = torch.distributions.Gamma(4.0, 1.0).sample((n, dim))
    aligned = {v: base + 0.05 * torch.randn(n, dim, generator=gen) for v in "abc"}
    shuffled = dict(aligned)
    shuffled["b"] = aligned["b"][torch.randperm(n, generator=gen)]
    shuffled["c"] = aligned["c"][torch.randperm(n, generator=gen)]
    opts = _options(name)
    assert LOSSES[name](aligned, None, 0.1, **opts) < LOSSES[name](shuffled, None, 0.1, **opts)
    if name == "barlow":
        two = {v: aligned[v] for v in "ab"}
        two_shuffled = {v: shuffled[v] for v in "ab"}
        assert barlow_loss(two, None, None) < barlow_loss(two_shuffled, None, None)


def test_l2_normalize_zero_vector_has_no_nan():
    x = torch.zeros(2, 3, requires_grad=True)
    y = l2_normalize(x)
    y.sum().backward()
    assert torch.equal(y, torch.zeros(2, 3)) and torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------- ContrastiveLoss


def test_temperature_is_clamped():
    criterion = ContrastiveLoss("clip", temperature=0.07, min_temperature=0.02, max_temperature=0.5)
    emb = _random_views("ab")
    with torch.no_grad():
        criterion.log_temperature.fill_(math.log(100.0))
    assert criterion.temperature == pytest.approx(0.5)
    assert criterion(emb, None).item() == pytest.approx(clip_loss(emb, None, 0.5).item(), rel=1e-6)
    with torch.no_grad():
        criterion.log_temperature.fill_(math.log(1e-6))
    assert criterion.temperature == pytest.approx(0.02)


def test_fixed_temperature_is_a_buffer_not_a_parameter():
    criterion = ContrastiveLoss("all_pairs", temperature=0.1, learn_temperature=False)
    assert list(criterion.parameters()) == []
    assert "log_temperature" in dict(criterion.named_buffers())
    assert criterion.temperature == pytest.approx(0.1)
    learned = ContrastiveLoss("all_pairs", temperature=0.1)
    assert [name for name, _ in learned.named_parameters()] == ["log_temperature"]


def test_contrastive_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="all_pairs.*anchored.*barlow.*clip.*tensor"):
        ContrastiveLoss("triplet")
    with pytest.raises(ValueError, match="anchor"):
        ContrastiveLoss("clip", anchor="structure")
    with pytest.raises(ValueError, match="outside"):
        ContrastiveLoss("clip", temperature=5.0)


def test_contrastive_loss_passes_options():
    emb = _random_views("abc")
    criterion = ContrastiveLoss("anchored", temperature=0.2, anchor="b").double()
    expected = anchored_loss(emb, None, 0.2, anchor="b").item()
    assert criterion(emb, None).item() == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- fusion


def test_concat_fusion_missing_view_contributes_zeros():
    torch.manual_seed(0)
    fusion = ConcatFusion(["xrd", "composition"], in_dim=3, out_dim=2, hidden_dim=5)
    emb = {"xrd": torch.randn(4, 3), "composition": torch.randn(4, 3)}
    present = {
        "xrd": torch.tensor([True, False, True, False]),
        "composition": torch.ones(4, dtype=torch.bool),
    }
    zeroed = {"xrd": emb["xrd"] * present["xrd"][:, None], "composition": emb["composition"]}
    expected = fusion.mlp(torch.cat([zeroed["xrd"], zeroed["composition"]], dim=1))
    garbage = dict(emb, xrd=emb["xrd"].masked_fill(~present["xrd"][:, None], float("nan")))
    out = fusion(garbage, present)
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    torch.testing.assert_close(out, expected)
    # a view absent from the dict is a missing view for every row
    only_comp = fusion({"composition": emb["composition"]}, None)
    expected = fusion.mlp(torch.cat([torch.zeros(4, 3), emb["composition"]], dim=1))
    torch.testing.assert_close(only_comp, expected)


def test_concat_fusion_order_is_fixed_by_views_not_dict_order():
    torch.manual_seed(0)
    fusion = ConcatFusion(["a", "b"], in_dim=2, out_dim=3, hidden_dim=None)
    a, b = torch.randn(5, 2), torch.randn(5, 2)
    torch.testing.assert_close(fusion({"a": a, "b": b}, None), fusion({"b": b, "a": a}, None))
    assert isinstance(fusion.mlp, torch.nn.Linear)


def test_mean_fusion_averages_unit_vectors_of_present_views():
    fusion = MeanFusion(["a", "b"])
    emb = {
        "a": torch.tensor([[3.0, 4.0], [1.0, 0.0], [2.0, 2.0]], requires_grad=True),
        "b": torch.tensor([[0.0, 2.0], [float("nan"), 1.0], [5.0, 5.0]], requires_grad=True),
    }
    present = {"a": torch.tensor([True, True, False]), "b": torch.tensor([True, False, False])}
    out = fusion(emb, present)
    expected = torch.tensor([[(0.6 + 0.0) / 2, (0.8 + 1.0) / 2], [1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert torch.isfinite(emb["a"].grad).all() and torch.isfinite(emb["b"].grad).all()
    assert emb["b"].grad[1:].abs().sum() == 0


def test_make_fusion():
    concat = make_fusion("concat", ["a", "b", "c"], dim=4, out_dim=6, hidden_dim=8, dropout=0.1)
    assert isinstance(concat, ConcatFusion) and concat.out_dim == 6
    emb = _random_views("abc", dim=4)
    assert concat({k: v.float() for k, v in emb.items()}, None).shape == (6, 6)
    mean = make_fusion("mean", ["a", "b"], dim=4)
    assert isinstance(mean, MeanFusion) and mean.out_dim == 4
    with pytest.raises(ValueError, match="concat.*mean"):
        make_fusion("attention", ["a"], dim=4)
    with pytest.raises(ValueError, match="width"):
        make_fusion("mean", ["a"], dim=4, out_dim=8)
