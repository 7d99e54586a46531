"""Loader of measured RRUFF powder XRD patterns (the only measured patterns skmat has)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from skmat.datasets._base import dataset_bunch, find_local, get_data_home, missing_file_error
from skmat.exceptions import InvalidInputError

RRUFF_FILES = ["rruff_xrd/patterns.npz", "rruff_xrd/meta.csv"]
#: Cu K-alpha (Å): RRUFF measures powder patterns with it; assumed when a set stores no wavelength
CU_K_ALPHA = 1.5418

RRUFF_DESCR = """RRUFF measured powder XRD patterns (250 minerals)
=================================================

Powder X-ray diffraction patterns measured by the RRUFF project, as resampled by Salgado et
al.: 2 theta = 5.00-89.99 degrees in 0.01 degree steps (8,500 points), intensity scaled to a
maximum of 1000, some with background, some without. Labels: crystal_system (no trigonal
minerals here) and space_group_number. The wavelength is not stored upstream: Cu K-alpha
(1.5418 A) is assumed, as used by RRUFF for powder data. 250 of 908 patterns; the rest is
held out for independent evaluation.

Use them to measure the gap between patterns simulated from structures and measured ones;
do not train on them if you report a transfer number.

Columns: id, two_theta (float32 array, degrees), intensity (float32 array), wavelength (A),
crystal_system, space_group_number.

Source: https://github.com/AGI-init/XRDs (Data/Generated/XRDs_RRUFF); RRUFF data,
https://rruff.info.
Cite: J. E. Salgado et al., "Automated classification of big X-ray diffraction data using deep
learning models", npj Comput. Mater. (2023); B. Lafuente, R. T. Downs, H. Yang, N. Stone,
"The power of databases: the RRUFF project" (2015).
"""


def read_pattern_set(folder: Path) -> pd.DataFrame:
    """Frame of a measured-pattern folder in the ``rruff_xrd`` layout (``patterns.npz`` + ``meta.csv``).

    Each array of the npz is read once: an ``NpzFile`` decompresses the whole array again at
    every ``arrays[name]`` access, and a slice keeps its whole base alive, so reading inside
    the loop over patterns held (patterns x file size) in memory (22.6 GB for 658 patterns).
    Every pattern is a copy, so editing one never writes into its neighbours.
    """
    folder = Path(folder)
    meta = pd.read_csv(folder / "meta.csv")
    with np.load(folder / "patterns.npz", allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    offsets = arrays["offsets"]
    n_patterns = len(offsets) - 1
    ids = arrays["ids"].astype(str) if "ids" in arrays else meta["id"].astype(str).to_numpy()
    if len(meta) != n_patterns or not np.array_equal(ids, meta["id"].astype(str).to_numpy()):
        raise InvalidInputError(f"{folder / 'patterns.npz'} and meta.csv list different pattern ids", view="xrd")
    if "wavelength" in arrays:
        wavelength = arrays["wavelength"].astype(float)
    elif "wavelength" in meta:
        wavelength = meta["wavelength"].to_numpy(dtype=float)
    else:
        wavelength = np.full(n_patterns, CU_K_ALPHA)
    pieces = [slice(offsets[i], offsets[i + 1]) for i in range(n_patterns)]
    return pd.DataFrame(
        {
            "id": ids,
            "two_theta": pd.Series([arrays["two_theta"][p].copy() for p in pieces], dtype=object),
            "intensity": pd.Series([arrays["intensity"][p].copy() for p in pieces], dtype=object),
            "wavelength": wavelength,
            "crystal_system": meta["crystal_system"].astype(str).to_numpy(),
            "space_group_number": meta["space_group_number"].to_numpy(),
        }
    )


def fetch_rruff_xrd(
    *,
    data_home=None,
    return_X_y: bool = False,
    target: str | list[str] | None = None,
):
    """Load 250 measured RRUFF powder XRD patterns with crystal system and space group labels.

    Read from ``<data_home>/rruff_xrd/patterns.npz`` and ``meta.csv`` (no download). Each row
    holds one pattern as two array cells, ``two_theta`` (degrees) and ``intensity``, at the
    points it was measured/resampled at: turning them into the fixed grid of an XRD featurizer
    is left to that featurizer.

    Parameters
    ----------
    data_home : str or path-like, optional
        Data home (see :func:`~skmat.datasets.get_data_home`).
    return_X_y : bool, default=False
        Return ``(X, y)``: X has columns ``two_theta`` and ``intensity`` indexed by ``id``.
    target : str or list of str, optional
        Column(s) of the frame; default ``"crystal_system"``.

    Returns
    -------
    Bunch or (X, y)
        ``frame`` columns: ``id``, ``two_theta``, ``intensity``, ``wavelength`` (Å),
        ``crystal_system``, ``space_group_number``.

    Examples
    --------
    >>> from skmat.datasets import fetch_rruff_xrd
    >>> X, y = fetch_rruff_xrd(return_X_y=True)  # doctest: +SKIP
    >>> X.loc[X.index[0], "two_theta"].shape  # doctest: +SKIP
    (8500,)
    """
    home = get_data_home(data_home)
    for relative in RRUFF_FILES:
        if find_local(home, [relative]) is None:
            raise missing_file_error(
                home, [relative], "It is not downloadable: see the data README of skmat's shared data."
            )
    frame = read_pattern_set(home / "rruff_xrd")
    return dataset_bunch(
        frame,
        id_column="id",
        feature_names=["two_theta", "intensity"],
        target="crystal_system" if target is None else target,
        descr=RRUFF_DESCR,
        return_X_y=return_X_y,
    )
