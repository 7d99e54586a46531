"""The ``skmat`` command: ``demo``, ``info``, ``benchmark``.

Exit codes: 0 success, 1 the job failed, 2 bad command-line usage (argparse's own).
"""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    """Align structure, XRD and composition of pymatgen's bundled prototypes, offline."""
    import numpy as np
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    from skmat import MultiModalAligner
    from skmat.datasets import load_prototypes

    start = time.perf_counter()
    X, y = load_prototypes(return_X_y=True, target="a_scaled")
    # a graph needs one element per site: leave out the one disordered structure pymatgen ships
    ordered = np.array([s.is_ordered for s in X["structure"]])
    X, y = X[ordered], y[ordered]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=args.seed)
    print(f"data: {len(X)} real structures shipped with pymatgen (AFLOW prototypes + test structures)")
    print(f"      {len(X_train)} to train, {len(X_test)} held out; target: lattice length a/N^(1/3) (Å)")

    aligner = MultiModalAligner(max_epochs=args.epochs, batch_size=32, random_state=args.seed, verbose=args.verbose)
    pipe = Pipeline([("align", aligner), ("reg", RidgeCV(alphas=np.logspace(-3, 3, 13)))])
    pipe.fit(X_train, y_train)
    align = pipe.named_steps["align"]
    history = align.net_.history
    print(
        f"alignment: {len(history)} epochs, contrastive loss {history[0, 'train_loss']:.3f} -> "
        f"{history[-1, 'train_loss']:.3f}, temperature {align.temperature_:.3f}"
    )
    chance = 1.0 / len(X_test)
    print(
        f"cross-view top-1 retrieval on held-out materials: {align.score(X_test):.3f} "
        f"(chance {chance:.3f})"
    )
    mae = float(np.mean(np.abs(pipe.predict(X_test) - np.asarray(y_test))))
    baseline = float(np.mean(np.abs(np.mean(y_train) - np.asarray(y_test))))
    print(f"Ridge on the fused embedding: MAE {mae:.3f} Å (predicting the mean: {baseline:.3f} Å)")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _info(args: argparse.Namespace) -> int:
    import platform

    from skmat import __version__

    print(f"skmat {__version__} on Python {platform.python_version()} ({platform.machine()})")
    for name in ("numpy", "pandas", "sklearn", "torch", "torch_geometric", "skorch", "pymatgen.core", "matminer"):
        try:
            module = __import__(name, fromlist=["__version__"])
            print(f"  {name:16s} {getattr(module, '__version__', '?')}")
        except ImportError:
            print(f"  {name:16s} not installed")
    import torch

    from skmat._training import resolve_device
    from skmat.datasets import get_data_home

    print(f"device (auto): {resolve_device('auto')}; torch threads: {torch.get_num_threads()}")
    print(f"data home: {get_data_home()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skmat", description="Multi-view materials embeddings.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="align structure, XRD and composition on offline data")
    demo.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--verbose", type=int, default=0, help="1 shows the training log")
    demo.set_defaults(func=_demo)

    info = sub.add_parser("info", help="versions, device and data home")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # report the failure in one line, keep the traceback out of the way
        print(f"skmat {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
