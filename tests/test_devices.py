"""Device handling: "auto" resolves to what is there, and a model saved from a CUDA run
loads and predicts on a CPU-only machine.

There is no GPU on the CI machines, so the CUDA side is emulated in the one way that is
honest: the fitted net's ``device`` says ``"cuda"`` when it is pickled, which is what a GPU run
writes, and unpickling on this CPU-only machine must fall back to the CPU (skorch maps the
tensors with ``map_location``) and give the same predictions.
"""

from __future__ import annotations

import io
import warnings

import joblib
import numpy as np
import pytest
import torch

from _helpers import tiny_aligner
from skmat._training import resolve_device
from skmat.supervised import MultiModalRegressor

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="emulates a CPU-only machine")


def test_auto_device_is_the_cpu_without_cuda():
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


@pytest.fixture(scope="module")
def crystals(mp20_val_rows):
    rows = mp20_val_rows.iloc[:48]
    X = rows[["material_id", "structure"]].reset_index(drop=True)
    y = np.array([s.lattice.a / len(s) ** (1 / 3) for s in rows["structure"]])
    return X, y


def _views():
    return tiny_aligner(("xrd", "composition"))


def _as_if_trained_on_cuda(estimator):
    """A joblib file of *estimator* whose net records a CUDA device, as a GPU run writes it."""
    estimator.net_.device = "cuda"
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    estimator.net_.device = "cpu"
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("make", [_views, lambda: MultiModalRegressor(_views(), max_epochs=1, random_state=0)],
                         ids=["aligner", "regressor"])
def test_a_cuda_saved_model_runs_on_the_cpu(crystals, make):
    X, y = crystals
    model = make().fit(X, y)
    expected = model.transform(X) if hasattr(model, "transform") else model.predict(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = joblib.load(_as_if_trained_on_cuda(model))
    assert str(restored.net_.device) == "cpu"
    assert any("cuda" in str(w.message).lower() for w in caught)  # skorch says it fell back
    got = restored.transform(X) if hasattr(restored, "transform") else restored.predict(X)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert all(p.device.type == "cpu" for p in restored.net_.module_.parameters())
