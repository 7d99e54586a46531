"""Time skmat's featurizers against the per-structure code they replace, on real MP-20 crystals.

For each featurizer and its reference, in the same run and on the same structures:

* ``1-row``: median over structures of the time of one call on one structure (for skmat, a
  ``transform([structure])``: the latency a user sees, input checks and sklearn overhead
  included);
* ``batch``: median over ``--repeats`` of (time of one call on all ``--n`` structures) / n.
  For a reference, one "call on all" is the plain Python loop a user would write;
* ``peak MiB``: ``tracemalloc`` peak while featurising all n structures (results kept), in a
  separate, untimed pass (tracemalloc slows Python code down);
* throughput (structures/s) of skmat with ``n_jobs=1`` and ``n_jobs=2`` (loky workers
  started beforehand, so pool start-up is not counted).

``ratio`` is reference / skmat for the same statistic. References:

* XRDPattern: pymatgen ``XRDCalculator().get_pattern(s, two_theta_range)`` plus the same
  broadening (:func:`skmat.features.xrd.broaden`) onto the same grid and max-normalisation;
* CompositionFeatures: matminer ``ElementProperty.from_preset("magpie").featurize(comp)``
  (both sides start from pymatgen ``Composition`` objects);
* CrystalGraph: pymatgen ``Structure.get_neighbor_list(r)`` and a per-centre nearest-k sort in
  numpy (what a user writes with today's pymatgen), and CGCNN's own data loader
  (``get_all_neighbors`` + ``sorted`` by distance per atom, Xie & Grossman 2018), the code most
  GNN pipelines descend from. PyG's ``radius_graph`` needs ``torch-cluster`` and is not
  periodic, and matminer has no neighbour-graph featurizer, so neither is a reference.

Before timing, each reference's output is checked against skmat's on a few structures.

Usage::

    python benchmarks/featurize.py                      # 500 MP-20 val structures
    python benchmarks/featurize.py --n 100 --only composition --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FEATURIZERS = ("xrd", "composition", "graph")

# settings shared by skmat and the references
XRD_SETTINGS = dict(wavelength="CuKa", two_theta_range=(5.0, 90.0), n_bins=1701, peak_width=0.15)
GRAPH_SETTINGS = dict(cutoff=6.0, max_neighbors=12)


def _default_data_home() -> Path:
    env = os.environ.get("SKMAT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


# ------------------------------------------------------------------------------- references
def _xrd_reference() -> Callable:
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    from skmat.features.xrd import broaden

    calculator = XRDCalculator(wavelength=XRD_SETTINGS["wavelength"])
    grid = np.linspace(*XRD_SETTINGS["two_theta_range"], XRD_SETTINGS["n_bins"])

    def featurize(structure):
        pattern = calculator.get_pattern(structure, two_theta_range=XRD_SETTINGS["two_theta_range"])
        profile = broaden(pattern.x, pattern.y, grid, fwhm=XRD_SETTINGS["peak_width"])
        return profile / profile.max()

    return featurize


def _composition_reference() -> Callable:
    from matminer.featurizers.composition import ElementProperty

    featurizer = ElementProperty.from_preset("magpie")
    return featurizer.featurize


def _neighbor_list_reference() -> Callable:
    cutoff, k = GRAPH_SETTINGS["cutoff"], GRAPH_SETTINGS["max_neighbors"]

    def featurize(structure):
        centre, neighbour, image, distance = structure.get_neighbor_list(r=cutoff)
        keep = []
        for atom in range(len(structure)):
            mine = np.flatnonzero(centre == atom)
            keep.append(mine[np.argsort(distance[mine], kind="stable")[:k]])
        keep = np.concatenate(keep)
        numbers = np.array([site.specie.Z for site in structure])
        return numbers, structure.cart_coords, np.stack([neighbour[keep], centre[keep]]), image[keep], distance[keep]

    return featurize


def _cgcnn_reference() -> Callable:
    cutoff, k = GRAPH_SETTINGS["cutoff"], GRAPH_SETTINGS["max_neighbors"]

    def featurize(structure):
        # cgcnn/data.py (CIFData.__getitem__), minus its Gaussian distance expansion
        all_neighbors = structure.get_all_neighbors(cutoff, include_index=True)
        all_neighbors = [sorted(neighbors, key=lambda n: n[1]) for neighbors in all_neighbors]
        index = np.array([[n[2] for n in neighbors[:k]] for neighbors in all_neighbors], dtype=object)
        distance = np.array([[n[1] for n in neighbors[:k]] for neighbors in all_neighbors], dtype=object)
        return index, distance

    return featurize


def _check_references(structures, compositions) -> dict[str, str]:
    """Reference outputs vs skmat's on a few structures (a benchmark of different work is void)."""
    from skmat.features import CompositionFeatures, CrystalGraph, XRDPattern

    notes = {}
    few = structures[:5]
    ours = XRDPattern(**XRD_SETTINGS).fit_transform(few)
    reference = np.stack([_xrd_reference()(s) for s in few])
    notes["xrd"] = f"max |pattern difference| = {np.abs(ours - reference).max():.1e} (patterns scaled to max 1)"

    ours = CompositionFeatures().fit_transform({"composition": compositions[:50]})
    reference = np.array([_composition_reference()(c) for c in compositions[:50]], dtype=float)
    notes["composition"] = f"max relative difference = {np.max(np.abs(ours - reference) / np.maximum(np.abs(reference), 1)):.1e} (float32 output)"

    graphs = CrystalGraph(**GRAPH_SETTINGS).fit_transform(few)
    edges = [len(_neighbor_list_reference()(s)[4]) for s in few]
    cgcnn_edges = [sum(len(row) for row in _cgcnn_reference()(s)[1]) for s in few]
    if graphs.num_edges.tolist() != edges or edges != cgcnn_edges:
        raise AssertionError(f"graph edge counts differ: {graphs.num_edges.tolist()} {edges} {cgcnn_edges}")
    reference_distances = np.concatenate([np.sort(_neighbor_list_reference()(s)[4]) for s in few])
    ours_distances = np.concatenate([np.sort(graphs[i].edge_distance) for i in range(len(few))])
    notes["graph"] = (
        f"same edge counts; max |sorted distance difference| = "
        f"{np.abs(reference_distances - ours_distances).max():.1e} Å (float32 output)"
    )
    return notes


# ------------------------------------------------------------------------------- measuring
def _median_single(featurize: Callable, items: list) -> float:
    """Median seconds of ``featurize(item)`` over items."""
    times = []
    for item in items:
        start = time.perf_counter()
        featurize(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _median_batch(run: Callable, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_mib(run: Callable) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak / 2**20


def _measure(name, reference_name, ours, reference, items, ours_input, one_row_input, repeats, n_single):
    """All numbers of one (skmat featurizer, reference) pair."""
    n = len(items)
    singles = items[:n_single]
    ours.fit(one_row_input(singles[:1]))
    ours.transform(one_row_input(singles[:1]))  # warm-up (imports, lookup tables)
    reference(items[0])
    row = {"featurizer": name, "reference": reference_name, "n": n}
    row["ours_1row_us"] = 1e6 * _median_single(lambda item: ours.transform(one_row_input([item])), singles)
    row["ref_1row_us"] = 1e6 * _median_single(reference, singles)
    data = ours_input(items)
    row["ours_batch_us"] = 1e6 * _median_batch(lambda: ours.transform(data), repeats) / n
    row["ref_batch_us"] = 1e6 * _median_batch(lambda: [reference(item) for item in items], max(1, repeats // 2)) / n
    row["ratio_1row"] = row["ref_1row_us"] / row["ours_1row_us"]
    row["ratio_batch"] = row["ref_batch_us"] / row["ours_batch_us"]
    row["ours_peak_mib"] = _peak_mib(lambda: ours.transform(data))
    row["ref_peak_mib"] = _peak_mib(lambda: [reference(item) for item in items])
    return row


def _throughput(featurizer, data, n: int, repeats: int) -> dict[str, float]:
    import joblib

    out = {}
    for n_jobs in (1, 2):
        featurizer.set_params(n_jobs=n_jobs)
        if n_jobs > 1:
            # start the loky workers (and their imports) before timing
            joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(_import_features)() for _ in range(2 * n_jobs))
        featurizer.transform(data)
        out[f"n_jobs={n_jobs}"] = n / _median_batch(lambda: featurizer.transform(data), repeats)
    featurizer.set_params(n_jobs=1)
    return out


def _import_features() -> None:
    import skmat.features.composition  # noqa: F401
    import skmat.features.graph  # noqa: F401
    import skmat.features.xrd  # noqa: F401


# ------------------------------------------------------------------------------- main
def _load(data_home: Path, n: int, seed: int):
    from skmat.datasets import fetch_mp20

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding notices
        frame = fetch_mp20(split="val", data_home=data_home).frame
    frame = frame.sample(n=min(n, len(frame)), random_state=seed).reset_index(drop=True)
    return list(frame["structure"]), list(frame["composition"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-home", type=Path, default=_default_data_home(), help="default: $SKMAT_DATA")
    parser.add_argument("--n", type=int, default=500, help="MP-20 val structures (random, seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each batch call")
    parser.add_argument("--n-single", type=int, default=200, help="structures timed one at a time")
    parser.add_argument("--only", nargs="+", choices=FEATURIZERS, default=list(FEATURIZERS))
    parser.add_argument("--json", type=Path, help="write all numbers here")
    args = parser.parse_args(argv)

    from skmat.features import CompositionFeatures, CrystalGraph, XRDPattern

    load_before = os.getloadavg()
    structures, compositions = _load(args.data_home, args.n, args.seed)
    n_single = min(args.n_single, len(structures))
    print(f"{len(structures)} MP-20 val structures ({sum(len(s) for s in structures)} atoms), "
          f"{os.cpu_count()} CPUs, load average before: {', '.join(f'{x:.2f}' for x in load_before)}")
    checks = _check_references(structures, compositions)

    # skmat gets what a user most often passes: a list of Structures (or Compositions)
    structure_frame = composition_frame = list
    plans = {
        "xrd": [("XRDPattern", "pymatgen XRDCalculator + broaden", XRDPattern(**XRD_SETTINGS),
                 _xrd_reference(), structures, structure_frame)],
        "composition": [("CompositionFeatures", "matminer ElementProperty(magpie)", CompositionFeatures(),
                         _composition_reference(), compositions, composition_frame)],
        "graph": [
            ("CrystalGraph", "pymatgen get_neighbor_list + numpy top-k", CrystalGraph(**GRAPH_SETTINGS),
             _neighbor_list_reference(), structures, structure_frame),
            ("CrystalGraph", "CGCNN loader (get_all_neighbors + sorted)", CrystalGraph(**GRAPH_SETTINGS),
             _cgcnn_reference(), structures, structure_frame),
        ],
    }
    rows, throughput = [], {}
    for key in args.only:
        for name, reference_name, ours, reference, items, make_input in plans[key]:
            print(f"  timing {name} vs {reference_name} ...", flush=True)
            row = _measure(name, reference_name, ours, reference, items, make_input, make_input,
                           args.repeats, n_single)
            row["check"] = checks[key]
            rows.append(row)
            if name not in throughput:
                throughput[name] = _throughput(ours, make_input(items), len(items), args.repeats)
    load_after = os.getloadavg()

    header = (f"{'featurizer':<20} {'reference':<42} {'1-row µs ours':>13} {'ref':>9} {'ratio':>6}"
              f" {'batch µs/str ours':>17} {'ref':>9} {'ratio':>6} {'peak MiB ours':>13} {'ref':>7}")
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['featurizer']:<20} {r['reference']:<42} {r['ours_1row_us']:>13.1f} {r['ref_1row_us']:>9.1f}"
              f" {r['ratio_1row']:>5.1f}x {r['ours_batch_us']:>17.1f} {r['ref_batch_us']:>9.1f}"
              f" {r['ratio_batch']:>5.1f}x {r['ours_peak_mib']:>13.1f} {r['ref_peak_mib']:>7.1f}")
    print()
    print("skmat throughput, structures/s (median of repeats, all n structures per call):")
    for name, rates in throughput.items():
        print(f"  {name:<20} " + "  ".join(f"{k}: {v:>9.0f}" for k, v in rates.items()))
    print()
    print("Output checks (reference vs skmat on the first structures):")
    for r in rows:
        print(f"  {r['featurizer']} vs {r['reference']}: {r['check']}")
    print()
    print("1-row = median over structures of one call on one structure; batch = median over repeats of")
    print("one call on all structures / n (reference: its plain Python loop); ratio = reference / skmat.")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in load_after)} "
          "(other jobs share this machine; ratios are measured in the same run, so they are the "
          "more stable numbers)")

    results = {
        "n_structures": len(structures),
        "n_single": n_single,
        "repeats": args.repeats,
        "seed": args.seed,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "rows": rows,
        "throughput_structures_per_s": throughput,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
