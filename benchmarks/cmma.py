"""CMMA's protocol on MP-20: five views of each crystal aligned, retrieval across views with
views missing, and property prediction from the fused embedding.

Every view is derived from the real MP-20 structure with the field's own tools:

``structure``
    the crystal graph (:class:`~skmat.encoders.StructureEncoder`, CGCNN);
``xrd``
    a simulated Cu Kα powder pattern, 5-90° 2θ (:class:`~skmat.features.XRDPattern`);
``composition``
    Magpie statistics of the formula (:class:`~skmat.encoders.CompositionEncoder`);
``text``
    robocrystallographer's English description (:class:`~skmat.features.StructureDescription`),
    embedded by the bundled all-MiniLM-L6-v2 sentence model (offline; 384-d, computed once and
    given to :class:`~skmat.encoders.TextEncoder` as precomputed vectors). MiniLM reads the
    first 256 word pieces of a description; a structure robocrys cannot describe has no text
    view (counted in the JSON);
``image``
    simulated electron diffraction (SAED) spot patterns along [001], [110] and [111] of the
    conventional cell, 64 x 64 pixels (:class:`~skmat.features.DiffractionImage`,
    :class:`~skmat.encoders.ImageEncoder`).

Models: :class:`~skmat.align.MultiModalAligner` with ``loss="all_pairs"`` (CLIP averaged over
the 10 view pairs) and ``loss="anchored"`` (every view aligned to the structure, as ImageBind
aligns to images), each trained with 0 % and 30 % view dropout (``view_dropout``: each view of
each row is hidden with that probability, drawn afresh in every mini-batch, seeded).

Evaluation on held-out structures (the test rows, the candidates of every search):

* ``pairs``: Recall@1/5/10 and median rank of the true partner for every ordered view pair
  (query view -> database view), cosine similarity over all test rows that have both views.
  Chance Recall@K is K / n_candidates (1 % at K = 10 with 1,000 candidates);
* ``fused``: the query is the mean of the L2-normalised embeddings of several views (the
  aligner's ``fusion="mean"``): all five, or all but one (one view missing at query time).
  ``kept`` is R@10 with view m missing over R@10 with all views, to each remaining view;
  ``kept_without_target`` leaves the database view d out of both queries (all views but d,
  against all but d and m), so the reference is not flattered by d's own embedding;
* ``properties``: formation energy per atom and band gap (MP-20's PBE columns) predicted by
  ``HistGradientBoostingRegressor`` from the fused embedding (the mean, and the aligner's
  ``fusion="concat"``: the five embeddings side by side, a missing view as zeros) and from
  each single view's embedding, against Magpie features + the same boosted trees (the classical baseline);
  by a linear probe (standardised embedding + ``RidgeCV``, keys ``"<target>, linear"``), and by
  the proposal's "simple regressor (e.g., MLP)" (standardised embedding + one hidden layer of
  128, early stopping, keys ``"<target>, mlp"``). MAE on the test rows.

Data: the MP-20 validation split of the data home (9,047 structures), split 80/20 with a
seeded permutation; or ``--train PATH`` / ``--test PATH``, CSV files in CDVAE's schema
(``material_id``, ``cif``, ``formation_energy_per_atom``, ``band_gap``, ...), as in
``benchmarks/unimat.py``. ``--n-train`` / ``--n-test`` subsample them.

Cost: robocrys takes ~0.85 CPU-s per structure (see ``StructureDescription``'s Notes), the
other views milliseconds. Descriptions, images, patterns, MiniLM vectors and graphs are
cached in ``--cache`` (default ``~/.cache/skmat/cmma``), so a rerun skips them. The default
size (2,000 train + 1,000 test) was chosen to finish within 60 minutes on 2 idle cores with an
empty cache: measured, 34 minutes (robocrys 22 of them); see ``benchmarks/README.md``.

Usage::

    python benchmarks/cmma.py                                   # default run
    python benchmarks/cmma.py --n-train 800 --n-test 200        # medium run
    python benchmarks/cmma.py --quick                           # CI smoke run
    skmat benchmark cmma -- --quick --json /tmp/cmma.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

VIEWS = ("structure", "xrd", "composition", "text", "image")
KS = (1, 5, 10)
TARGETS = ("formation_energy_per_atom", "band_gap")
#: (name, aligner parameters)
LOSSES = {
    "all_pairs": dict(loss="all_pairs"),
    "anchored": dict(loss="anchored", anchor="structure"),
}
DROPOUTS = (0.0, 0.3)

PRESETS = {
    # CI smoke run: tiny networks, one epoch, a few dozen structures
    "quick": {
        "n_train": 40, "n_test": 20, "epochs": 1, "hidden_dim": 16, "n_layers": 1, "xrd_bins": 256,
        "xrd_channels": [4, 8], "image_size": 16, "image_channels": [4, 8], "out_dim": 16, "latent_dim": 16,
        "batch_size": 16, "hgb_iter": 10,
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
    data.add_argument("--n-train", type=int, default=2000, help="subsample the training rows (default 2000)")
    data.add_argument("--n-test", type=int, default=1000, help="subsample the test rows (default 1000)")
    data.add_argument("--seed", type=int, default=0, help="seeds the split, the models and the trees")
    data.add_argument("--quick", action="store_true", help="40 train / 20 test, 1 epoch, tiny networks (CI)")
    data.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "skmat" / "cmma",
                      help="cache of descriptions, images, patterns, sentence vectors and graphs")
    data.add_argument("--n-jobs", type=int, default=2, help="processes for robocrys and the image/XRD featurizers")
    model = parser.add_argument_group("model")
    model.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    model.add_argument("--dropouts", type=float, nargs="+", default=list(DROPOUTS), help="view dropout of training")
    model.add_argument("--hidden-dim", type=int, default=64, help="structure GNN width")
    model.add_argument("--n-layers", type=int, default=3, help="structure GNN layers")
    model.add_argument("--xrd-bins", type=int, default=1701, help="2-theta grid points over 5-90 deg")
    model.add_argument("--xrd-channels", type=int, nargs="+", default=[16, 32, 64, 64, 128, 128])
    model.add_argument("--image-size", type=int, default=64, help="SAED image height and width")
    model.add_argument("--image-channels", type=int, nargs="+", default=[16, 32, 64, 128])
    model.add_argument("--out-dim", type=int, default=128, help="embedding size of every encoder")
    model.add_argument("--latent-dim", type=int, default=128, help="aligner's shared space")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=128, help="rows per step (the contrastive negatives)")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--patience", type=int, default=5, help="early-stopping patience (0: no validation split)")
    train.add_argument("--hgb-iter", type=int, default=200, help="boosting iterations of the property models")
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, default=Path("cmma_results/cmma.json"))
    out.add_argument("--markdown", type=Path, default=Path("cmma_results/cmma.md"))
    out.add_argument("--figure", type=Path, default=Path("cmma_results/cmma_recall.png"),
                     help="recall-matrix heatmap (R@10 of every ordered view pair, one panel per model)")
    out.add_argument("--threads", type=int, default=1, help="threads of torch, BLAS and OpenMP")
    out.add_argument("--verbose", type=int, default=0, help="-1: silent; 0: a line per step; 1: training logs")
    args = parser.parse_args(argv)
    if args.quick:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])}
        for key, value in PRESETS["quick"].items():
            if key not in given:  # an explicit option beats the preset
                setattr(args, key, value)
    args.preset = "quick" if args.quick else "default"
    for dropout in args.dropouts:
        if not 0 <= dropout < 1:
            parser.error(f"--dropouts must be in [0, 1), got {dropout}")
    return args


# -- data -----------------------------------------------------------------------------------
def load_data(args: argparse.Namespace):
    """Training and test frames after the split and subsampling of ``benchmarks/unimat.py`` (its code)."""
    import importlib.util

    # the split must be unimat's, row for row: load its function instead of keeping a copy
    spec = importlib.util.spec_from_file_location("benchmark_unimat", Path(__file__).resolve().parent / "unimat.py")
    unimat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unimat)
    train, test, split = unimat.load_data(args)
    missing = [t for t in TARGETS if t not in train.columns or t not in test.columns]
    if missing:
        raise SystemExit(f"the data lack the target columns {missing}")
    return train, test, split


def _sentence_vectors(texts: list[str], model_name: str = "all-MiniLM-L6-v2") -> np.ndarray:
    # module level, so that joblib.Memory can key its cache on it
    from skmat.nn.views import SentenceEmbedder

    return np.asarray(SentenceEmbedder(model_name).encode(texts), dtype=np.float32)


def make_views(frame, args: argparse.Namespace, memory, timer) -> tuple[Any, dict]:
    """The view columns of *frame* (structure, xrd, composition, text, image), computed once
    so that every model reads the same cells; and counts of missing text views."""
    import pandas as pd

    from skmat.features import DiffractionImage, StructureDescription, XRDPattern

    structures = list(frame["structure"])
    with timer("featurize text (robocrys)"):
        texts = StructureDescription(errors="skip", n_jobs=args.n_jobs, memory=memory,
                                     verbose=max(args.verbose, 0)).fit_transform(structures)[:, 0]
    with timer("featurize text (MiniLM)"):
        described = [i for i, t in enumerate(texts) if t is not None]
        vectors = memory.cache(_sentence_vectors)([texts[i] for i in described]) if described else []
        text_cells: list = [None] * len(frame)
        for i, v in zip(described, vectors, strict=True):
            text_cells[i] = v
    with timer("featurize xrd"):
        xrd = XRDPattern(n_bins=args.xrd_bins, n_jobs=args.n_jobs, memory=memory).fit_transform(structures)
    with timer("featurize image (SAED)"):
        saed = DiffractionImage(size=args.image_size, n_jobs=args.n_jobs, memory=memory)
        images = saed.to_images(saed.fit_transform(structures))
    views = pd.DataFrame(
        {
            "structure": structures,
            "xrd": list(xrd),
            "composition": [s.composition for s in structures],
            "text": text_cells,
            "image": list(images),
        },
        index=frame["material_id"].to_numpy(),
    )
    return views, {"rows": len(frame), "no_text": int(sum(t is None for t in texts)),
                   "text_chars_median": float(np.median([len(t) for t in texts if t is not None] or [0]))}


def make_aligner(loss: str, dropout: float, args: argparse.Namespace, memory):
    from skmat.align import MultiModalAligner
    from skmat.encoders import CompositionEncoder, ImageEncoder, StructureEncoder, TextEncoder, XRDEncoder

    common = {"out_dim": args.out_dim, "random_state": args.seed}
    encoders = [
        ("structure", StructureEncoder(hidden_dim=args.hidden_dim, n_layers=args.n_layers, memory=memory, **common)),
        ("xrd", XRDEncoder(n_bins=args.xrd_bins, channels=tuple(args.xrd_channels), **common)),
        ("composition", CompositionEncoder(**common)),
        ("text", TextEncoder(**common)),
        ("image", ImageEncoder(size=args.image_size, channels=tuple(args.image_channels), **common)),
    ]
    return MultiModalAligner(
        encoders=encoders,
        latent_dim=args.latent_dim,
        view_dropout=dropout,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=max(args.patience, 1),
        validation_fraction=0.1 if args.patience else 0.0,
        random_state=args.seed,
        verbose=max(args.verbose, 0),
        **LOSSES[loss],
    )


# -- evaluation -----------------------------------------------------------------------------
def retrieval(query: np.ndarray, database: np.ndarray) -> dict:
    """Recall@K and median rank of each row's partner, over rows that have both embeddings."""
    from skmat.retrieval import rank_of_true

    both = ~np.isnan(query).any(axis=1) & ~np.isnan(database).any(axis=1)
    ranks = rank_of_true(query[both], database[both])
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in KS}
    out["median_rank"] = float(np.median(ranks))
    out["n_candidates"] = int(both.sum())
    return out


def fused(embeddings: dict, views: list[str]) -> np.ndarray:
    """The aligner's ``fusion="mean"``: mean of the present views' normalised embeddings."""
    stack = np.stack([embeddings[v] for v in views])
    present = ~np.isnan(stack).any(axis=2)
    total = np.where(present[..., None], stack, 0.0).sum(axis=0)
    counts = present.sum(axis=0)
    out = total / np.maximum(counts, 1)[:, None]
    out[counts == 0] = np.nan
    return out.astype(np.float32)


def evaluate_retrieval(embeddings: dict) -> dict:
    views = list(embeddings)
    pairs = {f"{q}->{d}": retrieval(embeddings[q], embeddings[d]) for q in views for d in views if q != d}
    all_views = fused(embeddings, views)
    fused_all = {d: retrieval(all_views, embeddings[d]) for d in views}
    # the reference of the stricter "kept": all views but the database view d
    without_target = {d: retrieval(fused(embeddings, [v for v in views if v != d]), embeddings[d])["R@10"]
                      for d in views}
    missing = {}
    for m in views:
        rest = [v for v in views if v != m]
        query = fused(embeddings, rest)
        to = {d: retrieval(query, embeddings[d]) for d in rest}
        kept = {d: (to[d]["R@10"] / fused_all[d]["R@10"] if fused_all[d]["R@10"] > 0 else None) for d in rest}
        finite = [k for k in kept.values() if k is not None]
        # stricter: neither query holds the database view's own embedding (the all-views
        # query above does, which flatters the reference)
        strict = {}
        for d in rest:
            without_both = retrieval(fused(embeddings, [v for v in views if v not in (m, d)]), embeddings[d])["R@10"]
            strict[d] = without_both / without_target[d] if without_target[d] > 0 else None
        finite_strict = [k for k in strict.values() if k is not None]
        missing[m] = {"to": to, "kept_R@10": kept, "min_kept_R@10": min(finite) if finite else None,
                      "kept_R@10_without_target": strict,
                      "min_kept_R@10_without_target": min(finite_strict) if finite_strict else None}
    return {"pairs": pairs, "fused_all": fused_all, "one_view_missing": missing}


def boosted_mae(train_x, y_train, test_x, y_test, args: argparse.Namespace) -> float:
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(max_iter=args.hgb_iter, random_state=args.seed)
    model.fit(train_x, y_train)
    return float(np.mean(np.abs(model.predict(test_x) - y_test)))


def _standardised_probe_mae(regressor, train_x, y_train, test_x, y_test) -> float:
    """MAE of *regressor* on the standardised embedding; a missing view counts as zeros, as the
    aligner's ``fusion="concat"`` gives it."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), regressor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn's ConvergenceWarning (the MLP) is a UserWarning
        model.fit(np.nan_to_num(train_x, nan=0.0), y_train)
    return float(np.mean(np.abs(model.predict(np.nan_to_num(test_x, nan=0.0)) - y_test)))


def linear_probe_mae(train_x, y_train, test_x, y_test) -> float:
    """MAE of a ridge regression on the standardised embedding (CLIP's linear probe)."""
    from sklearn.linear_model import RidgeCV

    return _standardised_probe_mae(RidgeCV(alphas=np.logspace(-2, 3, 12)), train_x, y_train, test_x, y_test)


def mlp_probe_mae(train_x, y_train, test_x, y_test, seed: int) -> float:
    """MAE of a small MLP on the standardised embedding: the proposal's "simple regressor (e.g.,
    MLP)" on the unified embedding. One hidden layer of 128, early stopping on 10 % of the
    training rows, the same untuned settings for every input."""
    from sklearn.neural_network import MLPRegressor

    regressor = MLPRegressor(hidden_layer_sizes=(128,), alpha=1e-3, early_stopping=True, max_iter=500,
                             random_state=seed)
    return _standardised_probe_mae(regressor, train_x, y_train, test_x, y_test)


def evaluate_properties(train_emb: dict, test_emb: dict, train, test, args, concat=None) -> dict:
    """MAE per target and input: boosted trees (``target``), a linear probe (``target, linear``)
    and an MLP probe (``target, mlp``)."""
    out: dict[str, dict] = {}
    views = list(train_emb)
    inputs = {"fused (all views)": (fused(train_emb, views), fused(test_emb, views))}
    if concat is not None:
        inputs["fused (views concatenated)"] = concat
    inputs.update({f"{v} only": (train_emb[v], test_emb[v]) for v in views})
    for target in TARGETS:
        y_train, y_test = train[target].to_numpy(float), test[target].to_numpy(float)
        # HistGradientBoosting takes NaN (a missing text view) as its own branch
        out[target] = {name: boosted_mae(a, y_train, b, y_test, args) for name, (a, b) in inputs.items()}
        out[f"{target}, linear"] = {name: linear_probe_mae(a, y_train, b, y_test) for name, (a, b) in inputs.items()}
        out[f"{target}, mlp"] = {name: mlp_probe_mae(a, y_train, b, y_test, args.seed)
                                 for name, (a, b) in inputs.items()}
    return out


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
    from joblib import Memory

    from skmat.features import CompositionFeatures

    timer = Timer()
    started, cpu_started = time.perf_counter(), time.process_time()
    args.cache.mkdir(parents=True, exist_ok=True)
    memory = Memory(args.cache, verbose=0)
    with timer("load"):
        train, test, split = load_data(args)
    _log(args, f"data: {len(train)} train, {len(test)} test ({split})")
    X_train, views_train = make_views(train, args, memory, timer)
    X_test, views_test = make_views(test, args, memory, timer)
    _log(args, f"views ready; no text for {views_train['no_text']} train, {views_test['no_text']} test rows")

    with timer("magpie + boosted trees"):
        magpie = CompositionFeatures()
        magpie_train = magpie.fit_transform(list(X_train["composition"]))
        magpie_test = magpie.transform(list(X_test["composition"]))
        baseline = {t: boosted_mae(magpie_train, train[t].to_numpy(float), magpie_test, test[t].to_numpy(float), args)
                    for t in TARGETS}

    models = []
    for loss in args.losses:
        for dropout in args.dropouts:
            name = f"{loss}, dropout {dropout:.0%}"
            _log(args, f"training {name}")
            with timer(f"train {name}"):
                aligner = make_aligner(loss, dropout, args, memory).fit(X_train)
            with timer(f"evaluate {name}"):
                embed_test = {v: aligner.embed(X_test, v) for v in VIEWS}
                embed_train = {v: aligner.embed(X_train, v) for v in VIEWS}
                # the aligner's own fusion="concat" output: the mean of the view embeddings
                # blurs which view said what, a concatenation keeps it for the trees
                aligner.set_params(fusion="concat")
                concat = (aligner.transform(X_train), aligner.transform(X_test))
                aligner.set_params(fusion="mean")
                record = {
                    "model": name,
                    "loss": loss,
                    "view_dropout": dropout,
                    "epochs_run": len(aligner.net_.history),
                    **evaluate_retrieval(embed_test),
                    "properties_mae": evaluate_properties(embed_train, embed_test, train, test, args, concat),
                }
            record["train_seconds"] = timer.seconds[f"train {name}"]
            models.append(record)
            _log(args, f"{name}: mean pair R@10 {np.mean([p['R@10'] for p in record['pairs'].values()]):.3f}")

    return {
        "benchmark": "cmma",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"split": split, "n_train": len(train), "n_test": len(test), "views_train": views_train,
                 "views_test": views_test},
        "chance": {f"R@{k}": k / len(test) for k in KS},
        "magpie_boosted_trees_mae": baseline,
        "models": models,
        "seconds": {**timer.seconds, "total": time.perf_counter() - started},
        "cpu_seconds": time.process_time() - cpu_started,
        "commit": _commit(),
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
    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}"

    data = result["data"]
    lines = [
        f"CMMA on MP-20: {data['n_train']} train, {data['n_test']} test structures ({data['split']}); "
        f"no robocrys text for {data['views_train']['no_text']} train and {data['views_test']['no_text']} test rows. "
        f"Chance R@10 = {pct(result['chance']['R@10'])} %.",
        "",
    ]
    for model in result["models"]:
        lines += [f"### {model['model']} ({model['epochs_run']} epochs, {model['train_seconds']:.0f} s)", "",
                  "| query -> database | R@1 % | R@5 % | R@10 % | median rank | candidates |",
                  "|---|---:|---:|---:|---:|---:|"]
        for pair, r in model["pairs"].items():
            lines.append(f"| {pair} | {pct(r['R@1'])} | {pct(r['R@5'])} | {pct(r['R@10'])} | "
                         f"{r['median_rank']:.0f} | {r['n_candidates']} |")
        for d, r in model["fused_all"].items():
            lines.append(f"| fused (all views) -> {d} | {pct(r['R@1'])} | {pct(r['R@5'])} | {pct(r['R@10'])} | "
                         f"{r['median_rank']:.0f} | {r['n_candidates']} |")
        lines += ["", "| view missing at query time | R@10 % of fused query to each remaining view | "
                      "min kept (of all-views R@10) |", "|---|---|---:|"]
        for m, r in model["one_view_missing"].items():
            to = ", ".join(f"{d} {pct(x['R@10'])}" for d, x in r["to"].items())
            lines.append(f"| {m} | {to} | {pct(r['min_kept_R@10'])} % "
                         f"({pct(r.get('min_kept_R@10_without_target'))} % without the target view) |")
        lines.append("")
    lines += ["### Property prediction (MAE on the test rows; boosted trees, a linear probe and an MLP on each input)", ""]
    names = list(result["models"][0]["properties_mae"][TARGETS[0]]) if result["models"] else []
    columns = list(result["models"][0]["properties_mae"]) if result["models"] else list(TARGETS)
    lines += ["| input | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines.append("| Magpie + boosted trees | " + " | ".join(
        f"{result['magpie_boosted_trees_mae'][c]:.3f}" if c in result["magpie_boosted_trees_mae"] else "–"
        for c in columns) + " |")
    for model in result["models"]:
        for n in names:
            lines.append(f"| {model['model']}: {n} | " + " | ".join(f"{model['properties_mae'][c][n]:.3f}"
                                                                  for c in columns) + " |")
    seconds = result["seconds"]
    lines += ["", "Wall-clock seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()), ""]
    return "\n".join(lines) + "\n"


def write_figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(4.2 * max(len(models), 1), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=False):
        matrix = np.full((len(VIEWS), len(VIEWS)), np.nan)
        for i, q in enumerate(VIEWS):
            for j, d in enumerate(VIEWS):
                if q != d:
                    matrix[i, j] = 100 * model["pairs"][f"{q}->{d}"]["R@10"]
        ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
        for i in range(len(VIEWS)):
            for j in range(len(VIEWS)):
                if i != j:
                    ax.text(j, i, f"{matrix[i, j]:.0f}", ha="center", va="center",
                            color="white" if matrix[i, j] < 60 else "black", fontsize=8)
        ax.set_xticks(range(len(VIEWS)), VIEWS, rotation=45, ha="right")
        ax.set_yticks(range(len(VIEWS)), VIEWS)
        ax.set_xlabel("database view")
        ax.set_ylabel("query view")
        ax.set_title(f"{model['model']}\nR@10 % ({result['data']['n_test']} candidates)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):
            result = run(args)
    finally:
        torch.set_num_threads(torch_threads)  # main() may run inside a longer process (tests)
    for path in (args.json, args.markdown):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    table = markdown_table(result)
    args.markdown.write_text(table)
    write_figure(result, args.figure)
    print(table)
    print(f"wrote {args.json}, {args.markdown}, {args.figure}")
    return result


if __name__ == "__main__":
    main()
