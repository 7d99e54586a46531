"""DimeNet's spherical (angle x distance) basis, evaluated directly in torch.

PyG's :class:`torch_geometric.nn.models.dimenet.SphericalBasisLayer` derives every basis
function symbolically with sympy when it is constructed (about 35 s for the default
``num_spherical=7, num_radial=6``), then calls the lambdified closed forms. The functions are
standard ones, so :class:`SphericalBasis` evaluates them numerically instead: the same call
signature and output, built in milliseconds.

Basis function ``(l, n)`` of a triplet ``k -> j -> i`` with distance ``d = |r_kj| / cutoff``
and angle ``theta`` is

    a_{l,n}(d, theta) = u(d) * j_l(z_{l,n} d) / sqrt(j_{l+1}(z_{l,n})^2 / 2) * Y_l^0(theta)

with ``j_l`` the spherical Bessel function of the first kind, ``z_{l,n}`` its ``n``-th
positive zero, ``u`` the polynomial envelope of DimeNet (Gasteiger et al., 2020, eq. 8) and
``Y_l^0(theta) = sqrt((2l + 1) / (4 pi)) P_l(cos theta)`` the real spherical harmonic of order
``m = 0``.

Numerics of ``j_l`` in float32: the closed forms that sympy produces are the upward recurrence
``j_{l+1} = (2l + 1) / x j_l - j_{l-1}`` written out, and they cancel catastrophically for
``x < l``: at ``x = 1.5`` the float32 error of ``j_6`` is as large as ``j_6`` itself. After the
normaliser (up to ~35) and the envelope (~1 / d) PyG's default 7 x 6 basis is off by 1.7e-3
for ``d >= 0.2`` and by orders of magnitude for ``d`` near 0.01 (very short bonds).
Measured against scipy in float64 on a fine grid, the float32 upward recurrence has an
absolute error below 1.1e-7 for ``x >= l + 1`` (every ``l <= 6``), while the Maclaurin series
of ``j_l`` (Horner form) stays below 1.6e-7 for ``x < l + 1``. So each order uses the series
below ``x = l + 1`` and the recurrence above: the float32 error of ``j_0 .. j_6`` is below
1.6e-7 on ``[0, 30]`` (float64: below 5e-16), and it grows slowly for higher orders
(1.3e-6 at ``l = 12``). Both branches are evaluated on clamped arguments, so neither
produces an inf/nan whose gradient could leak through :func:`torch.where`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator

import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import spherical_jn
from torch import Tensor, nn
from torch_geometric.nn.models import dimenet as _pyg_dimenet

__all__ = [
    "SphericalBasis",
    "legendre_polynomials",
    "pyg_spherical_basis_replaced",
    "spherical_bessel",
    "spherical_bessel_zeros",
]


def _series_terms(order: int) -> int:
    # Below x = l + 1 the series' terms shrink by ~(l+1)^2 / (2k (2l + 2k + 1)) each, so
    # 16 + l terms put the truncation error under float64 rounding (measured for l <= 12).
    return 16 + order


def spherical_bessel_zeros(num_orders: int, num_zeros: int) -> np.ndarray:
    """First ``num_zeros`` positive zeros of ``j_0`` to ``j_{num_orders - 1}``, in float64.

    The zeros of ``j_l`` and ``j_{l+1}`` interlace, so each zero of ``j_{l+1}`` is bracketed
    by two consecutive zeros of ``j_l``; starting from ``j_0``'s zeros ``n pi``, every order
    needs one zero fewer than the previous one to keep ``num_zeros`` for the last order.

    Parameters
    ----------
    num_orders : int
        Number of orders ``l = 0 .. num_orders - 1``.
    num_zeros : int
        Number of zeros per order.

    Returns
    -------
    ndarray of shape (num_orders, num_zeros)
        ``zeros[l, n]`` is the ``(n + 1)``-th positive zero of ``j_l``.

    Examples
    --------
    >>> from skmat.nn.basis import spherical_bessel_zeros
    >>> spherical_bessel_zeros(2, 2).round(4)
    array([[3.1416, 6.2832],
           [4.4934, 7.7253]])
    """
    zeros = np.zeros((num_orders, num_zeros))
    brackets = np.pi * np.arange(1, num_zeros + num_orders)
    zeros[0] = brackets[:num_zeros]
    for order in range(1, num_orders):
        brackets = np.array([
            brentq(lambda x: spherical_jn(order, x), low, high, xtol=1e-15)
            for low, high in zip(brackets[:-1], brackets[1:])
        ])
        zeros[order] = brackets[:num_zeros]
    return zeros


def _bessel_series(x: Tensor, order: int) -> Tensor:
    # j_l(x) = x^l / (2l+1)!! * sum_k (-x^2/2)^k / (k! (2l+3)(2l+5)...(2l+2k+1)), by Horner.
    u = -0.5 * x * x
    total = torch.ones_like(x)
    for k in range(_series_terms(order), 0, -1):
        total = 1.0 + total * u / (k * (2 * order + 2 * k + 1))
    double_factorial = math.prod(range(1, 2 * order + 2, 2))
    return x.pow(order) / double_factorial * total


def _bessel_upward(x: Tensor, order: int) -> Tensor:
    sin, cos = torch.sin(x), torch.cos(x)
    previous, current = sin / x, sin / (x * x) - cos / x
    if order == 0:
        return previous
    for ell in range(1, order):
        previous, current = current, (2 * ell + 1) / x * current - previous
    return current


def spherical_bessel(x: Tensor, order: int) -> Tensor:
    """Spherical Bessel function of the first kind ``j_order(x)``, differentiable, ``x >= 0``.

    Uses the Maclaurin series for ``x < order + 1`` and the upward recurrence from
    ``j_0 = sin x / x`` otherwise (see the module docstring for the accuracy of each).

    Parameters
    ----------
    x : Tensor
        Non-negative arguments, any shape.
    order : int
        ``l >= 0``.

    Returns
    -------
    Tensor
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> import torch
    >>> from skmat.nn.basis import spherical_bessel
    >>> spherical_bessel(torch.tensor([0.0, 3.0]), 1)
    tensor([0.0000, 0.3457])
    """
    threshold = float(order + 1)
    below = x < threshold
    series = _bessel_series(torch.clamp(x, max=threshold), order)
    upward = _bessel_upward(torch.clamp(x, min=threshold), order)
    return torch.where(below, series, upward)


def legendre_polynomials(x: Tensor, num_degrees: int) -> Tensor:
    """Legendre polynomials ``P_0`` to ``P_{num_degrees - 1}`` at ``x``, by Bonnet's recurrence.

    Parameters
    ----------
    x : Tensor of shape (n,)
    num_degrees : int

    Returns
    -------
    Tensor of shape (n, num_degrees)

    Examples
    --------
    >>> import torch
    >>> from skmat.nn.basis import legendre_polynomials
    >>> legendre_polynomials(torch.tensor([0.5]), 3)
    tensor([[ 1.0000,  0.5000, -0.1250]])
    """
    polynomials = [torch.ones_like(x), x]
    for degree in range(2, num_degrees):
        polynomials.append(
            ((2 * degree - 1) * x * polynomials[-1] - (degree - 1) * polynomials[-2]) / degree
        )
    return torch.stack(polynomials[:num_degrees], dim=-1)


class SphericalBasis(nn.Module):
    """DimeNet's 2D spherical Fourier-Bessel basis, a drop-in for PyG's ``SphericalBasisLayer``.

    Same constructor arguments and ``forward(dist, angle, idx_kj)`` as
    :class:`torch_geometric.nn.models.dimenet.SphericalBasisLayer`, same output (to float32
    rounding, and more accurate for short distances), but the basis is evaluated numerically
    rather than derived with sympy, so construction takes milliseconds instead of ~35 s.
    The formula and the numerics are described in :mod:`skmat.nn.basis`.

    Parameters
    ----------
    num_spherical : int
        Number of angular orders ``l = 0 .. num_spherical - 1``.
    num_radial : int
        Number of radial functions (Bessel zeros) per order.
    cutoff : float
        Distances are divided by this; the envelope vanishes at 1.
    envelope_exponent : int
        Exponent ``p - 1`` of DimeNet's polynomial envelope.

    Attributes
    ----------
    bessel_zeros : Tensor of shape (num_spherical, num_radial)
        ``z_{l,n}``, a non-persistent buffer (recomputed, not saved: the state dict stays
        the same as PyG's, which has no entries for this layer).
    bessel_normalizers : Tensor of shape (num_spherical, num_radial)
        ``1 / sqrt(j_{l+1}(z_{l,n})^2 / 2)``, non-persistent.
    harmonic_prefactors : Tensor of shape (num_spherical,)
        ``sqrt((2l + 1) / (4 pi))``, non-persistent.

    Examples
    --------
    >>> import torch
    >>> from skmat.nn.basis import SphericalBasis
    >>> basis = SphericalBasis(num_spherical=3, num_radial=2, cutoff=5.0)
    >>> dist = torch.tensor([1.0, 2.0])
    >>> angle = torch.tensor([0.3, 1.2, 2.5])
    >>> basis(dist, angle, idx_kj=torch.tensor([0, 1, 1])).shape
    torch.Size([3, 6])
    """

    def __init__(
        self,
        num_spherical: int,
        num_radial: int,
        cutoff: float = 5.0,
        envelope_exponent: int = 5,
    ) -> None:
        super().__init__()
        self.num_spherical = num_spherical
        self.num_radial = num_radial
        self.cutoff = cutoff
        self.envelope = _pyg_dimenet.Envelope(envelope_exponent)

        zeros = spherical_bessel_zeros(num_spherical, num_radial)
        orders = np.arange(num_spherical)[:, None]
        normalizers = 1.0 / np.sqrt(0.5 * spherical_jn(orders + 1, zeros) ** 2)
        prefactors = np.sqrt((2 * np.arange(num_spherical) + 1) / (4 * np.pi))
        dtype = torch.get_default_dtype()
        self.register_buffer("bessel_zeros", torch.tensor(zeros, dtype=dtype), persistent=False)
        self.register_buffer(
            "bessel_normalizers", torch.tensor(normalizers, dtype=dtype), persistent=False
        )
        self.register_buffer(
            "harmonic_prefactors", torch.tensor(prefactors, dtype=dtype), persistent=False
        )

    def forward(self, dist: Tensor, angle: Tensor, idx_kj: Tensor) -> Tensor:
        """Basis of every triplet.

        Parameters
        ----------
        dist : Tensor of shape (n_edges,)
            Edge lengths, in the units of ``cutoff``.
        angle : Tensor of shape (n_triplets,)
            Angle in ``[0, pi]`` at the centre atom of each triplet.
        idx_kj : LongTensor of shape (n_triplets,)
            The edge whose length enters each triplet's radial part.

        Returns
        -------
        Tensor of shape (n_triplets, num_spherical * num_radial)
            Column ``l * num_radial + n`` holds basis function ``(l, n)``, as in PyG.
        """
        scaled = (dist / self.cutoff).unsqueeze(-1)  # (n_edges, 1)
        radial = torch.stack(
            [
                spherical_bessel(scaled * self.bessel_zeros[order], order)
                for order in range(self.num_spherical)
            ],
            dim=1,
        )  # (n_edges, num_spherical, num_radial)
        radial = self.envelope(scaled).unsqueeze(-1) * self.bessel_normalizers * radial
        angular = legendre_polynomials(torch.cos(angle), self.num_spherical)
        angular = angular * self.harmonic_prefactors  # (n_triplets, num_spherical)
        basis = radial[idx_kj] * angular.unsqueeze(-1)
        return basis.reshape(-1, self.num_spherical * self.num_radial)

    def extra_repr(self) -> str:
        return (
            f"num_spherical={self.num_spherical}, num_radial={self.num_radial}, "
            f"cutoff={self.cutoff}"
        )


_PYG_LAYER_SWAP = threading.Lock()


@contextlib.contextmanager
def pyg_spherical_basis_replaced() -> Iterator[None]:
    """Make PyG's DimeNet / DimeNet++ constructors build a :class:`SphericalBasis`.

    PyG's ``DimeNet.__init__`` looks ``SphericalBasisLayer`` up in its module's globals, so
    rebinding that name for the duration of ``super().__init__`` skips the sympy derivation
    without copying PyG's constructor. The substitute computes the same basis, so a PyG model
    built concurrently on another thread is still correct; the lock only keeps two
    overlapping swaps from "restoring" each other's substitute.

    Examples
    --------
    >>> from torch_geometric.nn.models import DimeNetPlusPlus
    >>> from skmat.nn.basis import SphericalBasis, pyg_spherical_basis_replaced
    >>> with pyg_spherical_basis_replaced():
    ...     model = DimeNetPlusPlus(8, 1, 1, 4, 4, 8, 7, 6)
    >>> isinstance(model.sbf, SphericalBasis)
    True
    """
    with _PYG_LAYER_SWAP:
        original = _pyg_dimenet.SphericalBasisLayer
        _pyg_dimenet.SphericalBasisLayer = SphericalBasis
        try:
            yield
        finally:
            _pyg_dimenet.SphericalBasisLayer = original
