"""Periodic crystal graphs: a neighbour-list featurizer and the numpy container it returns.

A crystal has no edges until a rule draws them. :class:`CrystalGraph` draws one directed edge
from every atom *j* (including periodic images) within ``cutoff`` of a centre atom *i*, keeps
the ``max_neighbors`` nearest per centre, and stores everything a periodic GNN needs (atomic
numbers, Cartesian positions, lattice, edge image offsets and lengths, optionally the
DimeNet-style edge pairs) in a :class:`CrystalGraphData`: flat numpy arrays for many graphs
at once, so that pickling, caching and taking a mini-batch stay cheap. No torch here; the
torch side turns a :class:`CrystalGraphData` into a PyG batch.

Conventions (PyG): ``edge_index[0]`` is the source, the neighbour *j*; ``edge_index[1]`` is
the target, the centre *i*; messages flow *j* -> *i*. The edge vector pointing from *i* to
*j* is ``cart_coords[j] + edge_image @ lattice - cart_coords[i]``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skmat._inputs import as_structures, row_labels, to_frame
from skmat._parallel import map_chunks
from skmat.exceptions import InvalidInputError
from skmat.features._base import BaseFeaturizer

# Distances are rounded to this many decimals (Å) before ranking neighbours: symmetry-
# equivalent neighbours differ by ~1e-15 Å of float noise, and which of them survives a
# ``max_neighbors`` cut must not depend on that noise.
_DISTANCE_DECIMALS = 8


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _gather_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for every (s, c), without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # position k of the output belongs to range r; its value is starts[r] + (k - first_k[r])
    shift = starts - _offsets(counts)[:-1]
    return np.repeat(shift, counts) + np.arange(total, dtype=np.int64)


@dataclass(frozen=True, eq=False, repr=False)
class CrystalGraphData:
    """Many periodic graphs, concatenated into flat numpy arrays.

    Graph *g* owns atoms ``atom_offsets[g]:atom_offsets[g+1]`` and edges
    ``edge_offsets[g]:edge_offsets[g+1]``. Atom indices in ``edge_index`` and edge indices in
    ``triplet_index`` are *local* to their graph, so taking a subset never renumbers them.

    Parameters
    ----------
    num_atoms : int64 array of shape (n_graphs,)
    atomic_numbers : int64 array of shape (n_atoms_total,)
    cart_coords : float32 array of shape (n_atoms_total, 3)
        Cartesian positions in Å.
    lattice : float32 array of shape (n_graphs, 3, 3)
        Lattice vectors as rows, in Å.
    num_edges : int64 array of shape (n_graphs,)
    edge_index : int64 array of shape (2, n_edges_total)
        Row 0: source = neighbour atom *j*; row 1: target = centre atom *i* (PyG's
        ``source_to_target`` flow, messages go *j* -> *i*). Within a graph, edges are sorted
        by centre, then distance, then neighbour index, then image.
    edge_image : int64 array of shape (n_edges_total, 3)
        Lattice translation of the source atom:
        ``cart_coords[j] + edge_image @ lattice - cart_coords[i]`` is the vector from *i* to
        its neighbour *j*, of length ``edge_distance``.
    edge_distance : float32 array of shape (n_edges_total,)
        Edge lengths in Å, all ``<= cutoff``.
    cutoff : float
        Neighbour-search radius (Å) the graphs were built with.
    max_neighbors : int or None
        Neighbours kept per centre atom (None: all within ``cutoff``).
    triplet_index : int64 array of shape (2, n_triplets_total) or None
        Pairs of edges (*kj*, *ji*) sharing atom *j* (target of *kj* == source of *ji*), for
        angle-aware models such as DimeNet. The pair in which *k* is *i* itself (same atom,
        image ``-edge_image[ji]``, i.e. the edge straight back) is left out. Seen from
        centre *i*, atom *k* sits at ``cart_coords[k] + (edge_image[kj] + edge_image[ji]) @
        lattice``. Within a graph, pairs are sorted by *ji*, then *kj*.
    num_triplets : int64 array of shape (n_graphs,) or None
        Present exactly when ``triplet_index`` is.

    See Also
    --------
    CrystalGraph : builds these from pymatgen structures.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> graphs = CrystalGraph(cutoff=2.6, max_neighbors=None).fit_transform([fe, fe, fe])
    >>> graphs
    CrystalGraphData(n_graphs=3, n_atoms=6, n_edges=48, cutoff=2.6, max_neighbors=None)
    >>> graphs[[2, 0]].num_edges.tolist()
    [16, 16]
    """

    num_atoms: np.ndarray
    atomic_numbers: np.ndarray
    cart_coords: np.ndarray
    lattice: np.ndarray
    num_edges: np.ndarray
    edge_index: np.ndarray
    edge_image: np.ndarray
    edge_distance: np.ndarray
    cutoff: float
    max_neighbors: int | None = None
    triplet_index: np.ndarray | None = None
    num_triplets: np.ndarray | None = None

    def __post_init__(self):
        coerce = {
            "num_atoms": np.int64,
            "atomic_numbers": np.int64,
            "cart_coords": np.float32,
            "lattice": np.float32,
            "num_edges": np.int64,
            "edge_index": np.int64,
            "edge_image": np.int64,
            "edge_distance": np.float32,
        }
        if (self.triplet_index is None) != (self.num_triplets is None):
            raise ValueError("triplet_index and num_triplets must both be given or both be None")
        if self.triplet_index is not None:
            coerce.update(triplet_index=np.int64, num_triplets=np.int64)
        for name, dtype in coerce.items():
            # frozen dataclass: the documented dtypes are enforced once, here
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))
        object.__setattr__(self, "cutoff", float(self.cutoff))
        if self.max_neighbors is not None:
            object.__setattr__(self, "max_neighbors", int(self.max_neighbors))
        self._check()

    def _check(self) -> None:
        n = self.num_atoms.shape[0]
        n_atoms = int(self.num_atoms.sum())
        n_edges = int(self.num_edges.sum())
        expected = {
            "num_atoms": (n,),
            "atomic_numbers": (n_atoms,),
            "cart_coords": (n_atoms, 3),
            "lattice": (n, 3, 3),
            "num_edges": (n,),
            "edge_index": (2, n_edges),
            "edge_image": (n_edges, 3),
            "edge_distance": (n_edges,),
        }
        if self.triplet_index is not None:
            expected["num_triplets"] = (n,)
            expected["triplet_index"] = (2, int(self.num_triplets.sum()))
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if actual != shape:
                raise ValueError(
                    f"{name} has shape {actual}, expected {shape} from num_atoms/num_edges/num_triplets"
                )
        if (self.num_atoms < 0).any() or (self.num_edges < 0).any():
            raise ValueError("num_atoms and num_edges must be non-negative")
        # local indices must stay inside their own graph
        atoms_per_edge = np.repeat(self.num_atoms, self.num_edges)
        if n_edges and ((self.edge_index < 0).any() or (self.edge_index >= atoms_per_edge).any()):
            raise ValueError("edge_index holds atom indices outside their graph (they must be local)")
        if self.triplet_index is not None and self.triplet_index.size:
            edges_per_triplet = np.repeat(self.num_edges, self.num_triplets)
            if (self.triplet_index < 0).any() or (self.triplet_index >= edges_per_triplet).any():
                raise ValueError("triplet_index holds edge indices outside their graph (they must be local)")

    @classmethod
    def _unchecked(cls, **fields) -> CrystalGraphData:
        """Build from arrays already of the right dtype and consistent (internal, fast path)."""
        self = object.__new__(cls)
        fields.setdefault("triplet_index", None)
        fields.setdefault("num_triplets", None)
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        return self

    # ------------------------------------------------------------------ sizes and offsets
    def __len__(self) -> int:
        return int(self.num_atoms.shape[0])

    @property
    def has_triplets(self) -> bool:
        """Whether the DimeNet-style edge pairs were built."""
        return self.triplet_index is not None

    @functools.cached_property
    def atom_offsets(self) -> np.ndarray:
        """int64 array (n_graphs + 1,): graph *g* owns atoms ``[atom_offsets[g], atom_offsets[g+1])``."""
        return _offsets(self.num_atoms)

    @functools.cached_property
    def edge_offsets(self) -> np.ndarray:
        """int64 array (n_graphs + 1,): graph *g* owns edges ``[edge_offsets[g], edge_offsets[g+1])``."""
        return _offsets(self.num_edges)

    @functools.cached_property
    def triplet_offsets(self) -> np.ndarray | None:
        """int64 array (n_graphs + 1,) over ``triplet_index`` columns, or None without triplets."""
        return None if self.num_triplets is None else _offsets(self.num_triplets)

    # ------------------------------------------------------------------ subsetting
    def _graph_positions(self, key: Any) -> np.ndarray:
        n = len(self)
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            if not -n <= key < n:
                raise IndexError(f"graph index {key} out of range for {n} graphs")
            return np.array([key % n], dtype=np.int64)
        if isinstance(key, slice):
            return np.arange(n, dtype=np.int64)[key]
        positions = np.asarray(key)
        if positions.dtype == bool:
            if positions.shape != (n,):
                raise IndexError(f"boolean mask has shape {positions.shape}, expected ({n},)")
            return np.flatnonzero(positions)
        if positions.size == 0:
            return np.zeros(0, dtype=np.int64)
        if positions.ndim != 1 or not np.issubdtype(positions.dtype, np.integer):
            raise IndexError(
                "graphs are selected by an int, a slice, a boolean mask or a 1-D integer array, "
                f"got {type(key).__name__} of dtype {positions.dtype}"
            )
        if (positions < -n).any() or (positions >= n).any():
            raise IndexError(f"graph indices out of range for {n} graphs")
        return np.where(positions < 0, positions + n, positions).astype(np.int64, copy=False)

    def __getitem__(self, key: Any) -> CrystalGraphData:
        """The graphs at *key* (int, slice, boolean mask or integer array), in that order."""
        graphs = self._graph_positions(key)
        num_atoms = self.num_atoms[graphs]
        num_edges = self.num_edges[graphs]
        atoms = _gather_ranges(self.atom_offsets[graphs], num_atoms)
        edges = _gather_ranges(self.edge_offsets[graphs], num_edges)
        triplet_fields = {}
        if self.num_triplets is not None:
            num_triplets = self.num_triplets[graphs]
            triplets = _gather_ranges(self.triplet_offsets[graphs], num_triplets)
            triplet_fields = {
                "triplet_index": np.take(self.triplet_index, triplets, axis=1),
                "num_triplets": num_triplets,
            }
        # np.take is several times faster than fancy indexing on these flat arrays
        return type(self)._unchecked(
            num_atoms=num_atoms,
            atomic_numbers=np.take(self.atomic_numbers, atoms),
            cart_coords=np.take(self.cart_coords, atoms, axis=0),
            lattice=np.take(self.lattice, graphs, axis=0),
            num_edges=num_edges,
            edge_index=np.take(self.edge_index, edges, axis=1),
            edge_image=np.take(self.edge_image, edges, axis=0),
            edge_distance=np.take(self.edge_distance, edges),
            cutoff=self.cutoff,
            max_neighbors=self.max_neighbors,
            **triplet_fields,
        )

    @classmethod
    def concat(cls, parts: Sequence[CrystalGraphData]) -> CrystalGraphData:
        """Concatenate graph collections built with the same ``cutoff``/``max_neighbors``.

        Examples
        --------
        >>> from pymatgen.core import Lattice, Structure
        >>> fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        >>> graphs = CrystalGraph(cutoff=3.0).fit_transform([fe, fe])
        >>> len(CrystalGraphData.concat([graphs, graphs[:1]]))
        3
        """
        parts = list(parts)
        if not parts:
            raise ValueError("concat needs at least one CrystalGraphData")
        first = parts[0]
        for part in parts[1:]:
            if (part.cutoff, part.max_neighbors) != (first.cutoff, first.max_neighbors):
                raise ValueError(
                    "cannot concatenate graphs built with different settings: "
                    f"cutoff={first.cutoff}, max_neighbors={first.max_neighbors} vs "
                    f"cutoff={part.cutoff}, max_neighbors={part.max_neighbors}"
                )
            if part.has_triplets != first.has_triplets:
                raise ValueError("cannot concatenate graphs with and without triplets")
        triplet_fields = {}
        if first.has_triplets:
            triplet_fields = {
                "triplet_index": np.concatenate([p.triplet_index for p in parts], axis=1),
                "num_triplets": np.concatenate([p.num_triplets for p in parts]),
            }
        return cls._unchecked(
            num_atoms=np.concatenate([p.num_atoms for p in parts]),
            atomic_numbers=np.concatenate([p.atomic_numbers for p in parts]),
            cart_coords=np.concatenate([p.cart_coords for p in parts]),
            lattice=np.concatenate([p.lattice for p in parts]),
            num_edges=np.concatenate([p.num_edges for p in parts]),
            edge_index=np.concatenate([p.edge_index for p in parts], axis=1),
            edge_image=np.concatenate([p.edge_image for p in parts]),
            edge_distance=np.concatenate([p.edge_distance for p in parts]),
            cutoff=first.cutoff,
            max_neighbors=first.max_neighbors,
            **triplet_fields,
        )

    # ------------------------------------------------------------------ comparison, display, pickling
    def equals(self, other: Any) -> bool:
        """True when *other* holds the same graphs (arrays compared exactly) and settings."""
        if not isinstance(other, CrystalGraphData):
            return False
        if (self.cutoff, self.max_neighbors, self.has_triplets) != (
            other.cutoff,
            other.max_neighbors,
            other.has_triplets,
        ):
            return False
        names = ["num_atoms", "atomic_numbers", "cart_coords", "lattice", "num_edges",
                 "edge_index", "edge_image", "edge_distance"]
        if self.has_triplets:
            names += ["triplet_index", "num_triplets"]
        return all(np.array_equal(getattr(self, n), getattr(other, n)) for n in names)

    def __repr__(self) -> str:
        triplets = f", n_triplets={int(self.num_triplets.sum())}" if self.has_triplets else ""
        return (
            f"{type(self).__name__}(n_graphs={len(self)}, n_atoms={self.atomic_numbers.shape[0]}, "
            f"n_edges={self.edge_distance.shape[0]}{triplets}, cutoff={self.cutoff}, "
            f"max_neighbors={self.max_neighbors})"
        )

    def __getstate__(self):
        # drop cached offsets: they are cheap to rebuild and would bloat every pickle
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_offsets")}

    def __setstate__(self, state):
        self.__dict__.update(state)


# ---------------------------------------------------------------------- graph construction
def _triplets(edge_index: np.ndarray, edge_image: np.ndarray, n_atoms: int) -> np.ndarray:
    """All (kj, ji) edge pairs with target(kj) == source(ji), minus the back-edges.

    Edges must be sorted by target (as :func:`_structure_graph` leaves them). For edge ji the
    candidates are every edge into j; the one from i itself with image ``-image(ji)`` leads
    straight back to the centre and has no angle, so it is dropped.
    """
    source, target = edge_index
    if source.size == 0:
        return np.zeros((2, 0), dtype=np.int64)
    in_degree = np.bincount(target, minlength=n_atoms)
    first_in = _offsets(in_degree)[:-1]  # edges into atom a start at first_in[a]
    n_candidates = in_degree[source]
    ji = np.repeat(np.arange(source.size, dtype=np.int64), n_candidates)
    kj = _gather_ranges(first_in[source], n_candidates)
    back_edge = (source[kj] == target[ji]) & (edge_image[kj] == -edge_image[ji]).all(axis=1)
    keep = ~back_edge
    return np.stack([kj[keep], ji[keep]])


def _structure_graph(structure, cutoff: float, max_neighbors: int | None, triplets: bool) -> tuple:
    """Neighbour graph of one ordered structure as a tuple of arrays (see CrystalGraphData)."""
    centre, neighbour, image, distance = structure.get_neighbor_list(r=cutoff)
    image = np.rint(image).astype(np.int64)
    # deterministic order: centre, distance (noise rounded away), neighbour, image
    order = np.lexsort(
        (image[:, 2], image[:, 1], image[:, 0], neighbour, np.round(distance, _DISTANCE_DECIMALS), centre)
    )
    centre, neighbour, image, distance = centre[order], neighbour[order], image[order], distance[order]
    n_atoms = len(structure)
    if max_neighbors is not None and centre.size:
        # keep the k nearest and every neighbour tied with the k-th: a cut through a shell of
        # symmetry-equivalent neighbours would make the graph depend on atom order
        per_centre = np.bincount(centre, minlength=n_atoms)
        starts = _offsets(per_centre)[:-1]
        rounded = np.round(distance, _DISTANCE_DECIMALS)
        kth = np.full(n_atoms, np.inf)
        full = per_centre > max_neighbors
        kth[full] = rounded[starts[full] + max_neighbors - 1]
        keep = rounded <= kth[centre]
        centre, neighbour, image, distance = centre[keep], neighbour[keep], image[keep], distance[keep]
    edge_index = np.stack([neighbour.astype(np.int64), centre.astype(np.int64)])
    triplet_index = _triplets(edge_index, image, n_atoms) if triplets else None
    return (
        np.array([sp.Z for sp in structure.species], dtype=np.int64),
        structure.cart_coords.astype(np.float32),
        structure.lattice.matrix.astype(np.float32),
        edge_index,
        image,
        distance.astype(np.float32),
        triplet_index,
    )


def _graph_chunk(structures: list, *, cutoff: float, max_neighbors: int | None, triplets: bool) -> list:
    return [_structure_graph(s, cutoff, max_neighbors, triplets) for s in structures]


def _assemble(pieces: list, cutoff: float, max_neighbors: int | None, triplets: bool) -> CrystalGraphData:
    if not pieces:
        return CrystalGraphData(
            num_atoms=np.zeros(0), atomic_numbers=np.zeros(0), cart_coords=np.zeros((0, 3)),
            lattice=np.zeros((0, 3, 3)), num_edges=np.zeros(0), edge_index=np.zeros((2, 0)),
            edge_image=np.zeros((0, 3)), edge_distance=np.zeros(0), cutoff=cutoff,
            max_neighbors=max_neighbors,
            triplet_index=np.zeros((2, 0)) if triplets else None,
            num_triplets=np.zeros(0) if triplets else None,
        )
    numbers, coords, lattices, edge_indices, images, distances, triplet_indices = zip(*pieces, strict=True)
    triplet_fields = {}
    if triplets:
        triplet_fields = {
            "triplet_index": np.concatenate(triplet_indices, axis=1),
            "num_triplets": np.array([t.shape[1] for t in triplet_indices], dtype=np.int64),
        }
    return CrystalGraphData._unchecked(
        num_atoms=np.array([len(z) for z in numbers], dtype=np.int64),
        atomic_numbers=np.concatenate(numbers),
        cart_coords=np.concatenate(coords),
        lattice=np.stack(lattices),
        num_edges=np.array([d.shape[0] for d in distances], dtype=np.int64),
        edge_index=np.concatenate(edge_indices, axis=1),
        edge_image=np.concatenate(images),
        edge_distance=np.concatenate(distances),
        cutoff=float(cutoff),
        max_neighbors=max_neighbors,
        **triplet_fields,
    )


class CrystalGraph(BaseFeaturizer, auto_wrap_output_keys=None):
    """Periodic radius graphs of crystal structures, for CGCNN/SchNet/DimeNet-style encoders.

    Every atom *i* of the unit cell is a node. Each periodic image of each atom *j* within
    ``cutoff`` of *i* becomes a directed edge *j* -> *i* carrying its lattice image offset and
    length (found with pymatgen's Cython ``Structure.get_neighbor_list``). With
    ``max_neighbors`` only the nearest are kept, together with every neighbour at the same
    distance as the last one kept (distances rounded to 1e-8 Å, so float noise between
    symmetry-equivalent neighbours does not decide): a coordination shell is never cut in
    two, and the graph does not depend on the order of the atoms. Edges are sorted by centre,
    distance, neighbour index and image: the result is deterministic.

    An atom with nothing within ``cutoff`` (a sparse cell or a small cutoff) simply gets no
    incoming edges; a message-passing model then sees only its own embedding. Raise
    ``cutoff`` if that matters.

    Parameters
    ----------
    cutoff : float, default=6.0
        Neighbour-search radius in Å.
    max_neighbors : int or None, default=12
        Keep the nearest ``max_neighbors`` neighbours of every centre atom (more when several
        are tied at the last distance kept); None keeps all within ``cutoff``.
    triplets : bool, default=False
        Also build the (kj, ji) edge pairs angle-aware models (DimeNet++) need.
    n_jobs : int or None, default=1
        Parallel workers (joblib).
    memory : None, str or joblib.Memory, default=None
        Cache of computed graphs, per chunk of structures.
    verbose : int, default=0
        ``> 0`` shows a progress bar.

    Attributes
    ----------
    n_features_in_ : int
        Number of input columns seen in ``fit``.
    feature_names_in_ : ndarray of str
        Input column names, when ``X`` is a DataFrame with string column names.

    See Also
    --------
    CrystalGraphData : the returned container.

    Notes
    -----
    ``transform`` returns a :class:`CrystalGraphData`, not an array: one graph per row, so
    ``get_feature_names_out`` returns the single name ``"crystal_graph"`` and
    ``set_output`` is not offered. Structures with partially occupied (disordered) sites
    are refused: such a site has no single atomic number.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
    ...                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> graphs = CrystalGraph(cutoff=3.0, max_neighbors=None).fit_transform([nacl])
    >>> graphs.num_atoms.tolist(), graphs.num_edges.tolist()
    ([8], [48])
    >>> bool(abs(graphs.edge_distance.max() - 2.82) < 1e-3)
    True
    """

    _input_view = "structure"
    _chunk_function = _graph_chunk
    _chunk_size = 64

    def __init__(
        self,
        cutoff: float = 6.0,
        max_neighbors: int | None = 12,
        triplets: bool = False,
        n_jobs: int | None = 1,
        memory=None,
        verbose: int = 0,
    ):
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.triplets = triplets
        self.n_jobs = n_jobs
        self.memory = memory
        self.verbose = verbose

    def _validate_params(self) -> None:
        if isinstance(self.cutoff, bool) or not isinstance(self.cutoff, (int, float, np.number)):
            raise ValueError(f"cutoff must be a positive number of Å, got {self.cutoff!r}")
        if not np.isfinite(self.cutoff) or self.cutoff <= 0:
            raise ValueError(f"cutoff must be a positive, finite number of Å, got {self.cutoff!r}")
        if self.max_neighbors is not None:
            if isinstance(self.max_neighbors, bool) or not isinstance(self.max_neighbors, (int, np.integer)):
                raise ValueError(f"max_neighbors must be an int >= 1 or None, got {self.max_neighbors!r}")
            if self.max_neighbors < 1:
                raise ValueError(f"max_neighbors must be >= 1 or None, got {self.max_neighbors}")
        if not isinstance(self.triplets, (bool, np.bool_)):
            raise ValueError(f"triplets must be True or False, got {self.triplets!r}")

    def _chunk_kwargs(self) -> dict:
        return {
            "cutoff": float(self.cutoff),
            "max_neighbors": None if self.max_neighbors is None else int(self.max_neighbors),
            "triplets": bool(self.triplets),
        }

    def _items(self, X: Any) -> list:
        structures = as_structures(X)
        frame = to_frame(X, default_column="structure")
        view = "structure" if "structure" in frame.columns or "cif" not in frame.columns else "cif"
        for label, structure in zip(row_labels(frame), structures, strict=True):
            if not structure.is_ordered:
                raise InvalidInputError(
                    "structure has partially occupied (disordered) sites; a graph node needs one "
                    "element per site (order the structure first, e.g. with "
                    "pymatgen's OrderDisorderedStructureTransformation)",
                    row=label,
                    view=view,
                )
        return structures

    def transform(self, X: Any) -> CrystalGraphData:
        """Build the neighbour graph of every row of *X*.

        Parameters
        ----------
        X : DataFrame or list of Structure / CIF strings
            A ``structure`` (or ``cif``) column, one material per row.

        Returns
        -------
        CrystalGraphData
            One graph per row, in row order.
        """
        self._validate_params()  # stateless: no fit needed, only valid settings
        kwargs = self._chunk_kwargs()
        pieces = map_chunks(
            _graph_chunk,
            self._items(X),
            kwargs=kwargs,
            n_jobs=self.n_jobs,
            chunk_size=self._chunk_size,
            verbose=self.verbose,
            desc=type(self).__name__,
            memory=self.memory,
        )
        return _assemble(pieces, **kwargs)

    def fit_transform(self, X: Any, y: Any = None) -> CrystalGraphData:
        """``fit(X).transform(X)``: see :meth:`transform`."""
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The single output name ``"crystal_graph"``: each row becomes one graph object.

        A graph has no fixed-length feature vector, so there are no per-feature names; the
        name exists so that tools listing a transformer's outputs see one column per row.
        """
        return np.asarray(["crystal_graph"], dtype=object)
