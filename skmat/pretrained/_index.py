"""The reference index ``identify`` searches: known structures, their aligned embeddings, peaks.

A :class:`ReferenceIndex` is a table of reference structures (MP-20 val, the AMCSD minerals,
pymatgen's prototypes): an id, a formula, a space group and crystal system, where it comes from,
the aligner's embedding of its clean simulated pattern (float16; optionally also of the
structure) and its strongest simulated Cu Kα peaks, from which a reference pattern is drawn
for re-ranking and plotting without the structure. It is stored as
``index.json`` (strings) + ``index.safetensors`` (arrays): data only, no pickle, like
:mod:`skmat.persist` model files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from skmat.exceptions import InvalidInputError
from skmat.persist import ModelFileError

INDEX_FORMAT = "skmat-reference-index"
_ARRAYS = ("xrd_embeddings", "space_groups", "peak_two_theta", "peak_intensity")


class ReferenceIndex:
    """Reference structures with their aligned embeddings, searched by cosine similarity.

    Parameters
    ----------
    ids, formulas, crystal_systems, sources : sequence of str, length n
    space_groups : array of int, shape (n,)
    xrd_embeddings : array of shape (n, latent_dim)
        The aligner's XRD-view embedding of each reference's clean simulated pattern (kept as
        float16: retrieval is the same as with float32, measured in the aligner's card).
    peak_two_theta, peak_intensity : array of shape (n, n_peaks)
        Strongest simulated Cu Kα peaks (degrees 2θ, float32; intensity, strongest 100,
        float16), 0-padded.
    structure_embeddings : array of shape (n, latent_dim) or None, default=None
        The structure-view embeddings (cross-view search), when built with them.

    Examples
    --------
    >>> index = ReferenceIndex(["a", "b"], ["NaCl", "KCl"], ["cubic", "cubic"], ["x", "x"], [225, 225],
    ...                        np.eye(2), np.zeros((2, 1)), np.zeros((2, 1)))
    >>> rows, scores = index.search(np.array([[0.1, 1.0]]), k=1)
    >>> index.ids[rows[0, 0]]
    'b'
    """

    def __init__(
        self,
        ids,
        formulas,
        crystal_systems,
        sources,
        space_groups,
        xrd_embeddings,
        peak_two_theta,
        peak_intensity,
        structure_embeddings=None,
    ):
        self.ids = np.asarray(ids, dtype=object)
        self.formulas = np.asarray(formulas, dtype=object)
        self.crystal_systems = np.asarray(crystal_systems, dtype=object)
        self.sources = np.asarray(sources, dtype=object)
        self.space_groups = np.asarray(space_groups, dtype=np.int16)
        self.xrd_embeddings = np.asarray(xrd_embeddings, dtype=np.float16)
        self.structure_embeddings = (
            None if structure_embeddings is None else np.asarray(structure_embeddings, dtype=np.float16)
        )
        # float32: float16 steps are 0.03-0.06° at 32-90°, a fifth of a peak width
        self.peak_two_theta = np.asarray(peak_two_theta, dtype=np.float32)
        self.peak_intensity = np.asarray(peak_intensity, dtype=np.float16)
        n = len(self.ids)
        for name in ("formulas", "crystal_systems", "sources", *_ARRAYS, "structure_embeddings"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, ids has {n}")
        self._unit_embeddings: dict = {}  # "xrd"/"structure" -> float32 rows of unit length, made on first search

    def __len__(self) -> int:
        return len(self.ids)

    def unit_embeddings(self, against: str = "xrd") -> np.ndarray:
        """The *against* embeddings as float32 rows of unit length (computed once)."""
        from skmat._cosine import _normalized_embeddings

        if against not in self._unit_embeddings:
            # LatentIndex's own kernel, without the estimator around it (and its scikit-learn import)
            database = getattr(self, f"{against}_embeddings").astype(np.float32)
            self._unit_embeddings[against] = _normalized_embeddings(database, "embeddings")
        return self._unit_embeddings[against]

    def search(self, embeddings: np.ndarray, k: int = 5, *, against: str = "xrd") -> tuple[np.ndarray, np.ndarray]:
        """Rows of the ``k`` references most similar to each query embedding, best first.

        Parameters
        ----------
        embeddings : array of shape (n_queries, latent_dim)
            Query embeddings from the same aligner (e.g. its XRD view of measured patterns).
        k : int, default=5
        against : {"xrd", "structure"}, default="xrd"
            Which reference embeddings to compare with (``"structure"`` needs an index built
            with them).

        Returns
        -------
        rows : ndarray of int, shape (n_queries, k)
        scores : ndarray of float32, shape (n_queries, k)
            Cosine similarities.
        """
        from skmat._cosine import _normalized_embeddings, top_k

        if against not in ("structure", "xrd"):
            raise ValueError(f"against must be 'structure' or 'xrd', got {against!r}")
        if getattr(self, f"{against}_embeddings") is None:
            raise ValueError("this index holds no structure embeddings (build_index(..., structure_view=True))")
        database = self.unit_embeddings(against)
        k = max(1, min(int(k), len(self)))
        queries = _normalized_embeddings(
            np.asarray(embeddings, dtype=np.float32), "embeddings", n_features=database.shape[1]
        )
        return top_k(queries, database, k)

    # -- files -------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``index.json`` + ``index.safetensors`` into *folder*."""
        from safetensors.numpy import save_file

        from skmat._version import __version__

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = [*_ARRAYS] + ([] if self.structure_embeddings is None else ["structure_embeddings"])
        save_file({name: np.ascontiguousarray(getattr(self, name)) for name in names}, str(folder / "index.safetensors"))
        table = {
            "format": INDEX_FORMAT,
            "skmat": __version__,
            "ids": [str(v) for v in self.ids],
            "formulas": [str(v) for v in self.formulas],
            "crystal_systems": [str(v) for v in self.crystal_systems],
            "sources": [str(v) for v in self.sources],
        }
        (folder / "index.json").write_text(json.dumps(table, separators=(",", ":")), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ReferenceIndex:
        """Read an index written by :meth:`save`.

        Raises
        ------
        ModelFileError
            When the folder holds no index, or one written by another major/minor skmat.
        """
        from safetensors.numpy import load_file

        from skmat.persist import _check_versions

        folder = Path(folder)
        table_path, arrays_path = folder / "index.json", folder / "index.safetensors"
        if not table_path.is_file() or not arrays_path.is_file():
            raise ModelFileError(f"{folder} holds no reference index (index.json + index.safetensors)")
        try:
            table = json.loads(table_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{table_path}: not valid JSON ({exc})") from exc
        if not isinstance(table, dict) or table.get("format") != INDEX_FORMAT:
            raise ModelFileError(f"{table_path} is not an skmat reference index")
        # the same version rule as model files (the embeddings belong to one aligner)
        _check_versions({"format": "skmat-model", "format_version": 1, "versions": {"skmat": table.get("skmat")}})
        arrays = load_file(str(arrays_path))
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ModelFileError(f"{arrays_path} lacks arrays {missing}")
        return cls(
            table["ids"],
            table["formulas"],
            table["crystal_systems"],
            table["sources"],
            **{n: arrays[n] for n in _ARRAYS},
            structure_embeddings=arrays.get("structure_embeddings"),
        )

    def reference_patterns(self, rows, two_theta: np.ndarray, *, n_peaks: int | None = None, fwhm: float = 0.15) -> np.ndarray:
        """Simulated patterns (max 1) of index *rows* on *two_theta*, drawn from the stored peaks.

        Parameters
        ----------
        rows : array of int
        two_theta : array of shape (n_bins,)
            Evenly spaced grid, degrees (Cu Kα).
        n_peaks : int or None, default=None
            Use only the strongest *n_peaks* stored peaks (``None``: all).
        fwhm : float, default=0.15
            Peak width, degrees 2θ.
        """
        from skmat.features._powder import broaden

        grid = np.asarray(two_theta, dtype=float)
        out = np.zeros((len(rows), len(grid)), dtype=np.float32)
        for i, row in enumerate(np.asarray(rows, dtype=int)):
            heights = self.peak_intensity[row].astype(float)
            keep = heights > 0
            if n_peaks is not None and keep.sum() > n_peaks:
                keep &= heights >= np.sort(heights)[-n_peaks]
            pattern = broaden(self.peak_two_theta[row][keep].astype(float), heights[keep], grid, fwhm=fwhm)
            peak = pattern.max()
            out[i] = pattern / peak if peak > 0 else pattern
        return out


# -- building -------------------------------------------------------------------------------------
def reference_frame(data_home: Any = None, *, mp20: bool = True, amcsd: bool = True, prototypes: bool = True):
    """The reference structures: MP-20 val, the AMCSD minerals and pymatgen's prototypes.

    Returns a DataFrame with ``material_id`` (``mp-…``, ``amcsd-<id>``, ``proto-<label>``),
    ``structure``, ``formula``, ``space_group``, ``crystal_system`` and ``source``.
    """
    import warnings

    import pandas as pd

    parts = []
    if prototypes:
        from skmat.datasets import load_prototypes

        frame = load_prototypes().frame
        parts.append(
            pd.DataFrame(
                {
                    "material_id": ("proto-" + frame["material_id"].astype(str)).to_numpy(),
                    "structure": frame["structure"].to_numpy(),
                    "space_group": frame["spacegroup"].to_numpy(dtype=int),
                    "crystal_system": frame["crystal_system"].astype(str).to_numpy(),
                    "source": "prototype",
                }
            )
        )
    if mp20:
        from skmat.datasets import fetch_mp20

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = fetch_mp20(split="val", data_home=data_home).frame
        parts.append(
            pd.DataFrame(
                {
                    "material_id": frame["material_id"].astype(str).to_numpy(),
                    "structure": frame["structure"].to_numpy(),
                    "space_group": frame["spacegroup"].to_numpy(dtype=int),
                    "crystal_system": frame["crystal_system"].astype(str).to_numpy(),
                    "source": "mp20",
                }
            )
        )
    if amcsd:
        from skmat.datasets import fetch_amcsd

        frame = fetch_amcsd(data_home=data_home).frame
        parts.append(
            pd.DataFrame(
                {
                    "material_id": ("amcsd-" + frame["amcsd_id"].astype(str)).to_numpy(),
                    "structure": frame["structure"].to_numpy(),
                    "space_group": frame["space_group_number"].to_numpy(dtype=int),
                    "crystal_system": frame["crystal_system"].astype(str).to_numpy(),
                    "source": "amcsd",
                    "name": frame["mineral"].astype(str).to_numpy(),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out["formula"] = [s.composition.reduced_formula for s in out["structure"]]
    if "name" in out.columns:
        named = out["name"].notna() & (out["name"] != "None")
        out.loc[named, "formula"] = out.loc[named, "formula"] + " (" + out.loc[named, "name"] + ")"
        out = out.drop(columns=["name"])
    return out


def strongest_peaks(structures, n_peaks: int) -> tuple[np.ndarray, np.ndarray]:
    """The *n_peaks* strongest Cu Kα peaks (5-90°) of each structure, by position, 0-padded."""
    from skmat.features.xrd import compute_peaks

    positions = np.zeros((len(structures), n_peaks), dtype=np.float32)
    heights = np.zeros((len(structures), n_peaks), dtype=np.float32)
    for row, structure in enumerate(structures):
        two_theta, intensity = compute_peaks(structure)
        keep = np.sort(np.argsort(intensity)[::-1][:n_peaks])
        positions[row, : len(keep)] = two_theta[keep]
        heights[row, : len(keep)] = intensity[keep]
    return positions, heights


def build_index(
    aligner, frame, *, n_peaks: int = 40, structure_view: bool = False, batch_size: int = 512, verbose: int = 0
) -> ReferenceIndex:
    """Embed the references of *frame* (see :func:`reference_frame`) with a fitted aligner.

    With *structure_view*, the structure embeddings are stored too. The structure view needs
    one element per site: a disordered reference (partial occupancies, common among minerals)
    then gets the embedding of its simulated pattern in the structure column (both live in the
    aligned space).
    """
    import pandas as pd

    from skmat.features import XRDPattern

    xrd_encoder = dict(aligner.encoders_)["xrd"]
    featurizer = XRDPattern(n_bins=xrd_encoder.n_bins, two_theta_range=xrd_encoder.two_theta_range,
                            wavelength=xrd_encoder.wavelength, peak_width=xrd_encoder.peak_width)
    structures = list(frame["structure"])
    ordered = np.array([s.is_ordered for s in structures])
    z_structure, z_xrd = [], []
    starts = range(0, len(frame), batch_size)
    if verbose:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding references")
    for start in starts:
        chunk = structures[start : start + batch_size]
        patterns = featurizer.fit_transform(chunk).astype(np.float32)
        xrd = aligner.embed(pd.DataFrame({"xrd": list(patterns)}), view="xrd")
        block = xrd.copy()
        keep = ordered[start : start + batch_size] & structure_view
        if keep.any():
            block[keep] = aligner.embed(pd.DataFrame({"structure": [s for s, k in zip(chunk, keep, strict=True) if k]}),
                                        view="structure")
        z_structure.append(block)
        z_xrd.append(xrd)
    positions, heights = strongest_peaks(structures, n_peaks)
    return ReferenceIndex(
        frame["material_id"].astype(str).to_numpy(),
        frame["formula"].astype(str).to_numpy(),
        frame["crystal_system"].astype(str).to_numpy(),
        frame["source"].astype(str).to_numpy(),
        frame["space_group"].to_numpy(dtype=int),
        np.concatenate(z_xrd),
        positions,
        heights,
        structure_embeddings=np.concatenate(z_structure) if structure_view else None,
    )


def check_query(embeddings: Any) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or not np.isfinite(array).all():
        raise InvalidInputError("query embeddings must be a finite 2-D array", view="xrd")
    return array
