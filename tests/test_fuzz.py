"""Fuzzing the input boundary: anything a user passes either works or raises a ``ValueError``.

skmat's own errors (:class:`~skmat.exceptions.InvalidInputError`) are ``ValueError`` subclasses;
a ``KeyError``, ``IndexError``, ``ZeroDivisionError`` or ``LinAlgError`` escaping from pymatgen
or numpy would be a bug: the user gets no row, no view and no hint. The generated inputs start
from real MP-20 CIFs and real lattices and then break them (truncation, flipped bytes, NaN,
flat cells, unknown elements, wrong shapes).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _helpers import tiny_encoder
from skmat._inputs import as_structures
from skmat.features import CompositionFeatures, CrystalGraph, XRDPattern
from skmat.features.spectra import resample_dos

FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def works_or_value_error(func, *args, **kwargs):
    """Call *func*; a ValueError is an accepted refusal, any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about most broken CIFs; not the point here
        try:
            return func(*args, **kwargs)
        except ValueError:
            return None


# -- CIF text -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_cifs(mp20_val_rows):
    return list(mp20_val_rows["cif"].iloc[:20])


def mutated_cif(cifs):
    """Strategy: a real CIF, then broken in one of several ways."""

    @st.composite
    def build(draw):
        text = draw(st.sampled_from(cifs))
        how = draw(st.sampled_from(["truncate", "flip", "drop_lines", "insert", "numbers", "random"]))
        if how == "truncate":
            return text[: draw(st.integers(0, len(text)))]
        if how == "flip":
            raw = bytearray(text.encode())
            for _ in range(draw(st.integers(1, 20))):
                raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
            return raw.decode("utf-8", errors="replace")
        if how == "drop_lines":
            lines = text.splitlines()
            keep = draw(st.lists(st.booleans(), min_size=len(lines), max_size=len(lines)))
            return "\n".join(line for line, k in zip(lines, keep, strict=True) if k)
        if how == "insert":
            at = draw(st.integers(0, len(text)))
            return text[:at] + draw(st.text(max_size=40)) + text[at:]
        if how == "numbers":
            # replace every number of one kind with an extreme or meaningless one
            target = draw(st.sampled_from(["_cell_length_a", "_cell_angle_alpha", "_cell_length_c", "0.5"]))
            value = draw(st.sampled_from(["0", "-1", "nan", "inf", "1e308", "1e-30", "?", "."]))
            lines = [
                f"{target} {value}" if line.startswith(target) and target.startswith("_") else line.replace(target, value)
                for line in text.splitlines()
            ]
            return "\n".join(lines)
        return draw(st.text(max_size=200))

    return build()


def test_broken_cifs_are_parsed_or_refused_with_value_error(real_cifs):
    @FUZZ
    @given(text=mutated_cif(real_cifs))
    def check(text):
        structures = works_or_value_error(as_structures, pd.DataFrame({"cif": [text]}, index=["fuzz"]))
        if structures is not None:
            assert len(structures) == 1 and len(structures[0]) > 0

    check()


# -- Structures -----------------------------------------------------------------------------------
SPECIES = ["H", "Li", "O", "Na", "Si", "Cl", "Fe", "Cs", "Pb", "U", "Og"]
SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-9, 1e9]
# a lattice entry of 1e9 Å makes XRDPattern and CrystalGraph allocate tens of GB before any
# check (see test_absurd_cells_are_refused_before_allocating); the fuzzing keeps to lattices
# that fit in memory and that test covers the rest in a memory-capped subprocess
SPECIAL_LATTICE = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-9, 1e9]
# likewise a fractional coordinate of 1e9 in a skewed cell (pymatgen's neighbour search)
SPECIAL_COORD = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-9, 1e9]


@st.composite
def structures(draw):
    """Random lattice, coordinates and species; sometimes NaN, flat cells or dummy elements."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.core.periodic_table import DummySpecies

    lengths = draw(st.lists(st.floats(1.5, 12.0), min_size=3, max_size=3))
    angles = draw(st.lists(st.floats(50.0, 130.0), min_size=3, max_size=3))
    n_sites = draw(st.integers(1, 4))
    coords = np.asarray(draw(st.lists(st.floats(-1.0, 2.0), min_size=3 * n_sites, max_size=3 * n_sites)))
    coords = coords.reshape(n_sites, 3)
    species: list = [draw(st.sampled_from(SPECIES)) for _ in range(n_sites)]
    matrix = Lattice.from_parameters(*lengths, *angles).matrix.copy()
    defect = draw(st.sampled_from(["none", "special_lattice", "flat", "special_coord", "dummy"]))
    if defect == "special_lattice":
        matrix[draw(st.integers(0, 2)), draw(st.integers(0, 2))] = draw(st.sampled_from(SPECIAL_LATTICE))
    elif defect == "flat":
        matrix[2] = matrix[0] + matrix[1]  # coplanar vectors: zero volume
    elif defect == "special_coord":
        coords[draw(st.integers(0, n_sites - 1)), draw(st.integers(0, 2))] = draw(st.sampled_from(SPECIAL_COORD))
    elif defect == "dummy":
        species[0] = DummySpecies(draw(st.sampled_from(["X", "Xx", "Xa", "Z"])))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure(Lattice(matrix), species, coords)
    except (ValueError, np.linalg.LinAlgError):
        # pymatgen itself refused to build it: not an input skmat can be handed
        assume(False)


@pytest.mark.parametrize(
    "featurize",
    [
        pytest.param(lambda s: XRDPattern(n_bins=64).fit_transform([s]), id="XRDPattern"),
        pytest.param(lambda s: CompositionFeatures().fit_transform([s.composition]), id="CompositionFeatures"),
        pytest.param(lambda s: CompositionFeatures().fit_transform(pd.DataFrame({"structure": [s]})), id="Composition-from-structure"),
        pytest.param(lambda s: CrystalGraph(cutoff=4.0, max_neighbors=8).fit_transform([s]), id="CrystalGraph"),
        pytest.param(lambda s: as_structures([s]), id="as_structures"),
    ],
)
def test_random_structures_work_or_raise_value_error(featurize):
    @FUZZ
    @given(structure=structures())
    def check(structure):
        out = works_or_value_error(featurize, structure)
        if isinstance(out, np.ndarray):
            assert out.shape[0] == 1 and np.all(np.isfinite(out))

    check()


# -- array cells ----------------------------------------------------------------------------------
def float_arrays(max_side: int = 12):
    """Arrays of 0-3 dimensions with ordinary, negative and non-finite values."""
    return hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side),
        elements=st.one_of(st.floats(-50, 50), st.sampled_from(SPECIAL)),
        fill=st.floats(-50, 50),
    )


@st.composite
def dos_cells(draw):
    """Mostly (2, L) arrays with an energy row around 0, plus broken variants and non-arrays."""
    kind = draw(st.sampled_from(["plausible", "array", "object"]))
    if kind == "plausible":
        n = draw(st.integers(0, 30))
        energy = np.sort(np.asarray(draw(st.lists(st.floats(-20, 20), min_size=n, max_size=n))))
        density = np.asarray(draw(st.lists(st.one_of(st.floats(-5, 50), st.sampled_from(SPECIAL)), min_size=n, max_size=n)))
        return np.stack([energy, density])
    if kind == "array":
        return draw(float_arrays())
    return draw(st.sampled_from(["dos", {"energy": [0.0]}, [[0.0, 1.0], [1.0]], [[0, "a"], [1, 2]], 3.0, object()]))


def test_dos_cells_resample_or_raise_value_error():
    @FUZZ
    @given(cells=st.lists(dos_cells(), min_size=1, max_size=3), window=st.sampled_from([(-10.0, 10.0), (-1.0, 1.0)]))
    def check(cells, window):
        out = works_or_value_error(resample_dos, cells, energy_window=window, n_points=32)
        if out is not None:
            assert out.shape == (len(cells), 32)
            assert np.all(np.isfinite(out) | np.array([[c is None] for c in cells]))

    check()


def test_whole_dos_arrays_resample_or_raise_value_error():
    @FUZZ
    @given(array=float_arrays(max_side=6))
    def check(array):
        works_or_value_error(resample_dos, array, n_points=16)

    check()


@pytest.fixture(scope="module")
def fitted_xrd_and_dos(data_home):
    """An XRD and a DOS encoder fitted for one epoch on real data (transform is what is fuzzed)."""
    from skmat.datasets import fetch_multimat_sample, load_prototypes

    tiny = dict(out_dim=4, max_epochs=1, batch_size=8, validation_fraction=0.0, random_state=0)
    X, y = load_prototypes(return_X_y=True, target="a_scaled")
    ordered = [s.is_ordered for s in X["structure"]]
    xrd = tiny_encoder("xrd", n_bins=32, channels=(2,), **tiny).fit(X[ordered].iloc[:8], y[ordered][:8])
    M, bulk = fetch_multimat_sample(data_home=data_home, return_X_y=True, target="bulk_modulus")
    keep = M["dos"].notna() & bulk.notna() & (M.index != "mp-696961")
    dos = tiny_encoder("dos", n_points=16, **tiny).fit(M[keep].iloc[:8], bulk[keep].iloc[:8].to_numpy())
    return xrd, dos


def test_xrd_and_dos_cells_at_transform_work_or_raise_value_error(fitted_xrd_and_dos):
    xrd, dos = fitted_xrd_and_dos

    @FUZZ
    @given(
        xrd_cell=st.one_of(float_arrays(max_side=40), st.sampled_from(["peaks", None, 1.0])),
        dos_cell=st.one_of(dos_cells(), st.none()),
    )
    def check(xrd_cell, dos_cell):
        for encoder, view, cell in ((xrd, "xrd", xrd_cell), (dos, "dos", dos_cell)):
            column = pd.Series([cell], index=["fuzz"], dtype=object)
            out = works_or_value_error(encoder.transform, pd.DataFrame({view: column}))
            if out is not None:
                assert out.shape == (1, 4) and np.all(np.isfinite(out))

    check()


# -- cells too large or too dense to featurize --------------------------------------------------
# (featurizer, lattice, fractional coordinates of one Na atom), as source text for a child process
ABSURD_CELLS = {
    # one lattice vector of 1e9 Å (a unit slip, e.g. metres read as Å): ~1e11 reflections
    "xrd-1e9-angstrom": ("XRDPattern(n_bins=64)", "Lattice([[4, 0, 0], [0, 5, 1e9], [0, 0, 6]])", "[0, 0, 0]"),
    # a 1000 Å cube: ~5e9 reflections inside the limiting sphere
    "xrd-1000-angstrom-cube": ("XRDPattern(n_bins=64)", "Lattice.cubic(1000.0)", "[0, 0, 0]"),
    # 8e-6 Å^3 per atom: ~3e7 neighbours within 4 Å
    "graph-0.02-angstrom": ("CrystalGraph(cutoff=4.0, max_neighbors=8)", "Lattice.cubic(0.02)", "[0, 0, 0]"),
    # found by the fuzzing above: in a skewed cell, a fractional coordinate of 1e9 makes
    # pymatgen's neighbour search allocate without bound (a segfault without a memory cap)
    "graph-fractional-1e9": (
        "CrystalGraph(cutoff=4.0, max_neighbors=8)",
        "Lattice([[1.97, 0, -0.35], [1.34, 1.61, 0.92], [0, 0, 2.0]])",
        "[1e9, 0, 1.08]",
    ),
}


def test_absurd_cells_are_refused_before_allocating():
    import subprocess
    import sys

    # in one child process capped at 3 GB, so a regression cannot take the machine's memory
    script = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
from pymatgen.core import Lattice, Structure
from skmat.features import CrystalGraph, XRDPattern
for name, (featurizer, lattice, coords) in {ABSURD_CELLS!r}.items():
    structure = Structure(eval(lattice), ["Na"], [eval(coords)])
    try:
        eval(featurizer).fit_transform([structure])
        print(name, "accepted", flush=True)
    except ValueError as exc:
        print(name, "refused:", exc, flush=True)
    except MemoryError:
        print(name, "MemoryError", flush=True)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    outcomes = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert result.returncode == 0, (outcomes, result.stderr[-300:])
    assert set(outcomes) == set(ABSURD_CELLS)
    assert all(o.startswith("refused:") for o in outcomes.values()), outcomes
