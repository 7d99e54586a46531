"""Dataset loaders on the real shared data (and real files served from loopback for downloads)."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skmat.datasets import (
    fetch_mp20,
    fetch_multimat_sample,
    fetch_perov5,
    fetch_rruff_xrd,
    get_data_home,
    load_prototypes,
)
from skmat.datasets._base import git_blob_sha1
from skmat.datasets._cdvae import CDVAE_BLOB_IDS, CDVAE_URL_ENV
from skmat.datasets._targets import CRYSTAL_SYSTEMS, LATTICE_COLUMNS, SCALED_COLUMNS
from skmat.exceptions import ChecksumError, DataNotFoundError, InvalidInputError

# spglib (called by SpacegroupAnalyzer in the checks below) warns about its error API per call
# and CifParser's site sorting warns that noble gases have no electronegativity
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:spglib.*"),
    pytest.mark.filterwarnings("ignore:No Pauling electronegativity:UserWarning"),
]

DERIVED = [*LATTICE_COLUMNS, *SCALED_COLUMNS, "spacegroup", "crystal_system"]


def _sga(structure):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return SpacegroupAnalyzer(structure, symprec=0.1)


@pytest.fixture(scope="session")
def perov(data_home):
    """The whole perov_5 val split, loaded once (the loader also caches it in-process)."""
    return fetch_perov5(split="val", data_home=data_home)


@pytest.fixture(scope="session")
def mp20(data_home):
    return fetch_mp20(split="val", data_home=data_home)


@pytest.fixture(scope="session")
def perov_csv_bytes(data_home) -> bytes:
    return gzip.decompress((data_home / "perov_5" / "val.csv.gz").read_bytes())


def _write_rows(home: Path, name: str, frame: pd.DataFrame, *, index: bool) -> Path:
    folder = home / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "val.csv"
    frame.to_csv(path, index=index)
    return path


@pytest.fixture(scope="session")
def mp20_small_home(data_home, tmp_path_factory) -> Path:
    """A data home with the first 120 real MP-20 val rows as a CSV (and no npz)."""
    home = tmp_path_factory.mktemp("mp20_small")
    _write_rows(home, "mp_20", pd.read_csv(data_home / "mp_20" / "val.csv.gz", nrows=120), index=False)
    return home


# ----------------------------------------------------------------------------------- data home


def test_get_data_home_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("SKMAT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    default = get_data_home()
    assert default == tmp_path / "skmat_data"
    assert not default.exists(), "resolving the data home must not create it"
    monkeypatch.setenv("SKMAT_DATA", str(tmp_path / "from_env"))
    assert get_data_home() == tmp_path / "from_env"
    assert get_data_home(tmp_path / "explicit") == tmp_path / "explicit"
    assert get_data_home("~/x") == tmp_path / "x"


def test_import_is_light():
    code = "import sys, skmat.datasets; print(sorted(m for m in ('pymatgen', 'sklearn', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------- perov_5


def test_perov5_full_split(perov, data_home):
    raw = pd.read_csv(data_home / "perov_5" / "val.csv.gz", index_col=0)
    frame = perov.frame
    assert len(frame) == len(raw) == 3787
    assert frame["material_id"].tolist() == raw["material_id"].tolist()
    np.testing.assert_array_equal(frame["heat_ref"], raw["heat_ref"])
    assert (frame["num_atoms"] == 5).all()
    assert {"material_id", "structure", "composition", "formula", *DERIVED} <= set(frame.columns)
    assert "cif" not in frame.columns
    from pymatgen.core import Composition

    for row in frame.sample(20, random_state=0).itertuples():
        assert row.structure.composition.reduced_formula == Composition(row.formula).reduced_formula
        assert row.composition == row.structure.composition
    assert set(frame["crystal_system"]) <= set(CRYSTAL_SYSTEMS)
    assert "Castelli" in perov.DESCR and "MIT" in perov.DESCR


def test_derived_targets_match_pymatgen(perov, rng):
    frame = perov.frame
    rows = frame.iloc[rng.choice(len(frame), size=30, replace=False)]
    for row in rows.itertuples():
        s = row.structure
        np.testing.assert_allclose([row.a, row.b, row.c], s.lattice.abc, rtol=1e-10)
        np.testing.assert_allclose([row.alpha, row.beta, row.gamma], s.lattice.angles, rtol=1e-10)
        np.testing.assert_allclose(
            [row.a_scaled, row.b_scaled, row.c_scaled], np.array(s.lattice.abc) / len(s) ** (1 / 3), rtol=1e-12
        )
        analyzer = _sga(s)
        assert row.spacegroup == analyzer.get_space_group_number()
        assert row.crystal_system == analyzer.get_crystal_system()


def test_return_X_y_and_target_shortcuts(perov, data_home):
    X, y = perov.data, perov.target
    assert list(X.columns) == ["structure", "composition"] and X.index.name == "material_id"
    assert y.name == "heat_ref" and y.index.equals(X.index)
    assert perov.feature_names == ["structure", "composition"] and perov.target_names == ["heat_ref"]
    X2, y2 = fetch_perov5(data_home=data_home, return_X_y=True, target="lattice")
    assert X2.shape == (3787, 2) and list(y2.columns) == SCALED_COLUMNS
    np.testing.assert_array_equal(y2.to_numpy(), perov.frame[SCALED_COLUMNS].to_numpy())
    _, y3 = fetch_perov5(data_home=data_home, return_X_y=True, target="crystal_system")
    assert isinstance(y3, pd.Series) and y3.shape == (3787,)
    with pytest.raises(InvalidInputError, match="unknown target"):
        fetch_perov5(data_home=data_home, target="not_a_column")


def test_loader_returns_fresh_structures(perov, data_home):
    again = fetch_perov5(data_home=data_home)
    first, second = perov.frame["structure"].iloc[0], again.frame["structure"].iloc[0]
    assert first is not second and first == second
    second.replace(0, "Fe")
    second[1].frac_coords[0] += 0.25  # in place, on the site's own array
    assert fetch_perov5(data_home=data_home).frame["structure"].iloc[0] == first


def test_fast_cif_reader_is_identical_to_cifparser(data_home, bundled_structures):
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    from skmat.datasets._cif import read_p1_cif

    for name, index_col in [("perov_5", 0), ("carbon_24", 0), ("mp_20", None)]:
        cifs = pd.read_csv(data_home / name / "val.csv.gz", index_col=index_col, nrows=60)["cif"]
        for text in cifs:
            fast, reference = read_p1_cif(text), Structure.from_str(text, fmt="cif")
            np.testing.assert_array_equal(fast.lattice.matrix, reference.lattice.matrix)
            np.testing.assert_array_equal(fast.frac_coords, reference.frac_coords)
            assert [site.species for site in fast] == [site.species for site in reference]
            assert fast.labels == reference.labels
    # anything but CifWriter's P1 layout is declined, so the caller uses CifParser
    si = next(s for s in bundled_structures if s.composition.reduced_formula == "Si")
    assert read_p1_cif(str(CifWriter(si, symprec=0.1))) is None
    assert read_p1_cif(str(CifWriter(si)).replace("_cell_volume", "_cell_measurement_temperature 10\n_cell_volume")) is None


# ---------------------------------------------------------------------------------------- MP-20


def test_mp20_val_from_npz(mp20, data_home, rng):
    raw = pd.read_csv(data_home / "mp_20" / "val.csv.gz")
    frame = mp20.frame
    assert len(frame) == 9047
    assert frame["material_id"].tolist() == raw["material_id"].tolist()
    np.testing.assert_array_equal(frame["spacegroup"], raw["spacegroup.number"])
    np.testing.assert_array_equal(frame["num_atoms"], raw["num_atoms"])
    np.testing.assert_allclose(
        frame[SCALED_COLUMNS].to_numpy(),
        frame[["a", "b", "c"]].to_numpy() / np.cbrt(raw["num_atoms"].to_numpy())[:, None],
        rtol=1e-12,
    )
    from pymatgen.core import Structure

    for i in rng.choice(len(frame), size=30, replace=False):
        structure = frame["structure"].iloc[i]
        from_cif = Structure.from_str(raw["cif"].iloc[i], fmt="cif")
        # the CIF stores lengths and angles, so compare those (its matrix is a rotated one)
        np.testing.assert_allclose(structure.lattice.parameters, from_cif.lattice.parameters, rtol=1e-6)
        assert structure.composition == from_cif.composition
        assert frame["crystal_system"].iloc[i] == _sga(structure).get_crystal_system()


def test_mp20_csv_path_reuses_spacegroup_column(mp20_small_home, data_home):
    X, y = fetch_mp20(data_home=mp20_small_home, return_X_y=True, target=["spacegroup", "crystal_system"])
    raw = pd.read_csv(mp20_small_home / "mp_20" / "val.csv")
    assert X.shape == (120, 2) and y.shape == (120, 2)
    np.testing.assert_array_equal(y["spacegroup"], raw["spacegroup.number"])
    assert X.index.tolist() == raw["material_id"].tolist()
    assert [len(s) for s in X["structure"]] == raw["num_atoms"].tolist()


def test_mp20_npz_that_does_not_match_is_ignored(mp20_small_home, data_home, tmp_path):
    home = tmp_path / "home"
    (home / "mp_20").mkdir(parents=True)
    os.symlink(mp20_small_home / "mp_20" / "val.csv", home / "mp_20" / "val.csv")
    os.symlink(data_home / "mp_20" / "val.npz", home / "mp_20" / "val.npz")  # 9,047 ids, CSV has 120
    with pytest.warns(UserWarning, match="same material_ids"):
        data = fetch_mp20(data_home=home)
    assert len(data.frame) == 120


def test_conventional_cell(mp20_small_home):
    given = fetch_mp20(data_home=mp20_small_home).frame
    conventional = fetch_mp20(data_home=mp20_small_home, conventional=True).frame
    assert (given["spacegroup"] == conventional["spacegroup"]).all()
    for (_, g), (_, c) in zip(given.iterrows(), conventional.iterrows(), strict=True):
        cell = _sga(g["structure"]).get_conventional_standard_structure()
        np.testing.assert_allclose([c["a"], c["b"], c["c"]], cell.lattice.abc, rtol=1e-10)
        np.testing.assert_allclose(c["a_scaled"], c["a"] / len(cell) ** (1 / 3), rtol=1e-12)
    cubic = conventional[conventional["crystal_system"] == "cubic"]
    assert len(cubic) > 0, "the first MP-20 rows include cubic crystals"
    np.testing.assert_allclose(cubic[["alpha", "beta", "gamma"]].to_numpy(), 90.0, atol=1e-6)
    np.testing.assert_allclose(cubic["a"], cubic["c"], rtol=1e-6)


# ------------------------------------------------------------------------------------ downloads


def test_pinned_blob_id_of_shared_file(perov_csv_bytes):
    assert git_blob_sha1(perov_csv_bytes) == CDVAE_BLOB_IDS["perov_5", "val"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def cdvae_server(perov_csv_bytes, tmp_path_factory):
    """Loopback HTTP server with ``good/`` (the real file), ``bad/`` (one byte changed), ``empty/``."""
    root = tmp_path_factory.mktemp("server")
    corrupted = bytearray(perov_csv_bytes)
    corrupted[len(corrupted) // 2] ^= 0x01
    for flavour, content in [("good", perov_csv_bytes), ("bad", bytes(corrupted))]:
        (root / flavour / "perov_5").mkdir(parents=True)
        (root / flavour / "perov_5" / "val.csv").write_bytes(content)
    (root / "empty").mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_download_verifies_and_writes(cdvae_server, monkeypatch, tmp_path, perov_csv_bytes):
    monkeypatch.setenv(CDVAE_URL_ENV, f"{cdvae_server}/good")
    data = fetch_perov5(split="val", data_home=tmp_path)
    assert _files_under(tmp_path) == [tmp_path / "perov_5" / "val.csv"]
    assert (tmp_path / "perov_5" / "val.csv").read_bytes() == perov_csv_bytes
    assert len(data.frame) == 3787
    # a second call reads the file now in the data home instead of the (stopped) network
    monkeypatch.setenv(CDVAE_URL_ENV, "http://127.0.0.1:9/nothing-listens-here")
    assert len(fetch_perov5(data_home=tmp_path).frame) == 3787


def test_corrupted_download_is_rejected(cdvae_server, monkeypatch, tmp_path):
    monkeypatch.setenv(CDVAE_URL_ENV, f"{cdvae_server}/bad")
    with pytest.raises(ChecksumError, match=CDVAE_BLOB_IDS["perov_5", "val"]):
        fetch_perov5(data_home=tmp_path)
    assert _files_under(tmp_path) == []


def test_http_error_leaves_nothing(cdvae_server, monkeypatch, tmp_path):
    monkeypatch.setenv(CDVAE_URL_ENV, f"{cdvae_server}/empty")
    with pytest.raises(DataNotFoundError, match="HTTP 404"):
        fetch_perov5(data_home=tmp_path)
    assert _files_under(tmp_path) == []


def test_no_download_names_the_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "perov_5" / "val.csv")):
        fetch_perov5(data_home=tmp_path, download_if_missing=False)
    assert not (tmp_path / "perov_5").exists()


# ------------------------------------------------------------------------------- damaged rows


def _truncate_half(cif: str) -> str:
    return cif[: len(cif) // 2]


def _drop_last_atom(cif: str) -> str:
    lines = cif.rstrip("\n").split("\n")
    return "\n".join(lines[:-1]) + "\n"


@pytest.mark.parametrize("damage", [_truncate_half, _drop_last_atom])
def test_unreadable_row_raises_or_is_skipped(data_home, tmp_path, damage):
    rows = pd.read_csv(data_home / "perov_5" / "val.csv.gz", index_col=0, nrows=20)
    bad_id = rows["material_id"].iloc[7]
    rows.iloc[7, rows.columns.get_loc("cif")] = damage(rows["cif"].iloc[7])
    _write_rows(tmp_path, "perov_5", rows, index=True)
    with pytest.raises(InvalidInputError) as info:
        fetch_perov5(data_home=tmp_path)
    assert info.value.row == bad_id
    with pytest.warns(UserWarning, match="skipped 1 of 20"):
        data = fetch_perov5(data_home=tmp_path, errors="skip")
    assert len(data.frame) == 19 and bad_id not in set(data.frame["material_id"])
    with pytest.raises(InvalidInputError, match="errors"):
        fetch_perov5(data_home=tmp_path, errors="ignore")


# ------------------------------------------------------------------------- other shared data


def test_multimat_sample(data_home):
    data = fetch_multimat_sample(data_home=data_home)
    with np.load(data_home / "multimat_sample" / "multimat_sample.npz") as arrays:
        dos_exists, rho_exists = arrays["dos_exists"], arrays["charge_density_exists"]
        n = len(arrays["material_id"])
    frame = data.frame
    assert len(frame) == n
    assert frame["dos"].notna().to_numpy().tolist() == dos_exists.tolist()
    assert frame["charge_density"].notna().to_numpy().tolist() == rho_exists.tolist()
    first_dos = frame["dos"][dos_exists].iloc[0]
    first_rho = frame["charge_density"][rho_exists].iloc[0]
    assert first_dos.shape == (2, 601) and first_dos.dtype == np.float32
    assert first_rho.shape == (32, 32, 32) and first_rho.dtype == np.float32
    assert frame["text"].iloc[0].shape == (768,)
    X, y = fetch_multimat_sample(data_home=data_home, return_X_y=True, target="bulk_modulus")
    assert list(X.columns) == ["dos", "charge_density", "text"] and y.shape == (n,)
    assert y.notna().sum() == np.isfinite(frame["bulk_modulus"]).sum() > 0


def test_multimat_missing_file_is_named(tmp_path):
    with pytest.raises(DataNotFoundError, match="multimat_sample.npz"):
        fetch_multimat_sample(data_home=tmp_path)


def test_rruff_xrd(data_home):
    X, y = fetch_rruff_xrd(data_home=data_home, return_X_y=True)
    meta = pd.read_csv(data_home / "rruff_xrd" / "meta.csv")
    assert X.shape == (len(meta), 2) and X.index.tolist() == meta["id"].tolist()
    assert set(y) <= set(CRYSTAL_SYSTEMS) and y.tolist() == meta["crystal_system"].tolist()
    two_theta, intensity = X["two_theta"].iloc[0], X["intensity"].iloc[0]
    assert two_theta.shape == intensity.shape == (meta["n_points"].iloc[0],)
    assert two_theta[0] == pytest.approx(meta["two_theta_min"].iloc[0], abs=1e-4)
    assert intensity.max() == pytest.approx(1000, rel=1e-3)


# ------------------------------------------------------------------------------------ prototypes


def test_load_prototypes():
    data = load_prototypes()
    frame = data.frame
    assert len(frame) >= 288 + 10
    assert frame["material_id"].is_unique
    assert (frame["source"] == "aflow").sum() == 288
    assert {"structure", "composition", "num_atoms", *DERIVED} <= set(frame.columns)
    assert set(frame["crystal_system"]) == set(CRYSTAL_SYSTEMS)
    si = frame.set_index("material_id").loc["Si"]
    assert si["spacegroup"] == 227 and si["crystal_system"] == "cubic"
    # callers get copies: editing one does not leak into the next call
    formula = frame["structure"].iloc[0].composition.formula
    frame["structure"].iloc[0].replace(0, "Fe")
    frame.loc[0, "a"] = -1.0
    fresh = load_prototypes().frame
    assert fresh["structure"].iloc[0].composition.formula == formula and fresh["a"].iloc[0] > 0
    for target, columns in [
        ("lattice", SCALED_COLUMNS),
        ("lattice_raw", ["a", "b", "c"]),
        ("angles", ["alpha", "beta", "gamma"]),
        (["spacegroup", "num_atoms"], ["spacegroup", "num_atoms"]),
    ]:
        X, y = load_prototypes(return_X_y=True, target=target)
        assert X.shape == (len(frame), 2) and list(y.columns) == columns
        np.testing.assert_array_equal(y.to_numpy(), fresh[columns].to_numpy())
        assert y.index.equals(X.index) and X.index.name == "material_id"
