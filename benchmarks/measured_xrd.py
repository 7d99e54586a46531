"""Simulated -> measured transfer of the XRD view: crystal-system accuracy on real RRUFF patterns.

A 1-D CNN (:class:`skmat.encoders.XRDEncoder`) learns the crystal system (7 classes) from powder
patterns **simulated** from MP-20 structures only, then classifies the 250 **measured** RRUFF
patterns of the data home (never trained on). MP-20 is split 80/20 as in ``benchmarks/unimat.py``
(the first 20 % of ``default_rng(seed).permutation`` is the simulated test set). Each
configuration is one row of the table:

* ``plain``: clean simulated patterns (``XRDPattern``: Cu Kα, FWHM 0.15°, 5-90°, 1,701 bins).
* ``augmented``: ``--copies`` patterns per structure: the clean one and ``copies - 1``
  measurement-like ones drawn by
  :class:`skmat.features.augment.XRDAugmenter` (precomputed once: a first version that needs no
  change to ``XRDEncoder``).
* ``scaled``: as ``augmented`` with the settings of ``AUGMENTATIONS["scaled"]``: lattices
  scaled up (``lattice_scale``: MP-20 cells are smaller than most minerals'), narrower peaks
  and stronger intensity perturbation, chosen from diagnostics of the measured set.
* ``grown``: as ``augmented``, but most draws render a *grown* variant of the structure
  (:func:`skmat.features.cell_growth.grow_cell`: lattice scaled 1-2.5x and filled with atoms on
  the structure's own symmetry orbits, so the crystal system is kept while the pattern gets a
  mineral-size cell's many reflections).
* background ``none`` / ``rolling_ball`` / ``polynomial``: the same
  :func:`~skmat.features.measured.remove_background` applied to the training patterns, the
  simulated test patterns and the measured ones (identical at fit and transform).

The mineral rows (``minerals``, ``minerals_noleak``, ``minerals_sg``) add the AMCSD structures
that ``larixite`` ships (:func:`skmat.datasets.fetch_amcsd`), with leak control for ``minerals``
(see ``--leak-threshold``). The crystal-system mineral rows also train on ``--triclinic-distortions``
triclinic variants of kept monoclinic/orthorhombic structures
(:func:`skmat.features.distortion.triclinic_distortion`: AMCSD holds 55 triclinic entries). Every
learned row's CNN reads √I (``--intensity-scale``, :func:`~skmat.features.measured.scale_intensity`).

Every learned row is followed by its ``+cubic indexing`` row: the same network's answers, except
that a pattern whose peaks index as cubic (:func:`skmat.features.indexing.indexes_as_cubic`: a
cubic cell found from the peaks alone, Kα2 and Kβ satellites dropped, converged with de Wolff's
M > 40) is called cubic, as a crystallographer would. It uses the test patterns, never their labels.

Measured patterns go through :class:`~skmat.features.measured.MeasuredXRD` (d-spacing
resampling onto the model's grid, bin averaging of the 0.01° steps, max normalisation).
Reported: accuracy on held-out simulated MP-20 patterns (clean, as ``XRDPattern`` gives
them), on the measured patterns overall and per crystal system, and a diagnostic in which the
``trigonal`` output is ignored (the measured set has no trigonal mineral: this uses knowledge
of the test labels, so it is not the transfer number).

Usage::

    python benchmarks/measured_xrd.py --epochs 4 --n-jobs 1        # all 7,238 structures, ~13 min
    python benchmarks/measured_xrd.py --n-train 1000 --epochs 2 --copies 2 --configs plain:none
    python benchmarks/measured_xrd.py --test /path/to/other/rruff_xrd   # patterns.npz + meta.csv
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

# spglib prints C-level notices for near-symmetric MP-20 cells; they are harmless here
os.environ.setdefault("SPGLIB_WARNING", "OFF")

REPO = Path(__file__).resolve().parents[1]
CRYSTAL_SYSTEMS = ["triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"]
DEFAULT_CONFIGS = ["augmented:none", "minerals:none", "minerals_noleak:none", "nearest:none", "nearest_noleak:none"]
#: Trainings on MP-20 + AMCSD minerals (augmented as ``augmented``): name -> leak control on.
#: ``_sg`` rows learn space groups and read the crystal system off their summed probabilities.
MINERAL_TRAININGS = {"minerals": True, "minerals_noleak": False, "minerals_sg": True}
#: No-learning baselines: the crystal system of the most similar AMCSD pattern; name -> leak control on.
NEAREST_BASELINES = {"nearest": True, "nearest_noleak": False}
#: XRDAugmenter settings of each augmented training kind.
AUGMENTATIONS = {
    # the augmenter's defaults
    "augmented": {},
    # measured-set diagnostics (MP-20 cells are smaller and simulated peaks broader than the
    # minerals'): lattices scaled up to 1.6x, narrower peaks, stronger intensity perturbation
    "scaled": {
        "lattice_scale": (1.0, 1.6),
        "instrument_fwhm": (0.03, 0.15),
        "crystallite_size": (50.0, 500.0),
        "intensity_noise": 0.4,
        "preferred_orientation": (0.4, 1.6),
    },
    # the augmenter's defaults on grown cells: 60 % of the draws come from one of three
    # variants of each structure grown 1-2.5x on its own symmetry orbits (mineral-size cells)
    "grown": {"cell_growth": (1.0, 2.5), "grown_cells": 3, "grown_fraction": 0.6},
}


def _default_data_home() -> Path:
    env = os.environ.get("SKMAT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _augment_chunk(structures, seed, copies, augmenter_params):
    # module level for joblib: each worker fits its own augmenter on its chunk
    from skmat.features.augment import XRDAugmenter

    rng = np.random.default_rng(seed)
    # seeded fit: grown cells (cell_growth) are drawn at fit time
    augmenter = XRDAugmenter(**augmenter_params, random_state=int(rng.integers(2**32))).fit(structures)
    rows = np.repeat(np.arange(len(structures)), copies)
    return augmenter.sample(rows, random_state=rng)


def augmented_patterns(structures, *, copies: int, seed: int, n_jobs: int, chunk_size: int = 250, params=None):
    """``copies`` augmented patterns per structure (rows grouped by structure), reproducible."""
    from joblib import Parallel, delayed

    chunks = [structures[i : i + chunk_size] for i in range(0, len(structures), chunk_size)]
    seeds = np.random.SeedSequence(seed).spawn(len(chunks))
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_augment_chunk)(chunk, s, copies, params or {}) for chunk, s in zip(chunks, seeds, strict=True)
    )
    return np.concatenate(parts)


def _distort_chunk(structures, seed):
    # module level for joblib
    from skmat.features.distortion import triclinic_distortion

    rng = np.random.default_rng(seed)
    return [triclinic_distortion(s, rng) for s in structures]


def triclinic_variants(structures, *, n: int, seed: int, n_jobs: int, chunk_size: int = 100) -> list:
    """Triclinic variants of *n* of *structures* (seeded draw; draws that stay monoclinic are dropped)."""
    from joblib import Parallel, delayed

    rng = np.random.default_rng(seed + 7)
    chosen = [structures[i] for i in np.sort(rng.choice(len(structures), min(n, len(structures)), replace=False))]
    chunks = [chosen[i : i + chunk_size] for i in range(0, len(chosen), chunk_size)]
    seeds = np.random.SeedSequence(seed + 7).spawn(len(chunks))
    parts = Parallel(n_jobs=n_jobs)(delayed(_distort_chunk)(c, s) for c, s in zip(chunks, seeds, strict=True))
    return [s for part in parts for s in part if s is not None]


def load_measured(path: Path | None, data_home: Path):
    """(frame with two_theta/intensity/wavelength, crystal systems, space groups) of the measured set."""
    from skmat.datasets._rruff import read_pattern_set

    folder = data_home / "rruff_xrd" if path is None else Path(path)
    frame = read_pattern_set(folder if folder.is_dir() else folder.parent)
    return (
        frame[["two_theta", "intensity", "wavelength"]],
        frame["crystal_system"].to_numpy(),
        frame["space_group_number"].to_numpy(),
    )


def indexed_as_cubic(measured_frame, clean_test, grid, wavelength) -> tuple[np.ndarray, np.ndarray]:
    """Which measured and which simulated test patterns index as cubic
    (:func:`skmat.features.indexing.indexes_as_cubic`): the ``+cubic indexing`` rows call those
    cubic and leave the network's answer elsewhere."""
    from skmat.exceptions import InvalidInputError
    from skmat.features.indexing import indexes_as_cubic, indexing_peaks, measured_peaks

    measured = []
    for i, (x, y, w) in enumerate(measured_frame[["two_theta", "intensity", "wavelength"]].itertuples(index=False)):
        try:
            positions, _ = measured_peaks(x, y, w, row=i)
        except InvalidInputError:  # a pattern without peaks: not cubic by indexing
            positions = []
        measured.append(indexes_as_cubic(positions, w))
    simulated = [indexes_as_cubic(indexing_peaks(p, grid, wavelength)[0], wavelength) for p in clean_test]
    return np.array(measured, dtype=bool), np.array(simulated, dtype=bool)


def per_class_accuracy(y_true, y_pred) -> dict:
    return {c: float(np.mean(y_pred[y_true == c] == c)) for c in CRYSTAL_SYSTEMS if np.any(y_true == c)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-home", type=Path, default=_default_data_home())
    parser.add_argument("--test", type=Path, default=None, help="measured set (folder or patterns.npz with meta.csv)")
    parser.add_argument(
        "--n-train", type=int, default=None, help="MP-20 training structures (default all of the 80 %% split)"
    )
    parser.add_argument(
        "--n-sim-test", type=int, default=None, help="held-out MP-20 structures (default all of the 20 %% split)"
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs over the augmented copies")
    parser.add_argument("--copies", type=int, default=4, help="training patterns per structure when augmenting")
    parser.add_argument(
        "--no-clean-copy",
        action="store_true",
        help="all copies augmented (default: one of the copies is the clean simulated pattern)",
    )
    parser.add_argument(
        "--plain-epochs", type=int, default=None, help="epochs of plain training; default epochs x copies (same steps)"
    )
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="training:background pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--leak-threshold", type=float, default=0.75, help="similarity at which a reference phase leaks")
    parser.add_argument("--n-amcsd", type=int, default=None, help="AMCSD entries (seeded subset; default all)")
    parser.add_argument("--amcsd-database", type=Path, default=None, help="AMCSD SQLite file (default larixite's)")
    parser.add_argument("--cache-home", type=Path, default=None, help="where parsed AMCSD cells are cached")
    parser.add_argument("--figure", type=Path, default=None, help="write the confusion matrices here (PNG)")
    parser.add_argument(
        "--class-balance", type=float, default=0.0,
        help="mineral rows: repeat rows of class c (n_largest / n_c) ** this many times (0: off, 1: flat)",
    )
    parser.add_argument(
        "--triclinic-distortions", type=int, default=500,
        help="mineral rows: add this many triclinic variants of kept monoclinic/orthorhombic training "
        "structures (skmat.features.distortion; 0: none)",
    )
    parser.add_argument(
        "--intensity-scale", choices=["linear", "sqrt"], default="sqrt",
        help="intensities the CNN reads (XRDEncoder intensity_scale; sqrt measured better, docs/results.md)",
    )
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--verbose", type=int, default=0, help="1 prints skorch's epoch log")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from skmat.nn.gnn import flush_denormal

    # settings of this process that the run changes are put back after it (the tests call main)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, args.n_jobs))
    try:
        with flush_denormal(True):
            return run(args)
    finally:
        torch.set_num_threads(threads_before)


def mineral_references(args, n_jobs: int):
    """AMCSD structures (optionally a seeded subset), their phases, crystal systems and space groups."""
    from skmat.datasets import fetch_amcsd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF notices while parsing (first call only)
        frame = fetch_amcsd(
            data_home=args.cache_home or args.data_home, database=args.amcsd_database, n_jobs=n_jobs,
            verbose=args.verbose,
        ).frame
    if args.n_amcsd is not None and args.n_amcsd < len(frame):
        rows = np.sort(np.random.default_rng(args.seed).choice(len(frame), args.n_amcsd, replace=False))
        frame = frame.iloc[rows].reset_index(drop=True)
    return frame


def leak_control_report(similarity, reference_systems, reference_groups, y_measured, thresholds) -> list[dict]:
    """Nearest-reference lookup accuracy on the measured set as references matching it are removed.

    The proof that a threshold removes the lookup of the same phase: as the threshold falls, the
    lookup's accuracy first drops (the same phases leave) and then stays flat (what is left is
    the similarity of related structures, which removing more does not change).
    """
    from skmat.features.matching import matched_references

    report = []
    for threshold in thresholds:
        excluded = (
            np.zeros(similarity.shape[1], bool)
            if threshold is None
            else matched_references(similarity, reference_groups, threshold=threshold)
        )
        kept = np.flatnonzero(~excluded)
        nearest = kept[similarity[:, kept].argmax(axis=1)]
        report.append(
            {
                "threshold": threshold,
                "references_excluded": int(excluded.sum()),
                "phases_excluded": int(len(set(np.asarray(reference_groups, dtype=object)[excluded]))),
                "lookup_accuracy": float(np.mean(reference_systems[nearest] == y_measured)),
                "largest_similarity_left": float(similarity[:, kept].max()),
            }
        )
    return report


def nearest_reference_row(measured, references, systems, space_groups, y_measured, sg_measured, kept) -> dict:
    """The no-learning baseline: labels of the most similar reference pattern (plain cosine, √I)."""
    def unit(a):
        a = np.sqrt(np.clip(a, 0, None))
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    kept = np.flatnonzero(kept)
    cosine = unit(measured) @ unit(references[kept]).T
    ranked = kept[np.argsort(-cosine, axis=1)]
    predicted = systems[ranked[:, 0]]
    # space-group top-k: the first k distinct space groups down the ranking
    top_groups = []
    for order in ranked:
        seen = list(dict.fromkeys(space_groups[order[:200]]))
        top_groups.append(seen[:5])
    return {
        "measured_pred": predicted,
        "space_group_top1": float(np.mean([g[0] == t for g, t in zip(top_groups, sg_measured, strict=True)])),
        "space_group_top5": float(np.mean([t in g for g, t in zip(top_groups, sg_measured, strict=True)])),
        "best_cosine_median": float(np.median(cosine.max(axis=1))),
    }


def rebalanced(patterns, labels, exponent: float):
    """Rows of rarer classes repeated ``round((n_largest / n_class) ** exponent)`` times.

    Minerals and MP-20 hold few triclinic and monoclinic crystals while measured sets hold many;
    repeating their (already augmented, so varied) patterns weights them up in the loss.
    """
    classes, counts = np.unique(labels, return_counts=True)
    repeats = dict(zip(classes, np.maximum(1, np.round((counts.max() / counts) ** exponent)).astype(int), strict=True))
    rows = np.repeat(np.arange(len(labels)), [repeats[label] for label in labels])
    return patterns[rows], labels[rows]


def confusion(y_true, y_pred) -> dict:
    """Counts ``{true: {predicted: n}}`` over the crystal systems."""
    return {
        t: {p: int(np.sum((y_true == t) & (y_pred == p))) for p in CRYSTAL_SYSTEMS}
        for t in CRYSTAL_SYSTEMS
        if np.any(y_true == t)
    }


def run(args: argparse.Namespace) -> dict:
    """The benchmark for parsed command-line *args* (see :func:`main`)."""
    import pandas as pd

    from skmat.datasets import crystal_system_from_spacegroup, fetch_mp20
    from skmat.encoders import XRDEncoder
    from skmat.features.matching import matched_references, pattern_similarity
    from skmat.features.measured import MeasuredXRD, remove_background
    from skmat.features.xrd import XRDPattern

    started = time.time()
    trainings = list(dict.fromkeys(c.split(":")[0] for c in args.configs))
    unknown = [t for t in trainings if t not in {"plain", *AUGMENTATIONS, *MINERAL_TRAININGS, *NEAREST_BASELINES}]
    if unknown:
        raise SystemExit(
            f"unknown training {unknown}: plain, one of {sorted(AUGMENTATIONS)}, {sorted(MINERAL_TRAININGS)} "
            f"or {sorted(NEAREST_BASELINES)}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding notices
        mp20_frame = fetch_mp20(data_home=args.data_home).frame
    y = mp20_frame["crystal_system"].to_numpy()
    # the 80/20 split of benchmarks/unimat.py: the first 20 % of a seeded permutation is the test
    order = np.random.default_rng(args.seed).permutation(len(mp20_frame))
    n_test = int(round(0.2 * len(mp20_frame)))
    train_rows, test_rows = order[n_test:][: args.n_train], order[:n_test][: args.n_sim_test]
    structures = list(mp20_frame["structure"])
    train_structures = [structures[i] for i in train_rows]
    y_train, y_sim = y[train_rows], y[test_rows]
    sg_train = mp20_frame["spacegroup"].to_numpy()[train_rows]
    sg_sim = mp20_frame["spacegroup"].to_numpy()[test_rows]

    simulate = XRDPattern(n_jobs=args.n_jobs)
    grid = simulate.two_theta_grid()
    clean_train = simulate.fit_transform(train_structures)
    clean_test = simulate.transform([structures[i] for i in test_rows])
    print(f"simulated {len(train_rows) + len(test_rows)} patterns in {time.time() - started:.0f} s", flush=True)
    measured_frame, y_measured, sg_measured = load_measured(args.test, args.data_home)
    t0 = time.time()
    measured_cubic, simulated_cubic = indexed_as_cubic(measured_frame, clean_test, grid, simulate.wavelength)
    print(f"cubic indexing: {measured_cubic.sum()} of {len(measured_cubic)} measured and {simulated_cubic.sum()} of "
          f"{len(simulated_cubic)} simulated patterns index as cubic ({time.time() - t0:.0f} s)", flush=True)
    raw_measured = MeasuredXRD().fit_transform(measured_frame)
    measured_with_background = {
        m: MeasuredXRD(background=m).fit_transform(measured_frame) for m in ("rolling_ball", "polynomial")
    }

    def with_clean(clean, drawn_structures, kind):
        n_drawn = args.copies if args.no_clean_copy else args.copies - 1
        drawn = augmented_patterns(
            drawn_structures, copies=n_drawn, seed=args.seed, n_jobs=args.n_jobs, params=AUGMENTATIONS[kind]
        )
        if args.no_clean_copy:
            return drawn
        # rows grouped by structure: the clean pattern first, then its augmented draws
        return np.concatenate([clean[:, None, :], drawn.reshape(len(drawn_structures), n_drawn, -1)], axis=1).reshape(
            len(drawn_structures) * args.copies, -1
        )

    needs_minerals = any(t in MINERAL_TRAININGS or t in NEAREST_BASELINES for t in trainings)
    augmented = {}
    for kind in [k for k in AUGMENTATIONS if k in trainings or (k == "augmented" and needs_minerals)]:
        t0 = time.time()
        augmented[kind] = with_clean(clean_train, train_structures, kind)
        print(f"{kind}: {len(augmented[kind])} patterns in {time.time() - t0:.0f} s", flush=True)

    results = {
        "settings": vars(args)
        | {k: str(getattr(args, k)) for k in ("data_home", "test", "json", "cache_home", "amcsd_database", "figure")},
        "augmentations": {kind: AUGMENTATIONS[kind] for kind in augmented},
        "class_counts": {
            "mp20_train": pd.Series(y_train).value_counts().to_dict(),
            "measured": pd.Series(y_measured).value_counts().to_dict(),
        },
        "rows": [],
    }

    if needs_minerals:
        t0 = time.time()
        minerals = mineral_references(args, args.n_jobs)
        mineral_structures = list(minerals["structure"])
        mineral_systems = minerals["crystal_system"].to_numpy()
        mineral_groups = minerals["space_group_number"].to_numpy()
        clean_minerals = simulate.transform(mineral_structures)
        print(f"AMCSD: {len(minerals)} mineral patterns in {time.time() - t0:.0f} s", flush=True)
        # leak control: references whose pattern matches a measured test pattern leave training, with
        # every other entry of the same phase (AMCSD: mineral name; MP-20: reduced formula)
        similarity_minerals = pattern_similarity(raw_measured, clean_minerals, grid)
        similarity_mp20 = pattern_similarity(raw_measured, clean_train, grid)
        mp20_formulas = mp20_frame["pretty_formula"].to_numpy()[train_rows]
        leaked_minerals = matched_references(similarity_minerals, minerals["phase"].to_numpy(), threshold=args.leak_threshold)
        leaked_mp20 = matched_references(similarity_mp20, mp20_formulas, threshold=args.leak_threshold)
        results["class_counts"]["amcsd"] = pd.Series(mineral_systems).value_counts().to_dict()
        results["leak_control"] = {
            "rule": (
                "a reference phase leaves training when any of its entries has a shift-tolerant similarity "
                f">= {args.leak_threshold} with any measured test pattern (skmat.features.matching)"
            ),
            "amcsd_entries": int(len(minerals)),
            "amcsd_excluded": int(leaked_minerals.sum()),
            "amcsd_phases_excluded": int(minerals.loc[leaked_minerals, "phase"].nunique()),
            "mp20_train_structures": int(len(train_rows)),
            "mp20_excluded": int(leaked_mp20.sum()),
            "lookup_by_threshold": leak_control_report(
                similarity_minerals, mineral_systems, minerals["phase"].to_numpy(), y_measured,
                [None, 0.85, 0.8, args.leak_threshold, 0.7, 0.65],
            ),
        }
        print(json.dumps({k: v for k, v in results["leak_control"].items() if k != "lookup_by_threshold"}), flush=True)
        t0 = time.time()
        if any(t in MINERAL_TRAININGS for t in trainings):
            mineral_augmented = with_clean(clean_minerals, mineral_structures, "augmented")
            print(f"AMCSD augmented: {len(mineral_augmented)} patterns in {time.time() - t0:.0f} s", flush=True)
            distorted_augmented = np.zeros((0, len(grid)), dtype=np.float32)
            if args.triclinic_distortions:
                # parents: the monoclinic and orthorhombic structures that leak control keeps (so
                # no variant of a test mineral enters any row's training)
                t0 = time.time()
                lower = ("monoclinic", "orthorhombic")
                parents = [s for s, c, leak in zip(train_structures, y_train, leaked_mp20, strict=True) if c in lower and not leak]
                parents += [
                    s for s, c, leak in zip(mineral_structures, mineral_systems, leaked_minerals, strict=True)
                    if c in lower and not leak
                ]
                distorted = triclinic_variants(parents, n=args.triclinic_distortions, seed=args.seed, n_jobs=args.n_jobs)
                distorted_augmented = with_clean(simulate.transform(distorted), distorted, "augmented")
                results["triclinic_distortions"] = {"parents": len(parents), "made": len(distorted)}
                print(f"triclinic variants: {len(distorted)} structures in {time.time() - t0:.0f} s", flush=True)

    for config in args.configs:
        training, background = config.split(":")
        method = None if background == "none" else background
        t0 = time.time()
        row = {"training": training, "background": background}
        if training in NEAREST_BASELINES:
            leak_control = NEAREST_BASELINES[training]
            kept = ~leaked_minerals if leak_control else np.ones(len(minerals), bool)
            measured = measured_with_background[method] if method else raw_measured
            found = nearest_reference_row(
                measured, remove_background(clean_minerals, method), mineral_systems, mineral_groups,
                y_measured, sg_measured, kept,
            )
            measured_pred = found.pop("measured_pred")
            row |= {
                "simulated_accuracy": float("nan"),
                "measured_accuracy": float(np.mean(measured_pred == y_measured)),
                "measured_per_class": per_class_accuracy(y_measured, measured_pred),
                "measured_confusion": confusion(y_measured, measured_pred),
                "measured_accuracy_background_at_test_only": {},
                "measured_accuracy_no_trigonal_diagnostic": float("nan"),
                "references": int(kept.sum()),
                **found,
            }
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            continue
        epochs = args.epochs
        space_group_labels = training.endswith("_sg")
        if training == "plain":
            patterns, labels = clean_train, y_train
            epochs = args.plain_epochs or args.epochs * args.copies
        elif training in AUGMENTATIONS:
            patterns, labels = augmented[training], np.repeat(y_train, args.copies)
        else:
            leak_control = MINERAL_TRAININGS[training]
            keep_mp20 = ~leaked_mp20 if leak_control else np.ones(len(train_rows), bool)
            keep_minerals = ~leaked_minerals if leak_control else np.ones(len(minerals), bool)
            copies = args.copies
            patterns = np.concatenate(
                [
                    augmented["augmented"].reshape(len(train_rows), copies, -1)[keep_mp20].reshape(-1, len(grid)),
                    mineral_augmented.reshape(len(minerals), copies, -1)[keep_minerals].reshape(-1, len(grid)),
                ]
            )
            if space_group_labels:
                labels = np.repeat(np.r_[sg_train[keep_mp20], mineral_groups[keep_minerals]], copies).astype(int)
            else:
                # the triclinic variants (space-group rows go without: their groups are not drawn)
                patterns = np.concatenate([patterns, distorted_augmented])
                labels = np.repeat(np.r_[y_train[keep_mp20], mineral_systems[keep_minerals]], copies)
                labels = np.r_[labels, np.full(len(distorted_augmented), "triclinic", dtype=object)]
            row |= {
                "mp20_structures": int(keep_mp20.sum()),
                "amcsd_structures": int(keep_minerals.sum()),
                "triclinic_variants": 0 if space_group_labels else len(distorted_augmented) // copies,
            }
            if args.class_balance and not space_group_labels:
                patterns, labels = rebalanced(patterns, labels, args.class_balance)
                row["class_balance"] = args.class_balance
        patterns = remove_background(patterns, method)
        encoder = XRDEncoder(
            # every epoch, no early stopping: the validation cross-entropy rises while accuracy still
            # improves (measured on MP-20 XRD), and the measured set must not steer training anyway
            max_epochs=epochs, random_state=args.seed, validation_fraction=0.0, patience=0, verbose=args.verbose,
            intensity_scale=args.intensity_scale,
        )
        encoder.fit(pd.DataFrame({"xrd": list(patterns)}), labels)
        fit_seconds = time.time() - t0

        def predict(p):
            frame = pd.DataFrame({"xrd": list(remove_background(p, method))})
            proba = encoder.predict_proba(frame)
            if not space_group_labels:
                return encoder.classes_[proba.argmax(1)], proba, None
            # crystal system = the system whose space groups hold the most probability
            systems = crystal_system_from_spacegroup(encoder.classes_.astype(int))
            by_system = np.stack([proba[:, systems == c].sum(1) for c in CRYSTAL_SYSTEMS], axis=1)
            ranked_groups = encoder.classes_.astype(int)[np.argsort(-proba, axis=1)[:, :5]]
            return np.asarray(CRYSTAL_SYSTEMS, dtype=object)[by_system.argmax(1)], by_system, ranked_groups

        sim_pred, _, sim_groups = predict(clean_test)
        measured_pred, measured_proba, measured_groups = predict(
            measured_with_background[method] if method else raw_measured
        )
        # background removed from the measured patterns only (the model saw none at training)
        test_only = {}
        if method is None:
            for other in ("rolling_ball", "polynomial"):
                predicted, _, _ = predict(measured_with_background[other])
                test_only[other] = float(np.mean(predicted == y_measured))
        # diagnostic only: the measured set has no trigonal mineral
        without_trigonal = measured_proba.copy()
        system_names = np.asarray(CRYSTAL_SYSTEMS if space_group_labels else encoder.classes_, dtype=object)
        if "trigonal" in list(system_names):
            without_trigonal[:, list(system_names).index("trigonal")] = -1
        row |= {
            "simulated_accuracy": float(np.mean(sim_pred == y_sim)),
            "measured_accuracy": float(np.mean(measured_pred == y_measured)),
            "measured_per_class": per_class_accuracy(y_measured, measured_pred),
            "measured_confusion": confusion(y_measured, measured_pred),
            "measured_accuracy_background_at_test_only": test_only,
            "measured_predicted_trigonal": float(np.mean(measured_pred == "trigonal")),
            "measured_accuracy_no_trigonal_diagnostic": float(
                np.mean(system_names[without_trigonal.argmax(1)] == y_measured)
            ),
            # per pattern, for analyses that combine the CNN with other evidence without retraining
            "measured_proba": {"classes": [str(c) for c in system_names], "proba": measured_proba.round(5).tolist()},
            "epochs_run": len(encoder.net_.history),
            "fit_seconds": round(fit_seconds, 1),
        }
        if space_group_labels:
            row |= {
                "space_group_top1": float(np.mean(measured_groups[:, 0] == sg_measured)),
                "space_group_top5": float(np.mean([t in g for g, t in zip(measured_groups, sg_measured, strict=True)])),
                "simulated_space_group_top1": float(np.mean(sim_groups[:, 0] == sg_sim)),
            }
        results["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "measured_proba"}), flush=True)
        # the network's answer, except where the peaks index as cubic (the crystallographer's test)
        measured_indexed = np.where(measured_cubic, "cubic", measured_pred)
        simulated_indexed = np.where(simulated_cubic, "cubic", sim_pred)
        indexed_row = {
            "training": f"{training}+cubic indexing",
            "background": background,
            "simulated_accuracy": float(np.mean(simulated_indexed == y_sim)),
            "measured_accuracy": float(np.mean(measured_indexed == y_measured)),
            "measured_per_class": per_class_accuracy(y_measured, measured_indexed),
            "measured_confusion": confusion(y_measured, measured_indexed),
            "measured_accuracy_background_at_test_only": {},
            "measured_accuracy_no_trigonal_diagnostic": float("nan"),
            "measured_indexed_cubic": int(measured_cubic.sum()),
            "simulated_indexed_cubic": int(simulated_cubic.sum()),
        }
        results["rows"].append(indexed_row)
        print(json.dumps(indexed_row), flush=True)

    print()
    print(render_table(results))
    print(f"\ntotal {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=_jsonable))
    if args.figure:
        confusion_figure(results, args.figure)
    return results


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def confusion_figure(results: dict, path: Path) -> None:
    """One confusion matrix per row (measured patterns; rows true, columns predicted) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if "measured_confusion" in r]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.6), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        true = list(row["measured_confusion"])
        matrix = np.array([[row["measured_confusion"][t][p] for p in CRYSTAL_SYSTEMS] for t in true])
        ax.imshow(matrix / np.maximum(matrix.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for i, j in np.ndindex(matrix.shape):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(CRYSTAL_SYSTEMS)), [c[:4] for c in CRYSTAL_SYSTEMS], rotation=90, fontsize=7)
        ax.set_yticks(range(len(true)), [c[:4] for c in true], fontsize=7)
        ax.set_title(f"{row['training']}: {100 * row['measured_accuracy']:.1f} %", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
    axes[0][0].set_ylabel("measured (true)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _percent(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def render_table(results: dict) -> str:
    measured_classes = [c for c in CRYSTAL_SYSTEMS if c in results["class_counts"]["measured"]]
    header = [
        "training",
        "background",
        "sim. MP-20",
        "measured",
        *measured_classes,
        "(no trigonal)",
        "space group top-1 / top-5",
        "measured, rolling ball at test only",
        "measured, polynomial at test only",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["rows"]:
        cells = [
            row["training"],
            row["background"],
            _percent(row["simulated_accuracy"]),
            _percent(row["measured_accuracy"]),
            *(f"{100 * row['measured_per_class'][c]:.0f}" for c in measured_classes),
            _percent(row["measured_accuracy_no_trigonal_diagnostic"]),
            f"{_percent(row['space_group_top1'])} / {_percent(row['space_group_top5'])}" if "space_group_top1" in row else "-",
            *(_percent(row["measured_accuracy_background_at_test_only"].get(m)) for m in ("rolling_ball", "polynomial")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    counts = results["class_counts"]
    lines.append("")
    for name, key in (("MP-20 training", "mp20_train"), ("AMCSD", "amcsd"), ("measured", "measured")):
        if key in counts:
            lines.append(f"class counts, {name}: " + ", ".join(f"{c} {counts[key].get(c, 0)}" for c in CRYSTAL_SYSTEMS))
    if "leak_control" in results:
        leak = results["leak_control"]
        lines += [
            "",
            f"leak control: {leak['rule']}; AMCSD {leak['amcsd_excluded']} of {leak['amcsd_entries']} entries "
            f"({leak['amcsd_phases_excluded']} phases) and MP-20 {leak['mp20_excluded']} of "
            f"{leak['mp20_train_structures']} training structures left out.",
            "",
            "| threshold | AMCSD entries excluded | phases | nearest-AMCSD lookup accuracy | largest similarity left |",
            "|---|---|---|---|---|",
        ]
        for entry in leak["lookup_by_threshold"]:
            lines.append(
                f"| {entry['threshold'] if entry['threshold'] is not None else 'none'} | {entry['references_excluded']} "
                f"| {entry['phases_excluded']} | {100 * entry['lookup_accuracy']:.1f} | {entry['largest_similarity_left']:.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
