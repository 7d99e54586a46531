"""Does alignment work? Cross-view retrieval on MP-20 structures the aligner never saw.

A :class:`~skmat.align.MultiModalAligner` (structure graph + simulated XRD + composition, as
UniMat) is fitted self-supervised on part of the real MP-20 validation split (9,047
structures); the remaining structures are embedded in every view and, for every ordered pair
of views (query view -> database view), each query must find its own material among all
``n_test`` database items by cosine similarity (MultiMat's protocol, see
:mod:`skmat.retrieval`). Reported per pair: top-1 / top-5 / top-10 retrieval accuracy (chance
is ``k / n_test``), mean and median rank of the true partner, and the fit wall time.

Composition cannot tell polymorphs apart (MP-20 holds many materials with the same formula),
so ``composition -> *`` is capped below 1 by the data, not the model: the script reports that
ceiling too (``composition_ceiling_top1``: the share of test rows whose reduced formula is
unique in the test set).

Usage::

    python benchmarks/alignment.py                                   # defaults, 80/20 split
    python benchmarks/alignment.py --n-train 2000 --n-test 500 --epochs 10 --json
    python benchmarks/alignment.py --loss clip --temperature 0.1 --no-learn-temperature

The split is a fixed-seed permutation of the rows: the test rows are the first ``n_test`` of
it, the training rows the next ``n_train``, so changing ``--n-train`` keeps the test set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from itertools import permutations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _default_data_home() -> Path:
    env = os.environ.get("SKMAT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-home", type=Path, default=_default_data_home())
    data.add_argument("--n-test", type=int, default=None, help="held-out structures (default: 20%% of the rows)")
    data.add_argument("--n-train", type=int, default=None, help="training structures (default: all other rows)")
    data.add_argument("--seed", type=int, default=0, help="seeds the split and the model")
    model = parser.add_argument_group("model")
    model.add_argument("--architecture", default="cgcnn", choices=["cgcnn", "schnet", "dimenetpp"])
    model.add_argument("--hidden-dim", type=int, default=64, help="structure GNN width")
    model.add_argument("--n-layers", type=int, default=3, help="structure GNN layers")
    model.add_argument("--max-neighbors", type=int, default=12)
    model.add_argument("--xrd-bins", type=int, default=1701, help="2-theta grid points (5-90 deg)")
    model.add_argument("--xrd-channels", type=int, nargs="+", default=None, help="default: XRDEncoder's")
    model.add_argument("--composition-hidden", type=int, nargs="*", default=[256, 256])
    model.add_argument("--out-dim", type=int, default=128, help="size of each encoder's output")
    model.add_argument("--latent-dim", type=int, default=128)
    train = parser.add_argument_group("training")
    train.add_argument("--loss", default="all_pairs", choices=["clip", "all_pairs", "anchored", "tensor", "barlow"])
    train.add_argument("--temperature", type=float, default=0.07)
    train.add_argument("--learn-temperature", action=argparse.BooleanOptionalAction, default=True)
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--validation-fraction", type=float, default=0.1, help="early-stopping hold-out (0: none)")
    train.add_argument("--patience", type=int, default=5)
    out = parser.add_argument_group("output")
    out.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    out.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    out.add_argument("--output", type=Path, default=None, help="also write the JSON result to this file")
    out.add_argument("--verbose", type=int, default=0)
    return parser.parse_args(argv)


def split_rows(n_rows: int, n_test: int | None, n_train: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Test rows = the first ``n_test`` of a seeded permutation, training rows = the next ``n_train``."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = int(round(0.2 * n_rows)) if n_test is None else n_test
    n_train = n_rows - n_test if n_train is None else n_train
    if n_test < 2 or n_train < 2 or n_test + n_train > n_rows:
        raise SystemExit(f"need n_test >= 2, n_train >= 2 and n_test + n_train <= {n_rows}; got {n_test}, {n_train}")
    return order[n_test : n_test + n_train], order[:n_test]


def make_aligner(args: argparse.Namespace):
    from skmat import CompositionEncoder, MultiModalAligner, StructureEncoder, XRDEncoder

    encoders = [
        (
            "structure",
            StructureEncoder(
                architecture=args.architecture,
                hidden_dim=args.hidden_dim,
                n_layers=args.n_layers,
                max_neighbors=args.max_neighbors,
                out_dim=args.out_dim,
            ),
        ),
        ("xrd", XRDEncoder(n_bins=args.xrd_bins, out_dim=args.out_dim,
                           **({"channels": tuple(args.xrd_channels)} if args.xrd_channels else {}))),
        ("composition", CompositionEncoder(hidden_dims=tuple(args.composition_hidden), out_dim=args.out_dim)),
    ]
    return MultiModalAligner(
        encoders=encoders,
        loss=args.loss,
        temperature=args.temperature,
        learn_temperature=args.learn_temperature,
        latent_dim=args.latent_dim,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        validation_fraction=args.validation_fraction,
        patience=args.patience,
        random_state=args.seed,
        verbose=args.verbose,
    )


def retrieval_table(embeddings: dict[str, np.ndarray], ks=(1, 5, 10)) -> dict[str, dict[str, float]]:
    """Top-k accuracies and rank statistics for every ordered pair of views."""
    from skmat.retrieval import rank_of_true

    table = {}
    for query_view, db_view in permutations(embeddings, 2):
        ranks = rank_of_true(embeddings[query_view], embeddings[db_view])
        row = {f"top{k}": float(np.mean(ranks <= k)) for k in ks}
        row["mean_rank"] = float(ranks.mean())
        row["median_rank"] = float(np.median(ranks))
        table[f"{query_view}->{db_view}"] = row
    return table


def composition_ceiling(structures) -> float:
    """Share of rows whose reduced formula is unique among the rows: the best top-1 any
    composition query can reach (a polymorph's partner is indistinguishable)."""
    formulas = [s.composition.reduced_formula for s in structures]
    _, inverse, counts = np.unique(formulas, return_inverse=True, return_counts=True)
    return float(np.mean(counts[inverse] == 1))


def run(args: argparse.Namespace) -> dict:
    import torch

    from skmat.datasets import fetch_mp20

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding notices
        X = fetch_mp20(split="val", data_home=args.data_home).frame
    X = X[["structure"]]  # every view is derived from the structure, as UniMat does
    load_seconds = time.perf_counter() - start
    train_rows, test_rows = split_rows(len(X), args.n_test, args.n_train, args.seed)
    X_train, X_test = X.iloc[train_rows], X.iloc[test_rows]

    aligner = make_aligner(args)
    start = time.perf_counter()
    aligner.fit(X_train)
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    test_embeddings = {view: aligner.embed(X_test, view) for view in aligner.views_}
    # the same number of training rows, to see the generalisation gap
    seen = X_train.iloc[: len(X_test)]
    train_embeddings = {view: aligner.embed(seen, view) for view in aligner.views_}
    embed_seconds = time.perf_counter() - start

    history = aligner.net_.history
    return {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "n_train": len(X_train),
        "n_test": len(X_test),
        "chance_top1": 1.0 / len(X_test),
        "composition_ceiling_top1": composition_ceiling(X_test["structure"]),
        "test": retrieval_table(test_embeddings),
        "train_subset": retrieval_table(train_embeddings),
        "epochs_run": len(history),
        "train_loss": [float(v) for v in history[:, "train_loss"]],
        "valid_loss": [float(v) for v in history[:, "valid_loss"]] if "valid_loss" in history[-1] else None,
        "final_temperature": aligner.temperature_,
        "seconds": {"load": load_seconds, "fit": fit_seconds, "embed_and_score": embed_seconds},
        "torch_threads": torch.get_num_threads(),
    }


def print_report(result: dict) -> None:
    n = result["n_test"]
    print(f"MP-20 val: fitted on {result['n_train']} structures, retrieval among {n} unseen ones")
    print(
        f"chance top-1 = {result['chance_top1']:.4f}; composition top-1 ceiling (unique formulas) = "
        f"{result['composition_ceiling_top1']:.3f}"
    )
    header = f"{'query -> database':<26}{'top1':>8}{'top5':>8}{'top10':>8}{'mean rank':>11}{'median':>8}{'train top1':>12}"
    print(header)
    for pair, row in result["test"].items():
        seen = result["train_subset"][pair]["top1"]
        print(
            f"{pair:<26}{row['top1']:>8.3f}{row['top5']:>8.3f}{row['top10']:>8.3f}"
            f"{row['mean_rank']:>11.1f}{row['median_rank']:>8.0f}{seen:>12.3f}"
        )
    seconds = result["seconds"]
    print(
        f"epochs run {result['epochs_run']}, final temperature {result['final_temperature']:.4f}, "
        f"last train loss {result['train_loss'][-1]:.3f}"
        + (f", last valid loss {result['valid_loss'][-1]:.3f}" if result["valid_loss"] else "")
    )
    print(
        f"wall time: load {seconds['load']:.0f} s, fit {seconds['fit']:.0f} s, embed+score "
        f"{seconds['embed_and_score']:.0f} s ({result['torch_threads']} torch threads)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
