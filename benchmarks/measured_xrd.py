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
import os
import time
import warnings
from pathlib import Path

import numpy as np

# spglib prints C-level notices for near-symmetric MP-20 cells; they are harmless here
os.environ.setdefault("SPGLIB_WARNING", "OFF")

REPO = Path(__file__).resolve().parents[1]
CRYSTAL_SYSTEMS = ["triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"]
DEFAULT_CONFIGS = ["plain:none", "augmented:none", "grown:none"]
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


def run(args: argparse.Namespace) -> dict:
    """The benchmark for parsed command-line *args* (see :func:`main`)."""
    import pandas as pd

    from skmat.datasets import fetch_mp20
    from skmat.encoders import XRDEncoder
    from skmat.features.measured import MeasuredXRD, remove_background
    from skmat.features.xrd import XRDPattern

    started = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding notices
        X, y = fetch_mp20(data_home=args.data_home, return_X_y=True, target="crystal_system")
    # the 80/20 split of benchmarks/unimat.py: the first 20 % of a seeded permutation is the test
    order = np.random.default_rng(args.seed).permutation(len(X))
    n_test = int(round(0.2 * len(X)))
    train_rows, test_rows = order[n_test:][: args.n_train], order[:n_test][: args.n_sim_test]
    structures = list(X["structure"])
    train_structures = [structures[i] for i in train_rows]
    y_train, y_sim = np.asarray(y)[train_rows], np.asarray(y)[test_rows]

    simulate = XRDPattern(n_jobs=args.n_jobs)
    clean_train = simulate.fit_transform(train_structures)
    clean_test = simulate.transform([structures[i] for i in test_rows])
    print(f"simulated {len(train_rows) + len(test_rows)} patterns in {time.time() - started:.0f} s", flush=True)
    augmented = {}
    for kind in dict.fromkeys(c.split(":")[0] for c in args.configs):
        if kind not in AUGMENTATIONS:
            continue
        t0 = time.time()
        n_drawn = args.copies if args.no_clean_copy else args.copies - 1
        drawn = augmented_patterns(
            train_structures, copies=n_drawn, seed=args.seed, n_jobs=args.n_jobs, params=AUGMENTATIONS[kind]
        )
        if not args.no_clean_copy:
            # rows grouped by structure: the clean pattern first, then its augmented draws
            drawn = np.concatenate(
                [clean_train[:, None, :], drawn.reshape(len(train_structures), n_drawn, -1)], axis=1
            ).reshape(len(train_structures) * args.copies, -1)
        augmented[kind] = drawn
        print(f"{kind}: {len(drawn)} patterns in {time.time() - t0:.0f} s", flush=True)
    measured_frame, y_measured, sg_measured = load_measured(args.test, args.data_home)
    raw_measured = MeasuredXRD().fit_transform(measured_frame)
    measured_with_background = {
        m: MeasuredXRD(background=m).fit_transform(measured_frame) for m in ("rolling_ball", "polynomial")
    }

    results = {
        "settings": vars(args) | {"data_home": str(args.data_home), "test": str(args.test), "json": str(args.json)},
        "augmentations": {kind: AUGMENTATIONS[kind] for kind in augmented},
        "class_counts": {
            "mp20_train": pd.Series(y_train).value_counts().to_dict(),
            "measured": pd.Series(y_measured).value_counts().to_dict(),
        },
        "rows": [],
    }
    for config in args.configs:
        training, background = config.split(":")
        method = None if background == "none" else background
        t0 = time.time()
        epochs = args.epochs
        if training == "plain":
            patterns, labels = clean_train, y_train
            epochs = args.plain_epochs or args.epochs * args.copies
        elif training in AUGMENTATIONS:
            patterns, labels = augmented[training], np.repeat(y_train, args.copies)
        else:
            raise SystemExit(f"unknown training {training!r}: plain or one of {sorted(AUGMENTATIONS)}")
        patterns = remove_background(patterns, method)
        encoder = XRDEncoder(
            # every epoch, no early stopping: the validation cross-entropy rises while accuracy still
            # improves (measured on MP-20 XRD), and the measured set must not steer training anyway
            max_epochs=epochs, random_state=args.seed, validation_fraction=0.0, patience=0, verbose=args.verbose
        )
        encoder.fit(pd.DataFrame({"xrd": list(patterns)}), labels)
        fit_seconds = time.time() - t0

        def predict(p):
            frame = pd.DataFrame({"xrd": list(remove_background(p, method))})
            proba = encoder.predict_proba(frame)
            return encoder.classes_[proba.argmax(1)], proba

        sim_pred, _ = predict(clean_test)
        measured_pred, measured_proba = predict(
            measured_with_background[method] if method else raw_measured
        )
        # background removed from the measured patterns only (the model saw none at training)
        test_only = {}
        if method is None:
            for other in ("rolling_ball", "polynomial"):
                predicted, _ = predict(measured_with_background[other])
                test_only[other] = float(np.mean(predicted == y_measured))
        # diagnostic only: the measured set has no trigonal mineral
        without_trigonal = measured_proba.copy()
        without_trigonal[:, list(encoder.classes_).index("trigonal")] = -1
        row = {
            "training": training,
            "background": background,
            "simulated_accuracy": float(np.mean(sim_pred == y_sim)),
            "measured_accuracy": float(np.mean(measured_pred == y_measured)),
            "measured_per_class": per_class_accuracy(y_measured, measured_pred),
            "measured_accuracy_background_at_test_only": test_only,
            "measured_predicted_trigonal": float(np.mean(measured_pred == "trigonal")),
            "measured_accuracy_no_trigonal_diagnostic": float(
                np.mean(encoder.classes_[without_trigonal.argmax(1)] == y_measured)
            ),
            "epochs_run": len(encoder.net_.history),
            "fit_seconds": round(fit_seconds, 1),
        }
        results["rows"].append(row)
        print(json.dumps(row), flush=True)

    print()
    print(render_table(results))
    print(f"\ntotal {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


def render_table(results: dict) -> str:
    measured_classes = [c for c in CRYSTAL_SYSTEMS if c in results["class_counts"]["measured"]]
    header = [
        "training",
        "background",
        "sim. MP-20",
        "measured",
        *measured_classes,
        "(no trigonal)",
        "measured, rolling ball at test only",
        "measured, polynomial at test only",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["rows"]:
        cells = [
            row["training"],
            row["background"],
            f"{100 * row['simulated_accuracy']:.1f}",
            f"{100 * row['measured_accuracy']:.1f}",
            *(f"{100 * row['measured_per_class'][c]:.0f}" for c in measured_classes),
            f"{100 * row['measured_accuracy_no_trigonal_diagnostic']:.1f}",
            *(
                f"{100 * row['measured_accuracy_background_at_test_only'][m]:.1f}"
                if m in row["measured_accuracy_background_at_test_only"]
                else "-"
                for m in ("rolling_ball", "polynomial")
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    counts = results["class_counts"]
    lines.append("")
    for name, key in (("MP-20 training", "mp20_train"), ("measured", "measured")):
        lines.append(f"class counts, {name}: " + ", ".join(f"{c} {counts[key].get(c, 0)}" for c in CRYSTAL_SYSTEMS))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
