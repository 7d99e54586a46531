"""Does early stopping of a classifier hurt? XRDEncoder on MP-20 crystal systems.

The 80/20 split of MP-20 val that ``benchmarks/unimat.py`` uses (or ``--train`` / ``--test``
CDVAE-schema CSVs as there), simulated Cu Kα patterns. For each seed, an ``XRDEncoder`` with
early stopping (10 % of the rows held out; stop after 5 epochs without a better validation
accuracy, keep the best epoch; the encoder's default before this benchmark) against the same
encoder trained every epoch on all rows (``validation_fraction=0``, its default since).
Both settings are passed explicitly, so the comparison does not move with the defaults.
Prints test accuracy and epochs run.

Usage::

    python benchmarks/early_stopping.py --seeds 0 1 --json /tmp/early_stopping.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
    from unimat import _default_data_home

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", type=Path, default=_default_data_home())
    parser.add_argument("--train", type=Path, default=None, help="CDVAE-schema CSV to train on (default: MP-20 val)")
    parser.add_argument("--test", type=Path, default=None, help="CDVAE-schema CSV to test on (default: 20%% of train)")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def run(args) -> dict:
    import torch
    from unimat import add_xrd, load_data

    from skmat.encoders import XRDEncoder

    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        ns = argparse.Namespace(train=args.train, test=args.test, data_home=args.data_home, seed=seed,
                                n_train=args.n_train, n_test=args.n_test, xrd_bins=1701)
        train, test, split = load_data(ns)
        X_train, _ = add_xrd(train, ns)
        X_test, _ = add_xrd(test, ns)
        y_train = train["crystal_system"].astype(str).to_numpy()
        y_test = test["crystal_system"].astype(str).to_numpy()
        for name, settings in [
            ("early stopping on validation accuracy", {"validation_fraction": 0.1, "patience": 5}),
            ("every epoch, all rows", {"validation_fraction": 0.0, "patience": 0}),
        ]:
            tic = time.perf_counter()
            model = XRDEncoder(max_epochs=args.epochs, random_state=seed, **settings).fit(X_train, y_train)
            row = {"seed": seed, "setting": name, "split": split, "n_train": len(train), "n_test": len(test),
                   "accuracy": float(np.mean(model.predict(X_test) == y_test)),
                   "epochs_run": len(model.net_.history), "seconds": time.perf_counter() - tic}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for name in dict.fromkeys(r["setting"] for r in rows):
        values = [r["accuracy"] for r in rows if r["setting"] == name]
        summary[name] = {"mean": float(np.mean(values)), "values": values}
    print(json.dumps(summary, indent=1))
    return {"rows": rows, "summary": summary}


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
