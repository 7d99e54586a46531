"""How skmat scales on one machine: parallel featurisation, a feature store, training speed,
import time. Every measurement runs in its own fresh Python process, so peak memory
(``resource.getrusage(...).ru_maxrss``) and import costs never leak between rows.

Sections (``--only`` picks some):

* ``import``: wall time of ``python -c "import skmat"``, median of ``--import-repeats`` fresh
  processes (the interpreter's own start-up, measured with ``python -c "pass"``, is listed).
* ``featurize``: throughput (structures/s) of XRDPattern + CompositionFeatures + CrystalGraph
  on ``--n`` MP-20 val structures with ``n_jobs=1``, ``n_jobs=2`` (loky) and a 2-worker Dask
  ``LocalCluster`` through ``joblib.parallel_config(backend="dask")``. Worker pools are
  started (and the workers' imports warmed) before timing. ``ratio`` = speed / speed of
  ``n_jobs=1``.
* ``store``: the feature store. All 9,047 MP-20 validation structures through the three
  featurizers with ``memory=`` one joblib cache folder, in one process (``n_jobs=1``): time
  and peak RSS; then again in a new process, where every chunk is a cache hit.
* ``train``: training throughput (structures/s) of a StructureEncoder (cgcnn, schnet,
  dimenetpp), an XRDEncoder and a CompositionEncoder, each under a regression head on
  ``formation_energy_per_atom``: AdamW steps on batches of 64 over ``--train-rows``
  pre-featurised rows (featurisation not counted), with 1 and with 2 torch threads;
  ``ratio`` = 2-thread speed / 1-thread speed.

The machine's load average (``os.getloadavg()``) is printed before and after: on a shared
machine, absolute numbers drift with it.

Usage::

    python benchmarks/scale.py                       # everything, ~15 min on 2 loaded cores
    python benchmarks/scale.py --only import train --json scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("import", "featurize", "store", "train")
TRAIN_MODELS = ("cgcnn", "schnet", "dimenetpp", "xrd", "composition")


def _default_data_home() -> Path:
    env = os.environ.get("SKMAT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def _load_rows(data_home: Path, n: int | None):
    """MP-20 val as skmat loads it (parsed structures); the first *n* rows, or all."""
    from skmat.datasets import fetch_mp20

    X, y = fetch_mp20("val", data_home=data_home, return_X_y=True)
    if n is not None:
        X, y = X.iloc[:n].reset_index(drop=True), y[:n]
    return X, y


def _featurizers(n_jobs, memory=None) -> dict:
    from skmat.features import CompositionFeatures, CrystalGraph, XRDPattern

    return {
        "xrd": XRDPattern(n_jobs=n_jobs, memory=memory),
        "composition": CompositionFeatures(n_jobs=n_jobs, memory=memory),
        "graph": CrystalGraph(n_jobs=n_jobs, memory=memory),
    }


# ------------------------------------------------------------------ jobs (one fresh process each)


def job_featurize(args) -> dict:
    """Time the three featurizers on ``args.n`` rows in one mode (serial, loky, dask)."""
    import joblib

    X, _ = _load_rows(args.data_home, args.n)
    warm = X.iloc[:8]
    context, cluster, client = None, None, None
    if args.mode == "serial":
        n_jobs = 1
    elif args.mode == "loky":
        n_jobs = 2
        for featurizer in _featurizers(2).values():  # start the pool, import in the workers
            featurizer.transform(warm)
    else:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        )
        client = Client(cluster)
        context = joblib.parallel_config(backend="dask")
        context.__enter__()
        n_jobs = -1
        for featurizer in _featurizers(-1).values():
            featurizer.transform(warm)
    seconds = {}
    try:
        for name, featurizer in _featurizers(n_jobs).items():
            start = time.perf_counter()
            featurizer.transform(X)
            seconds[name] = time.perf_counter() - start
    finally:
        if context is not None:
            context.__exit__(None, None, None)
            client.close()
            cluster.close()
    seconds["all three"] = sum(seconds.values())
    return {"n": len(X), "seconds": seconds, "peak_rss_mib": _peak_rss_mib()}


def job_store(args) -> dict:
    """All MP-20 val rows through the three featurizers with a shared joblib cache."""
    start = time.perf_counter()
    X, _ = _load_rows(args.data_home, None)
    load_seconds = time.perf_counter() - start
    rss_after_load = _peak_rss_mib()
    seconds, shapes = {}, {}
    for name, featurizer in _featurizers(1, memory=args.cache).items():
        start = time.perf_counter()
        out = featurizer.transform(X)
        seconds[name] = time.perf_counter() - start
        shapes[name] = getattr(out, "shape", (len(out),))
        del out  # a feature store user keeps what they need; measure the featurisers' peak
    return {
        "n": len(X),
        "load_seconds": load_seconds,
        "seconds": seconds,
        "featurize_seconds": sum(seconds.values()),
        "peak_rss_after_load_mib": rss_after_load,
        "peak_rss_mib": _peak_rss_mib(),
        "shapes": {k: list(v) for k, v in shapes.items()},
    }


def _train_setup(model: str, X, y):
    """Prepared view, module and dataset of one encoder under a regression head."""
    import numpy as np

    from skmat._training import MultiViewDataset
    from skmat.encoders import CompositionEncoder, StructureEncoder, XRDEncoder
    from skmat.nn.multiview import SupervisedViewModel

    if model in ("cgcnn", "schnet", "dimenetpp"):
        encoder, view = StructureEncoder(architecture=model), "structure"
    elif model == "xrd":
        encoder, view = XRDEncoder(), "xrd"
    else:
        encoder, view = CompositionEncoder(), "composition"
    frame = X[["structure"]]
    prepared = encoder._prepare(frame, view, fit=True)
    target = ((y - y.mean()) / y.std()).astype(np.float32)
    module = SupervisedViewModel(view, encoder._make_module(), 1, "regression")
    return module, MultiViewDataset({view: prepared}, target)


def job_train(args) -> dict:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    X, y = _load_rows(args.data_home, args.train_rows)
    module, dataset = _train_setup(args.model, X, np.asarray(y, dtype=float))
    loader = DataLoader(dataset, batch_size=64, shuffle=True, collate_fn=dataset.collate, drop_last=True)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()

    def epoch() -> int:
        rows = 0
        for batch, target in loader:
            optimizer.zero_grad()
            loss = module.loss(module(batch), target)
            loss.backward()
            optimizer.step()
            rows += len(batch)
        return rows

    epoch()  # warm-up: allocator, lazy initialisation
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        rows = epoch()
        rates.append(rows / (time.perf_counter() - start))
    return {"structures_per_s": statistics.median(rates), "peak_rss_mib": _peak_rss_mib()}


JOBS = {"featurize": job_featurize, "store": job_store, "train": job_train}


def _run_job(job: str, args, **options) -> dict:
    """Run one job in a fresh interpreter; its JSON result."""
    command = [sys.executable, __file__, "--job", job, "--data-home", str(args.data_home)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    for key in ("n", "train_rows", "repeats"):
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"job {job} {options} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ sections


def section_import(args) -> dict:
    def wall(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - start

    wall("import skmat")  # warm the file-system cache
    bare = statistics.median(wall("pass") for _ in range(args.import_repeats))
    skmat = statistics.median(wall("import skmat") for _ in range(args.import_repeats))
    return {"python_s": bare, "import_skmat_s": skmat}


def section_featurize(args) -> dict:
    return {mode: _run_job("featurize", args, mode=mode) for mode in ("serial", "loky", "dask")}


def section_store(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="skmat-store-") as cache:
        first = _run_job("store", args, cache=cache)
        second = _run_job("store", args, cache=cache)
        size = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
    return {"first": first, "second": second, "cache_mib": size / 2**20}


def section_train(args) -> dict:
    return {
        # str keys: the same whether read here or from the JSON file
        model: {str(threads): _run_job("train", args, model=model, threads=threads) for threads in (1, 2)}
        for model in args.models
    }


def _print_tables(results: dict) -> None:
    if "import" in results:
        r = results["import"]
        print(f"\nimport skmat: {r['import_skmat_s']:.3f} s (bare python: {r['python_s']:.3f} s), median of fresh processes")
    if "featurize" in results:
        r = results["featurize"]
        base = r["serial"]["seconds"]
        print(f"\nfeaturisation of {r['serial']['n']} MP-20 val structures (structures/s; ratio vs n_jobs=1)")
        names = list(base)
        print(f"{'mode':<22}" + "".join(f"{n:>20}" for n in names) + f"{'peak RSS MiB':>14}")
        for mode, label in (("serial", "n_jobs=1"), ("loky", "n_jobs=2 (loky)"), ("dask", "dask, 2 workers")):
            cells = "".join(
                f"{r[mode]['n'] / r[mode]['seconds'][n]:>12.1f} ({base[n] / r[mode]['seconds'][n]:4.2f}x)" for n in names
            )
            print(f"{label:<22}{cells}{r[mode]['peak_rss_mib']:>14.0f}")
    if "store" in results:
        r = results["store"]
        for key, label in (("first", "first run (computes, fills the cache)"), ("second", "second run (cache hits)")):
            s = r[key]
            per = ", ".join(f"{k} {v:.1f} s" for k, v in s["seconds"].items())
            print(
                f"\nfeature store, {label}: {s['n']} structures featurised in {s['featurize_seconds']:.1f} s "
                f"({per}); loading the CIFs {s['load_seconds']:.1f} s; peak RSS {s['peak_rss_mib']:.0f} MiB "
                f"(after loading {s['peak_rss_after_load_mib']:.0f} MiB)"
            )
        print(f"cache size {r['cache_mib']:.0f} MiB; second run {r['first']['featurize_seconds'] / r['second']['featurize_seconds']:.0f}x faster")
    if "train" in results:
        print("\ntraining throughput, batches of 64 (structures/s; ratio 2 threads vs 1)")
        print(f"{'model':<14}{'1 thread':>10}{'2 threads':>11}{'ratio':>7}{'peak RSS MiB':>14}")
        for model, r in results["train"].items():
            one, two = r["1"]["structures_per_s"], r["2"]["structures_per_s"]
            print(f"{model:<14}{one:>10.0f}{two:>11.0f}{two / one:>6.2f}x{max(r['1']['peak_rss_mib'], r['2']['peak_rss_mib']):>14.0f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", type=Path, default=_default_data_home())
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--n", type=int, default=1000, help="structures for the throughput section")
    parser.add_argument("--train-rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per training row")
    parser.add_argument("--models", nargs="+", choices=TRAIN_MODELS, default=list(TRAIN_MODELS))
    parser.add_argument("--import-repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    # internal: run one job in this (fresh) process and print its JSON
    parser.add_argument("--job", choices=sorted(JOBS), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("serial", "loky", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=TRAIN_MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.job:
        warnings.filterwarnings("ignore")
        print(json.dumps(JOBS[args.job](args)))
        return
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    sections = {"import": section_import, "featurize": section_featurize, "store": section_store, "train": section_train}
    results = {}
    for name in args.only:
        start = time.perf_counter()
        results[name] = sections[name](args)
        print(f"[{name} done in {time.perf_counter() - start:.0f} s, load average {os.getloadavg()}]", flush=True)
        if args.json:  # after every section: a late failure loses nothing measured
            args.json.write_text(json.dumps(results, indent=2))
    results["loadavg_after"] = os.getloadavg()
    _print_tables(results)
    print(f"\nload average after: {results['loadavg_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
