"""CrystalGraph / CrystalGraphData on real structures (pymatgen's bundled ones and MP-20 val)."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from sklearn.base import clone

from skmat.exceptions import InvalidInputError
from skmat.features.graph import CrystalGraph, CrystalGraphData


@pytest.fixture(scope="module")
def ordered_bundled(bundled_structures):
    return [s for s in bundled_structures if s.is_ordered]


@pytest.fixture(scope="module")
def mp20_structures(mp20_val_rows):
    return list(mp20_val_rows["structure"][:60])


def _edge_vectors(graphs: CrystalGraphData) -> np.ndarray:
    """i -> j vectors recomputed from the stored positions, images and lattices (float64)."""
    graph_of_edge = np.repeat(np.arange(len(graphs)), graphs.num_edges)
    atom_base = np.repeat(graphs.atom_offsets[:-1], graphs.num_edges)
    source = graphs.edge_index[0] + atom_base
    target = graphs.edge_index[1] + atom_base
    cart = graphs.cart_coords.astype(np.float64)
    lattice = graphs.lattice.astype(np.float64)[graph_of_edge]
    shift = np.einsum("ek,ekl->el", graphs.edge_image.astype(np.float64), lattice)
    return cart[source] + shift - cart[target]


def _per_centre_counts(graphs: CrystalGraphData) -> np.ndarray:
    atom_base = np.repeat(graphs.atom_offsets[:-1], graphs.num_edges)
    return np.bincount(graphs.edge_index[1] + atom_base, minlength=int(graphs.num_atoms.sum()))


@pytest.mark.parametrize("max_neighbors", [12, None])
def test_edges_are_consistent_and_within_cutoff(mp20_structures, ordered_bundled, max_neighbors):
    structures = mp20_structures + ordered_bundled
    graphs = CrystalGraph(cutoff=5.0, max_neighbors=max_neighbors).fit_transform(structures)
    assert len(graphs) == len(structures)
    assert graphs.num_atoms.tolist() == [len(s) for s in structures]
    assert graphs.atomic_numbers.tolist() == [z for s in structures for z in s.atomic_numbers]
    for name, dtype in [("num_atoms", np.int64), ("atomic_numbers", np.int64), ("cart_coords", np.float32),
                        ("lattice", np.float32), ("num_edges", np.int64), ("edge_index", np.int64),
                        ("edge_image", np.int64), ("edge_distance", np.float32)]:
        assert getattr(graphs, name).dtype == dtype, name
    lengths = np.linalg.norm(_edge_vectors(graphs), axis=1)
    np.testing.assert_allclose(lengths, graphs.edge_distance, atol=1e-4)
    assert graphs.edge_distance.max() <= 5.0 + 1e-5
    assert graphs.edge_distance.min() > 0.5  # no self edges, no overlapping atoms in real crystals
    counts = _per_centre_counts(graphs)
    if max_neighbors is not None:
        # more than k only when the extra neighbours tie the k-th distance
        target_global = graphs.edge_index[1] + np.repeat(graphs.atom_offsets[:-1], graphs.num_edges)
        for centre in np.flatnonzero(counts > max_neighbors):
            distances = np.sort(graphs.edge_distance[target_global == centre])
            np.testing.assert_allclose(distances[max_neighbors - 1 :], distances[max_neighbors - 1], atol=1e-6)
    # local indices: every endpoint is an atom of its own graph
    atoms_per_edge = np.repeat(graphs.num_atoms, graphs.num_edges)
    assert (graphs.edge_index >= 0).all() and (graphs.edge_index < atoms_per_edge).all()


def test_max_neighbors_keeps_the_nearest(mp20_structures):
    structure = max(mp20_structures[:30], key=len)  # several centres, many neighbours each
    k, cutoff = 8, 6.0
    graphs = CrystalGraph(cutoff=cutoff, max_neighbors=k).fit_transform([structure])
    source, target = graphs.edge_index
    for i, site in enumerate(structure):
        reference = sorted(structure.get_neighbors(site, cutoff), key=lambda n: n.nn_distance)
        kept = graphs.edge_distance[target == i].astype(np.float64)
        kth = reference[k - 1].nn_distance
        expected = np.array([n.nn_distance for n in reference if n.nn_distance <= kth + 1e-8])
        np.testing.assert_allclose(kept, expected, atol=1e-4)
        # every neighbour strictly closer than the k-th distance must be among the kept ones
        strictly_closer = {
            (n.index, tuple(np.rint(n.image).astype(int))) for n in reference if n.nn_distance < kth - 1e-6
        }
        images = graphs.edge_image[target == i].tolist()
        kept_pairs = {(int(j), tuple(img)) for j, img in zip(source[target == i], images, strict=True)}
        assert strictly_closer <= kept_pairs


def test_max_neighbors_only_truncates(mp20_structures):
    full = CrystalGraph(cutoff=4.5, max_neighbors=None).fit_transform(mp20_structures)
    cut = CrystalGraph(cutoff=4.5, max_neighbors=6).fit_transform(mp20_structures)
    cut_counts, full_counts = _per_centre_counts(cut), _per_centre_counts(full)
    assert (cut_counts >= np.minimum(full_counts, 6)).all() and (cut_counts <= full_counts).all()


def test_bcc_coordination_shells(bundled_structures):
    a = 2.87
    fe = Structure.from_spacegroup("Im-3m", Lattice.cubic(a), ["Fe"], [[0, 0, 0]])
    he = next(s for s in bundled_structures if s.composition.reduced_formula == "He")  # primitive bcc cell
    a_he = he.lattice.abc[0] * 2 / np.sqrt(3)
    for structure, lattice_constant in [(fe, a), (he, a_he)]:
        first = CrystalGraph(cutoff=0.95 * lattice_constant, max_neighbors=None).fit_transform([structure])
        assert (_per_centre_counts(first) == 8).all()
        np.testing.assert_allclose(first.edge_distance, lattice_constant * np.sqrt(3) / 2, rtol=1e-5)
        two_shells = CrystalGraph(cutoff=1.05 * lattice_constant, max_neighbors=None).fit_transform([structure])
        assert (_per_centre_counts(two_shells) == 14).all()
        # max_neighbors=8 cuts exactly at the first shell
        nearest = CrystalGraph(cutoff=1.05 * lattice_constant, max_neighbors=8).fit_transform([structure])
        np.testing.assert_allclose(nearest.edge_distance, lattice_constant * np.sqrt(3) / 2, rtol=1e-5)


def test_rock_salt_octahedra():
    a = 5.64
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    graphs = CrystalGraph(cutoff=0.6 * a, max_neighbors=None).fit_transform([nacl])
    assert (_per_centre_counts(graphs) == 6).all()
    np.testing.assert_allclose(graphs.edge_distance, a / 2, rtol=1e-5)
    z = graphs.atomic_numbers
    assert (z[graphs.edge_index[0]] != z[graphs.edge_index[1]]).all()  # every bond is Na-Cl


def test_a_tied_shell_is_never_cut():
    # 12 symmetry-equivalent fcc neighbours and k=5: all 12 are kept, whatever the float noise
    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]])
    shifted = Structure(cu.lattice, cu.species, cu.frac_coords + 1.0)  # same crystal, coordinates off by a cell
    a = CrystalGraph(cutoff=3.0, max_neighbors=5).fit_transform([cu, cu])
    b = CrystalGraph(cutoff=3.0, max_neighbors=5).fit_transform([shifted])
    assert a[0].equals(a[1])
    assert (_per_centre_counts(a[0]) == 12).all()
    # edges are ordered by neighbour index, then image, within a distance
    assert (np.diff(a[0].edge_index[0].reshape(4, 12), axis=1) >= 0).all()
    np.testing.assert_array_equal(a[0].edge_index, b.edge_index)


def _brute_force_triplets(edge_index: np.ndarray, edge_image: np.ndarray) -> set:
    edges = [
        (int(j), int(i), tuple(img))
        for j, i, img in zip(edge_index[0], edge_index[1], edge_image.tolist(), strict=True)
    ]
    pairs = set()
    for ji, (j, i, image_ji) in enumerate(edges):
        for kj, (k, centre, image_kj) in enumerate(edges):
            if centre != j:
                continue
            if k == i and all(p == -q for p, q in zip(image_kj, image_ji, strict=True)):
                continue  # k is i itself: the edge straight back
            pairs.add((kj, ji))
    return pairs


def test_triplets_match_brute_force(bundled_structures):
    small = [s for s in bundled_structures if s.is_ordered and len(s) <= 3][:3]
    assert len(small) >= 2
    for max_neighbors in (6, None):
        graphs = CrystalGraph(cutoff=4.5, max_neighbors=max_neighbors, triplets=True).fit_transform(small)
        for g in range(len(graphs)):
            one = graphs[g]
            expected = _brute_force_triplets(one.edge_index, one.edge_image)
            got = set(map(tuple, one.triplet_index.T.tolist()))
            assert len(got) == one.triplet_index.shape[1]  # no duplicates
            assert got == expected
            assert int(one.num_triplets[0]) == len(expected) > 0


def test_triplets_share_atom_j_and_are_angles(mp20_structures):
    graphs = CrystalGraph(cutoff=5.0, max_neighbors=12, triplets=True).fit_transform(mp20_structures[:20])
    edge_base = np.repeat(graphs.edge_offsets[:-1], graphs.num_triplets)
    kj = graphs.triplet_index[0] + edge_base
    ji = graphs.triplet_index[1] + edge_base
    assert (graphs.edge_index[1, kj] == graphs.edge_index[0, ji]).all()
    # seen from centre i, k is never i itself (distance > 0), and both bonds are real edges
    atom_base = np.repeat(graphs.atom_offsets[:-1], graphs.num_triplets)
    graph_of_triplet = np.repeat(np.arange(len(graphs)), graphs.num_triplets)
    lattice = graphs.lattice.astype(np.float64)[graph_of_triplet]
    image_k = (graphs.edge_image[kj] + graphs.edge_image[ji]).astype(np.float64)
    shift_k = np.einsum("tk,tkl->tl", image_k, lattice)
    pos_k = graphs.cart_coords[graphs.edge_index[0, kj] + atom_base] + shift_k
    pos_i = graphs.cart_coords[graphs.edge_index[1, ji] + atom_base]
    assert np.linalg.norm(pos_k - pos_i, axis=1).min() > 0.1


def test_subset_and_concat_round_trip(mp20_structures):
    graphs = CrystalGraph(cutoff=4.0, triplets=True).fit_transform(mp20_structures[:25])
    order = np.random.default_rng(0).permutation(len(graphs))
    assert graphs[order][np.argsort(order)].equals(graphs)
    assert CrystalGraphData.concat([graphs[:7], graphs[7:13], graphs[13:]]).equals(graphs)
    # a subset is exactly the graph of the subset of structures
    picked = [4, 0, 17]
    direct = CrystalGraph(cutoff=4.0, triplets=True).fit_transform([mp20_structures[i] for i in picked])
    assert graphs[picked].equals(direct)
    assert graphs[np.array(picked)].equals(direct)
    mask = np.zeros(len(graphs), dtype=bool)
    mask[[0, 4, 17]] = True
    assert graphs[mask].equals(graphs[[0, 4, 17]])
    assert graphs[-1].equals(graphs[len(graphs) - 1 :])
    assert graphs[::3].equals(graphs[np.arange(0, len(graphs), 3)])
    assert len(graphs[[]]) == 0 and graphs[[]].edge_index.shape == (2, 0)
    assert graphs.atom_offsets[-1] == graphs.atomic_numbers.shape[0]
    assert graphs.edge_offsets[-1] == graphs.edge_distance.shape[0]
    with pytest.raises(IndexError):
        graphs[len(graphs)]
    with pytest.raises(IndexError):
        graphs[np.ones(3, dtype=bool)]
    with pytest.raises(ValueError, match="different settings"):
        other = CrystalGraph(cutoff=3.0, triplets=True).fit_transform(mp20_structures[:2])
        CrystalGraphData.concat([graphs, other])


def test_pickle_and_joblib(mp20_structures, tmp_path):
    graphs = CrystalGraph(cutoff=4.0, triplets=True).fit_transform(mp20_structures[:10])
    _ = graphs.edge_offsets  # a cached property must not break pickling
    assert pickle.loads(pickle.dumps(graphs)).equals(graphs)
    joblib.dump(graphs, tmp_path / "graphs.joblib")
    loaded = joblib.load(tmp_path / "graphs.joblib")
    assert loaded.equals(graphs)
    assert loaded[[3, 1]].equals(graphs[[3, 1]])
    assert "n_graphs=10" in repr(graphs) and "n_triplets=" in repr(graphs)


def test_parallel_and_cache_give_identical_graphs(mp20_structures, tmp_path):
    structures = mp20_structures[:40]
    serial = CrystalGraph(cutoff=4.0, triplets=True).fit_transform(structures)
    featurizer = CrystalGraph(cutoff=4.0, triplets=True, n_jobs=2)
    featurizer._chunk_size = 16  # several chunks, so both workers get some
    assert featurizer.fit_transform(structures).equals(serial)
    cached = CrystalGraph(cutoff=4.0, triplets=True, memory=str(tmp_path))
    first = cached.fit_transform(structures)
    assert any(tmp_path.rglob("output.pkl"))
    assert first.equals(serial) and cached.transform(structures).equals(serial)


def test_dataframe_with_cif_column(mp20_val_rows):
    frame = mp20_val_rows[["material_id", "cif"]].iloc[:5]
    graphs = CrystalGraph(cutoff=4.0).fit_transform(frame)
    expected = CrystalGraph(cutoff=4.0).fit_transform(list(mp20_val_rows["structure"][:5]))
    np.testing.assert_array_equal(graphs.edge_index, expected.edge_index)
    np.testing.assert_allclose(graphs.edge_distance, expected.edge_distance, atol=1e-5)


def test_isolated_atom_gets_no_edges(mp20_structures):
    lone = Structure(Lattice.cubic(20.0), ["Xe", "Xe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    featurizer = CrystalGraph(cutoff=6.0, triplets=True)
    graphs = featurizer.fit_transform([mp20_structures[0], lone, mp20_structures[1]])
    assert graphs.num_edges[1] == 0 and graphs.num_triplets[1] == 0
    assert graphs.num_atoms[1] == 2
    assert graphs[[0, 2]].equals(featurizer.transform(mp20_structures[:2]))


def test_disordered_structure_is_refused_naming_the_row(bundled_structures, mp20_val_rows):
    disordered = next(s for s in bundled_structures if not s.is_ordered)
    frame = pd.DataFrame(
        {"material_id": ["ok-1", "bad-2"], "structure": [mp20_val_rows["structure"][0], disordered]}
    )
    with pytest.raises(InvalidInputError, match="disordered") as info:
        CrystalGraph().fit_transform(frame)
    assert info.value.row == "bad-2" and info.value.view == "structure"


def test_empty_and_malformed_structures_are_refused(mp20_val_rows):
    good = mp20_val_rows["cif"][0]
    empty = Structure(Lattice.cubic(4.0), [], [])
    with pytest.raises(InvalidInputError) as info:
        CrystalGraph().fit(pd.DataFrame({"structure": [good, empty]})).transform(
            pd.DataFrame({"structure": [good, empty]})
        )
    assert info.value.row == 1
    frame = pd.DataFrame({"material_id": ["a", "b"], "cif": [good, good[: len(good) // 3] + "\n_garbage"]})
    with pytest.raises(InvalidInputError) as info:
        CrystalGraph().fit_transform(frame)
    assert info.value.row == "b" and info.value.view == "cif"


@pytest.mark.parametrize(
    "params",
    [{"cutoff": 0.0}, {"cutoff": -1.0}, {"cutoff": float("nan")}, {"cutoff": "6"},
     {"max_neighbors": 0}, {"max_neighbors": -3}, {"max_neighbors": 2.5}, {"triplets": "yes"}],
)
def test_invalid_params_raise_at_fit(params, mp20_structures):
    featurizer = CrystalGraph(**params)  # construction never validates (sklearn convention)
    with pytest.raises(ValueError):
        featurizer.fit(mp20_structures[:2])


def test_sklearn_surface(mp20_structures):
    featurizer = CrystalGraph(cutoff=4.0, max_neighbors=None)
    copy = clone(featurizer)
    assert copy.get_params() == featurizer.get_params()
    featurizer.fit(mp20_structures[:3])
    assert featurizer.get_feature_names_out().tolist() == ["crystal_graph"]
    assert not hasattr(featurizer, "set_output")  # the output is a graph container, not a table


def test_container_validates_lengths(mp20_structures):
    graphs = CrystalGraph(cutoff=4.0, triplets=True).fit_transform(mp20_structures[:3])
    fields = {name: getattr(graphs, name) for name in [
        "num_atoms", "atomic_numbers", "cart_coords", "lattice", "num_edges", "edge_index",
        "edge_image", "edge_distance", "cutoff", "max_neighbors", "triplet_index", "num_triplets"]}
    assert CrystalGraphData(**fields).equals(graphs)
    with pytest.raises(ValueError, match="edge_distance"):
        CrystalGraphData(**{**fields, "edge_distance": fields["edge_distance"][:-1]})
    with pytest.raises(ValueError, match="cart_coords"):
        CrystalGraphData(**{**fields, "cart_coords": fields["cart_coords"][:, :2]})
    with pytest.raises(ValueError, match="local"):
        CrystalGraphData(**{**fields, "edge_index": fields["edge_index"] + 1000})
    with pytest.raises(ValueError, match="both"):
        CrystalGraphData(**{**fields, "num_triplets": None})
