"""Scaling out unchanged: featurizers and GridSearchCV on a Dask cluster, training through
Accelerate, and contrastive negatives gathered from every process."""

from __future__ import annotations

import os
import socket

import joblib
import numpy as np
import pytest
import torch

from skmat.distributed import gather_with_grad

# --------------------------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def dask_client():
    """Two single-threaded worker *processes* on loopback, closed after the module."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def structures(mp20_val_rows):
    """60 real MP-20 structures (a DataFrame with a ``structure`` column)."""
    return mp20_val_rows[["structure"]].iloc[:60].reset_index(drop=True)


def _run_on_dask(client, compute):
    """``compute()`` under joblib's Dask backend; its result and the workers that ran tasks."""
    from distributed import get_task_stream

    with get_task_stream(client=client) as stream, joblib.parallel_config(backend="dask"):
        result = compute()
    workers = {task["worker"] for task in stream.data}
    return result, workers, len(stream.data)


def test_featurizers_run_unchanged_on_dask_workers(dask_client, structures):
    from skmat.features import CompositionFeatures, CrystalGraph, XRDPattern

    # n_jobs=None defers to the active backend, n_jobs=-1 asks for every worker
    featurizers = {
        "xrd": lambda n_jobs: XRDPattern(n_bins=512, chunk_size=10, n_jobs=n_jobs),
        "composition": lambda n_jobs: CompositionFeatures(n_jobs=n_jobs),
        "graph": lambda n_jobs: CrystalGraph(max_neighbors=8, n_jobs=n_jobs),
    }
    worker_addresses = set(dask_client.scheduler_info()["workers"])
    for name, make in featurizers.items():
        serial = make(1).transform(structures)
        for n_jobs in (-1, None):
            on_dask, workers, n_tasks = _run_on_dask(dask_client, lambda: make(n_jobs).transform(structures))
            assert n_tasks >= 1, f"{name}: no task reached the cluster (n_jobs={n_jobs})"
            assert workers <= worker_addresses
            if name == "xrd" and n_jobs == -1:  # 60 rows in 6 chunks: both workers take some
                assert n_tasks >= 2 and len(workers) == 2
            if name == "graph":
                assert on_dask.equals(serial)
            else:
                np.testing.assert_array_equal(on_dask, serial)


def test_grid_search_of_an_aligner_pipeline_on_dask(dask_client, mp20_val_rows):
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    from skmat import CompositionEncoder, MultiModalAligner, XRDEncoder

    X = mp20_val_rows[["structure"]].iloc[:48].reset_index(drop=True)
    y = np.array([s.volume / len(s) for s in X["structure"]])
    aligner = MultiModalAligner(
        encoders=[
            ("xrd", XRDEncoder(n_bins=128, channels=(4, 8), out_dim=16)),
            ("composition", CompositionEncoder(hidden_dims=(32,), out_dim=16)),
        ],
        latent_dim=8,
        max_epochs=1,
        batch_size=16,
        validation_fraction=0.0,
        device="cpu",
        random_state=0,
    )
    pipe = Pipeline([("align", aligner), ("reg", Ridge())])
    grid = {"align__temperature": [0.05, 0.2]}
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=-1, error_score="raise")
    _, workers, n_tasks = _run_on_dask(dask_client, lambda: search.fit(X, y))
    # 2 candidates x 2 folds were fitted on the workers (joblib may batch several per task)
    assert n_tasks >= 2 and workers
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert np.all(np.isfinite(search.predict(X.iloc[:5])))


# --------------------------------------------------------------------------------- Accelerate


def test_gather_with_grad_is_the_identity_on_one_process():
    x = torch.randn(5, 3, requires_grad=True)
    gathered = gather_with_grad(x)
    assert gathered.shape == x.shape
    (gathered * torch.arange(3.0)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.tile(np.arange(3.0), (5, 1)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, world_size: int, port: int, sizes: list, queue) -> None:
    """One gloo process: gather its rows of a shared batch, take the full-batch CLIP loss, and
    report gathered shape, loss and the gradient of its own rows."""
    import torch.distributed as dist

    from skmat.nn.losses import clip_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # every process draws the same global batch, then keeps its rows
        full_a, full_b = torch.randn(sum(sizes), 4), torch.randn(sum(sizes), 4)
        start = sum(sizes[:rank])
        a = full_a[start : start + sizes[rank]].clone().requires_grad_(True)
        b = full_b[start : start + sizes[rank]].clone().requires_grad_(True)
        gathered_a, gathered_b = gather_with_grad(a), gather_with_grad(b)
        loss = clip_loss({"a": gathered_a, "b": gathered_b}, None, 0.1)
        loss.backward()
        queue.put((rank, tuple(gathered_a.shape), float(loss.detach()), a.grad.numpy().copy()))
    finally:
        dist.destroy_process_group()


def test_gather_with_grad_across_two_gloo_processes():
    """Every process sees all rows (negatives from both), and gradients reach each process's
    own rows: summed over processes (as DDP's all-reduce then averages), they are the
    full-batch gradient."""
    from skmat.nn.losses import clip_loss

    context = torch.multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    sizes = [3, 5]  # uneven, as a last batch can be
    torch.multiprocessing.spawn(_gather_worker, args=(2, _free_port(), sizes, queue), nprocs=2, join=True)
    results = sorted(queue.get() for _ in range(2))

    torch.manual_seed(0)
    full_a, full_b = torch.randn(sum(sizes), 4, requires_grad=True), torch.randn(sum(sizes), 4)
    reference = clip_loss({"a": full_a, "b": full_b}, None, 0.1)
    reference.backward()
    for rank, shape, loss, grad in results:
        assert shape == (sum(sizes), 4)
        assert loss == pytest.approx(float(reference.detach()), rel=1e-5)
        start = sum(sizes[:rank])
        # each of the 2 processes back-propagates the same global loss into these rows
        expected = 2 * full_a.grad[start : start + sizes[rank]].numpy()
        np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_aligner_trains_through_an_accelerator_on_cpu(mp20_val_rows, tmp_path):
    accelerate = pytest.importorskip("accelerate")
    from skmat import CompositionEncoder, MultiModalAligner, XRDEncoder
    from skmat.distributed import AcceleratedMultiViewNet

    X = mp20_val_rows[["structure"]].iloc[:40].reset_index(drop=True)

    def aligner(**kw):
        encoders = [
            ("xrd", XRDEncoder(n_bins=128, channels=(4, 8), out_dim=16)),
            ("composition", CompositionEncoder(hidden_dims=(32,), out_dim=16)),
        ]
        return MultiModalAligner(
            encoders, latent_dim=8, max_epochs=2, batch_size=16, validation_fraction=0.0, random_state=0, **kw
        )

    accelerated = aligner(accelerator=accelerate.Accelerator(cpu=True)).fit(X)
    assert isinstance(accelerated.net_, AcceleratedMultiViewNet)
    assert np.all(np.isfinite(accelerated.net_.history[:, "train_loss"]))
    embedding = accelerated.transform(X)
    assert embedding.shape == (40, 8) and np.all(np.isfinite(embedding))
    # one CPU process: the accelerator changes where training runs, not what it computes
    np.testing.assert_allclose(embedding, aligner(device="cpu").fit(X).transform(X), atol=1e-5)
    # the module is unwrapped after training: the fitted estimator persists as usual
    joblib.dump(accelerated, tmp_path / "aligner.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "aligner.joblib").transform(X), embedding)
