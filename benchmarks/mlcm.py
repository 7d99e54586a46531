"""MLCM loss comparison on the MultiMat sample: cross-view retrieval and bulk modulus.

Reproduces the protocol of MLCM/MultiMat (Moro et al., arXiv:2312.00111) at the scale of the
data we hold: the MultiMat sample (326 Materials Project materials with DOS, charge density and
a MatBERT text embedding; no crystal structures, see ``skmat.datasets.fetch_multimat_sample``).

1. Rows with all three views are split 80/20 with a fixed seed (the one DOS that
   ``resample_dos`` refuses, mp-696961's corrupt energy header, is dropped and listed).
2. For every alignment objective a :class:`~skmat.align.MultiModalAligner` is fitted,
   self-supervised, on the 80%:

   * ``clip`` once per pair of views (2 encoders each);
   * ``all_pairs``, ``anchored`` (anchor = ``--anchor``, default ``dos``: the view inverse
     design queries with; MLCM anchors on the crystal structure, which this sample lacks),
     ``tensor`` and ``barlow`` with all three views.

3. On the 20%, for every ordered pair of views (query -> database), each query's true partner
   is ranked among *all* evaluation items by cosine similarity (MultiMat's protocol):
   Recall@1/5/10 and mean/median rank. Chance: Recall@k = k/n, mean rank = (n + 1)/2.
4. Bulk modulus (rows that have one; the negative, mechanically unstable entries are left out)
   is predicted by ``RidgeCV`` in repeated 5-fold cross-validation from (a) each aligner's fused
   embedding and (b) the raw views (PCA of the resampled DOS, of the log charge density, of the
   text embedding, and of all three). The aligners never see the modulus, but they saw the
   *views* of the ~80% of these rows that fall in the training split: that is self-supervised
   pretraining on unlabeled inputs, as MLCM does, and is stated in the output.

``--test PATH`` evaluates the same fitted aligners on an extra ``.npz`` with the layout of
``multimat_sample.npz`` (e.g. the held-out 82 MultiMat ids): retrieval among its complete rows,
and bulk modulus with Ridge fitted on all local rows.

Usage::

    python benchmarks/mlcm.py --out results/mlcm            # default (~7-12 min on 2 cores)
    python benchmarks/mlcm.py --quick --out /tmp/mlcm       # smoke test (< 3 min)
    python benchmarks/mlcm.py --test heldout.npz --out results/mlcm

Writes ``mlcm.json`` (every number, the settings, the commit) and ``mlcm.md`` (tables), and a
retrieval-curve figure ``mlcm_recall.png`` when matplotlib is available.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from itertools import combinations, permutations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIEWS = ("dos", "charge_density", "text")
KS = (1, 5, 10)


def _default_data_home() -> Path:
    env = os.environ.get("SKMAT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-home", type=Path, default=_default_data_home())
    parser.add_argument("--test", type=Path, default=None, help="extra .npz with multimat_sample's layout")
    parser.add_argument("--out", type=Path, default=None, help="folder for mlcm.json / mlcm.md / mlcm_recall.png")
    parser.add_argument("--epochs", type=int, default=None, help="max epochs per aligner (default 20; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, 2 CV repeats")
    parser.add_argument("--losses", nargs="+", default=["clip", "all_pairs", "anchored", "tensor", "barlow"])
    parser.add_argument("--anchor", default="dos", choices=VIEWS)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience (0: train all epochs)")
    parser.add_argument(
        "--validation-fraction", type=float, default=0.0,
        # measured: with ~20 held-out rows the contrastive validation loss is noise, and early
        # stopping ended every loss after 7-14 epochs near chance (mean R@10 0.18-0.35); 20
        # fixed epochs reach 0.32-0.49 (chance 0.21)
        help="training rows held out for early stopping on the contrastive loss (default 0: fixed epochs)",
    )
    parser.add_argument("--cv-repeats", type=int, default=None, help="repeats of 5-fold CV (default 5; --quick 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.quick else 20
    if args.cv_repeats is None:
        args.cv_repeats = 2 if args.quick else 5
    return args


# -- data ------------------------------------------------------------------------------------
def frame_from_npz(path: Path):
    """A frame like ``fetch_multimat_sample().frame`` from any .npz of the same layout."""
    import pandas as pd

    def cells(values, present):
        return pd.Series([np.asarray(v, np.float32) if ok else None for v, ok in zip(values, present, strict=True)], dtype=object)

    with np.load(path) as a:
        n = len(a["material_id"])
        nan = np.full(n, np.nan)
        return pd.DataFrame(
            {
                "material_id": a["material_id"].astype(str),
                "dos": cells(a["dos"], a["dos_exists"]),
                "charge_density": cells(a["charge_density"], a["charge_density_exists"]),
                "text": cells(a["text_embedding"], a["text_exists"]),
                "bulk_modulus": a["bulk_modulus"].astype(float) if "bulk_modulus" in a else nan,
            }
        )


def complete_rows(frame):
    """Rows with all three views whose DOS ``resample_dos`` accepts; and the ids dropped for a bad DOS."""
    from skmat.exceptions import InvalidInputError
    from skmat.features.spectra import resample_dos

    has_all = frame[list(VIEWS)].notna().all(axis=1).to_numpy()
    readable = np.ones(len(frame), dtype=bool)
    for i in np.flatnonzero(has_all):
        try:
            resample_dos([frame["dos"].iloc[i]])
        except InvalidInputError:
            readable[i] = False
    bad = frame["material_id"][has_all & ~readable].tolist()
    frame = frame[has_all & readable].set_index("material_id")
    return frame.assign(charge_density=[coarsen(rho) for rho in frame["charge_density"]]), bad


def coarsen(rho: np.ndarray, factor: int = 2) -> np.ndarray:
    """Average the charge density over factor^3 blocks (32^3 -> 16^3).

    The total charge in each block is kept (up to the constant factor^3), and on 2 CPU cores
    the 3-D CNN over 32^3 grids would cost most of the time budget of this benchmark.
    """
    n = np.asarray(rho.shape) // factor
    return rho.reshape(n[0], factor, n[1], factor, n[2], factor).mean(axis=(1, 3, 5)).astype(np.float32)


def split(n_rows: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = int(round(test_fraction * n_rows))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


# -- models ----------------------------------------------------------------------------------
def configurations(losses: list[str], anchor: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(label, loss, views) of every aligner to fit."""
    configs = []
    for loss in losses:
        if loss == "clip":
            configs += [(f"clip {a}+{b}", "clip", (a, b)) for a, b in combinations(VIEWS, 2)]
        elif loss == "anchored":
            configs.append((f"anchored ({anchor})", loss, VIEWS))
        else:
            configs.append((loss, loss, VIEWS))
    return configs


def make_aligner(loss: str, views: tuple[str, ...], args: argparse.Namespace):
    from skmat import MultiModalAligner
    from skmat.encoders import ChargeDensityEncoder, DOSEncoder, TextEncoder

    factories = {
        # 128 points over +-10 eV (0.16 eV steps) halve the transformer's tokens; the budget
        # of this benchmark is 2 CPU cores
        "dos": lambda: DOSEncoder(n_points=128, out_dim=128),
        # on the 16^3 grids of ``coarsen``: three stride-2 stages leave 2^3 voxels
        "charge_density": lambda: ChargeDensityEncoder(channels=(8, 16, 32), out_dim=128),
        "text": lambda: TextEncoder(out_dim=128),
    }
    return MultiModalAligner(
        encoders=[(view, factories[view]()) for view in views],
        loss=loss,
        anchor=args.anchor if loss == "anchored" else None,
        latent_dim=args.latent_dim,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        validation_fraction=args.validation_fraction,
        random_state=args.seed,
        verbose=args.verbose,
    )


def retrieval_table(embeddings: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Recall@k and rank statistics for every ordered pair of views (cosine, all items)."""
    from skmat.retrieval import rank_of_true

    table = {}
    for query, database in permutations(embeddings, 2):
        ranks = rank_of_true(embeddings[query], embeddings[database])
        row = {f"R@{k}": float(np.mean(ranks <= k)) for k in KS}
        row.update(mean_rank=float(ranks.mean()), median_rank=float(np.median(ranks)), n=len(ranks))
        row["ranks"] = ranks.tolist()
        table[f"{query}->{database}"] = row
    return table


# -- bulk modulus ----------------------------------------------------------------------------
def raw_features(X) -> dict[str, np.ndarray]:
    """Fixed-size raw views: resampled DOS (log1p), log charge density, text embedding."""
    from skmat.features.spectra import resample_dos

    dos = np.log1p(np.clip(resample_dos(list(X["dos"]), (-10.0, 10.0), 256), 0, None))
    rho = np.stack([np.log1p(np.clip(np.asarray(r, np.float64), 0, None)).ravel() for r in X["charge_density"]])
    text = np.stack([np.asarray(t, np.float64) for t in X["text"]])
    return {"dos": dos, "charge_density": rho, "text": text}


def raw_model(n_components: int):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), PCA(n_components=n_components, random_state=0), RidgeCV(alphas=np.logspace(-3, 4, 15)))


def embedding_model():
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))


def cv_mae(model, features: np.ndarray, y: np.ndarray, repeats: int, seed: int) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.model_selection import RepeatedKFold, cross_val_predict

    maes, r2s = [], []
    for r in range(repeats):
        folds = RepeatedKFold(n_splits=5, n_repeats=1, random_state=seed + r)
        predicted = cross_val_predict(model, features, y, cv=folds)
        maes.append(mean_absolute_error(y, predicted))
        r2s.append(r2_score(y, predicted))
    return {"mae": float(np.mean(maes)), "mae_std": float(np.std(maes)), "r2": float(np.mean(r2s))}


# -- main ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    import torch

    from skmat.datasets import fetch_multimat_sample

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    X, dropped = complete_rows(fetch_multimat_sample(data_home=args.data_home).frame)
    train_rows, eval_rows = split(len(X), args.test_fraction, args.seed)
    X_train, X_eval = X.iloc[train_rows], X.iloc[eval_rows]
    X_test = dropped_test = None
    if args.test is not None:
        X_test, dropped_test = complete_rows(frame_from_npz(args.test))

    modulus_rows = np.flatnonzero(X["bulk_modulus"].to_numpy() > 0)
    X_modulus = X.iloc[modulus_rows]
    y_modulus = X_modulus["bulk_modulus"].to_numpy()
    n_components = min(16, int(0.8 * len(X_modulus)) - 1)

    results: dict = {"losses": {}}
    for label, loss, views in configurations(args.losses, args.anchor):
        start = time.perf_counter()
        aligner = make_aligner(loss, views, args).fit(X_train[list(views)])
        fit_seconds = time.perf_counter() - start
        entry = {
            "loss": loss,
            "views": list(views),
            "fit_seconds": fit_seconds,
            "epochs_run": len(aligner.net_.history),
            "final_train_loss": float(aligner.net_.history[-1, "train_loss"]),
            "eval": retrieval_table({v: aligner.embed(X_eval, v) for v in views}),
        }
        fused = aligner.transform(X_modulus)
        entry["bulk_modulus_cv"] = cv_mae(embedding_model(), fused, y_modulus, args.cv_repeats, args.seed)
        if X_test is not None and len(X_test) >= 2:
            entry["test"] = retrieval_table({v: aligner.embed(X_test, v) for v in views})
            has = X_test["bulk_modulus"].to_numpy() > 0
            if has.sum() >= 1:
                model = embedding_model().fit(fused, y_modulus)
                predicted = model.predict(aligner.transform(X_test[has]))
                entry["bulk_modulus_test_mae"] = float(np.mean(np.abs(predicted - X_test["bulk_modulus"].to_numpy()[has])))
        results["losses"][label] = entry
        print(f"{label:<28} fit {fit_seconds:5.0f} s, {entry['epochs_run']} epochs, "
              f"mean R@1 {np.mean([r['R@1'] for r in entry['eval'].values()]):.3f}", flush=True)

    raw = raw_features(X_modulus)
    baselines = {f"raw {view} (PCA {n_components})": cv_mae(raw_model(n_components), raw[view], y_modulus, args.cv_repeats, args.seed) for view in VIEWS}
    concatenated = np.hstack([raw[v] for v in VIEWS])
    baselines[f"raw all three (PCA {n_components})"] = cv_mae(raw_model(n_components), concatenated, y_modulus, args.cv_repeats, args.seed)
    from sklearn.dummy import DummyRegressor

    baselines["mean of training folds"] = cv_mae(DummyRegressor(), concatenated[:, :1], y_modulus, args.cv_repeats, args.seed)
    results["bulk_modulus_baselines"] = baselines

    n_eval = len(X_eval)
    results.update(
        settings={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        commit=_commit(),
        machine=f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        n_complete=len(X),
        dropped_unreadable_dos=dropped,
        n_train=len(X_train),
        n_eval=n_eval,
        chance={**{f"R@{k}": k / n_eval for k in KS}, "mean_rank": (n_eval + 1) / 2, "median_rank": (n_eval + 1) / 2},
        n_bulk_modulus=len(X_modulus),
        bulk_modulus_in_train_split=int(np.isin(modulus_rows, train_rows).sum()),
        n_test_file=None if X_test is None else len(X_test),
        dropped_unreadable_dos_test=dropped_test,
        wall_seconds=time.perf_counter() - started,
    )
    return results


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(result: dict) -> str:
    n = result["n_eval"]
    chance = result["chance"]
    lines = [
        "# MLCM loss comparison on the MultiMat sample",
        "",
        f"{result['n_complete']} materials with DOS, charge density and text (dropped for an unreadable DOS: "
        f"{', '.join(result['dropped_unreadable_dos']) or 'none'}); {result['n_train']} to align, "
        f"{n} to evaluate. Commit `{result['commit'][:12]}`, {result['machine']}, wall time "
        f"{result['wall_seconds'] / 60:.1f} min. Settings: {result['settings']['epochs']} max epochs, "
        f"early-stopping hold-out {result['settings'].get('validation_fraction', 0.0)} (patience "
        f"{result['settings']['patience']}), batch {result['settings']['batch_size']}, latent {result['settings']['latent_dim']}, seed {result['settings']['seed']}.",
        "",
        f"## Cross-view retrieval on the {n} held-out materials (rank among all {n}, cosine)",
        "",
        f"Chance: R@1 {chance['R@1']:.3f}, R@5 {chance['R@5']:.3f}, R@10 {chance['R@10']:.3f}, "
        f"mean/median rank {chance['mean_rank']:.1f}.",
        "",
        "| loss | query -> database | R@1 | R@5 | R@10 | mean rank | median rank |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, entry in result["losses"].items():
        for pair, row in entry["eval"].items():
            lines.append(f"| {label} | {pair} | {row['R@1']:.3f} | {row['R@5']:.3f} | {row['R@10']:.3f} | "
                         f"{row['mean_rank']:.1f} | {row['median_rank']:.1f} |")
    lines += ["", "Averaged over the ordered pairs each loss aligns:", "",
              "| loss | mean R@1 | mean R@5 | mean R@10 | mean rank | epochs | fit (s) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, entry in result["losses"].items():
        rows = list(entry["eval"].values())
        avg = {key: np.mean([r[key] for r in rows]) for key in ("R@1", "R@5", "R@10", "mean_rank")}
        lines.append(f"| {label} | {avg['R@1']:.3f} | {avg['R@5']:.3f} | {avg['R@10']:.3f} | {avg['mean_rank']:.1f} | "
                     f"{entry['epochs_run']} | {entry['fit_seconds']:.0f} |")
    lines += [
        "",
        f"## Bulk modulus (GPa), RidgeCV, {result['settings']['cv_repeats']} x 5-fold CV on {result['n_bulk_modulus']} materials",
        "",
        f"Aligners saw the views (never the modulus) of {result['bulk_modulus_in_train_split']} of these "
        f"{result['n_bulk_modulus']} materials during self-supervised training.",
        "",
        "| features | MAE | ± (over repeats) | R² |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, entry in result["losses"].items():
        m = entry["bulk_modulus_cv"]
        lines.append(f"| embedding: {label} | {m['mae']:.1f} | {m['mae_std']:.1f} | {m['r2']:.2f} |")
    for label, m in result["bulk_modulus_baselines"].items():
        lines.append(f"| {label} | {m['mae']:.1f} | {m['mae_std']:.1f} | {m['r2']:.2f} |")
    if result.get("n_test_file"):
        lines += ["", f"## Extra test file: {result['n_test_file']} complete materials", "",
                  "| loss | query -> database | R@1 | R@5 | R@10 | mean rank | median rank |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for label, entry in result["losses"].items():
            for pair, row in entry.get("test", {}).items():
                lines.append(f"| {label} | {pair} | {row['R@1']:.3f} | {row['R@5']:.3f} | {row['R@10']:.3f} | "
                             f"{row['mean_rank']:.1f} | {row['median_rank']:.1f} |")
            if "bulk_modulus_test_mae" in entry:
                lines.append(f"| {label} | bulk modulus MAE | {entry['bulk_modulus_test_mae']:.1f} GPa | | | | |")
    return "\n".join(lines) + "\n"


def recall_figure(result: dict, path: Path) -> None:
    """Recall@K vs K, averaged over each loss's ordered view pairs, with chance."""
    from skmat.plotting import plot_retrieval_curve

    ks = np.arange(1, result["n_eval"] + 1)
    ax = None
    for label, entry in result["losses"].items():
        ranks = np.concatenate([row["ranks"] for row in entry["eval"].values()])
        ax = plot_retrieval_curve(ranks, ks=ks, label=label, ax=ax, chance=ax is None and result["n_eval"])
    ax.set_title(f"MultiMat sample: cross-view retrieval among {result['n_eval']} held-out materials")
    ax.figure.savefig(path, dpi=120, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    table = markdown(result)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mlcm.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "mlcm.md").write_text(table)
        try:
            recall_figure(result, args.out / "mlcm_recall.png")
        except ImportError as exc:  # matplotlib is optional for the numbers
            print(f"no figure: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
