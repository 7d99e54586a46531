"""Atoms closer than ``MIN_INTERATOMIC_DISTANCE`` are refused at every structure entry point
(issue 15, bad input): before the check, a duplicated site went through
``MultiModalAligner.transform`` and gave finite, meaningless embeddings (zero-length graph edges).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from skmat._inputs import MIN_INTERATOMIC_DISTANCE, as_structures, check_min_distance
from skmat.align import MultiModalAligner
from skmat.datasets import fetch_mp20, load_prototypes
from skmat.encoders import CompositionEncoder, StructureEncoder, XRDEncoder
from skmat.exceptions import InvalidInputError
from skmat.features import CompositionFeatures, CrystalGraph, XRDPattern

TINY = dict(out_dim=4, max_epochs=1, batch_size=8, validation_fraction=0.0, random_state=0)
BAD = 3


@pytest.fixture(scope="module")
def mp20(mp20_val_rows):
    return mp20_val_rows.iloc[:10][["material_id", "structure"]].reset_index(drop=True)


def duplicated_site(structure: Structure, shift: float = 0.0) -> Structure:
    """A copy of *structure* with its site 0 repeated, moved by *shift* Å along x."""
    out = structure.copy()
    out.append(out[0].species, out[0].coords + np.array([shift, 0.0, 0.0]), coords_are_cartesian=True)
    return out


def with_structure(X: pd.DataFrame, structure: Structure, row: int = BAD) -> pd.DataFrame:
    out = X.copy()
    cells = list(out["structure"])
    cells[row] = structure
    out["structure"] = pd.Series(cells, index=out.index, dtype=object)
    return out


@pytest.fixture(scope="module")
def aligner(mp20):
    encoders = [
        ("structure", StructureEncoder(hidden_dim=8, n_layers=1, max_neighbors=6, **TINY)),
        ("xrd", XRDEncoder(n_bins=64, channels=(4,), **TINY)),
        ("composition", CompositionEncoder(hidden_dims=(8,), **TINY)),
    ]
    return MultiModalAligner(encoders=encoders, latent_dim=4, max_epochs=1, batch_size=8,
                             validation_fraction=0.0, random_state=0).fit(mp20)


ENTRY_POINTS = {
    "as_structures": lambda X, a: as_structures(X),
    "XRDPattern": lambda X, a: XRDPattern(n_bins=64).fit_transform(X),
    "CompositionFeatures": lambda X, a: CompositionFeatures().fit_transform(X),
    "CrystalGraph": lambda X, a: CrystalGraph(max_neighbors=6).fit_transform(X),
    "StructureEncoder.fit": lambda X, a: StructureEncoder(hidden_dim=8, n_layers=1, max_neighbors=6, **TINY).fit(
        X, np.arange(len(X), dtype=float)
    ),
    "MultiModalAligner.transform": lambda X, a: a.transform(X),
    "MultiModalAligner.embed": lambda X, a: a.embed(X, "composition"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_two_atoms_on_one_position_are_refused_naming_row_and_sites(entry, mp20, aligner):
    real = mp20["structure"].iloc[BAD]
    bad = with_structure(mp20, duplicated_site(real))
    with pytest.raises(InvalidInputError, match=r"sites 0 \(\w+\) and \d+ \(\w+\) are 0\.00 Å apart") as caught:
        ENTRY_POINTS[entry](bad, aligner)
    assert caught.value.row == mp20["material_id"].iloc[BAD]
    assert caught.value.view == "structure"
    # the second site is the appended copy (the structure's last site)
    assert f"and {len(real)} (" in str(caught.value)


def test_aligner_transform_of_clean_rows_is_unchanged_by_the_check(mp20, aligner):
    # the check refuses nothing real: the 10 rows embed, finite
    Z = aligner.transform(mp20)
    assert Z.shape[0] == len(mp20) and np.isfinite(Z).all()


def test_threshold_is_sharp(mp20):
    real = mp20["structure"].iloc[0]
    check_min_distance(duplicated_site(real, MIN_INTERATOMIC_DISTANCE + 0.01))
    with pytest.raises(InvalidInputError, match=re.escape(f"minimum {MIN_INTERATOMIC_DISTANCE:g} Å")):
        check_min_distance(duplicated_site(real, MIN_INTERATOMIC_DISTANCE - 0.01))


def test_atom_close_to_its_own_periodic_image_is_refused():
    # one lattice vector typed in nm instead of Å: 11 Å^3 per site passes the density check
    squashed = Structure(Lattice.orthorhombic(0.45, 5.0, 5.0), ["Na"], [[0, 0, 0]])
    with pytest.raises(InvalidInputError, match="site 0 \\(Na\\) is 0.45 Å from a periodic image of itself"):
        as_structures([squashed])


def test_split_sites_of_one_atom_are_allowed_but_overfilled_ones_are_not():
    lattice = Lattice.cubic(5.64)
    # two half-occupied Li positions 0.3 Å apart: one atom on either, never both
    split = Structure(lattice, ["Cl", {"Li": 0.5}, {"Li": 0.5}], [[0, 0, 0], [0.5] * 3, [0.5 + 0.3 / 5.64, 0.5, 0.5]])
    check_min_distance(split)
    overfilled = Structure(lattice, ["Cl", {"Li": 0.7}, {"Li": 0.7}], [[0, 0, 0], [0.5] * 3, [0.5 + 0.3 / 5.64, 0.5, 0.5]])
    with pytest.raises(InvalidInputError, match="sites 1 .* and 2 .* 0.30 Å apart"):
        check_min_distance(overfilled)


def test_every_mp20_val_and_prototype_structure_passes(data_home):
    # fetch_mp20 runs check_structure (and so the distance check) on every row while loading.
    # Measured when the threshold was chosen: the closest pair in MP-20 val is H-H at 0.748 Å
    # (mp-1079902, SnH4), in the prototypes N-H at 0.99 Å.
    structures = list(fetch_mp20(split="val", data_home=data_home).frame["structure"])
    assert len(structures) == 9047
    closest = min(float(s.get_neighbor_list(1.0)[3].min(initial=np.inf)) for s in structures)
    assert MIN_INTERATOMIC_DISTANCE < closest < 0.75
    as_structures(list(load_prototypes().frame["structure"]))
