"""Smoke test of ``benchmarks/unimat.py``: a tiny end-to-end run on real MP-20 rows.

Runs the script's ``main`` in-process with ``--tiny`` (120 structures, one epoch, tiny
networks) and checks that every output exists and that every row of the table holds finite
numbers. It does not check accuracy: at this size the models are barely trained.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METRICS = ["scaled_lattice_mae", "raw_lattice_mae", "mae_alpha", "mae_beta", "mae_gamma", "crystal_system_accuracy"]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def unimat_run(data_home, tmp_path_factory):
    unimat = _load_script("unimat")
    out = tmp_path_factory.mktemp("unimat")
    # --oracle: the diagnostic row is off by default, so the smoke run keeps its code path alive
    result = unimat.main(["--tiny", "--oracle", "--data-home", str(data_home), "--out", str(out)])
    return unimat, out, result


def test_unimat_tiny_writes_every_output(unimat_run):
    _, out, _ = unimat_run
    for name in ("unimat.json", "unimat.md", "parity.png", "confusion.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # PNG files start with the PNG signature
    assert (out / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unimat_json_has_finite_numbers_for_every_row(unimat_run):
    unimat, out, _ = unimat_run
    saved = json.loads((out / "unimat.json").read_text())
    rows = saved["rows"]
    names = {r["row"] for r in rows}
    # every learned row of UniMat's table and both classical baselines are present
    assert {name for name, _, _ in unimat.LEARNED_ROWS} <= names
    assert sum(r["protocol"] == "trees" for r in rows) == 2
    assert sum("LatticeRefiner (oracle" in r["protocol"] for r in rows) == 1  # asked for with --oracle
    for r in rows:
        for metric in METRICS:
            assert math.isfinite(r[metric]), (r["row"], r["protocol"], metric)
        assert 0.0 <= r["crystal_system_accuracy"] <= 1.0
        assert r["scaled_lattice_mae"] < r["raw_lattice_mae"], "scaled lengths are the raw ones / N^(1/3), N >= 1"
        per_system = [v for v in r["accuracy_per_system"].values() if v is not None]
        assert per_system and all(0.0 <= v <= 1.0 for v in per_system)
    assert saved["data"]["n_train"] == 80 and saved["data"]["n_test"] == 40
    assert saved["settings"]["preset"] == "tiny"
    assert saved["commit"]["head"] is None or len(saved["commit"]["head"]) == 40


def test_unimat_markdown_lists_every_row(unimat_run):
    _, out, result = unimat_run
    table = (out / "unimat.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    # header + one line per row + the mean/majority reference
    assert len(lines) == 1 + len(result["rows"]) + 1
    for r in result["rows"]:
        assert f"| {r['row']} | {r['protocol']} | {r['scaled_lattice_mae']:.3f} |" in table


def test_unimat_score_matches_hand_computed_errors(unimat_run):
    """``score`` averages |error| over a, b, c and counts hits within each true class."""
    import numpy as np
    import pandas as pd

    unimat, _, _ = unimat_run
    truth = pd.DataFrame(
        {**{c: [1.0, 2.0] for c in unimat.REGRESSION_TARGETS}, "crystal_system": ["cubic", "monoclinic"]}
    )
    prediction = np.ones((2, 9))
    prediction[1] = 2.5  # row 1 off by 0.5 everywhere, row 0 exact
    metrics = unimat.score(truth, {"regression": prediction, "crystal_system": np.array(["cubic", "cubic"])})
    assert metrics["scaled_lattice_mae"] == pytest.approx(0.25)
    assert metrics["mae_gamma"] == pytest.approx(0.25)
    assert metrics["crystal_system_accuracy"] == pytest.approx(0.5)
    assert metrics["accuracy_per_system"]["cubic"] == 1.0
    assert metrics["accuracy_per_system"]["monoclinic"] == 0.0
    assert metrics["accuracy_per_system"]["triclinic"] is None
