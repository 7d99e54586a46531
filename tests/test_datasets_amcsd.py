"""fetch_amcsd on real entries of the AMCSD copy that larixite ships.

Parsing all 9,275 entries takes minutes, so most tests read a copy of the bundled database cut
down to a few dozen real entries, chosen to include each kind of entry the loader must refuse
(an unreadable CIF, ammonium read as nihonium, an element outside the database's own list, a cell
spglib cannot analyse) and a synthetic phase without a mineral name.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import sys
import warnings

import numpy as np
import pytest

from _helpers import amcsd_subset

from skmat.datasets import fetch_amcsd
from skmat.datasets._amcsd import bundled_database
from skmat.exceptions import DataNotFoundError, InvalidInputError

GOOD = [3, 4, 5, 112, 884, 835, 1345, 3133, 5799, 6898, 8938, 9956, 10493, 10584, 11372, 12893, 14701, 19266, 20360, 17605, 7897]
UNNAMED = [9, 10, 107]  # K2S2O6, Rb2S2O6, CuCO3: synthetic phases, named by their formula title
REFUSED = {
    23: "unreadable CIF",  # Hydrokenoralstonite: pymatgen finds no structure in it
    9319: "Nh",  # Salammoniac NH4Cl: the ammonium site label is read as nihonium
    18330: "not in the database's element list",  # Stichtite: a Co site the entry's elements lack
    121: "spglib failed",  # Digenite
}
SUBSET = sorted(GOOD + UNNAMED + list(REFUSED))


def _sha1(path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def subset_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("amcsd") / "amcsd_subset.db"
    amcsd_subset(path, SUBSET)
    return path


@pytest.fixture(scope="module")
def loaded(subset_db, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return fetch_amcsd(database=subset_db, data_home=home), home


def test_bundled_database_is_larixites_amcsd():
    path = bundled_database()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        assert connection.execute("SELECT COUNT(*) FROM cif").fetchone()[0] == 9275


def test_rows_columns_and_labels(loaded):
    bunch, _ = loaded
    frame = bunch.frame
    assert sorted(frame["amcsd_id"]) == sorted(GOOD + UNNAMED)
    galena = frame.set_index("amcsd_id").loc[3]
    assert galena["mineral"] == "Galena" and galena["phase"] == "Galena"
    assert galena["space_group_number"] == 225 and galena["crystal_system"] == "cubic"
    assert galena["database_space_group_number"] == 225
    assert galena["structure"].composition.reduced_formula == "PbS"
    assert len(galena["structure"]) == 8  # conventional cell of the rock-salt structure
    unnamed = frame.set_index("amcsd_id").loc[UNNAMED]
    assert unnamed["mineral"].isna().all()
    assert unnamed["phase"].tolist() == ["K2S2O6", "Rb2S2O6", "CuCO3"]
    assert set(frame["crystal_system"]) <= {
        "triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"
    }  # fmt: skip
    # spglib's crystal system and the one of the CIF's own operations: counted, not hidden
    known = frame["database_space_group_number"] > 0
    assert bunch.symmetry_disagreements == int(
        (frame.loc[known, "crystal_system"] != frame.loc[known, "database_crystal_system"]).sum()
    )
    assert bunch.symmetry_disagreements >= 1  # arsenopyrite (112) is monoclinic to spglib, triclinic in its CIF


def test_every_refused_entry_is_counted_with_its_reason(loaded):
    bunch, _ = loaded
    skipped = bunch.skipped.set_index("amcsd_id")
    assert bunch.n_skipped == len(REFUSED) == len(skipped)
    for cif_id, reason in REFUSED.items():
        assert reason in skipped.loc[cif_id, "reason"], (cif_id, skipped.loc[cif_id, "reason"])
    for structure in bunch.frame["structure"]:
        assert not {e.symbol for e in structure.composition.elements} & {"Nh", "Am", "Cm", "Fl"}


def test_x_y_are_indexed_by_the_entry_id(subset_db, loaded):
    _, home = loaded
    X, y = fetch_amcsd(database=subset_db, data_home=home, return_X_y=True)
    assert list(X.columns) == ["structure"] and X.index.name == "amcsd_id"
    assert (X.index == y.index).all() and y.loc[3] == "cubic"


def test_second_load_comes_from_the_cache_and_equals_the_first(subset_db, loaded):
    first, home = loaded
    caches = list((home / "amcsd").glob("amcsd-*.npz"))
    assert len(caches) == 1
    again = fetch_amcsd(database=subset_db, data_home=home)
    assert list(again.frame["amcsd_id"]) == list(first.frame["amcsd_id"])
    for a, b in zip(first.frame["structure"], again.frame["structure"], strict=True):
        assert a == b and a is not b
    # the cache is used: with the database gone from its path, a new copy with the same bytes loads
    moved = home / "same_bytes.db"
    shutil.copy(subset_db, moved)
    assert fetch_amcsd(database=moved, data_home=home).n_skipped == len(REFUSED)


def test_disorder_is_kept(loaded):
    bunch, _ = loaded
    frame = bunch.frame
    assert (~frame["is_ordered"]).any()
    for structure, ordered in zip(frame["structure"], frame["is_ordered"], strict=True):
        assert structure.is_ordered == ordered


def test_errors_raise_names_the_first_refused_entry(subset_db, tmp_path):
    with pytest.raises(InvalidInputError, match=r"row 23.*unreadable CIF"):
        fetch_amcsd(database=subset_db, data_home=tmp_path, errors="raise")
    with pytest.raises(InvalidInputError, match="errors must be"):
        fetch_amcsd(database=subset_db, data_home=tmp_path, errors="ignore")


def test_the_database_file_is_never_written(subset_db, tmp_path):
    before = _sha1(subset_db)
    fetch_amcsd(database=subset_db, data_home=tmp_path)
    assert _sha1(subset_db) == before
    assert _sha1(bundled_database()) == _sha1(bundled_database())  # and readable as it was


def test_unwritable_cache_location_still_loads(subset_db, tmp_path):
    # a *file* where the cache folder should be: writing fails even for root
    (tmp_path / "amcsd").write_text("occupied")
    with pytest.warns(UserWarning, match="could not cache"):
        bunch = fetch_amcsd(database=subset_db, data_home=tmp_path)
    assert len(bunch.frame) == len(GOOD + UNNAMED) and bunch.n_skipped == len(REFUSED)


def test_damaged_cache_is_rebuilt(subset_db, loaded, tmp_path):
    _, home = loaded
    home_copy = tmp_path / "home"
    shutil.copytree(home, home_copy)
    cache = next((home_copy / "amcsd").glob("amcsd-*.npz"))
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.warns(UserWarning, match="ignoring unreadable AMCSD cache"):
        bunch = fetch_amcsd(database=subset_db, data_home=home_copy)
    assert len(bunch.frame) == len(GOOD + UNNAMED)


def test_bad_database_files(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        fetch_amcsd(database=tmp_path / "nowhere.db", data_home=tmp_path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(InvalidInputError, match="not a readable SQLite database"):
        fetch_amcsd(database=garbage, data_home=tmp_path)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE cif (id integer)")
    with pytest.raises(InvalidInputError, match="not an AMCSD database"):
        fetch_amcsd(database=other, data_home=tmp_path)


def test_without_larixite_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "larixite", None)
    with pytest.raises(ImportError, match=r"pip install 'skmat\[minerals\]'"):
        fetch_amcsd(data_home=tmp_path)


def test_patterns_of_loaded_minerals_are_finite(loaded):
    from skmat.features import XRDPattern

    bunch, _ = loaded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patterns = XRDPattern().fit_transform(list(bunch.frame["structure"]))
    assert np.isfinite(patterns).all() and np.allclose(patterns.max(axis=1), 1.0)
