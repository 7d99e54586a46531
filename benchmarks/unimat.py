"""UniMat's table on MP-20: lattice and crystal-system prediction from structure, XRD and composition.

Reproduces the evaluation of UniMat (arXiv 2411.08664) with skmat's estimators. Data: the MP-20
validation split of the data home (9,047 structures), split 80/20 with a fixed seed; or
``--train PATH`` / ``--test PATH``, CSV files in CDVAE's schema (``material_id``, ``cif``, ...).
Every view is derived from the structure: the crystal graph, a simulated Cu Kα powder pattern
(5-90°, FWHM 0.15°) and the composition (Magpie statistics).

Tasks (UniMat's, with CDVAE's lattice convention):

* lattice lengths scaled as (a, b, c) / N^(1/3), N = atoms in the cell (the headline metric:
  MAE averaged over a, b and c, in Å), the raw lengths (a, b, c) and the angles α, β, γ (°);
* crystal system (7 classes from ``SpacegroupAnalyzer(symprec=0.1)``): accuracy overall and
  within each true class.

Rows of the table, each with the protocol that produced it:

``fine-tuned``
    A multitask :class:`~skmat.supervised.MultiModalClassifier` over the row's views, trained
    end to end: crystal-system cross-entropy plus the MSE of the nine standardised lattice
    numbers as auxiliary targets (``predict_auxiliary``), one fit per row. Multi-view rows add
    the contrastive loss (``--contrastive-weight``), UniMat's joint objective. "Structure
    aligned with XRD" is trained on both views with view dropout and predicts from the
    structure alone.
``frozen``
    Self-supervised embeddings of a :class:`~skmat.align.MultiModalAligner` (CLIP loss for
    two views, all-pairs CLIP for three), ``fusion="concat"`` over the row's views, frozen,
    then a small MLP head per task (scikit-learn ``MLPRegressor`` / ``MLPClassifier`` on
    standardised embeddings). A single-view ``frozen`` row uses that view of the three-view
    aligner; "structure aligned with XRD" uses the structure view of a structure + XRD aligner.
``fine-tuned + LatticeRefiner``
    The fine-tuned XRD + composition row's scaled lattice refined against each test pattern's
    peaks (:class:`~skmat.supervised.LatticeRefiner`): its ``predict`` weighs the network's
    three most probable crystal systems against their refinements and gives the row's crystal
    system too. With ``--oracle``, a second row refines under the true system (the lattice's
    share of the error that is the classification's; its crystal-system columns are the
    network's): a diagnostic, off by default since it took 8 minutes of a 72-minute default run
    (commit 45de5c0, under load) once every row is also indexed from its peaks alone. ``--no-refine`` skips both.
``trees``
    The classical baseline: Magpie features (and, in a second row, the first principal
    components of the XRD pattern) with ``HistGradientBoostingRegressor`` per target and
    ``HistGradientBoostingClassifier``.

Outputs in ``--out DIR``: ``unimat.json`` (every number, the settings, the commit, timings),
``unimat.md`` (the table), ``parity.png`` (scaled lattice lengths, predicted vs true, one panel
per row) and ``confusion.png`` (crystal-system confusion matrices).

Usage::

    python benchmarks/unimat.py --out results/unimat              # default (46 min on 2 idle cores)
    python benchmarks/unimat.py --quick --out /tmp/unimat_quick    # ~5 min smoke run
    python benchmarks/unimat.py --test held_out_mp20_test.csv --out results/unimat_test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SCALED = ["a_scaled", "b_scaled", "c_scaled"]
RAW = ["a", "b", "c"]
ANGLES = ["alpha", "beta", "gamma"]
REGRESSION_TARGETS = SCALED + RAW + ANGLES
CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
VIEWS = ("structure", "xrd", "composition")

#: (row name, views embedded for the head, views of the aligner that makes a frozen embedding)
LEARNED_ROWS = [
    ("composition only", ("composition",), VIEWS),
    ("XRD only", ("xrd",), VIEWS),
    ("structure only", ("structure",), VIEWS),
    ("structure aligned with XRD", ("structure",), ("structure", "xrd")),
    ("XRD + composition aligned and fused", ("xrd", "composition"), ("xrd", "composition")),
    ("all three", VIEWS, VIEWS),
]

#: settings the size presets override (``--quick`` a CI smoke run, ``--tiny`` the unit test)
PRESETS = {
    "quick": {"n_train": 600, "n_test": 200, "epochs": 3, "head_iter": 100},
    "tiny": {
        "n_train": 80, "n_test": 40, "epochs": 1, "head_iter": 20, "xrd_bins": 425, "out_dim": 16,
        "hidden_dim": 16, "n_layers": 1, "xrd_channels": [4, 8, 8], "composition_hidden": [32],
        "latent_dim": 16, "head_hidden": 16, "hgb_iter": 10, "xrd_pca": 4, "threads": 1,
    },
}


def _default_data_home() -> Path:
    env = os.environ.get("SKMAT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data-home", type=Path, default=_default_data_home())
    data.add_argument("--train", type=Path, default=None, help="CDVAE-schema CSV to train on (default: MP-20 val)")
    data.add_argument("--test", type=Path, default=None, help="CDVAE-schema CSV to test on (default: 20%% of train)")
    data.add_argument("--n-train", type=int, default=None, help="subsample the training rows")
    data.add_argument("--n-test", type=int, default=None, help="subsample the test rows")
    data.add_argument("--seed", type=int, default=0, help="seeds the split, the models and the heads")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="600 train / 200 test, 3 epochs (CI smoke run)")
    size.add_argument("--tiny", action="store_true", help="120 structures, 1 epoch, tiny networks (unit test)")
    model = parser.add_argument_group("model")
    model.add_argument("--architecture", default="cgcnn", choices=["cgcnn", "schnet", "dimenetpp"])
    model.add_argument("--hidden-dim", type=int, default=64, help="structure GNN width")
    model.add_argument("--n-layers", type=int, default=3, help="structure GNN layers")
    model.add_argument("--xrd-bins", type=int, default=1701, help="2-theta grid points over 5-90 deg")
    model.add_argument("--xrd-channels", type=int, nargs="+", default=[16, 32, 64, 64, 128, 128])
    model.add_argument("--composition-hidden", type=int, nargs="+", default=[256, 256])
    model.add_argument("--out-dim", type=int, default=128, help="embedding size of every encoder")
    model.add_argument("--latent-dim", type=int, default=128, help="aligner's shared space")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=20, help="epochs of every encoder and aligner fit")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument(
        "--patience", type=int, default=0,
        help="early-stopping patience (epochs); 0 trains every epoch on all rows (measured on the XRD "
             "view: the validation cross-entropy rises from epoch 5 while accuracy still improves)",
    )
    train.add_argument("--contrastive-weight", type=float, default=0.1,
                       help="weight of the alignment loss next to the task loss in fine-tuned rows")
    train.add_argument("--head-hidden", type=int, default=256, help="hidden units of the MLP heads")
    train.add_argument("--head-iter", type=int, default=300, help="max epochs of the MLP heads")
    train.add_argument("--hgb-iter", type=int, default=100, help="boosting iterations of the tree baseline")
    train.add_argument("--xrd-pca", type=int, default=32, help="XRD principal components for the tree baseline")
    train.add_argument("--no-refine", dest="refine", action="store_false",
                       help="skip the XRD + composition rows refined against the patterns (LatticeRefiner)")
    train.add_argument("--oracle", action="store_true",
                       help="also refine under the true crystal system (a diagnostic row; ~8 min more)")
    train.add_argument("--refine-jobs", type=int, default=2, help="processes refining the test rows")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("unimat_results"), help="directory for JSON, Markdown, PNGs")
    out.add_argument(
        "--threads", type=int, default=None,
        help="threads of torch, BLAS and OpenMP (default: their own choice; use 1 on a busy machine)",
    )
    out.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    preset = "quick" if args.quick else "tiny" if args.tiny else None
    if preset:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])}
        for key, value in PRESETS[preset].items():
            if key not in given:  # an explicit option beats the preset
                setattr(args, key, value)
    args.preset = preset or "default"
    return args


# -- data -----------------------------------------------------------------------------------
def load_csv(path: Path):
    """Frame of a CDVAE-schema CSV anywhere on disk, via the MP-20 loader (parsing, targets)."""
    from skmat.datasets import fetch_mp20

    path = Path(path).resolve()
    if not path.is_file():
        raise SystemExit(f"no such file: {path}")
    suffix = ".csv.gz" if path.name.endswith(".gz") else ".csv"
    with tempfile.TemporaryDirectory() as home:
        # the loader reads <home>/mp_20/<split>.csv: point it at the file without copying it
        (Path(home) / "mp_20").mkdir()
        os.symlink(path, Path(home) / "mp_20" / f"val{suffix}")
        return fetch_mp20(split="val", data_home=home, errors="skip").frame


def load_data(args: argparse.Namespace):
    """Training and test frames (one row per material) after the split and subsampling."""
    from skmat.datasets import fetch_mp20

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding notices
        train = load_csv(args.train) if args.train else fetch_mp20(split="val", data_home=args.data_home).frame
        test = load_csv(args.test) if args.test else None
    rng = np.random.default_rng(args.seed)
    if test is None:
        order = rng.permutation(len(train))
        n_test = int(round(0.2 * len(train)))
        train, test = train.iloc[order[n_test:]], train.iloc[order[:n_test]]
        split = "80/20 of the training file, seeded permutation"
    else:
        split = "given test file"
    if args.n_train is not None and args.n_train < len(train):
        train = train.iloc[np.sort(rng.choice(len(train), args.n_train, replace=False))]
    if args.n_test is not None and args.n_test < len(test):
        test = test.iloc[np.sort(rng.choice(len(test), args.n_test, replace=False))]
    return train.reset_index(drop=True), test.reset_index(drop=True), split


def add_xrd(frame, args: argparse.Namespace):
    """View columns for the encoders: structure, composition and the simulated XRD pattern
    (computed once here, so every encoder and the tree baseline share it)."""
    import pandas as pd

    from skmat.features import XRDPattern

    patterns = XRDPattern(n_bins=args.xrd_bins, n_jobs=2).fit_transform(list(frame["structure"]))
    views = pd.DataFrame(
        {
            "structure": frame["structure"].to_numpy(),
            "composition": frame["composition"].to_numpy(),
            "xrd": list(patterns.astype(np.float32)),
        },
        index=frame["material_id"].astype(str).to_numpy(),
    )
    return views, patterns


# -- metrics --------------------------------------------------------------------------------
def score(truth, predicted: dict) -> dict:
    """Every column of the table from predictions ``{"regression": (n, 9), "crystal_system": (n,)}``."""
    y = truth[REGRESSION_TARGETS].to_numpy(dtype=float)
    error = np.abs(np.asarray(predicted["regression"], dtype=float) - y)
    systems = truth["crystal_system"].to_numpy().astype(str)
    guessed = np.asarray(predicted["crystal_system"]).astype(str)
    per_system = {
        name: (float(np.mean(guessed[systems == name] == name)) if np.any(systems == name) else None)
        for name in CRYSTAL_SYSTEMS
    }
    return {
        "scaled_lattice_mae": float(error[:, 0:3].mean()),
        "raw_lattice_mae": float(error[:, 3:6].mean()),
        "scaled_mae_abc": error[:, 0:3].mean(axis=0).tolist(),
        "raw_mae_abc": error[:, 3:6].mean(axis=0).tolist(),
        "mae_alpha": float(error[:, 6].mean()),
        "mae_beta": float(error[:, 7].mean()),
        "mae_gamma": float(error[:, 8].mean()),
        "crystal_system_accuracy": float(np.mean(guessed == systems)),
        "accuracy_per_system": per_system,
    }


# -- models ---------------------------------------------------------------------------------
def make_encoder(view: str, args: argparse.Namespace, memory):
    from skmat.encoders import CompositionEncoder, StructureEncoder, XRDEncoder

    common = {
        "out_dim": args.out_dim, "max_epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "patience": args.patience, "random_state": args.seed, "verbose": args.verbose,
    }
    if view == "structure":
        return StructureEncoder(
            architecture=args.architecture, hidden_dim=args.hidden_dim, n_layers=args.n_layers, memory=memory, **common
        )
    if view == "xrd":
        return XRDEncoder(n_bins=args.xrd_bins, channels=tuple(args.xrd_channels), **common)
    return CompositionEncoder(hidden_dims=tuple(args.composition_hidden), **common)


def training_settings(args: argparse.Namespace) -> dict:
    """Training parameters shared by the aligners and the fine-tuned predictors."""
    return dict(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        validation_fraction=0.1 if args.patience else 0.0,
        random_state=args.seed,
        verbose=args.verbose,
    )


def make_aligner(views: tuple[str, ...], args: argparse.Namespace, memory):
    from skmat.align import MultiModalAligner

    return MultiModalAligner(
        encoders=[(view, make_encoder(view, args, memory)) for view in views],
        loss="clip" if len(views) == 2 else "all_pairs",
        latent_dim=args.latent_dim,
        fusion="concat",
        **training_settings(args),
    )


def make_predictor(views: tuple[str, ...], args: argparse.Namespace, memory, view_dropout: float = 0.0):
    """Multitask MultiModalClassifier over *views*: crystal system + lattice numbers (auxiliary)."""
    from skmat.supervised import MultiModalClassifier

    aligner = make_aligner(views, args, memory).set_params(view_dropout=view_dropout)
    return MultiModalClassifier(
        aligner,
        contrastive_weight=args.contrastive_weight if len(views) > 1 else 0.0,
        hidden_dim=args.head_hidden,
        **training_settings(args),
    )


def fine_tune(views, seen_views, args, memory, X_train, train, X_test):
    """Fit the multitask predictor on *views*, predict from *seen_views* of the test rows."""
    dropout = 0.5 if tuple(seen_views) != tuple(views) else 0.0
    model = make_predictor(views, args, memory, dropout).fit(
        X_train, train["crystal_system"].to_numpy().astype(str),
        auxiliary_targets=train[REGRESSION_TARGETS].to_numpy(dtype=float),
    )
    # only *seen_views* are read: the XRD view would otherwise be simulated from the structure
    model.set_params(aligner__transform_views=tuple(seen_views))
    return model, {"regression": model.predict_auxiliary(X_test), "crystal_system": model.predict(X_test)}


def refined_rows(row, model, predicted, X_train, X_test, test, args, timer, record) -> None:
    """The fine-tuned network's scaled lattice refined against each test pattern
    (:class:`~skmat.supervised.LatticeRefiner`, element volumes of the training structures):
    ``predict``, which weighs the network's 3 most probable crystal systems against their
    refinements (the row's crystal system is the refiner's), and, as the oracle row, under the
    true system (``--oracle``). Only the scaled lengths and the crystal system change; the other
    columns are the network's."""
    from skmat.supervised import LatticeRefiner

    refiner = LatticeRefiner(model, prefit=True, n_jobs=args.refine_jobs).fit(X_train)
    network_lattice = np.asarray(predicted["regression"], dtype=float)[:, :3]

    def under_predicted_systems():
        return refiner.predict(X_test), refiner.crystal_systems_

    def under_true_systems():
        true_systems = test["crystal_system"].astype(str).to_numpy()
        return refiner.refine(X_test, true_systems, network_lattice), predicted["crystal_system"]

    protocols = [("fine-tuned + LatticeRefiner (predicted crystal system)", under_predicted_systems)]
    if args.oracle:
        protocols.append(("fine-tuned + LatticeRefiner (oracle: true crystal system)", under_true_systems))
    for protocol, refine in protocols:
        start = time.perf_counter()
        with timer("refine"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the rows kept are counted below
            lattice, systems = refine()
        regression = np.array(predicted["regression"], dtype=float)
        regression[:, :3] = lattice
        _log(args, f"{protocol}: {refiner.n_refined_} of {len(X_test)} rows refined")
        record(row, f"{protocol}, {refiner.n_refined_} of {len(X_test)} refined",
               {"regression": regression, "crystal_system": systems}, time.perf_counter() - start)


def mlp_heads(train_embedding, y_train, test_embedding, args: argparse.Namespace) -> dict:
    """A small MLP per task on standardised frozen embeddings: lengths (scaled), lengths (raw),
    angles, crystal system. Returns the test predictions in :func:`score`'s layout."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def options(stratified_counts=None):
        # early stopping holds out 10 %: only worth it (and, for classes, possible) with enough rows
        enough = len(train_embedding) >= 200 and (stratified_counts is None or stratified_counts.min() >= 10)
        return {
            "hidden_layer_sizes": (args.head_hidden,), "max_iter": args.head_iter, "early_stopping": enough,
            "random_state": args.seed, "alpha": 1e-3,
        }

    regression = np.zeros((len(test_embedding), len(REGRESSION_TARGETS)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at the small --quick/--tiny budgets
        for columns in (SCALED, RAW, ANGLES):
            head = TransformedTargetRegressor(
                make_pipeline(StandardScaler(), MLPRegressor(**options())), transformer=StandardScaler()
            )
            head.fit(train_embedding, y_train[columns].to_numpy(dtype=float))
            index = [REGRESSION_TARGETS.index(c) for c in columns]
            regression[:, index] = head.predict(test_embedding)
        labels = y_train["crystal_system"].to_numpy().astype(str)
        counts = np.unique(labels, return_counts=True)[1]
        classifier = make_pipeline(StandardScaler(), MLPClassifier(**options(counts)))
        classifier.fit(train_embedding, labels)
    return {"regression": regression, "crystal_system": classifier.predict(test_embedding)}


def tree_baseline(train_features, y_train, test_features, args: argparse.Namespace) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    regression = np.column_stack(
        [
            HistGradientBoostingRegressor(max_iter=args.hgb_iter, random_state=args.seed)
            .fit(train_features, y_train[column].to_numpy(dtype=float))
            .predict(test_features)
            for column in REGRESSION_TARGETS
        ]
    )
    classifier = HistGradientBoostingClassifier(max_iter=args.hgb_iter, random_state=args.seed)
    classifier.fit(train_features, y_train["crystal_system"].to_numpy().astype(str))
    return {"regression": regression, "crystal_system": classifier.predict(test_features)}


# -- the run --------------------------------------------------------------------------------
class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = timer.seconds.get(name, 0.0) + time.perf_counter() - self.start

        return _Span()


def _log(args, message: str) -> None:
    if args.verbose >= 0:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace) -> dict:
    import torch
    from joblib import Memory
    from sklearn.decomposition import PCA

    from skmat.features import CompositionFeatures

    timer = Timer()
    started, cpu_started = time.perf_counter(), time.process_time()
    with timer("load"):
        train, test, split = load_data(args)
    _log(args, f"data: {len(train)} train, {len(test)} test ({split})")
    with timer("featurize"):
        X_train, xrd_train = add_xrd(train, args)
        X_test, xrd_test = add_xrd(test, args)
        magpie = CompositionFeatures()
        magpie_train = magpie.fit_transform(list(train["composition"]))
        magpie_test = magpie.transform(list(test["composition"]))

    results: list[dict] = []
    predictions: dict[str, dict] = {}

    def record(row: str, protocol: str, predicted: dict, seconds: float) -> None:
        metrics = score(test, predicted)
        results.append({"row": row, "protocol": protocol, "seconds": seconds, **metrics})
        predictions[f"{row} | {protocol}"] = predicted
        # rows so far, so an interrupted long run still leaves its numbers behind
        args.out.mkdir(parents=True, exist_ok=True)
        partial = {"settings": {k: str(v) for k, v in vars(args).items()}, "rows": results}
        (args.out / "unimat.partial.json").write_text(json.dumps(partial, indent=2, default=_json_default) + "\n")
        _log(args, f"{row} | {protocol}: scaled MAE {metrics['scaled_lattice_mae']:.3f} Å, "
                   f"accuracy {metrics['crystal_system_accuracy']:.3f} ({seconds:.0f} s)")

    # the classical baseline first: it is cheap and is the floor every learned row must beat
    for name, train_x, test_x in [
        ("Magpie", magpie_train, magpie_test),
        ("Magpie + XRD PCA", None, None),
    ]:
        start = time.perf_counter()
        with timer("trees"):
            if train_x is None:
                pca = PCA(n_components=min(args.xrd_pca, len(train) - 1), random_state=args.seed).fit(xrd_train)
                train_x = np.hstack([magpie_train, pca.transform(xrd_train)])
                test_x = np.hstack([magpie_test, pca.transform(xrd_test)])
            predicted = tree_baseline(train_x, train, test_x, args)
        record(f"classical baseline: {name}", "trees", predicted, time.perf_counter() - start)

    with tempfile.TemporaryDirectory(prefix="skmat-unimat-") as cache:
        # crystal graphs are rebuilt by every fit and transform that sees structures: cache them
        memory = Memory(cache, verbose=0)

        # single views fine-tuned end to end (multitask: crystal system + lattice numbers)
        fine_tuned: dict[str, Any] = {}
        for row, views, _ in LEARNED_ROWS[:3]:
            start = time.perf_counter()
            with timer(f"fine-tune {'+'.join(views)}"):
                fine_tuned[row], predicted = fine_tune(views, views, args, memory, X_train, train, X_test)
            record(row, "fine-tuned", predicted, time.perf_counter() - start)

        # self-supervised aligners, one per set of aligned views, embeddings frozen + MLP heads
        aligners: dict[tuple, Any] = {}
        for row, views, aligned in LEARNED_ROWS:
            start = time.perf_counter()
            with timer(f"align {'+'.join(aligned)}"):
                if aligned not in aligners:
                    aligners[aligned] = make_aligner(aligned, args, memory).fit(X_train)
                aligner = aligners[aligned].set_params(transform_views=views)
                train_embedding, test_embedding = aligner.transform(X_train), aligner.transform(X_test)
            with timer("heads"):
                predicted = mlp_heads(train_embedding, train, test_embedding, args)
            record(row, f"frozen ({'+'.join(aligned)} aligner) + MLP", predicted, time.perf_counter() - start)

        # multi-view rows fine-tuned end to end, with the contrastive term
        for row, views, aligned in LEARNED_ROWS[3:]:
            start = time.perf_counter()
            with timer(f"fine-tune {'+'.join(aligned)}"):
                fine_tuned[row], predicted = fine_tune(aligned, views, args, memory, X_train, train, X_test)
            record(row, f"fine-tuned ({'+'.join(aligned)}, contrastive weight {args.contrastive_weight:g})",
                   predicted, time.perf_counter() - start)
            if views == ("xrd", "composition") and args.refine:
                refined_rows(row, fine_tuned[row], predicted, X_train, X_test, test, args, timer, record)
        training = {name: {"epochs_run": len(model.net_.history)} for name, model in fine_tuned.items()}
        alignment = {
            "+".join(k): {"epochs_run": len(a.net_.history), "temperature": a.temperature_,
                          "final_train_loss": float(a.net_.history[-1, "train_loss"])}
            for k, a in aligners.items()
        }

    majority = {
        "regression": np.tile(train[REGRESSION_TARGETS].to_numpy(dtype=float).mean(axis=0), (len(test), 1)),
        "crystal_system": np.full(len(test), train["crystal_system"].astype(str).value_counts().idxmax()),
    }
    timer.seconds["total"] = time.perf_counter() - started
    # CPU time of this process: with a busy machine, a better guide than wall time to the run's
    # cost on an idle one (featurisation workers are not counted)
    timer.seconds["cpu_main_process"] = time.process_time() - cpu_started
    return {
        "benchmark": "unimat",
        "commit": _commit(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"n_train": len(train), "n_test": len(test), "split": split,
                 "train_file": str(args.train or Path(args.data_home) / "mp_20" / "val.csv.gz"),
                 "test_file": str(args.test) if args.test else None,
                 "test_crystal_systems": test["crystal_system"].astype(str).value_counts().to_dict()},
        "reference": {"mean_predictor_and_majority_class": score(test, majority), "unimat_paper": UNIMAT_PAPER},
        "rows": results,
        "alignment": alignment,
        "fine_tuning": training,
        "seconds": timer.seconds,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average": list(os.getloadavg())},
        "_predictions": predictions,
        "_truth": test,
    }


#: UniMat's published numbers (scaled lattice-length MAE, Å; crystal-system accuracy)
UNIMAT_PAPER = {
    "structure only": 0.20, "structure aligned with XRD": 0.14, "XRD only": 0.17, "composition only": 0.33,
    "XRD + composition aligned and fused": 0.13, "crystal_system_accuracy": 0.851,
    "accuracy_cubic": 0.981, "accuracy_monoclinic": 0.781,
}


def _commit() -> dict:
    def git(*command):
        try:
            done = subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True, timeout=30)
            return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"head": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


# -- outputs --------------------------------------------------------------------------------
def markdown_table(result: dict) -> str:
    short = {"triclinic": "tric", "monoclinic": "mono", "orthorhombic": "orth", "tetragonal": "tetr",
             "trigonal": "trig", "hexagonal": "hex", "cubic": "cub"}
    head = ["row", "protocol", "scaled MAE (Å)", "raw MAE (Å)", "MAE α (°)", "MAE β (°)", "MAE γ (°)",
            "crystal system acc.", *[f"acc. {short[s]}" for s in CRYSTAL_SYSTEMS], "time (s)"]

    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}%"

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    reference = dict(result["reference"]["mean_predictor_and_majority_class"], seconds=0.0,
                     row="reference: training mean / majority class", protocol="–")
    for r in [*result["rows"], reference]:
        cells = [r["row"], r["protocol"], f"{r['scaled_lattice_mae']:.3f}", f"{r['raw_lattice_mae']:.3f}",
                 f"{r['mae_alpha']:.2f}", f"{r['mae_beta']:.2f}", f"{r['mae_gamma']:.2f}",
                 pct(r["crystal_system_accuracy"]), *[pct(r["accuracy_per_system"][s]) for s in CRYSTAL_SYSTEMS],
                 f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    data, settings = result["data"], result["settings"]
    commit = result["commit"]
    notes = [
        "",
        f"MP-20 lattice target: (a, b, c)/N^(1/3), MAE averaged over a, b, c. Train {data['n_train']}, "
        f"test {data['n_test']} ({data['split']}). Preset `{settings['preset']}`, {settings['epochs']} epochs, "
        f"seed {settings['seed']}. Commit `{commit['head']}`{' (dirty tree)' if commit['dirty'] else ''}; "
        f"wall time {result['seconds']['total'] / 60:.1f} min on {result['machine']['cpus']} CPUs "
        f"(load average at the end {result['machine']['load_average'][0]:.1f}).",
        "UniMat (arXiv 2411.08664, full MP-20 train): composition 0.33 Å, XRD 0.17 Å, structure 0.20 Å, "
        "structure aligned with XRD 0.14 Å, XRD + composition 0.13 Å; crystal system 85.1% "
        "(cubic 98.1%, monoclinic 78.1%).",
    ]
    return "\n".join(lines + notes) + "\n"


def _wrap(name: str) -> str:
    """A panel title on lines short enough not to run into the next panel."""
    return name.replace(" | ", "\n").replace(" (", "\n(")


def write_figures(result: dict, out: Path) -> list[str]:
    """``parity.png`` (scaled lengths a, b, c pooled) and ``confusion.png``, one panel per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skmat.plotting import plot_confusion, plot_parity

    truth = result["_truth"]
    predictions = result["_predictions"]
    names = list(predictions)
    y_true = truth[SCALED].to_numpy(dtype=float).ravel()
    systems = truth["crystal_system"].to_numpy().astype(str)
    columns = 4
    rows = int(np.ceil(len(names) / columns))
    written = []
    for filename, size in [("parity.png", 3.4), ("confusion.png", 4.6)]:
        fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            if filename == "parity.png":
                y_pred = np.asarray(predictions[name]["regression"])[:, 0:3].ravel()
                plot_parity(y_true, y_pred, ax=ax, unit="Å", label="length / N^(1/3)", s=2)
            else:
                guessed = np.asarray(predictions[name]["crystal_system"]).astype(str)
                plot_confusion(systems, guessed, labels=list(CRYSTAL_SYSTEMS), ax=ax)
            ax.set_title(f"{_wrap(name)}\n{ax.get_title()}", fontsize=7)
            ax.xaxis.label.set_fontsize(7)
            ax.yaxis.label.set_fontsize(7)
            ax.tick_params(labelsize=6)
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / filename, dpi=110)
        plt.close(fig)
        written.append(filename)
    return written


def write_outputs(result: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(result, out)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    public["figures"] = figures
    (out / "unimat.json").write_text(json.dumps(public, indent=2, default=_json_default) + "\n")
    (out / "unimat.md").write_text(markdown_table(result))
    (out / "unimat.partial.json").unlink(missing_ok=True)
    return public


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main(argv: list[str] | None = None) -> dict:
    import torch
    from threadpoolctl import threadpool_limits

    args = parse_args(argv)
    torch_threads = torch.get_num_threads()
    if args.threads:
        # torch, BLAS (MLP heads) and OpenMP (boosted trees) alike: on a shared machine, spinning
        # OpenMP threads made the tree baseline 10x slower with 2 threads than with 1 (measured)
        torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):  # None leaves the libraries' defaults
            result = run(args)
    finally:
        torch.set_num_threads(torch_threads)  # main() may run inside a longer process (tests)
    public = write_outputs(result, args.out)
    print(markdown_table(result))
    print(f"wrote {args.out}/unimat.json, unimat.md, parity.png, confusion.png")
    return public


if __name__ == "__main__":
    main()
