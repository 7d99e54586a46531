"""Batches of periodic crystal graphs as torch tensors, and DimeNet triplets in pure torch.

`skmat.features.graph.CrystalGraph` produces a numpy :class:`CrystalGraphData` (local atom
indices per structure, periodic image offsets per edge). :func:`collate_graphs` turns it into
one :class:`GraphBatch` with global indices; the models in :mod:`skmat.nn.gnn` consume that,
each keeping its own edges with :func:`nearest_edges` (cutoff, optional tie-aware k nearest).

PyG's ``radius_graph`` and DimeNet's triplet builder need ``torch-cluster``/``torch-sparse``,
which cannot be installed here, and know nothing about periodic images anyway, so edges carry
an image offset and triplets are built below with sorting and ``repeat_interleave``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["GraphBatch", "collate_graphs", "build_triplets", "nearest_edges"]


class GraphBatch:
    """A batch of periodic crystal graphs, with atom and edge indices global to the batch.

    Edge ``e`` goes from source (neighbour) ``j = edge_index[0, e]`` to target (centre)
    ``i = edge_index[1, e]``; the neighbour sits in the periodic image ``edge_image[e]`` of
    its cell, so the edge vector is ``pos[j] + edge_image[e] @ lattice[g] - pos[i]``.

    Parameters
    ----------
    atomic_numbers : LongTensor of shape (n_atoms,)
    pos : FloatTensor of shape (n_atoms, 3)
        Cartesian coordinates in Å.
    lattice : FloatTensor of shape (n_graphs, 3, 3)
        Rows are the lattice vectors.
    edge_index : LongTensor of shape (2, n_edges)
        Row 0 = source (neighbour j), row 1 = target (centre i), global atom indices.
    edge_image : FloatTensor of shape (n_edges, 3)
        Integer-valued image offset of the source atom (stored as float for the matmul).
    batch : LongTensor of shape (n_atoms,)
        Graph id of each atom, non-decreasing.
    num_graphs : int

    Examples
    --------
    >>> import torch
    >>> from skmat.nn.graph import GraphBatch
    >>> g = GraphBatch(atomic_numbers=torch.tensor([3]), pos=torch.zeros(1, 3),
    ...                lattice=2.0 * torch.eye(3)[None], edge_index=torch.tensor([[0], [0]]),
    ...                edge_image=torch.tensor([[1.0, 0.0, 0.0]]),
    ...                batch=torch.tensor([0]), num_graphs=1)
    >>> g.edge_vectors()
    tensor([[2., 0., 0.]])
    """

    _tensor_fields = ("atomic_numbers", "pos", "lattice", "edge_index", "edge_image", "batch")

    def __init__(
        self,
        atomic_numbers: Tensor,
        pos: Tensor,
        lattice: Tensor,
        edge_index: Tensor,
        edge_image: Tensor,
        batch: Tensor,
        num_graphs: int,
    ) -> None:
        self.atomic_numbers = atomic_numbers
        self.pos = pos
        self.lattice = lattice
        self.edge_index = edge_index
        self.edge_image = edge_image
        self.batch = batch
        self.num_graphs = int(num_graphs)

    @property
    def num_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def to(self, device: torch.device | str) -> GraphBatch:
        """Return a copy with every tensor on *device*."""
        moved = {name: getattr(self, name).to(device) for name in self._tensor_fields}
        return GraphBatch(num_graphs=self.num_graphs, **moved)

    def edge_vectors(self) -> Tensor:
        """Vectors from each centre ``i`` to its (imaged) neighbour ``j``, shape (n_edges, 3).

        Computed from ``pos`` and ``lattice`` in torch, so gradients flow to both (forces,
        stress).
        """
        source, target = self.edge_index
        cell = self.lattice[self.batch[source]]  # (E, 3, 3)
        shift = torch.bmm(self.edge_image.unsqueeze(1), cell).squeeze(1)
        return self.pos[source] + shift - self.pos[target]

    def select_edges(self, keep: Tensor) -> GraphBatch:
        """Return a batch sharing the atoms but keeping only edges ``keep`` (mask or indices)."""
        return GraphBatch(
            atomic_numbers=self.atomic_numbers,
            pos=self.pos,
            lattice=self.lattice,
            edge_index=self.edge_index[:, keep],
            edge_image=self.edge_image[keep],
            batch=self.batch,
            num_graphs=self.num_graphs,
        )

    def __repr__(self) -> str:
        return (
            f"GraphBatch(num_graphs={self.num_graphs}, num_atoms={self.num_atoms}, "
            f"num_edges={self.num_edges})"
        )


def collate_graphs(data: Any) -> GraphBatch:
    """Concatenate the graphs of a ``CrystalGraphData`` into one :class:`GraphBatch`.

    Local atom indices are shifted by each structure's atom offset, all at once (no Python
    loop over graphs).

    Parameters
    ----------
    data : CrystalGraphData
        Output of ``skmat.features.graph.CrystalGraph.transform`` (or a subset of it,
        ``data[indices]``).

    Returns
    -------
    GraphBatch
        float32 positions, lattices and image offsets; int64 indices.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from skmat.features.graph import CrystalGraph
    >>> from skmat.nn.graph import collate_graphs
    >>> nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> batch = collate_graphs(CrystalGraph(cutoff=4.0).fit_transform([nacl, nacl]))
    >>> batch.num_graphs, batch.num_atoms
    (2, 4)
    """
    num_atoms = np.asarray(data.num_atoms, dtype=np.int64)
    num_edges = np.asarray(data.num_edges, dtype=np.int64)
    num_graphs = len(num_atoms)
    graph_ids = np.arange(num_graphs, dtype=np.int64)
    atom_start = np.concatenate([[0], np.cumsum(num_atoms)[:-1]]).astype(np.int64)
    edge_graph = np.repeat(graph_ids, num_edges)
    edge_index = np.asarray(data.edge_index, dtype=np.int64) + atom_start[edge_graph]
    return GraphBatch(
        atomic_numbers=torch.as_tensor(np.asarray(data.atomic_numbers, dtype=np.int64)),
        pos=torch.as_tensor(np.asarray(data.cart_coords, dtype=np.float32)),
        lattice=torch.as_tensor(np.asarray(data.lattice, dtype=np.float32)).reshape(-1, 3, 3),
        edge_index=torch.as_tensor(edge_index).reshape(2, -1),
        edge_image=torch.as_tensor(np.asarray(data.edge_image, dtype=np.float32)).reshape(-1, 3),
        batch=torch.as_tensor(np.repeat(graph_ids, num_atoms)),
        num_graphs=num_graphs,
    )


def build_triplets(
    edge_index: Tensor, edge_image: Tensor, num_atoms: int
) -> tuple[Tensor, Tensor]:
    """All pairs of edges ``k -> j`` and ``j -> i`` sharing atom ``j``, as DimeNet needs.

    The back-edge (``k`` is the very atom ``i``, i.e. same index and opposite image offset) is
    excluded; ``k == i`` through a *different* image is a distinct neighbour and is kept.

    Parameters
    ----------
    edge_index : LongTensor of shape (2, n_edges)
        Row 0 = source, row 1 = target (global atom indices).
    edge_image : Tensor of shape (n_edges, 3)
        Image offset of each edge's source atom.
    num_atoms : int
        Number of atoms in the batch.

    Returns
    -------
    idx_kj, idx_ji : LongTensor of shape (n_triplets,)
        Edge ids: for each triplet, the edge ``k -> j`` (whose target is ``j``) and the edge
        ``j -> i`` (whose source is ``j``), grouped by ``idx_ji``.

    Examples
    --------
    >>> import torch
    >>> from skmat.nn.graph import build_triplets
    >>> # a 3-atom chain 0 - 1 - 2, both directions, all in the home cell
    >>> edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    >>> idx_kj, idx_ji = build_triplets(edges, torch.zeros(4, 3), num_atoms=3)
    >>> sorted(zip(idx_kj.tolist(), idx_ji.tolist()))
    [(0, 2), (3, 1)]
    """
    source, target = edge_index[0], edge_index[1]
    device = source.device
    # CSR over targets: the edges arriving at atom a are by_target[ptr[a]:ptr[a + 1]].
    by_target = torch.argsort(target, stable=True)
    in_degree = torch.bincount(target, minlength=num_atoms)
    ptr = torch.cumsum(in_degree, 0) - in_degree
    # Each edge j -> i pairs with every edge arriving at its source j.
    n_pairs = in_degree[source]
    idx_ji = torch.repeat_interleave(torch.arange(source.numel(), device=device), n_pairs)
    first = torch.cumsum(n_pairs, 0) - n_pairs
    rank = torch.arange(idx_ji.numel(), device=device) - first[idx_ji]
    idx_kj = by_target[ptr[source[idx_ji]] + rank]
    back_edge = (source[idx_kj] == target[idx_ji]) & (
        edge_image[idx_kj] == -edge_image[idx_ji]
    ).all(dim=1)
    keep = ~back_edge
    return idx_kj[keep], idx_ji[keep]


def nearest_edges(
    batch: GraphBatch,
    distance: Tensor,
    cutoff: float,
    max_neighbors: int | None = None,
    tie_tolerance: float = 1e-3,
) -> Tensor:
    """Indices of the edges within *cutoff*, optionally only the nearest per centre atom.

    With ``max_neighbors=k``, an edge is kept when it is no longer than the centre's k-th
    shortest edge plus *tie_tolerance*: symmetric crystals have shells of equal distances,
    and cutting a shell arbitrarily would make the graph depend on atom order and cell choice.

    Parameters
    ----------
    batch : GraphBatch
    distance : Tensor of shape (n_edges,)
        Edge lengths.
    cutoff : float
        Maximum edge length in Å.
    max_neighbors : int or None
        Keep about this many nearest neighbours per centre atom (ties kept).
    tie_tolerance : float
        Distances within this many Å of the k-th are treated as equal.

    Returns
    -------
    LongTensor
        Ids of the kept edges, in their original order.

    Examples
    --------
    >>> import torch
    >>> from skmat.nn.graph import GraphBatch
    >>> from skmat.nn.graph import nearest_edges
    >>> g = GraphBatch(torch.tensor([6, 6]), torch.zeros(2, 3), torch.eye(3)[None],
    ...                torch.tensor([[1, 1, 1], [0, 0, 0]]), torch.zeros(3, 3),
    ...                torch.tensor([0, 0]), 1)
    >>> nearest_edges(g, torch.tensor([1.0, 2.0, 3.0]), cutoff=2.5).tolist()
    [0, 1]
    >>> nearest_edges(g, torch.tensor([1.0, 2.0, 3.0]), cutoff=5.0, max_neighbors=1).tolist()
    [0]
    """
    within = distance <= cutoff
    if max_neighbors is None or distance.numel() == 0:
        return torch.nonzero(within).squeeze(1)
    target = batch.edge_index[1]
    # Sort edges by (centre, distance) with two stable sorts, then read each centre's k-th.
    far = torch.where(within, distance, torch.full_like(distance, math.inf))
    by_distance = torch.argsort(far, stable=True)
    order = by_distance[torch.argsort(target[by_distance], stable=True)]
    all_degree = torch.bincount(target, minlength=batch.num_atoms)
    within_degree = torch.bincount(target[within], minlength=batch.num_atoms)
    start = torch.cumsum(all_degree, 0) - all_degree
    # Centres without edges never get looked up: clamping only keeps the index in range.
    kth = start + (within_degree.clamp(max=max_neighbors) - 1).clamp(min=0)
    kth_distance = far[order[kth.clamp(max=max(target.numel() - 1, 0))]]
    keep = within & (distance <= kth_distance[target] + tie_tolerance)
    return torch.nonzero(keep).squeeze(1)
