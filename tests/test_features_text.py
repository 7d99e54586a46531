"""StructureDescription (robocrystallographer) on real structures, and the empty-text check."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from sklearn.base import clone

from skmat._inputs import check_texts
from skmat._parallel import chunks_in_cache
from skmat.exceptions import InvalidInputError
from skmat.features.text import StructureDescription, _describe_chunk

# robocrys takes seconds per structure: a few rows only
N_ROWS = 3


@pytest.fixture(scope="module")
def mp20(mp20_val_rows):
    return mp20_val_rows.iloc[:N_ROWS][["material_id", "structure"]].reset_index(drop=True)


@pytest.fixture(scope="module")
def disordered(bundled_structures):
    """Li10GeP2S12 (pymatgen's bundled, partially occupied): robocrys cannot describe it."""
    found = [s for s in bundled_structures if not s.is_ordered]
    assert found
    return found[0]


@pytest.fixture(scope="module")
def described(mp20):
    return StructureDescription().fit_transform(mp20)


@pytest.fixture(scope="module")
def rock_salt():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])


def test_descriptions_name_formula_and_space_group(mp20, described):
    assert described.shape == (N_ROWS, 1) and described.dtype == object
    for structure, text in zip(mp20["structure"], described[:, 0], strict=True):
        assert isinstance(text, str) and len(text) > 100
        symbol = SpacegroupAnalyzer(structure, symprec=0.01).get_space_group_symbol()
        assert f" {symbol} space group" in text, text
        # the text opens with the formula ("Li2FeBO4 crystallizes in ...")
        formula = text.split()[0]
        assert Composition(formula).reduced_composition == structure.composition.reduced_composition, text
    assert len(set(described[:, 0])) == N_ROWS


def test_output_is_the_text_column(mp20, described):
    out = StructureDescription().set_output(transform="pandas").fit_transform(mp20.iloc[:1])
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["text"]
    assert out["text"].iloc[0] == described[0, 0]


def test_mineral_matching_settings(rock_salt):
    with_mineral = StructureDescription(mineral_matching="aflow").fit_transform([rock_salt])[0, 0]
    without = StructureDescription(mineral_matching=None).fit_transform([rock_salt])[0, 0]
    assert re.search(r"rock ?salt", with_mineral, flags=re.I), with_mineral
    assert not re.search(r"rock ?salt", without, flags=re.I), without
    # the rest of the description is the same: matching only adds the mineral name
    assert "Fm-3m" in without and "Na(1) is bonded to six equivalent Cl(1) atoms" in without


def test_default_text_is_robocrys_text_faster(mp20, described):
    # the candidate filter in front of robocrys' AFLOW matching changes no word
    from robocrys import StructureCondenser, StructureDescriber

    from skmat.features.text import _canonical_text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = StructureDescriber().describe(StructureCondenser().condense_structure(mp20["structure"].iloc[0]))
    assert described[0, 0] == _canonical_text(plain)


def test_text_is_canonical_whatever_the_hash_seed():
    from skmat.features.text import _canonical_text

    # robocrys' set order of connectivities (seen in two processes on mp-3286, Ce(AlZn)2)
    one = "to form a mixture of distorted edge, corner, and face-sharing AlCe4Zn4 tetrahedra."
    other = "to form a mixture of distorted corner, face, and edge-sharing AlCe4Zn4 tetrahedra."
    assert _canonical_text(one) == _canonical_text(other) == (
        "to form a mixture of distorted corner, edge, and face-sharing AlCe4Zn4 tetrahedra."
    )
    assert _canonical_text("a mixture of edge and corner-sharing NiO6 octahedra") == (
        "a mixture of corner and edge-sharing NiO6 octahedra"
    )
    text = "two MgTb2 sheets oriented in the (np.int64(0), np.int64(-1), np.float64(1.5)) direction"
    assert _canonical_text(text) == "two MgTb2 sheets oriented in the (0, -1, 1.5) direction"


def test_primitive_cell_with_mineral_matching_works(data_home):
    # robocrys hands the matcher a SymmetrizedStructure, which pymatgen's Niggli reduction
    # cannot rebuild: 7 of 20 MP-20 rows failed (TypeError) before the matcher converted it,
    # among them LiGaS2 (mp-3647)
    frame = pd.read_csv(data_home / "mp_20" / "val.csv.gz", usecols=["material_id", "cif"])
    rows = frame[frame["material_id"] == "mp-3647"]
    out = StructureDescription(use_conventional_cell=False, mineral_matching="aflow").fit_transform(rows)
    assert out[0, 0].startswith("LiGaS2 crystallizes in the orthorhombic Pna2_1 space group")


def test_unknown_failure_raises_naming_the_row(mp20, disordered):
    X = pd.DataFrame({"material_id": ["mp-a", "li10gep2s12"], "structure": [mp20["structure"].iloc[0], disordered]})
    with pytest.raises(InvalidInputError, match="robocrys cannot describe") as caught:
        StructureDescription().fit_transform(X)
    assert caught.value.row == "li10gep2s12" and caught.value.view == "structure"
    assert "errors='skip'" in str(caught.value)


def test_skip_leaves_a_missing_text_view_counted_and_warned(mp20, disordered, described):
    X = pd.DataFrame(
        {"material_id": ["mp-a", "li10gep2s12"], "structure": [mp20["structure"].iloc[0], disordered]}
    )
    describer = StructureDescription(errors="skip")
    with pytest.warns(UserWarning, match=r"could not describe 1 of 2 structures \(rows 'li10gep2s12'\)"):
        out = describer.fit_transform(X)
    assert out[0, 0] == described[0, 0] and out[1, 0] is None
    assert describer.n_failed_ == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no failure, no warning
        describer.transform(mp20.iloc[:1])
    assert describer.n_failed_ == 0


def test_memory_caches_descriptions_and_failures(mp20, disordered, tmp_path):
    describer = StructureDescription(errors="skip", memory=tmp_path, chunk_size=1)
    X = pd.DataFrame({"structure": [mp20["structure"].iloc[0], disordered]})
    with pytest.warns(UserWarning):
        first = describer.fit_transform(X)
    items = describer._items(X)
    assert chunks_in_cache(_describe_chunk, items, kwargs=describer._chunk_kwargs(), chunk_size=1, memory=tmp_path) == [
        True,
        True,
    ]
    with pytest.warns(UserWarning):
        again = clone(describer).fit_transform(X)
    np.testing.assert_array_equal(again, first)


def test_bad_settings_and_bad_structures_are_refused(mp20):
    with pytest.raises(ValueError, match="errors"):
        StructureDescription(errors="ignore").fit(mp20)
    with pytest.raises(ValueError, match="mineral_matching"):
        StructureDescription(mineral_matching="fingerprint").fit(mp20)
    structure = mp20["structure"].iloc[1].copy()
    structure.append(structure[0].species, structure[0].coords, coords_are_cartesian=True)
    X = pd.DataFrame({"material_id": ["mp-a", "dup"], "structure": [mp20["structure"].iloc[0], structure]})
    with pytest.raises(InvalidInputError, match="Å apart") as caught:
        StructureDescription().fit_transform(X)
    assert caught.value.row == "dup"


# -- empty text ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", " ", "\n\t  "])
def test_empty_or_whitespace_text_is_refused_naming_the_row(described, text):
    cells = [described[0, 0], None, text]
    with pytest.raises(InvalidInputError, match="empty or whitespace only") as caught:
        check_texts(cells, ["mp-a", "mp-b", "mp-c"], view="text")
    assert caught.value.row == "mp-c" and caught.value.view == "text"


def test_descriptions_and_missing_texts_pass_the_text_check(described):
    check_texts([*described[:, 0], None, float("nan"), np.zeros(384)], list(range(N_ROWS + 3)))


def test_descriptions_feed_an_aligner_with_a_missing_text_row(mp20, described, disordered):
    from skmat.align import MultiModalAligner
    from skmat.encoders import CompositionEncoder, TextEncoder

    # what the CMMA benchmark does: a structure robocrys cannot describe is a missing text view
    # for its row, and the aligner trains and embeds around it
    X = pd.DataFrame({"structure": [*mp20["structure"], disordered]})
    with pytest.warns(UserWarning, match="could not describe 1 of 4"):
        X["text"] = StructureDescription(errors="skip").fit_transform(X)[:, 0]
    assert X["text"].iloc[-1] is None and list(X["text"].iloc[:N_ROWS]) == list(described[:, 0])
    tiny = dict(out_dim=4, max_epochs=1, batch_size=4, validation_fraction=0.0, random_state=0)
    aligner = MultiModalAligner(
        encoders=[("text", TextEncoder(hidden_dims=(8,), **tiny)), ("composition", CompositionEncoder(hidden_dims=(8,), **tiny))],
        latent_dim=4, max_epochs=1, batch_size=4, validation_fraction=0.0, random_state=0,
    ).fit(X)
    Z = aligner.transform(X)
    assert Z.shape[0] == len(X) and np.isfinite(Z).all()
    assert aligner.encoders_[0][1].embedding_dim_ == 384  # all-MiniLM-L6-v2
