"""Periodic graph batching, torch triplets and the CGCNN/SchNet/DimeNet++ encoders."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from pymatgen.core import Structure

from skmat.features.graph import CrystalGraph
from skmat.nn.gnn import (
    CGCNN,
    DimeNetPlusPlus,
    SchNet,
    flush_denormal,
    make_structure_encoder,
)
from skmat.nn.graph import GraphBatch, build_triplets, collate_graphs, nearest_edges

# Tiny models: the tests check geometry and plumbing, not capacity.
TINY = {
    "cgcnn": dict(hidden_dim=16, n_layers=2, out_dim=8, cutoff=5.0, n_gaussians=12),
    "schnet": dict(hidden_dim=16, n_filters=16, n_layers=2, out_dim=8, cutoff=5.0, n_gaussians=12),
    "dimenetpp": dict(hidden_dim=16, n_blocks=2, out_dim=8, cutoff=4.0, num_spherical=3,
                      num_radial=4, int_emb_size=8, basis_emb_size=4, out_emb_size=16),
}
GRAPH_CUTOFF = 5.0  # >= every model's cutoff; each model keeps its own edges


def graphs_of(structures, cutoff=GRAPH_CUTOFF, **kwargs):
    # max_neighbors=None: a truncated neighbour list breaks ties between equidistant atoms
    # by atom order, which the invariance tests below must not depend on.
    return CrystalGraph(cutoff=cutoff, max_neighbors=None, **kwargs).fit_transform(structures)


def batch_of(structures, **kwargs) -> GraphBatch:
    return collate_graphs(graphs_of(structures, **kwargs))


@functools.cache
def tiny_model(name: str) -> torch.nn.Module:
    # built once per name: a fixed model per architecture for the invariance checks
    torch.manual_seed(0)
    return make_structure_encoder(name, **TINY[name]).eval()


def embed(name: str, structures) -> torch.Tensor:
    with torch.no_grad():
        return tiny_model(name)(batch_of(structures))


@pytest.fixture(scope="module")
def small_structures(bundled_structures):
    """Ordered bundled structures of <= 6 atoms (incl. 1-atom He: edges to its own images)."""
    chosen = [s for s in bundled_structures if s.is_ordered and len(s) <= 6]
    assert len(chosen) >= 5
    return chosen


@pytest.fixture(scope="module")
def mp20_structures(mp20_val_rows):
    return list(mp20_val_rows["structure"][:12])


# ---------------------------------------------------------------------- batching
def test_collate_reindexes_atoms_and_reproduces_edge_lengths(small_structures, mp20_structures):
    structures = small_structures + mp20_structures
    data = graphs_of(structures)
    batch = collate_graphs(data)

    assert batch.num_graphs == len(structures)
    assert batch.pos.dtype == torch.float32 and batch.edge_index.dtype == torch.int64
    np.testing.assert_array_equal(np.bincount(batch.batch.numpy()), [len(s) for s in structures])
    # every edge joins two atoms of the same graph, and lands in that graph's slice
    source_graph = batch.batch[batch.edge_index[0]]
    target_graph = batch.batch[batch.edge_index[1]]
    assert torch.equal(source_graph, target_graph)
    np.testing.assert_array_equal(np.bincount(target_graph.numpy()), data.num_edges)
    lengths = batch.edge_vectors().norm(dim=-1).numpy()
    np.testing.assert_allclose(lengths, data.edge_distance, atol=1e-4)
    # a subset collates to the same edges as the corresponding part of the whole
    part = collate_graphs(data[[3, 1]])
    np.testing.assert_allclose(
        part.edge_vectors().norm(dim=-1).numpy(),
        np.concatenate([data[3].edge_distance, data[1].edge_distance]),
        atol=1e-4,
    )


def test_edge_vectors_are_differentiable_in_positions_and_lattice(small_structures):
    batch = batch_of(small_structures[:2], cutoff=3.5)
    pos = batch.pos.double().requires_grad_()
    lattice = batch.lattice.double().requires_grad_()

    def lengths(p, cell):
        moved = GraphBatch(batch.atomic_numbers, p, cell, batch.edge_index,
                           batch.edge_image.double(), batch.batch, batch.num_graphs)
        return moved.edge_vectors().norm(dim=-1)

    assert torch.autograd.gradcheck(lengths, (pos, lattice))


def test_to_moves_every_tensor(small_structures):
    batch = batch_of(small_structures[:2]).to("meta")
    assert all(getattr(batch, f).device.type == "meta" for f in GraphBatch._tensor_fields)
    assert batch.num_graphs == 2


# ---------------------------------------------------------------------- triplets
def brute_force_triplets(batch: GraphBatch) -> set[tuple[int, int]]:
    """Every (kj, ji) with target(kj) == source(ji) whose k is not i itself, by geometry."""
    source, target = batch.edge_index.numpy()
    vectors = batch.edge_vectors().double().numpy()
    found = set()
    for ji in range(source.size):
        for kj in range(source.size):
            if target[kj] != source[ji]:
                continue
            # k seen from i: (j - i) + (k - j); zero only for the edge straight back to i
            if np.linalg.norm(vectors[ji] + vectors[kj]) > 1e-4:
                found.add((kj, ji))
    return found


@pytest.mark.parametrize("formula", ["He", "CsCl", "Li2O"])
def test_triplets_match_brute_force(small_structures, formula):
    structure = next(s for s in small_structures if s.composition.reduced_formula == formula)
    # two copies in one batch: triplets must never cross graphs
    batch = batch_of([structure, structure], cutoff=4.5)
    idx_kj, idx_ji = build_triplets(batch.edge_index, batch.edge_image, batch.num_atoms)
    pairs = list(zip(idx_kj.tolist(), idx_ji.tolist()))
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == brute_force_triplets(batch)
    assert len(pairs) > 0


def test_triplets_agree_with_the_numpy_featurizer(mp20_structures):
    data = graphs_of(mp20_structures[:4], cutoff=4.0, triplets=True)
    batch = collate_graphs(data)
    idx_kj, idx_ji = build_triplets(batch.edge_index, batch.edge_image, batch.num_atoms)
    graph_of_triplet = np.repeat(np.arange(len(data)), data.num_triplets)
    numpy_pairs = data.triplet_index + data.edge_offsets[:-1][graph_of_triplet]
    assert set(zip(idx_kj.tolist(), idx_ji.tolist())) == set(map(tuple, numpy_pairs.T.tolist()))


def test_nearest_edges_keeps_whole_shells_of_equal_distance(bundled_structures):
    cscl = next(s for s in bundled_structures if s.composition.reduced_formula == "CsCl")
    batch = batch_of([cscl], cutoff=5.0)
    distance = batch.edge_vectors().norm(dim=-1)
    kept = nearest_edges(batch, distance, cutoff=5.0, max_neighbors=3)
    per_centre = torch.bincount(batch.edge_index[1, kept], minlength=batch.num_atoms)
    # CsCl: each atom has 8 nearest neighbours at one distance; asking for 3 keeps all 8
    assert per_centre.tolist() == [8, 8]
    assert distance[kept].max() < distance.max()
    within = nearest_edges(batch, distance, cutoff=4.0)
    assert torch.equal(within, torch.nonzero(distance <= 4.0).squeeze(1))


# ---------------------------------------------------------------------- encoders
@pytest.mark.parametrize("name", sorted(TINY))
def test_encoder_output_shape_and_gradients(name, small_structures, mp20_structures):
    torch.manual_seed(0)
    model = make_structure_encoder(name, **TINY[name])
    batch = batch_of(small_structures[:3] + mp20_structures[:3])
    batch.pos.requires_grad_()
    out = model(batch)
    assert out.shape == (6, model.out_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()

    (out * torch.randn_like(out)).sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} gets no gradient"
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, f"{param_name} has an all-zero gradient"
    # forces exist even with collinear triplets (CsCl, Li2O), where the angle's sine is 0
    assert torch.isfinite(batch.pos.grad).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_encoder_is_invariant_to_translation_and_atom_order(name, mp20_structures, rng):
    structures = mp20_structures[:4]
    moved = []
    for structure in structures:
        shifted = structure.copy()
        # wrapping back into the cell changes the image offsets, not the crystal
        shifted.translate_sites(range(len(shifted)), rng.normal(size=3) * 2.0,
                                frac_coords=False, to_unit_cell=True)
        order = rng.permutation(len(shifted))
        moved.append(Structure.from_sites([shifted[int(i)] for i in order]))
    np.testing.assert_allclose(embed(name, moved), embed(name, structures), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(TINY))
def test_supercell_gives_the_same_mean_pooled_embedding(name, small_structures, mp20_structures):
    structures = small_structures[:3] + mp20_structures[:2]
    supercells = [s * (2, 1, 1) for s in structures]
    np.testing.assert_allclose(
        embed(name, supercells), embed(name, structures), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("name", sorted(TINY))
def test_batch_equals_each_graph_alone(name, mp20_structures):
    together = embed(name, mp20_structures[:2])
    alone = torch.cat([embed(name, [s]) for s in mp20_structures[:2]])
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=1e-5)


def test_factory_builds_each_class_and_rejects_unknown_names():
    assert isinstance(make_structure_encoder("CGCNN", out_dim=4), CGCNN)
    assert isinstance(make_structure_encoder("schnet", out_dim=4), SchNet)
    assert isinstance(make_structure_encoder("dimenetpp", **TINY["dimenetpp"]), DimeNetPlusPlus)
    assert make_structure_encoder("schnet", out_dim=4).out_dim == 4
    with pytest.raises(ValueError, match="cgcnn"):
        make_structure_encoder("megnet")
    with pytest.raises(ValueError, match="pooling"):
        CGCNN(pooling="median")


@pytest.mark.parametrize("name", sorted(TINY))
def test_crystal_without_edges_embeds_its_atoms_alone(name, small_structures):
    # a cutoff below every interatomic distance: no edges, no triplets, still one row each
    batch = batch_of(small_structures[:2], cutoff=0.5)
    assert batch.num_edges == 0
    with torch.no_grad():
        out = tiny_model(name)(batch)
    assert out.shape == (2, 8) and torch.isfinite(out).all()


def test_heavy_elements_up_to_fermium_embed(small_structures):
    heavy = small_structures[0].copy()
    heavy.replace_species({sp: "Fm" for sp in heavy.composition})
    for name in TINY:
        assert torch.isfinite(embed(name, [heavy])).all()


def test_flush_denormal_restores_the_previous_state():
    subnormal = torch.tensor([1e-39])
    before = (subnormal * 1.0).item()
    with flush_denormal():
        assert (subnormal * 1.0).item() == 0.0
        with flush_denormal(False):
            assert (subnormal * 1.0).item() != 0.0
        assert (subnormal * 1.0).item() == 0.0
    assert (subnormal * 1.0).item() == before
