"""Smoke test of ``benchmarks/measured_xrd.py``: a tiny run on real MP-20 rows and the RRUFF patterns.

Trains on 40 MP-20 structures (plus, for the mineral rows, the entries of a 40-entry copy of the
AMCSD) for one epoch (no accuracy is checked at that size) and checks the table: every
configuration gives finite accuracies in [0, 1] on all 250 measured patterns, per crystal
system, the measured set passed with ``--test`` is the one scored, and leak control removes
exactly the references that match a measured pattern.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from _helpers import amcsd_subset

#: real AMCSD entries: galena, altaite, halite-type and other common minerals, some of them
#: measured in the RRUFF set (so leak control has something to remove), and the rest
AMCSD_IDS = [3, 4, 5, 112, 884, 835, 1345, 3133, 5799, 6898, 8938, 9956, 10493, 10584, 11372, 12893, 14701, 19266,
             20360, 17605, 7897, 9, 10, 107, 23, 9319,
             1036, 1037, 532, 13289]  # fmt: skip  (the last four: euclase twice, adamite, barytocalcite: measured)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(data_home, tmp_path_factory):
    spec = importlib.util.spec_from_file_location("benchmark_measured_xrd", REPO / "benchmarks" / "measured_xrd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tmp_path_factory.mktemp("measured_xrd")
    out = folder / "result.json"
    amcsd_subset(folder / "amcsd.db", AMCSD_IDS)
    argv = [
        "--data-home", str(data_home),
        "--test", str(data_home / "rruff_xrd"),
        "--n-train", "40", "--n-sim-test", "20", "--epochs", "1", "--copies", "2", "--n-jobs", "1",
        "--configs", "plain:none", "grown:none", "augmented:rolling_ball", "minerals:none", "minerals_sg:none",
        "nearest:none", "nearest_noleak:none",
        "--amcsd-database", str(folder / "amcsd.db"), "--cache-home", str(folder),
        "--json", str(out), "--figure", str(folder / "confusion.png"), "--triclinic-distortions", "6",
    ]  # fmt: skip
    return module, module.main(argv), out


def test_every_configuration_scores_the_measured_set(run):
    module, result, _ = run
    learned = [("plain", "none"), ("grown", "none"), ("augmented", "rolling_ball"), ("minerals", "none"),
               ("minerals_sg", "none")]
    assert [(r["training"], r["background"]) for r in result["rows"]] == [
        *(row for name, background in learned for row in ((name, background), (f"{name}+cubic indexing", background))),
        ("nearest", "none"),
        ("nearest_noleak", "none"),
    ]
    assert sum(result["class_counts"]["measured"].values()) == 250
    for row in result["rows"]:
        keys = ["measured_accuracy"]
        if row["training"].endswith("+cubic indexing"):
            keys += ["simulated_accuracy"]
        elif not row["training"].startswith("nearest"):
            keys += ["simulated_accuracy", "measured_accuracy_no_trigonal_diagnostic"]
            # plain training takes as many steps as the augmented ones: epochs x copies
            assert row["epochs_run"] == (2 if row["training"] == "plain" else 1)
        for key in keys:
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, (row["training"], key)
        assert set(row["measured_per_class"]) == set(result["class_counts"]["measured"])
        assert sum(sum(r.values()) for r in row["measured_confusion"].values()) == 250
    for row in result["rows"]:
        if row["training"] in ("minerals_sg", "nearest", "nearest_noleak"):
            assert 0.0 <= row["space_group_top1"] <= row["space_group_top5"] <= 1.0


def test_cubic_indexing_rows_move_only_the_patterns_that_index_as_cubic(run):
    _, result, _ = run
    rows = result["rows"]
    for network, indexed in zip(rows, rows[1:]):
        if indexed["training"] != f"{network['training']}+cubic indexing":
            continue
        # 27 of the 39 cubic RRUFF development patterns index as cubic, and no other (the
        # docstring of skmat.features.indexing.indexes_as_cubic)
        assert 20 <= indexed["measured_indexed_cubic"] <= 40
        for true, predicted in indexed["measured_confusion"].items():
            before = network["measured_confusion"][true]
            # patterns only ever move into the cubic column
            assert all(predicted.get(c, 0) <= n for c, n in before.items() if c != "cubic"), true
            assert predicted.get("cubic", 0) >= before.get("cubic", 0)
        assert indexed["measured_per_class"]["cubic"] >= network["measured_per_class"]["cubic"]
        # some of the 20 clean simulated MP-20 test patterns are cubic, and their peaks index so
        assert indexed["simulated_indexed_cubic"] >= 1


def test_leak_control_removes_the_matching_references(run):
    _, result, _ = run
    leak = result["leak_control"]
    assert leak["amcsd_entries"] == 28  # 30 ids, two refused by the loader
    # the RRUFF set holds euclase, adamite and barytocalcite: their entries leave, both of euclase's
    assert leak["amcsd_excluded"] >= 4 and leak["amcsd_phases_excluded"] >= 3
    lookup = {entry["threshold"]: entry for entry in leak["lookup_by_threshold"]}
    assert lookup[0.75]["references_excluded"] == leak["amcsd_excluded"]
    assert lookup[0.75]["largest_similarity_left"] < 0.75 <= lookup[None]["largest_similarity_left"]
    excluded = [entry["references_excluded"] for entry in leak["lookup_by_threshold"]]
    assert excluded == sorted(excluded) and excluded[0] == 0
    rows = {row["training"]: row for row in result["rows"]}
    assert rows["minerals"]["amcsd_structures"] == 28 - leak["amcsd_excluded"]
    assert rows["minerals"]["mp20_structures"] == 40 - leak["mp20_excluded"]
    assert rows["nearest"]["references"] == 28 - leak["amcsd_excluded"] < rows["nearest_noleak"]["references"]


def test_the_recipe_used_is_recorded_and_the_table_lists_every_row(run):
    module, result, out = run
    assert out.with_name("confusion.png").stat().st_size > 1000
    assert json.loads(out.read_text())["augmentations"]["grown"] == {
        "cell_growth": [1.0, 2.5], "grown_cells": 3, "grown_fraction": 0.6,
    }  # fmt: skip
    table = module.render_table(result)
    for row in result["rows"]:
        assert f"| {row['training']} | {row['background']} | {module._percent(row['simulated_accuracy'])} |" in table


def test_triclinic_variants_join_the_crystal_system_trainings_only(run):
    _, result, out = run
    made = result["triclinic_distortions"]["made"]
    # the 40 MP-20 + 28 AMCSD rows hold monoclinic and orthorhombic parents; a draw may fail
    assert 1 <= made <= 6 and result["triclinic_distortions"]["parents"] >= 6
    rows = {row["training"]: row for row in result["rows"]}
    assert rows["minerals"]["triclinic_variants"] == made
    assert rows["minerals_sg"]["triclinic_variants"] == 0
    settings = json.loads(out.read_text())["settings"]
    assert settings["triclinic_distortions"] == 6 and settings["intensity_scale"] == "sqrt"
