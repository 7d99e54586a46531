"""Smoke test of ``benchmarks/cmma.py``: a tiny end-to-end run on real MP-20 rows.

Runs the script's ``main`` in-process with ``--quick`` on 16 training and 8 test structures
(robocrys describes all 24, ~1 CPU-s each; one epoch, tiny networks) and checks the structure
of the JSON, that every number in it is finite, and that the table and the figure are written.
It does not check accuracy: at this size the models are barely trained.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cmma_run(data_home, tmp_path_factory):
    cmma = _load_script("cmma")
    out = tmp_path_factory.mktemp("cmma")
    argv = [
        "--quick", "--n-train", "16", "--n-test", "8", "--data-home", str(data_home), "--cache", str(out / "cache"),
        "--json", str(out / "cmma.json"), "--markdown", str(out / "cmma.md"), "--figure", str(out / "recall.png"),
        "--verbose", "-1",
    ]
    result = cmma.main(argv)
    return cmma, out, result


def _numbers(value, path=""):
    """Every number in a JSON tree, with where it is."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")


def test_cmma_quick_json_structure_and_finite_numbers(cmma_run):
    cmma, out, _ = cmma_run
    saved = json.loads((out / "cmma.json").read_text())
    assert saved["data"]["n_train"] == 16 and saved["data"]["n_test"] == 8
    assert saved["chance"]["R@10"] == pytest.approx(10 / 8)
    views = list(cmma.VIEWS)
    assert views == ["structure", "xrd", "composition", "text", "image"]
    # two losses x two view-dropout rates
    models = saved["models"]
    assert [(m["loss"], m["view_dropout"]) for m in models] == [
        ("all_pairs", 0.0), ("all_pairs", 0.3), ("anchored", 0.0), ("anchored", 0.3)
    ]
    for model in models:
        assert set(model["pairs"]) == {f"{q}->{d}" for q in views for d in views if q != d}
        for name, r in [*model["pairs"].items(), *model["fused_all"].items()]:
            assert 0 <= r["R@1"] <= r["R@5"] <= r["R@10"] <= 1, name
            assert 1 <= r["median_rank"] <= r["n_candidates"] <= 8, name
        assert set(model["fused_all"]) == set(views)
        assert set(model["one_view_missing"]) == set(views)
        for missing, r in model["one_view_missing"].items():
            assert set(r["to"]) == set(views) - {missing}
            assert set(r["kept_R@10_without_target"]) == set(views) - {missing}
        for target in [*cmma.TARGETS, *(f"{t}, {probe}" for t in cmma.TARGETS for probe in ("linear", "mlp"))]:
            maes = model["properties_mae"][target]
            assert set(maes) == {"fused (all views)", "fused (views concatenated)", *(f"{v} only" for v in views)}
            assert all(v >= 0 for v in maes.values())
    assert set(saved["magpie_boosted_trees_mae"]) == set(cmma.TARGETS)
    numbers = list(_numbers(saved))
    assert len(numbers) > 500
    bad = [(where, v) for where, v in numbers if not math.isfinite(v)]
    assert not bad, bad[:5]


def test_cmma_quick_writes_the_table_and_the_figure(cmma_run):
    _, out, result = cmma_run
    table = (out / "cmma.md").read_text()
    for model in result["models"]:
        assert f"### {model['model']}" in table
    assert "| structure->text |" in table and "Magpie + boosted trees" in table
    assert (out / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the descriptions are cached: a rerun reads them instead of running robocrys again
    assert any((out / "cache").rglob("*.pkl"))


def test_kept_without_target_leaves_the_database_view_out_of_both_queries():
    cmma = _load_script("cmma")
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(50, 8))
    # "a" and "b" carry the row's identity, "c" is noise
    embeddings = {"a": shared, "b": shared + 0.01 * rng.normal(size=(50, 8)), "c": rng.normal(size=(50, 8))}
    result = cmma.evaluate_retrieval({k: v.astype(np.float32) for k, v in embeddings.items()})
    strict = result["one_view_missing"]["a"]["kept_R@10_without_target"]
    assert set(strict) == {"b", "c"}
    # to "b": all but b is {a, c}; all but a and b is {c}: losing "a" loses the identity
    assert strict["b"] < 0.5


def test_fused_query_is_the_mean_of_the_present_views():
    cmma = _load_script("cmma")
    a = np.array([[1.0, 0.0], [np.nan, np.nan], [np.nan, np.nan]], dtype=np.float32)
    b = np.array([[0.0, 1.0], [0.0, 1.0], [np.nan, np.nan]], dtype=np.float32)
    out = cmma.fused({"a": a, "b": b}, ["a", "b"])
    np.testing.assert_allclose(out[:2], [[0.5, 0.5], [0.0, 1.0]])
    assert np.isnan(out[2]).all()  # no view at all: no query
    # rows missing either side are not candidates
    r = cmma.retrieval(a, b)
    assert r["n_candidates"] == 1 and r["R@1"] == 1.0
