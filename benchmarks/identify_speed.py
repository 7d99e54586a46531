"""Cold start of ``skmat identify PATTERN``: wall time of fresh processes and the share spent importing.

Each run is a new Python process running ``skmat identify PATTERN`` (``skmat.cli.main``, as
the console script does) in the checkout whose skmat is measured (this one, or ``--repo``: e.g.
a worktree of an older commit, to compare; its folder comes first on the path), so imports,
model loading, the forward passes, the reference-index search and the interpreter's exit are
all counted, as a user typing the command waits for them.

* ``wall``: median over ``--repeats`` runs.
* ``imports``: median over as many runs with ``python -X importtime`` of the summed cumulative
  time of every top-level import (lazy imports inside functions included); ``share`` =
  imports / wall. The import time of each big dependency (it and its submodules, including
  what they import: a package imported by another counts in both) is listed from the last
  such run ("-" = not imported).
* ``python -c pass``: the interpreter's own start-up and exit, for reference.

The pattern is simulated (pymatgen's bundled Si structure, Cu Kα, 5-90° in 0.02° steps, with a
sloping background and noise) unless ``--pattern`` names a file. The machine's load average is
printed before and after: other jobs slow every row.

Usage::

    python benchmarks/identify_speed.py
    python benchmarks/identify_speed.py --repeats 9 --pattern sample.xy --json identify_speed.json
    python benchmarks/identify_speed.py --repo ../skmat-old     # another checkout, same pattern
    python benchmarks/identify_speed.py -- --composition Si --refine   # with the lattice refined

Issue #14 asks for a median of at most 3 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
#: dependencies whose import time is listed
PACKAGES = (
    "torch", "numpy", "scipy", "safetensors", "pandas", "sklearn", "skorch", "torch_geometric", "pymatgen", "matplotlib"
)
#: what a run executes: the console script's entry point
CLI = "import sys; from skmat.cli import main; sys.exit(main(sys.argv[1:]))"


def simulated_pattern(folder: Path) -> Path:
    """Si (pymatgen's bundled structure) as a measurement: 2θ step 0.02°, background, noise."""
    import numpy as np
    import pymatgen.util
    from pymatgen.core import Structure

    from skmat.features import XRDPattern

    structure = Structure.from_file(Path(pymatgen.util.__file__).parent / "structures" / "Si.json")
    featurizer = XRDPattern(two_theta_range=(5.0, 90.0), n_bins=4251)
    two_theta = featurizer.two_theta_grid()
    rng = np.random.default_rng(0)
    counts = 2000 * featurizer.fit_transform([structure])[0] + 80 * np.exp(-two_theta / 40) + 20
    counts = rng.poisson(counts).astype(float)
    path = folder / "Si-simulated.xy"
    np.savetxt(path, np.column_stack([two_theta, counts]), fmt="%.3f", header="2theta counts")
    return path


def _run(argv: list[str], env: dict, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return seconds, done


def _imports(stderr: str) -> tuple[float, dict[str, float]]:
    """Seconds of all top-level imports, and the seconds of each of :data:`PACKAGES` (the
    package and its submodules, wherever they were first imported from)."""
    lines = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            lines.append(((len(match.group(3)) - 1) // 2, int(match.group(2)) / 1e6, match.group(4)))
    total, packages = 0.0, {}
    roots: list[str] = []  # package of each ancestor of the current line
    # importtime prints a module after the modules it imported: read backwards, parents first
    for level, seconds, name in reversed(lines):
        root = name.split(".")[0]
        del roots[level:]
        if level == 0:
            total += seconds
        if root in PACKAGES and (not roots or roots[-1] != root):  # not counted within its parent
            packages[root] = packages.get(root, 0.0) + seconds
        roots.append(root)
    return total, packages


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per measurement (default 5)")
    parser.add_argument("--pattern", type=Path, default=None, help="pattern file (default: a simulated Si pattern)")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose skmat runs (default: this one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument(
        "identify_args", nargs=argparse.REMAINDER,
        help="after --: options passed to identify, e.g. -- --composition Si --refine",
    )
    args = parser.parse_args(argv)
    extra = args.identify_args[1:] if args.identify_args[:1] == ["--"] else args.identify_args

    # the checkout's skmat, whatever is installed: `python -c` puts the working folder first
    repo = args.repo.resolve()
    env = dict(os.environ)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        pattern = args.pattern.resolve() if args.pattern is not None else simulated_pattern(Path(tmp))
        command = [sys.executable, "-c", CLI, "identify", str(pattern), *extra]
        _run(command, env, repo)  # compiles bytecode and warms the file cache: not counted
        bare = [_run([sys.executable, "-c", "pass"], env, repo)[0] for _ in range(args.repeats)]
        walls = [_run(command, env, repo)[0] for _ in range(args.repeats)]
        traced = [_run([sys.executable, "-X", "importtime", *command[1:]], env, repo)[1] for _ in range(args.repeats)]
    imports = [_imports(done.stderr) for done in traced]
    wall, imported = statistics.median(walls), statistics.median(s for s, _ in imports)
    result = {
        "repo": str(repo),
        "pattern": "simulated Si" if args.pattern is None else str(args.pattern),
        "identify_args": extra,
        "repeats": args.repeats,
        "wall_s": walls,
        "wall_median_s": wall,
        "imports_median_s": imported,
        "import_share": imported / wall,
        "package_imports_s": {name: round(s, 3) for name, s in imports[-1][1].items()},
        "python_pass_median_s": statistics.median(bare),
        "torch_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    print(f"skmat identify {result['pattern']} {' '.join(extra)} ({result['repo']}): {args.repeats} cold runs "
          "(fresh processes)")
    print(f"  wall, median          {wall:6.2f} s   (runs: {', '.join(f'{w:.2f}' for w in walls)})")
    print(f"  imports, median       {imported:6.2f} s   = {imported / wall:.0%} of the wall time")
    print(f"  python -c pass        {result['python_pass_median_s']:6.2f} s")
    packages = result["package_imports_s"]
    listed = [f"{n} {packages[n]:.2f} s" if n in packages else f"{n} -" for n in PACKAGES]
    print("  imports by package:  " + ", ".join(listed))
    print(f"load average before {load_before[0]:.2f}, after {result['loadavg_after'][0]:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
