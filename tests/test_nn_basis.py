"""The torch spherical basis against scipy (float64) and PyG's sympy-built layer."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from scipy.special import eval_legendre, spherical_jn
from torch_geometric.nn.models import DimeNetPlusPlus as PygDimeNetPlusPlus
from torch_geometric.nn.models import dimenet as pyg_dimenet
from torch_geometric.nn.models.dimenet_utils import Jn_zeros

from skmat.features.graph import CrystalGraph
from skmat.nn.basis import (
    SphericalBasis,
    legendre_polynomials,
    pyg_spherical_basis_replaced,
    spherical_bessel,
    spherical_bessel_zeros,
)
from skmat.nn.gnn import DimeNetPlusPlus
from skmat.nn.graph import collate_graphs

# PyG's sympy derivation takes ~1 s at this size (~35 s at the default 7 x 6).
SMALL = dict(num_spherical=3, num_radial=3)
CUTOFF = 4.0
TINY_MODEL = dict(hidden_dim=16, n_blocks=2, out_dim=8, cutoff=CUTOFF, int_emb_size=8,
                  basis_emb_size=4, out_emb_size=16, **SMALL)


@pytest.fixture(scope="module")
def pyg_layer():
    return pyg_dimenet.SphericalBasisLayer(cutoff=CUTOFF, **SMALL)


def random_triplets(n_edges, n_triplets, low, seed=0):
    """Distances uniform in [low * cutoff, cutoff), angles in [0, pi], plus the edge cases."""
    g = torch.Generator().manual_seed(seed)
    dist = CUTOFF * (low + (1 - low) * torch.rand(n_edges, generator=g))
    angle = torch.pi * torch.rand(n_triplets, generator=g)
    angle[:2] = torch.tensor([0.0, torch.pi])
    idx_kj = torch.randint(0, n_edges, (n_triplets,), generator=g)
    return dist, angle, idx_kj


def scipy_basis(basis, dist, angle, idx_kj):
    """The DimeNet basis in float64 from scipy's j_l and P_l, independently of basis.py."""
    d = dist.double().numpy()[:, None, None] / basis.cutoff
    zeros = basis.bessel_zeros.double().numpy()
    orders = np.arange(basis.num_spherical)[:, None]
    p = basis.envelope.p
    a, b, c = basis.envelope.a, basis.envelope.b, basis.envelope.c
    envelope = (1 / d + a * d ** (p - 1) + b * d**p + c * d ** (p + 1)) * (d < 1)
    normalizer = 1 / np.sqrt(0.5 * spherical_jn(orders + 1, zeros) ** 2)
    radial = envelope * normalizer * spherical_jn(orders, zeros * d)
    cos = np.cos(angle.double().numpy())[:, None]
    degrees = np.arange(basis.num_spherical)
    angular = np.sqrt((2 * degrees + 1) / (4 * np.pi)) * eval_legendre(degrees, cos)
    out = radial[idx_kj.numpy()] * angular[:, :, None]
    return torch.from_numpy(out.reshape(len(out), -1))


def test_zeros_are_the_roots_pyg_finds():
    zeros = spherical_bessel_zeros(7, 6)
    orders = np.arange(7)[:, None]
    assert np.abs(spherical_jn(orders, zeros)).max() < 1e-12
    assert (np.diff(zeros, axis=1) > 0).all()
    # interlacing: the n-th zero of j_l lies between the n-th and (n+1)-th of j_{l-1}
    assert (zeros[1:, :-1] > zeros[:-1, :-1]).all() and (zeros[1:, :-1] < zeros[:-1, 1:]).all()
    np.testing.assert_allclose(zeros, Jn_zeros(7, 6), rtol=1e-6)


@pytest.mark.parametrize("order", range(7))
def test_bessel_float32_matches_scipy_including_small_x(order):
    # Every argument z_{l,n} * d with d in (0, 1] for the default 7 x 6 basis.
    x = np.linspace(0.0, 30.0, 30001)
    ours = spherical_bessel(torch.tensor(x, dtype=torch.float32), order).double().numpy()
    np.testing.assert_allclose(ours, spherical_jn(order, x), rtol=0, atol=3e-7)
    ours64 = spherical_bessel(torch.tensor(x), order).numpy()
    np.testing.assert_allclose(ours64, spherical_jn(order, x), rtol=0, atol=1e-13)


def test_legendre_matches_scipy():
    x = np.linspace(-1.0, 1.0, 101)
    ours = legendre_polynomials(torch.tensor(x), 7).numpy()
    np.testing.assert_allclose(ours, eval_legendre(np.arange(7), x[:, None]), atol=1e-13)


def test_matches_pyg_sympy_layer(pyg_layer):
    # Above d = 0.25 PyG's float32 closed forms are accurate; below they cancel (see the
    # next test), so equality with PyG is only meaningful here.
    ours = SphericalBasis(cutoff=CUTOFF, **SMALL)
    dist, angle, idx_kj = random_triplets(2000, 5000, low=0.25)
    expected = pyg_layer(dist, angle, idx_kj)
    got = ours(dist, angle, idx_kj)
    assert got.shape == expected.shape == (5000, 9)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes", [SMALL, dict(num_spherical=7, num_radial=6)])
def test_matches_float64_scipy_down_to_short_distances(sizes):
    basis = SphericalBasis(cutoff=CUTOFF, **sizes)
    dist, angle, idx_kj = random_triplets(2000, 5000, low=0.01, seed=1)
    expected = scipy_basis(basis, dist, angle, idx_kj)
    got = basis(dist, angle, idx_kj).double()
    # The row's scale (envelope ~ cutoff / dist, normalisers up to ~35) times float32
    # rounding of the argument z * d, which moves j_l(z d) by ~ eps * z: ~6e-6 at worst.
    scale = expected.abs().amax(dim=1, keepdim=True).clamp(min=1.0)
    assert ((got - expected).abs() / scale).max() < 2e-5


def test_gradients_finite_at_the_edges_of_the_domain():
    basis = SphericalBasis(cutoff=CUTOFF, num_spherical=7, num_radial=6)
    dist = torch.tensor([1e-4, 1e-2, 0.5, 2.0, CUTOFF * 0.999, CUTOFF], requires_grad=True)
    angle = torch.tensor([0.0, 1e-6, 1.0, torch.pi - 1e-6, torch.pi, 2.0], requires_grad=True)
    out = basis(dist, angle, torch.arange(6))
    grad_dist, grad_angle = torch.autograd.grad(out.sum(), (dist, angle))
    assert torch.isfinite(out).all()
    assert torch.isfinite(grad_dist).all() and torch.isfinite(grad_angle).all()
    assert (out[-1] == 0).all()  # the envelope vanishes at the cutoff


def test_gradients_are_correct_across_the_series_switch():
    basis = SphericalBasis(cutoff=1.0, num_spherical=7, num_radial=2).double()
    # d * z_{l,n} crosses l + 1 (the series/recurrence switch) for several orders here
    dist = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8], dtype=torch.float64,
                        requires_grad=True)
    angle = torch.linspace(0.1, 3.0, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda d, a: basis(d, a, torch.arange(7)), (dist, angle), fast_mode=True
    )


def test_follows_module_dtype_and_has_no_state():
    basis = SphericalBasis(cutoff=CUTOFF, **SMALL)
    assert basis.state_dict() == {} and not list(basis.parameters())
    dist, angle, idx_kj = random_triplets(10, 20, low=0.2)
    assert basis(dist, angle, idx_kj).dtype == torch.float32
    assert basis.double()(dist.double(), angle.double(), idx_kj).dtype == torch.float64


def test_dimenetpp_builds_fast_with_the_torch_basis():
    start = time.perf_counter()
    model = DimeNetPlusPlus()
    elapsed = time.perf_counter() - start
    assert isinstance(model.sbf, SphericalBasis)
    assert (model.sbf.num_spherical, model.sbf.num_radial) == (7, 6)
    assert elapsed < 10.0  # ~0.1 s; PyG's sympy layer alone took ~35 s
    assert pyg_dimenet.SphericalBasisLayer is not SphericalBasis  # restored


def test_swap_is_undone_when_the_constructor_fails():
    original = pyg_dimenet.SphericalBasisLayer
    with pytest.raises(ValueError, match="num_spherical"):
        DimeNetPlusPlus(num_spherical=1)
    assert pyg_dimenet.SphericalBasisLayer is original
    with pyg_spherical_basis_replaced():
        assert pyg_dimenet.SphericalBasisLayer is SphericalBasis
    assert pyg_dimenet.SphericalBasisLayer is original


def test_dimenetpp_weights_and_outputs_unchanged(pyg_layer, monkeypatch):
    torch.manual_seed(0)
    ours = DimeNetPlusPlus(**TINY_MODEL)
    # Reference: the unpatched subclass with PyG's own (already derived) layer as sbf.
    monkeypatch.setattr(pyg_dimenet, "SphericalBasisLayer", lambda *args, **kwargs: pyg_layer)
    monkeypatch.setattr("skmat.nn.gnn.pyg_spherical_basis_replaced", contextlib.nullcontext)
    torch.manual_seed(0)
    reference = DimeNetPlusPlus(**TINY_MODEL)
    assert reference.sbf is pyg_layer
    # same keys and values: the swap neither adds state nor shifts the random stream
    assert ours.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    ours.load_state_dict(reference.state_dict())  # strict: old checkpoints still load

    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    perovskite = Structure(Lattice.cubic(3.9), ["Sr", "Ti", "O", "O", "O"],
                           [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5],
                            [0, 0.5, 0.5]])
    batch = collate_graphs(CrystalGraph(cutoff=5.0).fit_transform([nacl, perovskite]))
    torch.testing.assert_close(ours(batch), reference(batch), rtol=1e-5, atol=1e-6)
