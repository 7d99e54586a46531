"""Cross-modal retrieval in a shared latent space: a cosine-similarity index and its metrics.

After alignment (:class:`~skmat.align.MultiModalAligner`), the embedding of a material in one
view should be closest to the embedding of the *same* material in another view. Retrieval
measures exactly that: a database of, say, structure embeddings is queried with XRD
embeddings, and the true partner should come first.

The protocol of the metrics follows MultiMat (Moro et al., arXiv:2312.00111): every query is
scored by cosine similarity against *all* evaluation items, and the rank of its true partner
is reported (1 = best). ``recall_at_k`` is the share of queries whose partner is within the
top ``k``; random embeddings give ``k / n_database`` on average.

Everything is numpy. Similarities are computed a block of queries at a time, so 10,000
queries against 10,000 items never hold the full 10,000 x 10,000 matrix in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from skmat._cosine import _normalized_embeddings, _query_blocks, top_k
from skmat.exceptions import InvalidInputError

__all__ = ["LatentIndex", "rank_of_true", "recall_at_k"]

def _true_partners(true_index: Any, n_queries: int, n_database: int) -> np.ndarray:
    """Database row of each query's true partner (default: the same row)."""
    if true_index is None:
        if n_queries != n_database:
            raise InvalidInputError(
                f"query_emb has {n_queries} rows and db_emb {n_database}: pass true_index to say "
                "which database row belongs to each query"
            )
        return np.arange(n_queries)
    index = np.asarray(true_index)
    if index.shape != (n_queries,):
        raise InvalidInputError(f"true_index must have shape ({n_queries},), got {index.shape}", view="true_index")
    if not np.issubdtype(index.dtype, np.integer):
        raise InvalidInputError(f"true_index must hold integers, got dtype {index.dtype}", view="true_index")
    out_of_range = (index < 0) | (index >= n_database)
    if out_of_range.any():
        bad = int(np.flatnonzero(out_of_range)[0])
        raise InvalidInputError(
            f"true_index {int(index[bad])} is outside the database's {n_database} rows", row=bad, view="true_index"
        )
    return index.astype(np.int64)


def rank_of_true(query_emb: Any, db_emb: Any, true_index: Any = None, *, block_size: int | None = None) -> np.ndarray:
    """Rank of each query's true partner among all database items by cosine similarity.

    Rank 1 means the partner is the most similar item. Ties are counted in the query's
    favour (rank = 1 + number of items *strictly* more similar), as a tie cannot be broken
    by anything the embeddings say.

    Parameters
    ----------
    query_emb : array-like of shape (n_queries, n_features)
        Query embeddings (one view), e.g. ``aligner.embed(X, "xrd")``.
    db_emb : array-like of shape (n_database, n_features)
        Database embeddings (another view), e.g. ``aligner.embed(X, "structure")``.
    true_index : array-like of int, shape (n_queries,), optional
        Database row of each query's partner. Default: row ``i`` of the query matches row
        ``i`` of the database (needs ``n_queries == n_database``).
    block_size : int, optional
        Queries scored at once (default: as many as fit a 16 MiB similarity block).

    Returns
    -------
    ndarray of int64, shape (n_queries,)
        Ranks, from 1 to ``n_database``.

    Raises
    ------
    InvalidInputError
        For arrays that are not 2-D, disagree in width, hold NaN/inf or zero rows, or an
        invalid ``true_index``.

    See Also
    --------
    recall_at_k : share of queries with rank <= k.

    Examples
    --------
    >>> import numpy as np
    >>> db = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> queries = np.array([[1.0, 0.1], [1.0, 0.0], [0.2, 1.0]])
    >>> rank_of_true(queries, db)
    array([1, 3, 2])
    """
    database = _normalized_embeddings(db_emb, "db_emb")
    queries = _normalized_embeddings(query_emb, "query_emb", n_features=database.shape[1])
    partners = _true_partners(true_index, len(queries), len(database))
    ranks = np.empty(len(queries), dtype=np.int64)
    for rows in _query_blocks(len(queries), len(database), block_size):
        similarity = queries[rows] @ database.T
        # compare against the partner's entry of the *same* block, so rounding cannot
        # make the partner beat itself
        partner_similarity = similarity[np.arange(similarity.shape[0]), partners[rows]]
        ranks[rows] = 1 + (similarity > partner_similarity[:, None]).sum(axis=1)
    return ranks


def recall_at_k(
    query_emb: Any, db_emb: Any, k: int, true_index: Any = None, *, block_size: int | None = None
) -> float:
    """Share of queries whose true partner is among the ``k`` most similar database items.

    Top-``k`` retrieval accuracy (Recall@K) with cosine similarity over all database items;
    with ``k=1`` it is the top-1 accuracy that
    :meth:`~skmat.align.MultiModalAligner.score` averages over view pairs. Random
    embeddings score ``k / n_database`` on average.

    Parameters
    ----------
    query_emb : array-like of shape (n_queries, n_features)
    db_emb : array-like of shape (n_database, n_features)
    k : int
        Cut-off, ``>= 1``.
    true_index : array-like of int, shape (n_queries,), optional
        Database row of each query's partner (default: the same row).
    block_size : int, optional
        Queries scored at once (see :func:`rank_of_true`).

    Returns
    -------
    float
        In ``[0, 1]``.

    See Also
    --------
    rank_of_true, LatentIndex

    Examples
    --------
    >>> import numpy as np
    >>> db = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> queries = np.array([[1.0, 0.1], [1.0, 0.0], [0.2, 1.0]])
    >>> recall_at_k(queries, db, k=1), recall_at_k(queries, db, k=2)
    (0.3333333333333333, 0.6666666666666666)
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    ranks = rank_of_true(query_emb, db_emb, true_index, block_size=block_size)
    return float(np.mean(ranks <= k))


class LatentIndex(BaseEstimator):
    """Exact nearest-neighbour search by cosine similarity over a database of embeddings.

    Fit it on the embeddings of a database in one view (say, the structures of a materials
    collection), then query it with embeddings of another view (say, measured XRD patterns
    embedded by the same aligner) to find the matching materials. Search is exact
    (brute force, a block of queries at a time), which on a CPU handles databases of
    ~10^5 items well.

    Parameters
    ----------
    block_size : int or None, default=None
        Queries scored at once; ``None`` picks as many as keep one similarity block under
        16 MiB.

    Attributes
    ----------
    embeddings_ : ndarray of shape (n_database, n_features), float32
        The database embeddings, scaled to unit length.
    ids_ : ndarray of shape (n_database,)
        Identifier of each database row (``ids`` given to ``fit``, or ``0 .. n - 1``).
    n_features_in_ : int
        Width of the embeddings.

    See Also
    --------
    rank_of_true, recall_at_k

    Examples
    --------
    >>> import numpy as np
    >>> db = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> index = LatentIndex().fit(db, ids=["mp-1", "mp-2", "mp-3"])
    >>> ids, scores = index.query([[0.9, 0.1]], k=2)
    >>> ids.tolist()
    [['mp-1', 'mp-3']]
    >>> [round(float(s), 3) for s in scores[0]]
    [0.994, 0.781]
    """

    def __init__(self, block_size: int | None = None):
        self.block_size = block_size

    def fit(self, embeddings: Any, ids: Any = None) -> LatentIndex:
        """Store the database.

        Parameters
        ----------
        embeddings : array-like of shape (n_database, n_features)
            Database embeddings (any length: they are normalised here).
        ids : array-like of shape (n_database,), optional
            What ``query`` returns for each row (e.g. ``material_id``); default row numbers.

        Returns
        -------
        self
        """
        if self.block_size is not None and (isinstance(self.block_size, bool) or int(self.block_size) < 1):
            raise ValueError(f"block_size must be a positive integer or None, got {self.block_size!r}")
        database = _normalized_embeddings(embeddings, "embeddings")
        if ids is None:
            identifiers = np.arange(len(database))
        else:
            identifiers = np.asarray(ids)
            if identifiers.shape != (len(database),):
                raise InvalidInputError(
                    f"ids must have shape ({len(database)},) like the embeddings' rows, got {identifiers.shape}",
                    view="ids",
                )
        self.embeddings_ = database
        self.ids_ = identifiers
        self.n_features_in_ = database.shape[1]
        return self

    def query(self, embeddings: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` database items most similar to each query, best first.

        Parameters
        ----------
        embeddings : array-like of shape (n_queries, n_features)
            Query embeddings.
        k : int, default=10
            Neighbours per query, ``1 <= k <= n_database``.

        Returns
        -------
        ids : ndarray of shape (n_queries, k)
            ``ids_`` of the neighbours, most similar first (equal scores: lower row first).
        scores : ndarray of shape (n_queries, k), float32
            Their cosine similarities, in ``[-1, 1]``, non-increasing along each row.
        """
        check_is_fitted(self, "embeddings_")
        n_database = len(self.embeddings_)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n_database:
            raise ValueError(f"k must be an integer in [1, {n_database}] (the database size), got {k!r}")
        queries = _normalized_embeddings(embeddings, "embeddings", n_features=self.n_features_in_)
        rows_out, scores_out = top_k(queries, self.embeddings_, k, block_size=self.block_size)
        return self.ids_[rows_out], scores_out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags
