"""Chunked map, its cache keys, and the ``memory`` cache of the three featurizers."""

from __future__ import annotations

import os
import threading

import joblib
import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from skmat._parallel import chunk_digest, chunks_in_cache, map_chunks


# module level: loky workers import these by name
def _tag_with_chunk(chunk: list, *, offset: int = 0) -> list:
    """Each item plus offset, with the size of the chunk it travelled in."""
    return [(item + offset, len(chunk)) for item in chunk]


def _where_run(chunk: list) -> list:
    return [(os.getpid(), threading.get_ident()) for _ in chunk]


def _squares(chunk: list) -> np.ndarray:
    return np.asarray(chunk, dtype=float)[:, None] ** 2


# ------------------------------------------------------------------------------- map_chunks
def test_results_keep_item_order_and_chunking():
    items = list(range(10))
    out = map_chunks(_tag_with_chunk, items, kwargs={"offset": 100}, n_jobs=1, chunk_size=4)
    assert [value for value, _ in out] == [i + 100 for i in items]
    assert [size for _, size in out] == [4] * 8 + [2] * 2


def test_array_results_are_concatenated_in_order():
    out = map_chunks(_squares, [3, 1, 2, 5, 4], n_jobs=1, chunk_size=2)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out[:, 0], [9, 1, 4, 25, 16])


def test_two_processes_give_the_serial_result():
    items = list(range(23))
    serial = map_chunks(_tag_with_chunk, items, kwargs={"offset": 1}, n_jobs=1, chunk_size=5)
    parallel = map_chunks(_tag_with_chunk, items, kwargs={"offset": 1}, n_jobs=2, chunk_size=5)
    assert parallel == serial


@pytest.mark.parametrize("n_jobs", [1, None])
def test_empty_input_gives_empty_result(n_jobs, tmp_path):
    assert map_chunks(_tag_with_chunk, [], n_jobs=n_jobs, memory=tmp_path) == []


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_progress_bar_does_not_change_results(n_jobs, capsys):
    items = list(range(7))
    quiet = map_chunks(_tag_with_chunk, items, n_jobs=1, chunk_size=3)
    with joblib.parallel_config(backend="threading"):
        shown = map_chunks(_tag_with_chunk, items, n_jobs=n_jobs, chunk_size=3, verbose=1, desc="test")
    assert shown == quiet


def test_n_jobs_none_follows_parallel_config():
    with joblib.parallel_config(backend="threading", n_jobs=2):
        where = map_chunks(_where_run, list(range(8)), n_jobs=None, chunk_size=1)
    assert {pid for pid, _ in where} == {os.getpid()}  # threads, not loky processes
    assert any(thread != threading.main_thread().ident for _, thread in where)
    # and without a config, n_jobs=None is sequential in this thread
    where = map_chunks(_where_run, list(range(3)), n_jobs=None, chunk_size=1)
    assert {thread for _, thread in where} == {threading.get_ident()}


def test_bad_chunk_size_and_memory_are_refused():
    with pytest.raises(ValueError, match="chunk_size"):
        map_chunks(_tag_with_chunk, [1], chunk_size=0)
    with pytest.raises(ValueError, match="memory"):
        map_chunks(_tag_with_chunk, [1], memory=3)


# ------------------------------------------------------------------------------- cache keys
@pytest.fixture
def small_structures(mp20_val_rows):
    # fresh objects on every use: each test starts with untouched lazy attributes
    return [Structure.from_dict(s.as_dict()) for s in mp20_val_rows["structure"][:12]]


def test_structure_digest_ignores_lazily_cached_attributes(small_structures):
    before = chunk_digest(small_structures)
    for structure in small_structures:
        repr(structure)  # what joblib does when storing a cache entry
        _ = [site.coords for site in structure]
        _ = structure.distance_matrix
    assert chunk_digest(small_structures) == before
    # a copy equal in content has the same key; joblib's own hash does not even survive repr
    copies = [s.copy() for s in small_structures]
    assert chunk_digest(copies) == before


def test_digest_changes_with_anything_that_defines_a_structure():
    lattice = Lattice.cubic(4.0)
    base = Structure(lattice, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    variants = [
        Structure(Lattice.cubic(4.0 + 1e-9), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(lattice, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5 + 1e-12]]),
        Structure(lattice, ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(lattice, ["Na+", "Cl-"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(lattice, [{"Na": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(lattice, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], site_properties={"magmom": [0, 1]}),
        Structure(lattice, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], charge=1),
    ]
    digests = {chunk_digest([s]) for s in [base, *variants]}
    assert len(digests) == 1 + len(variants)
    # order of the items is part of the key
    assert chunk_digest([base, variants[2]]) != chunk_digest([variants[2], base])


def test_digest_of_records_and_compositions():
    assert chunk_digest([Composition("Fe2O3")]) == chunk_digest([Composition({"O": 3, "Fe": 2})])
    assert chunk_digest([Composition("Fe2O3")]) != chunk_digest([Composition("Fe3O4")])
    assert chunk_digest([(np.arange(3), "x")]) == chunk_digest([(np.arange(3), "x")])
    assert chunk_digest([(np.arange(3), "x")]) != chunk_digest([(np.arange(3.0), "x")])
    assert chunk_digest([[1, 2], [3]]) != chunk_digest([[1], [2, 3]])
    assert chunk_digest([1]) != chunk_digest([1.0]) != chunk_digest(["1"])


def test_cache_hits_for_equal_items_and_only_new_chunks_are_computed(tmp_path):
    items = list(range(9))
    first = map_chunks(_tag_with_chunk, items, kwargs={"offset": 2}, chunk_size=3, memory=tmp_path, n_jobs=1)
    assert chunks_in_cache(_tag_with_chunk, items, kwargs={"offset": 2}, chunk_size=3, memory=tmp_path) == [True] * 3
    assert chunks_in_cache(_tag_with_chunk, items, kwargs={"offset": 3}, chunk_size=3, memory=tmp_path) == [False] * 3
    longer = items + [50, 51]
    assert chunks_in_cache(_tag_with_chunk, longer, kwargs={"offset": 2}, chunk_size=3, memory=tmp_path) == [
        True, True, True, False
    ]
    assert map_chunks(_tag_with_chunk, longer, kwargs={"offset": 2}, chunk_size=3, memory=tmp_path)[:9] == first


# ------------------------------------------------------------------------------- featurizers
def _count_items(module, name: str, calls: list):
    original = getattr(module, name)

    def counted(first, *args, **kwargs):
        calls.append(len(first) if isinstance(first, list) else 1)
        return original(first, *args, **kwargs)

    return counted


def _with_chunks_of_4(featurizer):
    # a parameter where the featurizer exposes one, else the class-level setting
    if "chunk_size" in featurizer.get_params():
        return featurizer.set_params(chunk_size=4)
    featurizer._chunk_size = 4
    return featurizer


def _xrd():
    from skmat.features import xrd

    return _with_chunks_of_4(xrd.XRDPattern(n_bins=201)), xrd, "_peaks_of_scatterers"


def _graph():
    from skmat.features import graph

    return _with_chunks_of_4(graph.CrystalGraph(cutoff=5.0, max_neighbors=8)), graph, "_structure_graph"


def _composition():
    from skmat.features import composition

    return _with_chunks_of_4(composition.CompositionFeatures()), composition, "magpie_features"


def _same(a, b) -> bool:
    return a.equals(b) if hasattr(a, "equals") else np.array_equal(a, b)


@pytest.mark.parametrize("make", [_xrd, _graph, _composition], ids=["xrd", "graph", "composition"])
def test_featurizer_second_transform_loads_from_memory(make, small_structures, tmp_path, monkeypatch):
    featurizer, module, core = make()
    calls: list[int] = []
    monkeypatch.setattr(module, core, _count_items(module, core, calls))
    featurizer.set_params(memory=joblib.Memory(tmp_path, verbose=0))
    # copies: the structures given to the cache below must start with untouched lazy attributes
    uncached = make()[0].fit_transform([s.copy() for s in small_structures])
    n_computed = sum(calls)
    assert n_computed == len(small_structures)

    first = featurizer.fit_transform(small_structures)
    assert sum(calls) == 2 * n_computed  # cold cache: computed
    # the same objects (their lazy attributes now filled by joblib's repr and by the
    # featurizer) and a fresh featurizer sharing the cache: nothing is computed again
    again = make()[0].set_params(memory=featurizer.memory).fit_transform(small_structures)
    assert sum(calls) == 2 * n_computed
    assert _same(first, uncached) and _same(again, uncached)

    # one changed structure recomputes exactly its chunk, in a thread pool too
    changed = [s.copy() for s in small_structures]
    changed[5].replace(0, "Cs")  # new composition, structure and pattern
    with joblib.parallel_config(backend="threading"):
        make()[0].set_params(memory=featurizer.memory, n_jobs=2).fit_transform(changed)
    assert sum(calls) - 2 * n_computed == 4  # the chunk of 4 holding row 5
