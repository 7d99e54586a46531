"""Periodic crystal-graph encoders: CGCNN, SchNet and DimeNet++ over a :class:`GraphBatch`.

Every encoder maps a batch of crystals to one vector per crystal: ``forward(batch)`` returns
a float32 tensor of shape ``(batch.num_graphs, out_dim)``. Edges come from the periodic
neighbour list in the batch (image offsets included), so the models see the infinite crystal,
not the atoms of one cell; each model keeps only the edges within its own ``cutoff``.

SchNet and DimeNet++ reuse PyG's building blocks (interaction, radial basis, output blocks) and
only replace the parts that assume a molecule: the radius graph (needs ``torch-cluster``), the
triplet builder (needs ``torch-sparse``) and distances computed without periodic images. The
spherical basis of DimeNet++ is computed in torch (:mod:`skmat.nn.basis`) instead of PyG's
sympy derivation, which took ~35 s per model construction.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn.models import DimeNetPlusPlus as _PygDimeNetPlusPlus
from torch_geometric.nn.models import SchNet as _PygSchNet
from torch_geometric.utils import scatter

from skmat.nn.basis import pyg_spherical_basis_replaced
from skmat.nn.graph import GraphBatch, build_triplets, nearest_edges

__all__ = [
    "CGCNN",
    "SchNet",
    "DimeNetPlusPlus",
    "GaussianExpansion",
    "make_structure_encoder",
    "flush_denormal",
]

# Atomic numbers 1..100 index the embedding tables directly (row 0 unused).
N_ELEMENTS = 101
_POOLINGS = ("mean", "sum", "max")

# exp(-x) for x above this is below 1e-13: set to exactly 0 instead of letting it underflow
# through subnormal floats, which are slow on many x86 CPUs (PyG's GaussianSmearing makes
# ~3% of its outputs subnormal on MP-20 graphs; this expansion makes none).
_EXPONENT_CAP = 30.0


@contextlib.contextmanager
def flush_denormal(enabled: bool = True) -> Iterator[None]:
    """Temporarily flush subnormal floats to zero on this thread (x86 FTZ/DAZ), then restore.

    Smooth cutoffs and radial bases can produce numbers below 1e-38, and arithmetic on them
    is slow on many x86 CPUs. The encoders here avoid producing them, so this is only a
    safety net around a training loop. The flag is per thread: torch's intra-op worker
    threads keep their own. Torch has no getter for it, so the previous state is probed.

    Examples
    --------
    >>> import torch
    >>> from skmat.nn.gnn import flush_denormal
    >>> with flush_denormal():
    ...     (torch.tensor([1e-39]) * 1.0).item()
    0.0
    """
    previous = _flush_denormal_is_on()
    torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


def _flush_denormal_is_on() -> bool:
    return bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() == 0.0)


def _pool(x: Tensor, batch: GraphBatch, pooling: str) -> Tensor:
    return scatter(x, batch.batch, dim=0, dim_size=batch.num_graphs, reduce=pooling)


def _check_pooling(pooling: str) -> None:
    if pooling not in _POOLINGS:
        raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}")


class GaussianExpansion(nn.Module):
    """Gaussians ``exp(-((d - mu_k) / width)^2)`` on evenly spaced centres in [start, stop].

    Values that would underflow into subnormal floats are set to exactly zero.

    Parameters
    ----------
    start, stop : float
        First and last centre (Å).
    n_gaussians : int
        Number of centres; ``width`` defaults to their spacing.
    width : float or None

    Examples
    --------
    >>> import torch
    >>> from skmat.nn.gnn import GaussianExpansion
    >>> GaussianExpansion(0.0, 4.0, 5)(torch.tensor([1.0])).argmax().item()
    1
    """

    def __init__(
        self, start: float, stop: float, n_gaussians: int, width: float | None = None
    ) -> None:
        super().__init__()
        centres = torch.linspace(start, stop, n_gaussians)
        spacing = (stop - start) / max(n_gaussians - 1, 1)
        self.width = float(width if width is not None else spacing)
        self.register_buffer("centres", centres)

    def forward(self, distance: Tensor) -> Tensor:
        exponent = ((distance.unsqueeze(-1) - self.centres) / self.width).square()
        inside = exponent < _EXPONENT_CAP
        return torch.exp(-exponent.clamp(max=_EXPONENT_CAP)) * inside


def _cosine_cutoff(distance: Tensor, cutoff: float) -> Tensor:
    # Messages fade to zero at the cutoff, so the output is continuous when atoms move
    # across it (and edges near the cutoff barely matter).
    return 0.5 * (torch.cos(distance * (math.pi / cutoff)) + 1.0) * (distance < cutoff)


class _GatedConvolution(nn.Module):
    """Xie & Grossman's gated graph convolution with the concatenation split per operand.

    ``W [h_i, h_j, e_ij]`` equals ``W_i h_i + W_j h_j + W_e e_ij``; projecting atoms before
    gathering them onto edges costs (atoms x width) instead of (edges x 3 width).
    """

    def __init__(self, hidden_dim: int, edge_dim: int, norm: str | None) -> None:
        super().__init__()
        self.centre = nn.Linear(hidden_dim, 2 * hidden_dim)
        self.neighbour = nn.Linear(hidden_dim, 2 * hidden_dim, bias=False)
        self.edge = nn.Linear(edge_dim, 2 * hidden_dim, bias=False)
        if norm == "layer":
            self.norm = nn.LayerNorm(hidden_dim)
        elif norm == "batch":
            self.norm = nn.BatchNorm1d(hidden_dim)
        else:
            self.norm = nn.Identity()

    def forward(
        self, h: Tensor, source: Tensor, target: Tensor, edge_attr: Tensor, envelope: Tensor
    ) -> Tensor:
        # index_select, not h[idx]: its backward is index_add_, several times faster on CPU
        # than the accumulating index_put_ behind advanced indexing.
        z = (
            self.centre(h).index_select(0, target)
            + self.neighbour(h).index_select(0, source)
            + self.edge(edge_attr)
        )
        gate, core = z.chunk(2, dim=-1)
        message = torch.sigmoid(gate) * F.softplus(core) * envelope.unsqueeze(-1)
        aggregated = torch.zeros_like(h).index_add_(0, target, message)
        return F.softplus(h + self.norm(aggregated))


class CGCNN(nn.Module):
    """Crystal Graph Convolutional Neural Network (Xie & Grossman, PRL 120, 145301, 2018).

    Atoms start from a learned embedding of their atomic number; each layer updates atom
    ``i`` with gated messages ``sigmoid(z W_f) * softplus(z W_s)`` over its periodic
    neighbours ``j``, where ``z = [h_i, h_j, gaussians(|r_ij|)]``; atom vectors are pooled
    per crystal and projected to ``out_dim``. Messages fade to zero at ``cutoff`` (cosine
    envelope) so the embedding is continuous in the atomic positions.

    Parameters
    ----------
    hidden_dim : int
        Width of the atom vectors.
    n_layers : int
        Number of graph convolutions.
    out_dim : int
        Size of the crystal embedding.
    cutoff : float
        Neighbours farther than this (Å) are ignored.
    n_gaussians : int
        Gaussians expanding the distance on [0, cutoff].
    pooling : {"mean", "sum", "max"}
        How atom vectors become a crystal vector. "mean" makes the embedding the same for a
        cell and its supercells.
    max_neighbors : int or None
        Keep only about this many nearest neighbours per atom (ties kept), as in the paper
        (12). None keeps every neighbour within ``cutoff`` (about 4x the edges on MP-20).
    norm : {"layer", "batch"} or None
        Normalisation of the aggregated messages. "layer" (default) keeps every crystal's
        embedding independent of which other crystals share its batch, unlike the paper's
        batch norm, which matters for contrastive training and for transform.

    Attributes
    ----------
    out_dim : int

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from skmat.features.graph import CrystalGraph
    >>> from skmat.nn.graph import collate_graphs
    >>> from skmat.nn.gnn import CGCNN
    >>> nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> batch = collate_graphs(CrystalGraph(cutoff=6.0).fit_transform([nacl]))
    >>> CGCNN(out_dim=16)(batch).shape
    torch.Size([1, 16])
    """

    def __init__(
        self,
        hidden_dim: int = 64,
        n_layers: int = 3,
        out_dim: int = 128,
        cutoff: float = 6.0,
        n_gaussians: int = 40,
        pooling: str = "mean",
        max_neighbors: int | None = 12,
        norm: str | None = "layer",
    ) -> None:
        super().__init__()
        _check_pooling(pooling)
        if norm not in ("layer", "batch", None):
            raise ValueError(f"norm must be 'layer', 'batch' or None, got {norm!r}")
        self.out_dim = out_dim
        self.cutoff = float(cutoff)
        self.pooling = pooling
        self.max_neighbors = max_neighbors
        self.embedding = nn.Embedding(N_ELEMENTS, hidden_dim)
        self.expansion = GaussianExpansion(0.0, cutoff, n_gaussians)
        self.convolutions = nn.ModuleList(
            _GatedConvolution(hidden_dim, n_gaussians, norm) for _ in range(n_layers)
        )
        self.head = nn.Linear(hidden_dim, out_dim)

    def forward(self, batch: GraphBatch) -> Tensor:
        vectors = batch.edge_vectors()
        distance = vectors.norm(dim=-1)
        keep = nearest_edges(batch, distance, self.cutoff, self.max_neighbors)
        source, target = batch.edge_index[0, keep], batch.edge_index[1, keep]
        distance = distance[keep]
        edge_attr = self.expansion(distance)
        envelope = _cosine_cutoff(distance, self.cutoff)
        h = self.embedding(batch.atomic_numbers)
        for convolution in self.convolutions:
            h = convolution(h, source, target, edge_attr, envelope)
        return self.head(_pool(h, batch, self.pooling))


class SchNet(_PygSchNet):
    """SchNet (Schütt et al., NeurIPS 2017) on periodic crystal graphs, from PyG's blocks.

    PyG's ``SchNet`` builds a non-periodic radius graph with ``torch-cluster``; here the
    interaction blocks are fed the batch's periodic edges instead, and the per-atom readout
    MLP ends in ``out_dim`` features that are pooled per crystal.

    Parameters
    ----------
    hidden_dim : int
        Width of the atom vectors.
    n_filters : int
        Width of the continuous filters.
    n_layers : int
        Number of interaction blocks.
    out_dim : int
        Size of the crystal embedding.
    cutoff : float
        Neighbours farther than this (Å) are ignored; filters fade to zero there.
    n_gaussians : int
        Gaussians expanding the distance on [0, cutoff].
    pooling : {"mean", "sum", "max"}
    max_neighbors : int or None
        Keep only about this many nearest neighbours per atom (ties kept).

    Attributes
    ----------
    out_dim : int

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from skmat.features.graph import CrystalGraph
    >>> from skmat.nn.graph import collate_graphs
    >>> from skmat.nn.gnn import SchNet
    >>> nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> batch = collate_graphs(CrystalGraph(cutoff=6.0).fit_transform([nacl]))
    >>> SchNet(out_dim=16)(batch).shape
    torch.Size([1, 16])
    """

    def __init__(
        self,
        hidden_dim: int = 64,
        n_filters: int = 64,
        n_layers: int = 3,
        out_dim: int = 128,
        cutoff: float = 6.0,
        n_gaussians: int = 50,
        pooling: str = "mean",
        max_neighbors: int | None = None,
    ) -> None:
        _check_pooling(pooling)
        super().__init__(
            hidden_channels=hidden_dim,
            num_filters=n_filters,
            num_interactions=n_layers,
            num_gaussians=n_gaussians,
            cutoff=cutoff,
            readout=pooling,
        )
        self.out_dim = out_dim
        self.pooling = pooling
        self.max_neighbors = max_neighbors
        # The radius graph is replaced by the batch's periodic edges.
        del self.interaction_graph
        # PyG's table stops at Z = 99 and its Gaussians underflow into subnormals.
        self.embedding = nn.Embedding(N_ELEMENTS, hidden_dim)
        self.distance_expansion = GaussianExpansion(
            0.0, cutoff, n_gaussians, width=math.sqrt(2.0) * cutoff / (n_gaussians - 1)
        )
        self.lin2 = nn.Linear(hidden_dim // 2, out_dim)
        nn.init.xavier_uniform_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)

    def forward(self, batch: GraphBatch) -> Tensor:  # type: ignore[override]
        distance = batch.edge_vectors().norm(dim=-1)
        keep = nearest_edges(batch, distance, self.cutoff, self.max_neighbors)
        edge_index, distance = batch.edge_index[:, keep], distance[keep]
        edge_attr = self.distance_expansion(distance)
        h = self.embedding(batch.atomic_numbers)
        for interaction in self.interactions:
            h = h + interaction(h, edge_index, distance, edge_attr)
        h = self.lin2(self.act(self.lin1(h)))
        return _pool(h, batch, self.pooling)


class DimeNetPlusPlus(_PygDimeNetPlusPlus):
    """DimeNet++ (Gasteiger et al., 2020) on periodic crystal graphs, from PyG's blocks.

    Distances and angles come from the periodic edge vectors; triplets ``k -> j -> i`` are
    built in pure torch (:func:`skmat.nn.graph.build_triplets`), excluding only the
    back-edge to the very same image of ``i``. The per-atom outputs of all output blocks are
    summed and pooled per crystal.

    Parameters
    ----------
    hidden_dim : int
        Width of the edge (message) vectors.
    n_blocks : int
        Number of interaction blocks.
    out_dim : int
        Size of the crystal embedding.
    cutoff : float
        Neighbours farther than this (Å) are ignored; the radial envelope vanishes there.
    num_spherical, num_radial : int
        Sizes of the spherical and radial Bessel bases.
    int_emb_size, basis_emb_size, out_emb_size : int
        Widths of the triplet interaction, basis projection and output blocks.
    pooling : {"mean", "sum", "max"}
    max_neighbors : int or None
        Keep only about this many nearest neighbours per atom (ties kept). The number of
        triplets grows with its square, so this sets the cost.

    Attributes
    ----------
    out_dim : int

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from skmat.features.graph import CrystalGraph
    >>> from skmat.nn.graph import collate_graphs
    >>> from skmat.nn.gnn import DimeNetPlusPlus
    >>> nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> batch = collate_graphs(CrystalGraph(cutoff=5.0).fit_transform([nacl]))
    >>> DimeNetPlusPlus(out_dim=16)(batch).shape
    torch.Size([1, 16])
    """

    def __init__(
        self,
        hidden_dim: int = 64,
        n_blocks: int = 3,
        out_dim: int = 128,
        cutoff: float = 5.0,
        num_spherical: int = 7,
        num_radial: int = 6,
        int_emb_size: int = 64,
        basis_emb_size: int = 8,
        out_emb_size: int = 128,
        pooling: str = "mean",
        max_neighbors: int | None = 12,
    ) -> None:
        _check_pooling(pooling)
        # PyG derives its spherical basis with sympy (~35 s at the default sizes); this
        # builds skmat.nn.basis.SphericalBasis as self.sbf instead: same values, no
        # parameters, no state-dict entries, milliseconds.
        with pyg_spherical_basis_replaced():
            super().__init__(
                hidden_channels=hidden_dim,
                out_channels=out_dim,
                num_blocks=n_blocks,
                int_emb_size=int_emb_size,
                basis_emb_size=basis_emb_size,
                out_emb_channels=out_emb_size,
                num_spherical=num_spherical,
                num_radial=num_radial,
                cutoff=cutoff,
                # PyG zero-initialises the last layer, which would leave every other weight
                # without gradient at the first step of an encoder.
                output_initializer="glorot_orthogonal",
            )
        self.out_dim = out_dim
        self.pooling = pooling
        self.max_neighbors = max_neighbors
        # PyG's table stops at Z = 94.
        self.emb.emb = nn.Embedding(N_ELEMENTS, hidden_dim)
        with torch.no_grad():
            self.emb.emb.weight.uniform_(-math.sqrt(3), math.sqrt(3))

    def forward(self, batch: GraphBatch) -> Tensor:  # type: ignore[override]
        vectors = batch.edge_vectors()
        distance = vectors.norm(dim=-1)
        keep = nearest_edges(batch, distance, self.cutoff, self.max_neighbors)
        vectors, distance = vectors[keep], distance[keep]
        source, target = batch.edge_index[0, keep], batch.edge_index[1, keep]
        idx_kj, idx_ji = build_triplets(
            torch.stack([source, target]), batch.edge_image[keep], batch.num_atoms
        )
        # Same convention as PyG's DimeNet++: the angle between r_ji and r_kj.
        v_ji, v_kj = vectors[idx_ji], vectors[idx_kj]
        cosine_part = (v_ji * v_kj).sum(dim=-1)
        sine_part = torch.linalg.cross(v_ji, v_kj).norm(dim=-1)
        angle = torch.atan2(sine_part, cosine_part)

        rbf = self.rbf(distance)
        sbf = self.sbf(distance, angle, idx_kj)
        x = self.emb(batch.atomic_numbers, rbf, target, source)
        per_atom = self.output_blocks[0](x, rbf, target, num_nodes=batch.num_atoms)
        for interaction, output in zip(self.interaction_blocks, self.output_blocks[1:]):
            x = interaction(x, rbf, sbf, idx_kj, idx_ji)
            per_atom = per_atom + output(x, rbf, target, num_nodes=batch.num_atoms)
        return _pool(per_atom, batch, self.pooling)


_ENCODERS = {"cgcnn": CGCNN, "schnet": SchNet, "dimenetpp": DimeNetPlusPlus}


def make_structure_encoder(name: str, **kwargs) -> nn.Module:
    """Build a crystal-structure encoder by name.

    Parameters
    ----------
    name : {"cgcnn", "schnet", "dimenetpp"}
    **kwargs
        Passed to the encoder's constructor (e.g. ``out_dim``, ``cutoff``).

    Returns
    -------
    nn.Module
        With ``forward(GraphBatch) -> (num_graphs, out_dim)`` and attribute ``out_dim``.

    Examples
    --------
    >>> from skmat.nn.gnn import make_structure_encoder
    >>> make_structure_encoder("cgcnn", out_dim=32).out_dim
    32
    """
    try:
        encoder = _ENCODERS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown structure encoder {name!r}; choose one of {sorted(_ENCODERS)}"
        ) from None
    return encoder(**kwargs)
