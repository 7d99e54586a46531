"""Figures for embeddings and their evaluation: latent maps, parity plots, confusion matrices,
retrieval curves.

Every function draws on a matplotlib ``Axes`` (a new figure unless ``ax=`` is given) and
returns that ``Axes``, so figures compose (``fig, axes = plt.subplots(1, 3)`` then
``plot_parity(..., ax=axes[0])``) and are saved with ``ax.figure.savefig(path)``.

matplotlib is imported when a function is called, never by ``import skmat``. Without a display
(``DISPLAY`` unset on Linux, as on CI machines and clusters) the non-interactive Agg backend is
selected, so plotting works headless.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from skmat.exceptions import InvalidInputError

__all__ = ["plot_confusion", "plot_latent_map", "plot_parity", "plot_retrieval_curve"]


def _pyplot():
    """matplotlib.pyplot, with the Agg backend when there is no display to draw on."""
    import matplotlib

    headless = sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
    if headless and "matplotlib.pyplot" not in sys.modules and "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axes(ax):
    if ax is not None:
        return ax
    _, new = _pyplot().subplots(figsize=(5, 4.5))
    return new


def _finite_1d(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numeric: {exc}", view=name) from exc
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError(f"{name} must be a non-empty 1-D array, got shape {array.shape}", view=name)
    return array


# -- latent map --------------------------------------------------------------------------------
def _project_2d(Z: np.ndarray, method: str, random_state: int) -> tuple[np.ndarray, str]:
    if method == "auto":
        try:
            import umap  # noqa: F401

            method = "umap"
        except ImportError:
            method = "pca"
    if method == "umap":
        import umap

        # cosine, because aligned embeddings are compared by cosine similarity
        n_neighbors = min(15, len(Z) - 1)
        return umap.UMAP(n_neighbors=n_neighbors, metric="cosine", random_state=random_state).fit_transform(Z), "UMAP"
    if method == "pca":
        from sklearn.decomposition import PCA

        if Z.shape[1] == 1:
            return np.column_stack([Z[:, 0], np.zeros(len(Z))]), "PCA"
        return PCA(n_components=2, random_state=random_state).fit_transform(Z), "PCA"
    raise ValueError(f"method must be 'auto', 'umap' or 'pca', got {method!r}")


def plot_latent_map(
    Z: Any,
    color: Any = None,
    method: str = "auto",
    *,
    ax=None,
    label: str | None = None,
    random_state: int = 0,
    s: float = 12.0,
):
    """Scatter plot of embeddings projected to 2-D, coloured by a property or a label.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
        Embeddings, e.g. ``aligner.transform(X)`` or ``aligner.embed(X, "dos")``. Rows with
        NaN (a missing view) are left out, and so are their colours.
    color : array-like of shape (n_samples,), optional
        Numbers (a property: continuous colour map with a colour bar) or labels (strings or
        integers with few values: one colour per label, with a legend).
    method : {"auto", "umap", "pca"}, default="auto"
        ``"auto"`` uses UMAP (cosine metric) when ``umap-learn`` is installed, else PCA.
    ax : matplotlib Axes, optional
        Where to draw; default a new figure.
    label : str, optional
        Name of the colour quantity (colour-bar or legend title).
    random_state : int, default=0
        Seeds the projection.
    s : float, default=12
        Marker size.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax.collections`` holds the scatter(s); their offsets are the 2-D coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> Z = np.random.default_rng(0).normal(size=(30, 8))
    >>> ax = plot_latent_map(Z, color=Z[:, 0], method="pca", label="first coordinate")
    >>> ax.collections[0].get_offsets().shape
    (30, 2)
    """
    try:
        embeddings = np.asarray(Z, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"Z must be a numeric array: {exc}", view="Z") from exc
    if embeddings.ndim != 2:
        raise InvalidInputError(f"Z must be 2-D (n_samples, n_features), got shape {embeddings.shape}", view="Z")
    keep = np.isfinite(embeddings).all(axis=1)
    if keep.sum() < 3:
        raise InvalidInputError(f"need at least 3 rows without NaN to draw a map, got {int(keep.sum())}", view="Z")
    colors = None
    if color is not None:
        colors = np.asarray(color)
        if colors.shape != (len(embeddings),):
            raise InvalidInputError(f"color must have shape ({len(embeddings)},), got {colors.shape}", view="color")
        colors = colors[keep]
    xy, name = _project_2d(embeddings[keep], method, random_state)
    ax = _axes(ax)
    categorical = colors is not None and (colors.dtype.kind in "OUSb" or (colors.dtype.kind in "iu" and len(np.unique(colors)) <= 20))
    if colors is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=s)
    elif categorical:
        for value in np.unique(colors.astype(str) if colors.dtype.kind == "O" else colors):
            mask = (colors.astype(str) if colors.dtype.kind == "O" else colors) == value
            ax.scatter(xy[mask, 0], xy[mask, 1], s=s, label=str(value))
        ax.legend(title=label, fontsize="small", markerscale=1.5)
    else:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=colors.astype(float), s=s, cmap="viridis")
        ax.figure.colorbar(points, ax=ax, label=label)
    ax.set_xlabel(f"{name} 1")
    ax.set_ylabel(f"{name} 2")
    return ax


# -- parity ------------------------------------------------------------------------------------
def plot_parity(y_true: Any, y_pred: Any, *, ax=None, unit: str = "", label: str | None = None, s: float = 12.0):
    """Predicted against true values, with the diagonal and the MAE in the title.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    ax : matplotlib Axes, optional
    unit : str, default=""
        Unit shown on the axes and with the MAE (e.g. ``"GPa"``).
    label : str, optional
        Name of the quantity (axis labels).
    s : float, default=12
        Marker size.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax.collections[0].get_offsets()`` are the ``(y_true, y_pred)`` pairs.

    Examples
    --------
    >>> ax = plot_parity([1.0, 2.0, 3.0], [1.1, 1.9, 3.3], unit="Å")
    >>> ax.get_title()
    'MAE 0.167 Å (n = 3)'
    """
    truth = _finite_1d(y_true, "y_true")
    predicted = _finite_1d(y_pred, "y_pred")
    if truth.shape != predicted.shape:
        raise InvalidInputError(f"y_true has {truth.size} values and y_pred {predicted.size}", view="y_pred")
    ax = _axes(ax)
    ax.scatter(truth, predicted, s=s, alpha=0.7)
    finite = np.isfinite(truth) & np.isfinite(predicted)
    low = float(min(truth[finite].min(), predicted[finite].min()))
    high = float(max(truth[finite].max(), predicted[finite].max()))
    ax.plot([low, high], [low, high], color="0.3", linewidth=1, linestyle="--")
    ax.set_aspect("equal", adjustable="datalim")
    quantity = label or "value"
    suffix = f" ({unit})" if unit else ""
    ax.set_xlabel(f"true {quantity}{suffix}")
    ax.set_ylabel(f"predicted {quantity}{suffix}")
    mae = float(np.mean(np.abs(truth[finite] - predicted[finite])))
    ax.set_title(f"MAE {mae:.3g}{' ' + unit if unit else ''} (n = {int(finite.sum())})")
    return ax


# -- confusion matrix --------------------------------------------------------------------------
def plot_confusion(y_true: Any, y_pred: Any, labels: Any = None, *, ax=None, normalize: bool = True, cmap: str = "Blues"):
    """Confusion matrix with per-class recall on the diagonal (rows = true class).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Class labels.
    labels : sequence, optional
        Order of the classes (default: sorted union of both arrays); classes absent from the
        data still get a row and a column.
    ax : matplotlib Axes, optional
    normalize : bool, default=True
        Show row fractions (each true class sums to 1) with the counts in brackets; ``False``
        shows counts only.
    cmap : str, default="Blues"

    Returns
    -------
    matplotlib.axes.Axes
        ``ax.images[0].get_array()`` is the matrix shown (fractions or counts).

    Examples
    --------
    >>> ax = plot_confusion(["cubic", "cubic", "hexagonal"], ["cubic", "hexagonal", "hexagonal"])
    >>> ax.images[0].get_array().tolist()
    [[0.5, 0.5], [0.0, 1.0]]
    """
    from sklearn.metrics import confusion_matrix

    truth, predicted = np.asarray(y_true), np.asarray(y_pred)
    if truth.ndim != 1 or truth.shape != predicted.shape or truth.size == 0:
        raise InvalidInputError(
            f"y_true and y_pred must be non-empty 1-D arrays of one length, got {truth.shape} and {predicted.shape}",
            view="y_pred",
        )
    classes = np.unique(np.concatenate([truth, predicted])) if labels is None else np.asarray(labels)
    counts = confusion_matrix(truth, predicted, labels=classes)
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        # a class with no true samples has no recall: its row stays 0 rather than 0/0
        shown = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    else:
        shown = counts
    ax = _axes(ax)
    image = ax.imshow(shown, cmap=cmap, vmin=0, vmax=1 if normalize else None)
    ax.figure.colorbar(image, ax=ax, label="fraction of true class" if normalize else "count")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = (shown.max() or 1) / 2
    for i in range(len(classes)):
        for j in range(len(classes)):
            text = f"{shown[i, j]:.2f}\n({counts[i, j]})" if normalize else str(counts[i, j])
            ax.text(j, i, text, ha="center", va="center", fontsize="x-small",
                    color="white" if shown[i, j] > threshold else "black")
    accuracy = float(np.trace(counts) / max(counts.sum(), 1))
    ax.set_title(f"accuracy {accuracy:.3f} (n = {int(counts.sum())})")
    return ax


# -- retrieval curve ---------------------------------------------------------------------------
def plot_retrieval_curve(
    ranks: Any,
    ks: Any = None,
    *,
    ax=None,
    label: str | None = None,
    chance: int | None = None,
):
    """Recall@K against K for one or several retrieval runs.

    Parameters
    ----------
    ranks : array-like of int, or dict
        Ranks of the true partners (1 = best), e.g. :func:`skmat.retrieval.rank_of_true`; or
        a dict ``{name: ranks}`` (one curve each); or a dict ``{k: recall}`` of precomputed
        Recall@k values (int keys, float values: drawn as given).
    ks : array-like of int, optional
        Cut-offs (default ``1 .. max rank``).
    ax : matplotlib Axes, optional
    label : str, optional
        Legend entry for a single curve.
    chance : int, optional
        Database size ``n``: also draw the random-retrieval line ``k / n``.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax.lines[i].get_xydata()`` holds each curve's ``(k, recall)`` points.

    Examples
    --------
    >>> ax = plot_retrieval_curve([1, 1, 2, 5], ks=[1, 2, 5], chance=10)
    >>> ax.lines[0].get_ydata().tolist()
    [0.5, 0.75, 1.0]
    """
    ax = _axes(ax)
    if isinstance(ranks, dict) and ranks and all(isinstance(k, int | np.integer) for k in ranks):
        curves = {label: (np.asarray(sorted(ranks), dtype=int), np.asarray([ranks[k] for k in sorted(ranks)], dtype=float))}
    else:
        named = ranks if isinstance(ranks, dict) else {label: ranks}
        curves = {}
        for name, values in named.items():
            array = np.asarray(values)
            if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
                raise InvalidInputError(f"ranks must be a non-empty 1-D array of integers, got shape {array.shape}", view="ranks")
            if (array < 1).any():
                raise InvalidInputError("ranks start at 1 (the best match)", row=int(np.flatnonzero(array < 1)[0]), view="ranks")
            cutoffs = np.arange(1, int(array.max()) + 1) if ks is None else np.asarray(ks, dtype=int)
            curves[name] = (cutoffs, np.array([(array <= k).mean() for k in cutoffs]))
    for name, (cutoffs, recall) in curves.items():
        ax.plot(cutoffs, recall, marker="o" if len(cutoffs) <= 20 else None, markersize=3, label=name)
    if chance:
        cutoffs = np.unique(np.concatenate([c for c, _ in curves.values()]))
        ax.plot(cutoffs, np.minimum(cutoffs / float(chance), 1.0), color="0.5", linestyle=":", label=f"chance (n = {chance})")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_ylim(0, 1.02)
    if any(name is not None for name in curves) or chance:
        ax.legend(fontsize="small")
    return ax
