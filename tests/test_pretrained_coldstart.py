"""``identify``'s inference path (skmat.pretrained._inference): what it imports, and that it
predicts exactly what the estimators of :func:`skmat.pretrained.load` predict.

Timings are not tested (they depend on the machine): ``benchmarks/identify_speed.py`` measures
the cold start. What keeps it short is tested here: the modules ``skmat identify`` never imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skmat.pretrained import load, load_index
from skmat.pretrained._registry import shared_network

CLASSIFIER, ALIGNER = "xrd-composition", "structure-xrd-composition"
REPO = Path(__file__).resolve().parents[1]
#: what the identify path must not import: the training stack (skorch imports torch_geometric,
#: ~2 s), scikit-learn and pandas (~1.5 s with their scipy.stats), pymatgen's diffraction
#: module (imports matplotlib)
NOT_IMPORTED = ("skorch", "torch_geometric", "sklearn", "pandas", "pymatgen", "matplotlib")


@pytest.fixture(scope="module")
def prototype_patterns():
    """Simulated Cu Kα patterns (the models' grid) and formulas of 70 pymatgen prototypes:
    more rows than one inference batch (64)."""
    from skmat.datasets import load_prototypes
    from skmat.features import XRDPattern

    frame = load_prototypes().frame.iloc[:70]
    featurizer = XRDPattern()
    patterns = featurizer.fit_transform(list(frame["structure"]))
    formulas = [s.composition.reduced_formula for s in frame["structure"]]
    return featurizer.two_theta_grid(), patterns, formulas


def test_identify_imports_neither_skorch_nor_scikit_learn(prototype_patterns, tmp_path):
    grid, patterns, _ = prototype_patterns
    rng = np.random.default_rng(0)
    counts = rng.poisson(1000 * patterns[0] + 30).astype(float)  # a measurement: background, noise
    path = tmp_path / "sample.xy"
    np.savetxt(path, np.column_stack([grid, counts]), fmt="%.3f")
    code = f"""
import json, sys
from skmat.cli import main
assert main(["identify", {str(path)!r}, "--top", "3"]) == 0
plain = sorted(m for m in sys.modules if m.split(".")[0] in {NOT_IMPORTED!r})
# a formula adds the composition view: Magpie features need pymatgen and scikit-learn, not skorch
assert main(["identify", {str(path)!r}, "--composition", "NaCl"]) == 0
formula = sorted(m for m in sys.modules if m.split(".")[0] in ("skorch", "torch_geometric"))
print(json.dumps([plain, formula]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    plain, formula = json.loads(done.stdout.strip().splitlines()[-1])
    assert plain == [], f"skmat identify imported {plain[:10]}"
    assert formula == [], f"skmat identify --composition imported {formula[:10]}"


def test_inference_path_predicts_what_the_classifier_predicts(prototype_patterns):
    _, patterns, formulas = prototype_patterns
    compositions = [f if i % 3 else None for i, f in enumerate(formulas)]  # a view missing in some rows
    estimator, network = load(CLASSIFIER), shared_network(CLASSIFIER)
    X = pd.DataFrame({"xrd": list(patterns), "composition": pd.Series(compositions, dtype=object)})
    outputs = network.head_outputs({"xrd": list(patterns), "composition": compositions})
    np.testing.assert_allclose(network.predict_proba(outputs), estimator.predict_proba(X), rtol=0, atol=1e-5)
    np.testing.assert_allclose(network.predict_auxiliary(outputs), estimator.predict_auxiliary(X), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(network.classes_, estimator.classes_)
    xrd_only = network.head_outputs({"xrd": list(patterns), "composition": [None] * len(patterns)})
    estimator.set_params(aligner__transform_views=("xrd",))
    np.testing.assert_allclose(network.predict_proba(xrd_only), estimator.predict_proba(X), rtol=0, atol=1e-5)


def test_inference_path_embeds_what_the_aligner_embeds(prototype_patterns):
    _, patterns, _ = prototype_patterns
    estimator, network = load(ALIGNER), shared_network(ALIGNER)
    expected = estimator.embed(pd.DataFrame({"xrd": list(patterns)}), view="xrd")
    np.testing.assert_allclose(network.embed(list(patterns), view="xrd"), expected, rtol=0, atol=1e-5)
    # the structure graph is left out: neither built nor read
    assert set(network.module.encoders) == {"structure", "xrd", "composition"}
    assert sum(p.numel() for p in network.module.encoders["structure"].parameters()) == 0


def test_reference_index_searches_as_latent_index():
    from skmat.retrieval import LatentIndex

    index = load_index()
    queries = index.xrd_embeddings[[1, 50, 900]].astype(np.float32) + 0.01
    rows, scores = index.search(queries, k=7)
    expected_rows, expected_scores = LatentIndex().fit(index.xrd_embeddings.astype(np.float32)).query(queries, k=7)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(scores, expected_scores)


def test_a_weights_file_that_does_not_fit_is_refused(tmp_path, monkeypatch):
    import shutil

    from safetensors.numpy import load_file, save_file

    from skmat.persist import ModelFileError
    from skmat.pretrained._registry import MODELS_DIR

    folder = tmp_path / "models"
    shutil.copytree(MODELS_DIR / CLASSIFIER, folder / CLASSIFIER)
    weights = folder / CLASSIFIER / "weights.safetensors"
    arrays = load_file(str(weights))
    arrays.pop(next(k for k in arrays if k.startswith("head.")))
    save_file(arrays, str(weights))
    monkeypatch.setenv("SKMAT_PRETRAINED_DIR", str(folder))
    with pytest.raises(ModelFileError, match="weights do not fit"):
        shared_network(CLASSIFIER)
