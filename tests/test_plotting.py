"""Figures on real data: each is saved to a file and shows exactly the numbers it was given."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from skmat.exceptions import InvalidInputError

plt = pytest.importorskip("matplotlib.pyplot")

from skmat.plotting import plot_confusion, plot_latent_map, plot_parity, plot_retrieval_curve  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def multimat(data_home):
    """Text, DOS and bulk modulus of the MultiMat sample (read straight from the .npz: the
    charge densities, which the figures here do not need, take most of the loading time)."""
    with np.load(data_home / "multimat_sample" / "multimat_sample.npz") as arrays:
        return pd.DataFrame(
            {
                "text": list(arrays["text_embedding"]),
                "dos": [d if ok else None for d, ok in zip(arrays["dos"], arrays["dos_exists"], strict=True)],
                "bulk_modulus": arrays["bulk_modulus"],
            }
        )


@pytest.fixture(scope="module")
def crystal_systems(data_home):
    """Crystal systems of the first 200 MP-20 val materials (from their space-group numbers)."""
    numbers = pd.read_csv(data_home / "mp_20" / "val.csv.gz", nrows=200, usecols=["spacegroup.number"])["spacegroup.number"]
    edges = [(2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"), (167, "trigonal"), (194, "hexagonal"), (230, "cubic")]
    return np.array([next(name for top, name in edges if n <= top) for n in numbers])


def _saved(ax, tmp_path, name):
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 1000
    return path


def test_latent_map_pca_matches_sklearn_and_colours_by_property(multimat, tmp_path):
    from sklearn.decomposition import PCA

    Z = np.stack(multimat["text"].to_numpy())
    modulus = multimat["bulk_modulus"].to_numpy()
    ax = plot_latent_map(Z, color=modulus, method="pca", label="bulk modulus (GPa)")
    _saved(ax, tmp_path, "latent")
    offsets = np.asarray(ax.collections[0].get_offsets())
    np.testing.assert_allclose(offsets, PCA(n_components=2, random_state=0).fit_transform(Z), rtol=1e-5, atol=1e-5)
    # colour values are the property itself (NaN where the material has none)
    np.testing.assert_array_equal(np.isnan(ax.collections[0].get_array()), np.isnan(modulus))
    assert ax.get_xlabel() == "PCA 1"


def test_latent_map_drops_missing_rows_and_draws_labels(multimat, crystal_systems, tmp_path):
    # the DOS view is missing for 75 materials: NaN rows of an embedding are left out
    dos_energy_summary = np.array([[np.nan, np.nan] if d is None else [d[1].mean(), d[1].std()] for d in multimat["dos"]])
    labels = np.where(multimat["bulk_modulus"].notna(), "has modulus", "no modulus")
    ax = plot_latent_map(dos_energy_summary, color=labels, method="pca")
    drawn = sum(len(c.get_offsets()) for c in ax.collections)
    assert drawn == multimat["dos"].notna().sum()
    assert {t.get_text() for t in ax.get_legend().get_texts()} == set(labels[multimat["dos"].notna().to_numpy()])
    _saved(ax, tmp_path, "latent_labels")


def test_latent_map_auto_falls_back_to_pca_without_umap(multimat):
    Z = np.stack(multimat["text"].to_numpy()[:40])
    ax = plot_latent_map(Z, method="auto")
    try:
        import umap  # noqa: F401

        assert ax.get_xlabel() == "UMAP 1"
    except ImportError:
        assert ax.get_xlabel() == "PCA 1"


def test_parity_plot_shows_the_pairs_and_their_mae(multimat, tmp_path):
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    rows = multimat["bulk_modulus"].notna().to_numpy()
    X = np.stack(multimat["text"].to_numpy()[rows])
    y = multimat["bulk_modulus"].to_numpy()[rows]
    predicted = cross_val_predict(RidgeCV(alphas=np.logspace(-2, 4, 7)), X, y, cv=3)
    ax = plot_parity(y, predicted, unit="GPa", label="bulk modulus")
    _saved(ax, tmp_path, "parity")
    np.testing.assert_allclose(ax.collections[0].get_offsets(), np.column_stack([y, predicted]))
    assert ax.get_title() == f"MAE {np.mean(np.abs(y - predicted)):.3g} GPa (n = {rows.sum()})"
    diagonal = ax.lines[0].get_xydata()
    np.testing.assert_allclose(diagonal[:, 0], diagonal[:, 1])


def test_parity_draws_on_the_given_axes(multimat):
    fig, axes = plt.subplots(1, 2)
    y = multimat["bulk_modulus"].dropna().to_numpy()
    returned = plot_parity(y, y * 1.1, ax=axes[1])
    assert returned is axes[1]
    assert len(axes[0].collections) == 0 and len(axes[1].collections) == 1


def test_parity_rejects_mismatched_lengths():
    with pytest.raises(InvalidInputError, match="y_pred"):
        plot_parity([1.0, 2.0, 3.0], [1.0, 2.0])


def test_confusion_matrix_is_row_normalised_sklearn_matrix(crystal_systems, tmp_path):
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    # a "classifier" that is right 70% of the time and otherwise guesses another real label
    predicted = np.where(rng.random(len(crystal_systems)) < 0.7, crystal_systems, rng.permutation(crystal_systems))
    order = ["triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"]
    ax = plot_confusion(crystal_systems, predicted, labels=order)
    _saved(ax, tmp_path, "confusion")
    counts = confusion_matrix(crystal_systems, predicted, labels=order)
    shown = np.asarray(ax.images[0].get_array())
    with np.errstate(invalid="ignore"):
        expected = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(shown, expected)
    assert [t.get_text() for t in ax.get_yticklabels()] == order
    assert ax.get_title() == f"accuracy {np.mean(crystal_systems == predicted):.3f} (n = {len(predicted)})"


def test_confusion_counts_when_not_normalised(crystal_systems):
    ax = plot_confusion(crystal_systems, crystal_systems, normalize=False)
    shown = np.asarray(ax.images[0].get_array())
    labels, counts = np.unique(crystal_systems, return_counts=True)
    np.testing.assert_array_equal(np.diag(shown), counts)
    assert shown.sum() == len(crystal_systems)


def test_retrieval_curve_from_real_ranks(multimat, tmp_path):
    from skmat.retrieval import rank_of_true

    text = np.stack(multimat["text"].to_numpy()[:60])
    queries = text + np.random.default_rng(0).normal(scale=0.5 * text.std(), size=text.shape)
    ranks = rank_of_true(queries, text)
    ks = [1, 5, 10, 20]
    ax = plot_retrieval_curve(ranks, ks=ks, label="noisy text -> text", chance=len(text))
    _saved(ax, tmp_path, "recall")
    curve = ax.lines[0].get_xydata()
    np.testing.assert_array_equal(curve[:, 0], ks)
    np.testing.assert_allclose(curve[:, 1], [np.mean(ranks <= k) for k in ks])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), np.array(ks) / len(text))


def test_retrieval_curve_from_recall_dict_and_several_runs():
    ax = plot_retrieval_curve({1: 0.2, 5: 0.5, 10: 0.7}, label="given")
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[1, 0.2], [5, 0.5], [10, 0.7]])
    ax = plot_retrieval_curve({"a": [1, 2, 3], "b": [3, 3, 3]}, ks=[1, 2, 3])
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0, 0, 1])
    with pytest.raises(InvalidInputError, match="start at 1"):
        plot_retrieval_curve([0, 1, 2])


def test_import_is_lazy_and_headless_uses_agg():
    code = (
        "import sys, skmat, skmat.plotting\n"
        "assert 'matplotlib' not in sys.modules, 'import skmat.plotting pulled in matplotlib'\n"
        "ax = skmat.plotting.plot_parity([1.0, 2.0], [1.0, 2.5])\n"
        "import matplotlib\n"
        "print(matplotlib.get_backend().lower())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "agg"
