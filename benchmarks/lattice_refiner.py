"""LatticeRefiner on MP-20: does refining a predictor's lattice against the pattern help?

The 80/20 split of MP-20 val that ``benchmarks/unimat.py`` uses (seeded permutation), or
``--train`` / ``--test`` CDVAE-schema CSVs as there. Two predictors (``--predictor``):

``trees`` (quick)
    gradient-boosted trees (``HistGradientBoosting``) on Magpie composition features and the
    first principal components of the simulated Cu Kα pattern, one regressor per scaled
    length and a crystal-system classifier;
``network``
    the fine-tuned XRD + composition ``MultiModalClassifier`` of ``benchmarks/unimat.py``'s
    best row (crystal system, the nine lattice numbers as auxiliary outputs, contrastive
    weight 0.1, ``--epochs`` epochs), built by that script's own functions.

The predictor is trained on ``--n-train`` rows of the training part (default: all of them
for the network, 3,000 for the trees), wrapped in :class:`skmat.supervised.LatticeRefiner`
(``prefit=True``; element volumes fitted on the same training rows) and scored on
``--n-test`` rows of the test part: scaled lattice MAE of the predictor alone and refined,
the rows refined / kept, crystal-system accuracy of the predictor and of the system a
refinement converged under, and the time per row.

Usage::

    python benchmarks/lattice_refiner.py --n-train 3000 --n-test 100 --json /tmp/refiner.json
    python benchmarks/lattice_refiner.py --predictor network --n-test 300 --n-systems 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCALED = ["a_scaled", "b_scaled", "c_scaled"]


def parse_args(argv=None) -> argparse.Namespace:
    # this checkout's skmat and the sibling benchmark scripts
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
    from indexing import _default_data_home

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", type=Path, default=_default_data_home())
    parser.add_argument("--train", type=Path, default=None, help="CDVAE-schema CSV to train on (default: MP-20 val)")
    parser.add_argument("--test", type=Path, default=None, help="CDVAE-schema CSV to test on (default: 20%% of train)")
    parser.add_argument("--predictor", choices=["trees", "network"], default="trees")
    parser.add_argument("--n-train", type=int, default=None,
                        help="training rows (default: 3000 for the trees, all for the network)")
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the network predictor")
    parser.add_argument("--save-predictor", type=Path, default=None,
                        help="joblib file to write the fitted predictor(s) to")
    parser.add_argument("--load-predictor", type=Path, default=None,
                        help="joblib file of predictor(s) fitted by an earlier run with the same split and seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hgb-iter", type=int, default=150)
    parser.add_argument("--xrd-pca", type=int, default=32)
    parser.add_argument("--n-systems", type=int, default=3,
                        help="crystal systems considered per row (LatticeRefiner's n_systems; 1: the predicted one)")
    parser.add_argument("--oracle", action="store_true",
                        help="also refine under the true crystal system (the oracle row: indexing's share of the error)")
    parser.add_argument("--n-jobs", type=int, default=1, help="processes refining rows (LatticeRefiner(n_jobs=))")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.n_train is None and args.predictor == "trees":
        args.n_train = 3000
    return args


def _sqrt_stack(column):
    return np.sqrt(np.stack([np.asarray(v, dtype=float) for v in np.asarray(column, dtype=object).ravel()]))


def predictors(args):
    """(lattice regressor, crystal-system classifier), unfitted, reading the view frame."""
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.multioutput import MultiOutputRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from skmat.features import CompositionFeatures

    def features():
        return ColumnTransformer([
            ("magpie", CompositionFeatures(), ["composition"]),
            ("xrd", make_pipeline(FunctionTransformer(_sqrt_stack), PCA(args.xrd_pca, random_state=args.seed)), "xrd"),
        ])

    hgb = {"max_iter": args.hgb_iter, "random_state": args.seed}
    lattice = make_pipeline(features(), MultiOutputRegressor(HistGradientBoostingRegressor(**hgb)))
    system = make_pipeline(features(), HistGradientBoostingClassifier(**hgb))
    return lattice, system


def network(args):
    """The fine-tuned XRD + composition classifier of benchmarks/unimat.py, unfitted."""
    import tempfile

    from joblib import Memory
    from unimat import make_predictor
    from unimat import parse_args as unimat_args

    settings = unimat_args(["--seed", str(args.seed), "--epochs", str(args.epochs)])
    return make_predictor(("xrd", "composition"), settings, Memory(tempfile.mkdtemp(prefix="skmat-refiner-"), verbose=0))


def fit_predictors(args, X_train, train):
    """(lattice predictor, system predictor or None), fitted or loaded."""
    import joblib
    from unimat import REGRESSION_TARGETS

    if args.load_predictor:
        return joblib.load(args.load_predictor)
    if args.predictor == "network":
        model = network(args).fit(X_train, train["crystal_system"].astype(str).to_numpy(),
                                  auxiliary_targets=train[REGRESSION_TARGETS].to_numpy(float))
        fitted = (model, None)
    else:
        lattice, system = predictors(args)
        lattice.fit(X_train, train[SCALED].to_numpy(float))
        system.fit(X_train, train["crystal_system"].astype(str).to_numpy())
        fitted = (lattice, system)
    if args.save_predictor:
        args.save_predictor.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(fitted, args.save_predictor)
    return fitted


def run(args) -> dict:
    from unimat import add_xrd, load_data

    from skmat.supervised import LatticeRefiner

    ns = argparse.Namespace(train=args.train, test=args.test, data_home=args.data_home, seed=args.seed,
                            n_train=args.n_train, n_test=args.n_test, xrd_bins=1701)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, test, split = load_data(ns)
    tic = time.perf_counter()
    X_train, _ = add_xrd(train, ns)
    X_test, _ = add_xrd(test, ns)
    xrd_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    lattice, system = fit_predictors(args, X_train, train)
    refiner = LatticeRefiner(lattice, system, prefit=True, n_systems=args.n_systems, n_jobs=args.n_jobs).fit(X_train)
    train_seconds = time.perf_counter() - tic
    truth = test[SCALED].to_numpy(float)
    estimate = lattice.predict_auxiliary(X_test)[:, :3] if system is None else lattice.predict(X_test)
    tic = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refined = refiner.predict(X_test)
    refine_seconds = time.perf_counter() - tic
    systems = test["crystal_system"].astype(str).to_numpy()
    predicted_systems = refiner.predict_crystal_system(X_test)
    mask = refiner.refined_
    error = np.abs(refined - truth).mean(axis=1)
    base = np.abs(estimate - truth).mean(axis=1)
    result = {
        "split": split, "seed": args.seed, "predictor": args.predictor, "n_systems": args.n_systems, "n_train": len(train), "n_test": len(test),
        "predictor_scaled_mae": float(base.mean()),
        "refined_scaled_mae": float(error.mean()),
        "n_refined": refiner.n_refined_, "n_kept": refiner.n_kept_,
        "refined_rows_mae_refined": float(error[mask].mean()) if mask.any() else None,
        "refined_rows_mae_predictor": float(base[mask].mean()) if mask.any() else None,
        "refined_rows_within_0.01": float(np.mean(np.abs(refined - truth)[mask].max(axis=1) <= 0.01)) if mask.any()
        else None,
        "refined_rows_worse_than_predictor": int(np.sum(error[mask] > base[mask])),
        "crystal_system_accuracy": float(np.mean(predicted_systems == systems)),
        # the refiner's: the classifier weighed against the refinements (LatticeRefiner's n_systems)
        "crystal_system_accuracy_refiner": float(np.mean(refiner.crystal_systems_ == systems)),
        "crystal_system_accuracy_per_system": {
            s: {"n": int(np.sum(systems == s)), "classifier": float(np.mean(predicted_systems[systems == s] == s)),
                "refiner": float(np.mean(refiner.crystal_systems_[systems == s] == s))}
            for s in sorted(set(systems))
        },
        "refined_system_accuracy_on_refined_rows": float(np.mean(refiner.refined_systems_[mask] == systems[mask]))
        if mask.any() else None,
        # the system a refinement converged under, where one did; the classifier's elsewhere
        "crystal_system_accuracy_refined_where_refined": float(np.mean(
            np.where(mask, refiner.refined_systems_, predicted_systems) == systems)),
        "right_system_rows_refined": float(np.mean(mask[predicted_systems == systems])),
        "wrong_system_rows_refined": float(np.mean(mask[predicted_systems != systems])),
        "refined_rows_system_right": float(np.mean(predicted_systems[mask] == systems[mask])) if mask.any() else None,
        "seconds_per_row_refinement": refine_seconds / len(test),
        "train_seconds": train_seconds, "xrd_seconds": xrd_seconds,
        "warning": str(caught[0].message)[:600] if caught else None,
        **oracle(args, refiner, X_test, systems, estimate, truth),
        "per_system": {
            s: {"n": int(np.sum(systems == s)), "refined": int(np.sum(mask & (systems == s))),
                "predictor_mae": float(base[systems == s].mean()), "refined_mae": float(error[systems == s].mean())}
            for s in sorted(set(systems))
        },
    }
    print(json.dumps(result, indent=1))
    return result


def oracle(args, refiner, X_test, systems, estimate, truth) -> dict:
    """The same refinement from the same starting lattice under the true crystal system: how
    much of the error is the classifier's, how much the indexing's (issue 13's oracle row)."""
    if not args.oracle:
        return {}
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        refined = refiner.refine(X_test, systems, estimate)
    error = np.abs(refined - truth).mean(axis=1)
    return {"oracle": {
        "refined_scaled_mae": float(error.mean()),
        "n_refined": refiner.n_refined_,
        "refined_rows_within_0.01": float(np.mean(np.abs(refined - truth)[refiner.refined_].max(axis=1) <= 0.01))
        if refiner.refined_.any() else None,
        "seconds_per_row_refinement": (time.perf_counter() - tic) / len(truth),
    }}


def main(argv=None) -> dict:
    import torch

    torch.set_num_threads(1)
    args = parse_args(argv)
    result = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
