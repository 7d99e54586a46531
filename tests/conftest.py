"""Shared fixtures: real structures only (pymatgen's bundled ones and the MP-20 files in the data home)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_home() -> Path:
    env = os.environ.get("SKMAT_DATA")
    # absolute, so tests may symlink into it from temporary folders
    return (Path(env) if env else REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_home() -> Path:
    """The shared data folder; tests that need it fail (not skip) when it is absent."""
    home = _data_home()
    assert home.is_dir(), f"SKMAT_DATA={home} does not exist: CI must point it at ../shared/data"
    return home


@pytest.fixture(scope="session")
def bundled_structures():
    """The ~20 real structures pymatgen ships in pymatgen/util/structures (offline, fast)."""
    import pymatgen.util
    from pymatgen.core import Structure

    folder = Path(pymatgen.util.__file__).parent / "structures"
    structures = [Structure.from_file(p) for p in sorted(folder.glob("*.json"))]
    assert len(structures) >= 10
    return structures


@pytest.fixture(scope="session")
def mp20_val_rows(data_home):
    """First 200 rows of MP-20 val as a DataFrame with parsed ``structure`` objects."""
    import pandas as pd
    from pymatgen.core import Structure

    frame = pd.read_csv(data_home / "mp_20" / "val.csv.gz", nrows=200)
    frame["structure"] = [Structure.from_str(c, fmt="cif") for c in frame["cif"]]
    return frame


@pytest.fixture(scope="session")
def multimat_arrays(data_home):
    """Every array of the MultiMat sample by name, loaded once (npz cannot be memory-mapped)."""
    with np.load(data_home / "multimat_sample" / "multimat_sample.npz") as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests train tiny models, where a second intra-op thread costs more than it gives
    (measured: 10-80x slower steps on a loaded 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_flush_denormal_left_on():
    """Fail the test that leaves torch's flush-denormal mode on: it is process-wide, and with it
    on hypothesis refuses to generate floats in every later test (seen once from a benchmark's
    main run in-process)."""
    yield
    from skmat.nn.gnn import _flush_denormal_is_on

    assert not _flush_denormal_is_on(), "this test left torch.set_flush_denormal(True) on"
