"""Loader of the MultiMat example data: DOS, charge density and text embeddings per material."""

from __future__ import annotations

import numpy as np
import pandas as pd

from skmat.datasets._base import dataset_bunch, find_local, get_data_home, missing_file_error

MULTIMAT_FILE = "multimat_sample/multimat_sample.npz"

MULTIMAT_DESCR = """MultiMat sample (326 Materials Project materials, several views each)
=====================================================================

The example data of MultiMat (Moro et al., "Multimodal Learning for Materials", arXiv
2312.00111), re-encoded as one .npz: 326 of the 408 Materials Project ids it ships (the other
82 are held out for independent evaluation). Views, None where the material lacks them:

* dos: (2, 601) float32, row 0 energy E - E_Fermi (eV, grid differs per material), row 1
  spin-up density of states (states/eV/cell). 251 materials have one.
* charge_density: (32, 32, 32) float32 total charge density (VASP CHGCAR rho * V_cell, not
  normalised). 303 materials have one.
* text: (768,) float32 MatBERT embedding of a Robocrystallographer-style description.
* bulk_modulus, shear_modulus: GPa (VRH), NaN where absent (79 present); some are negative
  (mechanically unstable entries, kept as in the source).

There are no crystal structures (the upstream structure file is a placeholder). 42 of the ids
are MP-20 test materials: mind leakage when pretraining here and scoring on MP-20 test.

Source: https://github.com/clott3/MultiMat (example_data), MIT licence; data CC-BY-4.0 from the
Materials Project.
Cite: V. Moro et al., "Multimodal Learning for Materials", arXiv:2312.00111; A. Jain et al.,
APL Mater. 1, 011002 (2013).
"""

_VIEWS = ["dos", "charge_density", "text"]


def _cells(values: np.ndarray, present: np.ndarray, dtype) -> pd.Series:
    # one array per cell; absent views are None so the aligner can mask them
    return pd.Series(
        [np.array(v, dtype=dtype) if ok else None for v, ok in zip(values, present, strict=True)],
        dtype=object,
    )


def fetch_multimat_sample(
    *,
    data_home=None,
    return_X_y: bool = False,
    target: str | list[str] | None = None,
):
    """Load the MultiMat sample: DOS, charge density and text views of 326 MP materials.

    Read from ``<data_home>/multimat_sample/multimat_sample.npz``; there is no download (the
    file is a re-encoding of MultiMat's ``example_data``, see ``DESCR``).

    Parameters
    ----------
    data_home : str or path-like, optional
        Data home (see :func:`~skmat.datasets.get_data_home`).
    return_X_y : bool, default=False
        Return ``(X, y)``: X has the view columns ``dos``, ``charge_density`` and ``text``,
        indexed by ``material_id``; y the target column(s).
    target : str or list of str, optional
        Column(s) of the frame; default ``["bulk_modulus", "shear_modulus"]`` (NaN where
        absent).

    Returns
    -------
    Bunch or (X, y)
        ``frame`` columns: ``material_id``, ``dos`` ((2, 601) float32 or None),
        ``charge_density`` ((32, 32, 32) float32 or None), ``text`` ((768,) float32 or None),
        ``bulk_modulus``, ``shear_modulus``.

    Examples
    --------
    >>> from skmat.datasets import fetch_multimat_sample
    >>> data = fetch_multimat_sample()  # doctest: +SKIP
    >>> data.frame["dos"].notna().sum()  # doctest: +SKIP
    251
    """
    home = get_data_home(data_home)
    path = find_local(home, [MULTIMAT_FILE])
    if path is None:
        raise missing_file_error(
            home,
            [MULTIMAT_FILE],
            "It is not downloadable: it is skmat's re-encoding of https://github.com/clott3/MultiMat "
            "example_data (see the data README shipped with skmat's shared data).",
        )
    with np.load(path) as arrays:
        frame = pd.DataFrame(
            {
                "material_id": arrays["material_id"].astype(str),
                "dos": _cells(arrays["dos"], arrays["dos_exists"], np.float32),
                # stored as float16 (exact for these values); models expect float32
                "charge_density": _cells(arrays["charge_density"], arrays["charge_density_exists"], np.float32),
                "text": _cells(arrays["text_embedding"], arrays["text_exists"], np.float32),
                "bulk_modulus": arrays["bulk_modulus"].astype(float),
                "shear_modulus": arrays["shear_modulus"].astype(float),
            }
        )
    return dataset_bunch(
        frame,
        id_column="material_id",
        feature_names=_VIEWS,
        target=["bulk_modulus", "shear_modulus"] if target is None else target,
        descr=MULTIMAT_DESCR,
        return_X_y=return_X_y,
    )
