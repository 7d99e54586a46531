"""Cross-modal retrieval: LatentIndex, rank_of_true and recall_at_k."""

from __future__ import annotations

import tracemalloc
from itertools import permutations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from skmat.exceptions import InvalidInputError
from skmat.retrieval import LatentIndex, rank_of_true, recall_at_k

# Three database items on the unit circle's first quadrant and three queries, chosen so the
# similarity orderings can be read off by eye:
#   query 0 = (1, 0.1) is nearly item 0 = (1, 0)      -> partner item 0 is best       rank 1
#   query 1 = (1, 0)  is orthogonal to item 1 = (0, 1) -> worst of three              rank 3
#   query 2 = (0.2, 1) is nearer item 1 than item 2 = (1, 1) -> partner item 2 second rank 2
DATABASE = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
QUERIES = np.array([[1.0, 0.1], [1.0, 0.0], [0.2, 1.0]])


def brute_force_ranks(queries, database, partners):
    """Reference ranks from a full double-precision similarity matrix and a full sort."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = database / np.linalg.norm(database, axis=1, keepdims=True)
    order = np.argsort(-(q @ d.T), axis=1, kind="stable")
    return 1 + np.argmax(order == np.asarray(partners)[:, None], axis=1)


def test_ranks_of_a_hand_checked_case():
    np.testing.assert_array_equal(rank_of_true(QUERIES, DATABASE), [1, 3, 2])
    assert recall_at_k(QUERIES, DATABASE, k=1) == pytest.approx(1 / 3)
    assert recall_at_k(QUERIES, DATABASE, k=2) == pytest.approx(2 / 3)
    assert recall_at_k(QUERIES, DATABASE, k=3) == 1.0


def test_cosine_ignores_vector_length():
    scaled = QUERIES * np.array([[3.0], [0.01], [250.0]])
    np.testing.assert_array_equal(rank_of_true(scaled, DATABASE * 7.0), rank_of_true(QUERIES, DATABASE))


def test_identical_views_retrieve_perfectly(rng):
    z = rng.normal(size=(50, 8))
    np.testing.assert_array_equal(rank_of_true(z, z), np.ones(50))
    assert recall_at_k(z, z, k=1) == 1.0


def test_ties_count_for_the_query():
    # the partner (row 0) ties with row 1: neither is strictly better, so rank 1
    database = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert rank_of_true([[1.0, 0.0]], database, true_index=[0])[0] == 1
    assert rank_of_true([[1.0, 0.0]], database, true_index=[1])[0] == 1
    assert rank_of_true([[1.0, 0.0]], database, true_index=[2])[0] == 3


def test_true_index_maps_queries_to_other_rows():
    # the same queries against the database in reverse order
    reversed_db = DATABASE[::-1]
    np.testing.assert_array_equal(rank_of_true(QUERIES, reversed_db, true_index=[2, 1, 0]), [1, 3, 2])
    # more database items than queries: a copy of item 0 ties with query 0's partner (still
    # rank 1) and is one more item above query 1's partner (rank 3 -> 4)
    larger = np.vstack([DATABASE, [[1.0, 0.0]]])
    np.testing.assert_array_equal(rank_of_true(QUERIES, larger, true_index=[0, 1, 2]), [1, 4, 2])


@pytest.mark.parametrize("block_size", [1, 7, 64, None])
def test_blocked_ranks_match_a_full_sort(rng, block_size):
    queries, database = rng.normal(size=(64, 5)), rng.normal(size=(90, 5))
    partners = rng.integers(0, 90, size=64)
    ranks = rank_of_true(queries, database, true_index=partners, block_size=block_size)
    np.testing.assert_array_equal(ranks, brute_force_ranks(queries, database, partners))


def test_random_embeddings_score_chance(rng):
    n, k = 2000, 10
    a, b = rng.normal(size=(n, 16)), rng.normal(size=(n, 16))
    ranks = rank_of_true(a, b)
    # ranks of an unrelated partner are uniform on 1..n: mean (n + 1) / 2, recall k / n
    assert abs(ranks.mean() - (n + 1) / 2) < 0.05 * n
    assert recall_at_k(a, b, k) == pytest.approx(k / n, abs=4 * np.sqrt(k / n / n))


@pytest.mark.parametrize(
    ("queries", "database", "match"),
    [
        (np.ones(3), DATABASE, "2-D"),
        (np.ones((3, 3)), DATABASE, "3 features, the database has 2"),
        ([[1.0, np.nan], [1.0, 0.0], [0.0, 1.0]], DATABASE, "NaN"),
        (QUERIES, [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], "zero vector"),
        (QUERIES[:2], DATABASE, "true_index"),
        (np.zeros((0, 2)), DATABASE, "empty"),
        ([["a", "b"]], DATABASE, "numeric"),
    ],
)
def test_bad_embeddings_are_rejected(queries, database, match):
    with pytest.raises(InvalidInputError, match=match):
        rank_of_true(queries, database)


def test_bad_rows_are_named():
    queries = QUERIES.copy()
    queries[2, 0] = np.inf
    with pytest.raises(InvalidInputError) as info:
        recall_at_k(queries, DATABASE, k=1)
    assert info.value.row == 2 and info.value.view == "query_emb"


@pytest.mark.parametrize(
    ("true_index", "match"), [([0, 1], "shape"), ([0, 1, 3], "outside"), ([0.0, 1.0, 2.0], "integers")]
)
def test_bad_true_index_is_rejected(true_index, match):
    with pytest.raises(InvalidInputError, match=match):
        rank_of_true(QUERIES, DATABASE, true_index=true_index)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_recall_needs_a_positive_integer_k(k):
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(QUERIES, DATABASE, k=k)


def test_index_returns_ids_and_scores_best_first():
    index = LatentIndex().fit(DATABASE, ids=np.array(["mp-1", "mp-2", "mp-3"]))
    ids, scores = index.query(QUERIES, k=3)
    assert ids.shape == scores.shape == (3, 3)
    assert ids[:, 0].tolist() == ["mp-1", "mp-1", "mp-2"]
    assert ids[2].tolist() == ["mp-2", "mp-3", "mp-1"]
    assert np.all(np.diff(scores, axis=1) <= 0)
    # scores are the cosine similarities themselves: (1, 0) against (1, 1) is 1 / sqrt(2)
    assert scores[1, 1] == pytest.approx(1 / np.sqrt(2), abs=1e-6)
    assert scores[1, 2] == pytest.approx(0.0, abs=1e-6)


def test_index_defaults_to_row_numbers_and_breaks_ties_by_row():
    database = np.array([[0.0, 1.0], [1.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    ids, scores = LatentIndex().fit(database).query([[1.0, 0.0]], k=3)
    assert ids.tolist() == [[1, 2, 3]]
    np.testing.assert_allclose(scores, [[1.0, 1.0, 1.0]], atol=1e-6)


@pytest.mark.parametrize("block_size", [1, 5, None])
def test_index_agrees_with_a_full_sort(rng, block_size):
    database, queries = rng.normal(size=(120, 6)), rng.normal(size=(33, 6))
    ids, scores = LatentIndex(block_size=block_size).fit(database).query(queries, k=7)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = database / np.linalg.norm(database, axis=1, keepdims=True)
    similarity = q @ d.T
    np.testing.assert_array_equal(ids, np.argsort(-similarity, axis=1)[:, :7])
    np.testing.assert_allclose(scores, np.sort(similarity, axis=1)[:, ::-1][:, :7], atol=1e-5)


def test_index_rejects_bad_input():
    index = LatentIndex()
    with pytest.raises(NotFittedError):
        index.query(QUERIES)
    with pytest.raises(InvalidInputError, match="ids"):
        index.fit(DATABASE, ids=["a", "b"])
    with pytest.raises(ValueError, match="block_size"):
        LatentIndex(block_size=0).fit(DATABASE)
    index.fit(DATABASE)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 3\]"):
        index.query(QUERIES, k=4)
    with pytest.raises(InvalidInputError, match="features"):
        index.query(np.ones((2, 5)), k=1)
    with pytest.raises(InvalidInputError) as info:
        index.query([[1.0, 0.0], [np.nan, 1.0]], k=1)
    assert info.value.row == 1
    assert clone(index).get_params() == {"block_size": None}


def test_ten_thousand_squared_stays_in_bounded_memory(rng):
    """10,000 queries x 10,000 items: the full float32 similarity matrix would be 400 MB."""
    n = 10_000
    database = rng.normal(size=(n, 8)).astype(np.float32)
    queries = database + 0.05 * rng.normal(size=(n, 8)).astype(np.float32)
    tracemalloc.start()
    try:
        ranks = rank_of_true(queries, database)
        ids, _ = LatentIndex().fit(database).query(queries, k=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 120e6
    # the same facts through both routes: top-1 hits are the rank-1 queries
    np.testing.assert_array_equal(ids[:, 0] == np.arange(n), ranks == 1)
    assert np.mean(ranks <= 5) == pytest.approx(np.mean((ids == np.arange(n)[:, None]).any(axis=1)))


def test_real_aligned_embeddings(mp20_val_rows):
    """Embeddings of real MP-20 structures from a (briefly) fitted aligner: the metrics agree
    with each other and with MultiModalAligner.score."""
    from skmat import CompositionEncoder, MultiModalAligner, StructureEncoder, XRDEncoder

    X = mp20_val_rows[["structure"]]
    aligner = MultiModalAligner(
        encoders=[
            ("structure", StructureEncoder(hidden_dim=32, n_layers=2, out_dim=32, max_neighbors=8)),
            ("xrd", XRDEncoder(n_bins=256, channels=(8, 16), out_dim=32)),
            ("composition", CompositionEncoder(hidden_dims=(64,), out_dim=32)),
        ],
        latent_dim=16,
        max_epochs=2,
        batch_size=50,
        validation_fraction=0.0,
        random_state=0,
    ).fit(X.iloc[:150])
    held_out = X.iloc[150:]
    embeddings = {view: aligner.embed(held_out, view) for view in aligner.views_}
    top1 = [recall_at_k(embeddings[a], embeddings[b], k=1) for a, b in permutations(aligner.views_, 2)]
    assert np.mean(top1) == pytest.approx(aligner.score(held_out), abs=1e-9)

    structure, xrd = embeddings["structure"], embeddings["xrd"]
    ranks = rank_of_true(xrd, structure)
    assert ranks.min() >= 1 and ranks.max() <= len(held_out)
    ids, scores = LatentIndex().fit(structure, ids=held_out.index.to_numpy()).query(xrd, k=10)
    found = (ids == held_out.index.to_numpy()[:, None]).any(axis=1)
    np.testing.assert_array_equal(found, ranks <= 10)
    # with unit-length embeddings the scores are plain dot products with the items found
    best = structure[[held_out.index.get_loc(label) for label in ids[:, 0]]]
    np.testing.assert_allclose(scores[:, 0], np.einsum("ij,ij->i", xrd, best), atol=1e-5)
