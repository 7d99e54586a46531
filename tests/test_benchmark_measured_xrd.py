"""Smoke test of ``benchmarks/measured_xrd.py``: a tiny run on real MP-20 rows and the RRUFF patterns.

Trains on 40 MP-20 structures for one epoch (no accuracy is checked at that size) and checks the
table: every configuration gives finite accuracies in [0, 1] on all 250 measured patterns, per
crystal system, and the measured set passed with ``--test`` is the one scored.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(data_home, tmp_path_factory):
    spec = importlib.util.spec_from_file_location("benchmark_measured_xrd", REPO / "benchmarks" / "measured_xrd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("measured_xrd") / "result.json"
    argv = [
        "--data-home", str(data_home),
        "--test", str(data_home / "rruff_xrd"),
        "--n-train", "40", "--n-sim-test", "20", "--epochs", "1", "--copies", "2", "--n-jobs", "1",
        "--configs", "plain:none", "grown:none", "augmented:rolling_ball",
        "--json", str(out),
    ]  # fmt: skip
    return module, module.main(argv), out


def test_every_configuration_scores_the_measured_set(run):
    module, result, _ = run
    assert [(r["training"], r["background"]) for r in result["rows"]] == [
        ("plain", "none"),
        ("grown", "none"),
        ("augmented", "rolling_ball"),
    ]
    assert sum(result["class_counts"]["measured"].values()) == 250
    for row in result["rows"]:
        for key in ("simulated_accuracy", "measured_accuracy", "measured_accuracy_no_trigonal_diagnostic"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, (row["training"], key)
        assert set(row["measured_per_class"]) == set(result["class_counts"]["measured"])
        # plain training takes as many steps as the augmented ones: epochs x copies
        assert row["epochs_run"] == (2 if row["training"] == "plain" else 1)


def test_the_recipe_used_is_recorded_and_the_table_lists_every_row(run):
    module, result, out = run
    assert json.loads(out.read_text())["augmentations"]["grown"] == {
        "cell_growth": [1.0, 2.5], "grown_cells": 3, "grown_fraction": 0.6,
    }  # fmt: skip
    table = module.render_table(result)
    for row in result["rows"]:
        assert f"| {row['training']} | {row['background']} | {100 * row['simulated_accuracy']:.1f} |" in table
