"""The ``skmat`` command: ``identify``, ``demo``, ``info``, ``embed``, ``benchmark``.

Exit codes: 0 success, 1 the job failed (one line on stderr; ``SKMAT_DEBUG=1`` adds the
traceback; for ``identify`` also a pattern it cannot read or use, an unknown model, a model
file from another skmat version), 2 bad command-line usage (argparse's own, a missing input
path, an unknown benchmark).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class UsageError(Exception):
    """A command line that cannot work (exit code 2), found after argparse accepted it."""


def _demo(args: argparse.Namespace) -> int:
    """Identify simulated measurements of real structures with the shipped models, offline."""
    if args.align:
        return _demo_align(args)
    import warnings

    import numpy as np

    start = time.perf_counter()
    from skmat.datasets import load_prototypes
    from skmat.features.augment import XRDAugmenter
    from skmat.pretrained import MeasuredPattern, identify, model_card

    frame = load_prototypes().frame
    if args.n is not None:
        frame = frame.sample(n=min(args.n, len(frame)), random_state=args.seed)
    structures = list(frame["structure"])
    print(f"data: {len(frame)} real structures shipped with pymatgen (AFLOW prototypes + test structures)")
    print("      each measured once in simulation: XRDAugmenter draws noise, background, zero shift,")
    print("      sample displacement, strain, peak broadening, preferred orientation and Kα2")
    with warnings.catch_warnings():
        # spglib notices on near-symmetric cells; pymatgen's note that He has no electronegativity
        warnings.simplefilter("ignore")
        augmenter = XRDAugmenter(random_state=args.seed).fit(structures)
        patterns = augmenter.transform(structures)
        names = [f"{s.composition.reduced_formula} ({label})" for s, label in zip(structures, frame["material_id"], strict=True)]
    grid = augmenter.two_theta_grid()
    answers = identify([MeasuredPattern(grid, p, None, name, {}) for p, name in zip(patterns, names, strict=True)], top=5)
    truth_system = frame["crystal_system"].astype(str).to_numpy()
    truth_id = ("proto-" + frame["material_id"].astype(str)).to_numpy()
    answer_system = np.mean([a.crystal_system == t for a, t in zip(answers, truth_system, strict=True)])
    system_top1 = np.mean([list(a.probabilities)[0] == t for a, t in zip(answers, truth_system, strict=True)])
    system_top2 = np.mean([t in list(a.probabilities)[:2] for a, t in zip(answers, truth_system, strict=True)])
    match_system = np.mean([a.matches[0]["crystal_system"] == t for a, t in zip(answers, truth_system, strict=True)])
    found = [[m["id"] for m in a.matches] for a in answers]
    top1 = np.mean([ids[0] == t for ids, t in zip(found, truth_id, strict=True)])
    top5 = np.mean([t in ids for ids, t in zip(found, truth_id, strict=True)])
    card = model_card("xrd-composition")
    n_index = answers[0].n_references
    if card.get("placeholder"):
        print("note: the shipped models are development placeholders (see their model cards)")
    print(f"identified {len(answers)} patterns with the shipped models (XRD alone, no composition):")
    print(f"  crystal system, classifier:            top-1 {system_top1:6.1%}   top-2 {system_top2:6.1%}   "
          f"(most frequent class: {np.mean(truth_system == _mode(truth_system)):.1%})")
    print(f"  crystal system of the best match:      top-1 {match_system:6.1%}")
    print(f"  crystal system, identify's answer:     top-1 {answer_system:6.1%}   (classifier + the 5 best matches' vote)")
    print(f"  right structure among {n_index} references: top-1 {top1:6.1%}   top-5 {top5:6.1%}   "
          f"(chance: {1 / n_index:.2%}, {5 / n_index:.2%})")
    example = answers[int(np.flatnonzero([ids[0] == t for ids, t in zip(found, truth_id, strict=True)])[0])] if top1 > 0 else answers[0]
    print("one of them, as `skmat identify` prints it:")
    print("  " + example.summary().replace("\n", "\n  "))
    print(f"done in {time.perf_counter() - start:.1f} s  (align the views yourself: skmat demo --align)")
    return 0


def _mode(values):
    import numpy as np

    names, counts = np.unique(values, return_counts=True)
    return names[counts.argmax()]


def _demo_align(args: argparse.Namespace) -> int:
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


def _read_inputs(source: Path, quiet: bool):
    """Materials of *source* as a DataFrame (``material_id``, ``structure``), CIFs parsed."""
    import pandas as pd

    from skmat._inputs import parse_cif

    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() == ".cif")
        if not files:
            raise UsageError(f"no .cif files in folder {source}")
        ids, texts = [p.stem for p in files], [p.read_text(encoding="utf-8", errors="replace") for p in files]
    elif source.suffix.lower() == ".cif":
        ids, texts = [source.stem], [source.read_text(encoding="utf-8", errors="replace")]
    elif source.suffix.lower() in (".csv", ".gz") and source.name.lower().removesuffix(".gz").endswith(".csv"):
        table = pd.read_csv(source)
        if "cif" not in table.columns:
            raise UsageError(f"{source} has no 'cif' column (columns: {list(table.columns)})")
        ids = list(table["material_id"]) if "material_id" in table.columns else list(range(len(table)))
        texts = list(table["cif"])
    else:
        raise UsageError(f"INPUT must be a .cif file, a folder of .cif files or a .csv with a 'cif' column: {source}")
    structures = []
    for material_id, text in _bar(list(zip(ids, texts, strict=True)), "reading CIFs", quiet):
        if not isinstance(text, str):
            from skmat.exceptions import InvalidInputError

            raise InvalidInputError("CIF text is missing", row=material_id, view="cif")
        structures.append(parse_cif(text, label=material_id, view="cif"))
    return pd.DataFrame({"material_id": ids, "structure": structures})


def _bar(items, desc: str, quiet: bool):
    if quiet:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, file=sys.stderr, leave=False)


def _embed(args: argparse.Namespace) -> int:
    """Embed materials with a model saved by :func:`skmat.persist.save`."""
    import numpy as np
    import pandas as pd

    from skmat.persist import load

    source, out = Path(args.input), Path(args.output)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not source.exists():
        raise UsageError(f"INPUT {source} does not exist")
    if not Path(args.model).is_dir():
        raise UsageError(f"MODEL {args.model} is not a folder written by skmat.persist.save")
    parquet = out.suffix.lower() == ".parquet"
    if parquet:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise RuntimeError("writing .parquet needs pyarrow (pip install pyarrow); or name OUT *.csv") from None
    model = load(args.model, device=args.device)
    if not hasattr(model, "transform"):
        raise RuntimeError(f"{type(model).__name__} has no transform: cannot embed")
    frame = _read_inputs(source, args.quiet)
    starts = range(0, len(frame), args.batch_size)
    parts = [model.transform(frame.iloc[i : i + args.batch_size]) for i in _bar(starts, "embedding", args.quiet)]
    embedding = np.concatenate([np.asarray(p) for p in parts])
    names = [str(n) for n in model.get_feature_names_out()]
    table = pd.DataFrame(embedding, columns=names)
    table.insert(0, "material_id", frame["material_id"].to_numpy())
    out.parent.mkdir(parents=True, exist_ok=True)
    if parquet:
        table.to_parquet(out, index=False)
    else:
        table.to_csv(out, index=False)
    if not args.quiet:
        print(f"{len(table)} materials x {len(names)} dimensions -> {out}", file=sys.stderr)
    return 0


def _identify(args: argparse.Namespace) -> int:
    """Identify measured powder patterns with the pretrained models (offline)."""
    import json

    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    if args.wavelength is not None and not args.wavelength > 0:
        raise UsageError(f"--wavelength must be a positive number of Å, got {args.wavelength:g}")
    if args.refine and args.composition is None:
        raise UsageError("--refine needs --composition: the atoms in the refined cell are counted from it")
    if args.match_weight is not None and not args.match_weight >= 0:
        raise UsageError(f"--match-weight must be >= 0, got {args.match_weight:g}")
    for name in args.pattern:
        if not Path(name).is_file():
            raise UsageError(f"PATTERN {name} is not a file")
    for target in (args.json, args.plot):
        if target is not None and not Path(target).resolve().parent.is_dir():
            raise UsageError(f"cannot write {target}: folder {Path(target).resolve().parent} does not exist")
    from skmat.pretrained import identify, plot_identification
    from skmat.pretrained._registry import model_card

    card = model_card(args.model)
    if not card.get("classes"):
        raise UsageError(f"--model {args.model} is not a classifier (it predicts no crystal system)")
    from skmat.pretrained._identify import MATCH_WEIGHT

    weight = 0.0 if args.classifier_only else args.match_weight if args.match_weight is not None else MATCH_WEIGHT
    answers = identify(
        args.pattern, wavelength=args.wavelength, composition=args.composition, top=args.top, model=args.model,
        match_weight=weight, refine=args.refine,
    )
    if card.get("placeholder"):
        print(f"note: model {args.model!r} is a development placeholder (see its model card); treat answers as a demo")
    for answer in answers:
        print(answer.summary())
    if args.json is not None:
        data = [a.to_dict() for a in answers]
        Path(args.json).write_text(json.dumps(data[0] if len(data) == 1 else data, indent=1) + "\n", encoding="utf-8")
    if args.plot is not None:
        plot = Path(args.plot)
        for i, answer in enumerate(answers):
            target = plot if len(answers) == 1 else plot.with_name(f"{plot.stem}-{i + 1}{plot.suffix}")
            plot_identification(answer, target)
    return 0


def available_benchmarks() -> list[str]:
    folder = REPO / "benchmarks"
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []


def _benchmark(args: argparse.Namespace) -> int:
    """Run ``benchmarks/<name>.py`` of the source checkout with the remaining arguments."""
    import subprocess

    # a name, not a path: nothing outside benchmarks/ can be run
    script = REPO / "benchmarks" / f"{args.name}.py"
    if not re.fullmatch(r"[A-Za-z0-9_]+", args.name) or not script.is_file():
        found = available_benchmarks()
        hint = f"available: {', '.join(found)}" if found else f"no benchmarks/ folder next to {REPO / 'skmat'} (a source checkout is needed)"
        raise UsageError(f"no benchmark named {args.name!r}; {hint}")
    extra = list(args.args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return subprocess.run([sys.executable, str(script), *extra], cwd=REPO, check=False).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skmat", description="Multi-view materials embeddings.")
    sub = parser.add_subparsers(dest="command", required=True)

    identify = sub.add_parser(
        "identify",
        help="what crystal is this measured powder pattern? (pretrained models, offline)",
        description="Crystal-system probabilities, predicted lattice and the most similar reference "
        "structures of measured powder XRD patterns, from skmat's pretrained models.",
    )
    identify.add_argument(
        "pattern", metavar="PATTERN", nargs="+",
        help="two-column .xy/.xye/.csv file (2θ in degrees, intensity) or a RRUFF powder .txt",
    )
    identify.add_argument(
        "--wavelength", type=float, default=None, metavar="Å",
        help="wavelength of the measurement (default: the file header's, else Cu Kα 1.5418 Å)",
    )
    identify.add_argument("--composition", default=None, metavar="FORMULA", help="chemical formula of the sample")
    identify.add_argument("--top", type=int, default=5, metavar="K", help="similar references listed (default 5)")
    identify.add_argument("--json", default=None, metavar="OUT", help="write the answer as JSON")
    identify.add_argument("--plot", default=None, metavar="OUT.png", help="measured pattern over the best match's")
    identify.add_argument("--model", default="xrd-composition", metavar="NAME", help="pretrained classifier (default xrd-composition)")
    identify.add_argument(
        "--match-weight", type=float, default=None, metavar="W",
        help="weight of the best matches' vote on the crystal system against the classifier's (default 1)",
    )
    identify.add_argument(
        "--classifier-only", action="store_true", help="answer with the classifier's crystal system, whatever the matches"
    )
    identify.add_argument(
        "--refine", action="store_true",
        help="also refine the lattice against the pattern's peaks (needs --composition; about 1 s more per pattern)",
    )
    identify.set_defaults(func=_identify)

    demo = sub.add_parser("demo", help="identify simulated measurements of real structures, offline")
    demo.add_argument("--align", action="store_true", help="the alignment demo: train an aligner on prototypes")
    demo.add_argument("--n", type=int, default=None, help="identify this many structures (default all)")
    demo.add_argument("--epochs", type=int, default=15, help="with --align: training epochs (default 15)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--verbose", type=int, default=0, help="with --align: 1 shows the training log")
    demo.set_defaults(func=_demo)

    info = sub.add_parser("info", help="versions, device and data home")
    info.set_defaults(func=_info)

    embed = sub.add_parser(
        "embed",
        help="embed CIFs with a saved model into a CSV or Parquet table",
        description="Embed materials with a model saved by skmat.persist.save. One row per material: "
        "material_id, then the embedding columns.",
    )
    embed.add_argument("model", metavar="MODEL", help="folder written by skmat.persist.save")
    embed.add_argument(
        "input", metavar="INPUT", help="a .cif file, a folder of .cif files, or a .csv with a 'cif' column (+ optional material_id)"
    )
    embed.add_argument("-o", "--output", required=True, metavar="OUT", help="output table: .parquet (needs pyarrow) or .csv")
    embed.add_argument("--batch-size", type=int, default=256, help="materials per transform call (default 256)")
    embed.add_argument("--device", default=None, help="torch device (default: the model's own setting)")
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    embed.set_defaults(func=_embed)

    bench = sub.add_parser(
        "benchmark",
        help="run benchmarks/NAME.py of the source checkout",
        description="Run benchmarks/NAME.py with the remaining arguments (e.g. skmat benchmark featurize -- --help).",
    )
    bench.add_argument("name", metavar="NAME", help="benchmark script name without .py")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    bench.set_defaults(func=_benchmark)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, message already printed)
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(f"skmat {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # report the failure in one line, keep the traceback out of the way
        if os.environ.get("SKMAT_DEBUG", "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        message = " ".join(str(exc).split())  # one line, whatever the exception carried
        print(f"skmat {args.command}: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
