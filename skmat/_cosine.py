"""Exact cosine top-k search in numpy: the kernel of :class:`skmat.retrieval.LatentIndex`.

It lives apart from :mod:`skmat.retrieval` (a scikit-learn estimator) so that the reference
index of ``skmat identify`` (:class:`skmat.pretrained.ReferenceIndex`) searches exactly as
``LatentIndex`` does without importing scikit-learn, ~1 s of that command's cold start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from skmat.exceptions import InvalidInputError

# Default size of one block of the similarity matrix: 2**22 float32 entries = 16 MiB (selecting
# the top k adds an int64 index array of the same shape), whatever the database size.
_BLOCK_ENTRIES = 1 << 22


def _normalized_embeddings(embeddings: Any, name: str, n_features: int | None = None) -> np.ndarray:
    """Validate a (n, d) embedding matrix and scale its rows to unit length (float32).

    Rows with NaN/inf (e.g. a missing view from ``MultiModalAligner.embed``) or zero length
    have no direction, so they cannot be compared by cosine similarity: they are rejected,
    naming the row.
    """
    try:
        array = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be a numeric array: {exc}", view=name) from exc
    if array.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (n_samples, n_features), got shape {array.shape}", view=name)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInputError(f"{name} is empty (shape {array.shape})", view=name)
    if n_features is not None and array.shape[1] != n_features:
        raise InvalidInputError(
            f"{name} has {array.shape[1]} features, the database has {n_features}", view=name
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(f"{name} contains NaN or inf (a missing view?)", row=bad, view=name)
    norms = np.linalg.norm(array, axis=1)
    if not (norms > 0).all():
        bad = int(np.flatnonzero(~(norms > 0))[0])
        raise InvalidInputError(f"{name} has a zero vector: its cosine similarity is undefined", row=bad, view=name)
    return array / norms[:, None]


def _query_blocks(n_queries: int, n_database: int, block_size: int | None) -> Iterator[slice]:
    """Slices of query rows, each small enough that its similarity block fits the budget."""
    if block_size is None:
        block_size = max(1, _BLOCK_ENTRIES // max(n_database, 1))
    for start in range(0, n_queries, block_size):
        yield slice(start, min(start + block_size, n_queries))


def top_k(
    queries: np.ndarray, database: np.ndarray, k: int, *, block_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the *k* database items most similar to each query, best first, and their scores.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, n_features), float32
        Unit-length rows (see :func:`_normalized_embeddings`).
    database : ndarray of shape (n_database, n_features), float32
        Unit-length rows.
    k : int
        ``1 <= k <= n_database`` (not checked here).
    block_size : int or None, default=None
        Queries scored at once; ``None`` keeps one similarity block under 16 MiB.

    Returns
    -------
    rows : ndarray of int64, shape (n_queries, k)
        Equal scores come out lower row first.
    scores : ndarray of float32, shape (n_queries, k)
        Cosine similarities, non-increasing along each row.
    """
    n_database = len(database)
    rows_out = np.empty((len(queries), k), dtype=np.int64)
    scores_out = np.empty((len(queries), k), dtype=np.float32)
    for rows in _query_blocks(len(queries), n_database, block_size):
        similarity = queries[rows] @ database.T
        if k < n_database:
            # O(n) selection of the k best, then a sort of just those k
            candidates = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        else:
            candidates = np.broadcast_to(np.arange(n_database), similarity.shape)
        candidate_scores = np.take_along_axis(similarity, candidates, axis=1)
        # sort by descending score, then ascending row, so equal scores come out in a fixed order
        order = np.lexsort((candidates, -candidate_scores), axis=1)
        rows_out[rows] = np.take_along_axis(candidates, order, axis=1)
        scores_out[rows] = np.take_along_axis(candidate_scores, order, axis=1)
    return rows_out, scores_out
