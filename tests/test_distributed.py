"""Scaling out unchanged: featurizers and GridSearchCV on a Dask cluster, training through
Accelerate, and contrastive negatives gathered from every process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from _helpers import tiny_encoder
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

    from skmat import MultiModalAligner

    X = mp20_val_rows[["structure"]].iloc[:48].reset_index(drop=True)
    y = np.array([s.volume / len(s) for s in X["structure"]])
    aligner = MultiModalAligner(
        encoders=_two_views(),
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


# ------------------------------------------------------------ two processes over gloo
#
# One launch of two real processes (torch.distributed over gloo on loopback, set up by
# ``Accelerator(cpu=True)`` from the variables torchrun and ``accelerate launch`` export) serves
# every multi-process test below: starting Python with torch and pymatgen twice costs more than
# everything the workers then do. The parent never waits without a deadline: a hung collective
# fails the test with each process's stack (faulthandler) instead of hanging CI.

N_ROWS = 42  # uneven: 8 validation rows, 17 training rows per process, a padded last batch
BATCH = 8  # per process: each contrastive batch is 2 x 8 rows
LAUNCH_TIMEOUT = 240.0  # seconds for both processes, startup included
TESTS = str(Path(__file__).parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_check(rank: int) -> dict:
    """Gather this process's rows of a shared batch of uneven shards, take the full-batch CLIP
    loss, and return the gathered shape, the loss and the gradient of this process's rows."""
    from skmat.nn.losses import clip_loss

    sizes = [3, 5]  # rows per process, uneven as a last batch can be
    generator = torch.Generator().manual_seed(0)  # every process draws the same global batch
    full_a = torch.randn(sum(sizes), 4, generator=generator)
    full_b = torch.randn(sum(sizes), 4, generator=generator)
    start = sum(sizes[:rank])
    a = full_a[start : start + sizes[rank]].clone().requires_grad_(True)
    b = full_b[start : start + sizes[rank]].clone().requires_grad_(True)
    gathered_a = gather_with_grad(a)
    loss = clip_loss({"a": gathered_a, "b": gather_with_grad(b)}, None, 0.1)
    loss.backward()
    return {"sizes": sizes, "shape": tuple(gathered_a.shape), "loss": float(loss.detach()), "grad": a.grad.clone()}


def _two_views() -> list:
    """The XRD and composition encoders every aligner in this module trains."""
    return [
        ("xrd", tiny_encoder("xrd", out_dim=16)),
        ("composition", tiny_encoder("composition", hidden_dims=(32,), out_dim=16)),
    ]


def _two_view_aligner(**kw):
    from skmat import MultiModalAligner

    return MultiModalAligner(_two_views(), latent_dim=8, batch_size=BATCH, **kw)


def _weights(aligner) -> dict:
    return {k: v.detach().clone() for k, v in aligner.net_.module_.state_dict().items()}


def _train_worker(data_home: str, out_dir: str) -> None:
    """One process of a 2-process run (rank and rendezvous come from the environment)."""
    import faulthandler
    import warnings

    import pandas as pd
    from accelerate import Accelerator
    from pymatgen.core import Structure

    import skmat.nn.losses

    faulthandler.dump_traceback_later(LAUNCH_TIMEOUT - 30, exit=True)  # stacks before the kill
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    result = {"world_size": accelerator.num_processes, "gather": _gather_check(rank)}

    cifs = pd.read_csv(os.path.join(data_home, "mp_20", "val.csv.gz"), nrows=N_ROWS)["cif"]
    structures = [Structure.from_str(cif, fmt="cif") for cif in cifs]
    X = pd.DataFrame({"structure": structures})

    # watch what the loss function receives: the embeddings after the cross-process gather
    loss_inputs = []
    all_pairs = skmat.nn.losses.LOSSES["all_pairs"]

    def watched(embeddings, present, temperature, **options):
        loss_inputs.append(
            {
                "training": torch.is_grad_enabled(),
                "rows": {view: tuple(z.shape) for view, z in embeddings.items()},
                "mask_rows": {view: int(m.shape[0]) for view, m in present.items()},
                "first": {view: z.detach().clone() for view, z in embeddings.items()} if not loss_inputs else None,
            }
        )
        return all_pairs(embeddings, present, temperature, **options)

    skmat.nn.losses.LOSSES["all_pairs"] = watched
    # early stopping with load_best, a validation split, an uneven last batch
    aligner = _two_view_aligner(
        lr=3e-2, max_epochs=12, validation_fraction=0.2, patience=2, accelerator=accelerator, random_state=0
    ).fit(X)
    result["full"] = {
        "history": [(h["train_loss"], h["valid_loss"]) for h in aligner.net_.history],
        "weights": _weights(aligner),
        "embedding": aligner.transform(X),
        "loss_inputs": loss_inputs,
    }
    if accelerator.is_main_process:
        joblib.dump(aligner, os.path.join(out_dir, "aligner.joblib"))
    skmat.nn.losses.LOSSES["all_pairs"] = all_pairs

    # XRD only in 4 rows: most processes' batches have no XRD row, so the XRD encoder runs in
    # one process and not in the other; and no random_state, so the processes must agree on
    # the validation rows by themselves
    sparse = pd.DataFrame({"structure": [s if i < 4 else None for i, s in enumerate(structures)]})
    sparse["composition"] = [s.composition.formula for s in structures]
    aligner = _two_view_aligner(max_epochs=2, validation_fraction=0.2, accelerator=accelerator).fit(sparse)
    result["sparse"] = {"weights": _weights(aligner), "embedding": aligner.transform(sparse)}
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def _launch_two_processes(code: str, out: Path) -> list[int]:
    """Run *code* in 2 processes with the rendezvous variables torchrun exports; their exit
    codes. A process still running at the deadline fails the test, its stack in the log."""
    port = str(_free_port())
    processes, logs = [], []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank))
        env.update(LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1")
        logs.append(open(out / f"rank{rank}.log", "wb"))  # a file: a full pipe would block the child
        # a session of its own, so that a hung process and its children can be killed together
        command = [sys.executable, "-c", code]
        processes.append(subprocess.Popen(command, env=env, stdout=logs[-1], stderr=logs[-1], start_new_session=True))
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    try:
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        hung = [rank for rank, process in enumerate(processes) if process.poll() is None]
        for rank in hung:
            os.killpg(processes[rank].pid, signal.SIGKILL)
            processes[rank].wait()
        for log in logs:
            log.close()
    tails = [(out / f"rank{r}.log").read_text(errors="replace")[-6000:] for r in range(2)]
    text = "\n".join(f"--- rank {r} ---\n{tail}" for r, tail in enumerate(tails))
    if hung:
        pytest.fail(f"processes {hung} still ran after {LAUNCH_TIMEOUT:.0f} s (deadlock?)\n{text}")
    codes = [process.returncode for process in processes]
    # a "Timeout" stack dump in a log: that process waited in a collective the other never joined
    assert codes == [0, 0], f"exit codes {codes}\n{text}"
    return codes


@pytest.fixture(scope="module")
def two_process_run(data_home, tmp_path_factory):
    """Each rank's results of one 2-process run of :func:`_train_worker`, and its folder."""
    pytest.importorskip("accelerate")
    out = tmp_path_factory.mktemp("two_processes")
    # The workers train XRD and composition encoders only. skorch imports torch_geometric when
    # it is installed, only to recognise graph batches: ~5 s of each worker's start-up, skipped
    no_graphs = "sys.modules['torch_geometric'] = None"
    worker = f"t._train_worker({str(data_home)!r}, {str(out)!r})"
    code = f"import sys; {no_graphs}; sys.path.insert(0, {TESTS!r}); import test_distributed as t; {worker}"
    _launch_two_processes(code, out)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)], out


def test_gather_with_grad_across_two_gloo_processes(two_process_run):
    """Every process sees all rows (negatives from both), and gradients reach each process's
    own rows: summed over processes (as DDP's all-reduce then averages), they are the
    full-batch gradient."""
    from skmat.nn.losses import clip_loss

    results, _ = two_process_run
    sizes = results[0]["gather"]["sizes"]
    generator = torch.Generator().manual_seed(0)
    full_a = torch.randn(sum(sizes), 4, generator=generator).requires_grad_(True)
    full_b = torch.randn(sum(sizes), 4, generator=generator)
    reference = clip_loss({"a": full_a, "b": full_b}, None, 0.1)
    reference.backward()
    for rank, result in enumerate(results):
        gather = result["gather"]
        assert gather["shape"] == (sum(sizes), 4)
        assert gather["loss"] == pytest.approx(float(reference.detach()), rel=1e-5)
        start = sum(sizes[:rank])
        # each of the 2 processes back-propagates the same global loss into these rows
        expected = 2 * full_a.grad[start : start + sizes[rank]]
        np.testing.assert_allclose(gather["grad"].numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)


def test_two_process_training_sees_every_process_negatives(two_process_run):
    results, _ = two_process_run
    assert [r["world_size"] for r in results] == [2, 2]
    for result in results:
        calls = result["full"]["loss_inputs"]
        assert any(c["training"] for c in calls) and any(not c["training"] for c in calls)
        for call in calls:
            # each process holds BATCH rows; the loss scores the 2 x BATCH gathered rows, so its
            # logits are (16 x 16), not (8 x 8)
            assert call["rows"] == {"xrd": (2 * BATCH, 8), "composition": (2 * BATCH, 8)}
            assert call["mask_rows"] == {"xrd": 2 * BATCH, "composition": 2 * BATCH}
    # the first gathered batch is the same in both processes: each holds the other's rows
    first = [r["full"]["loss_inputs"][0]["first"] for r in results]
    for view in ("xrd", "composition"):
        np.testing.assert_array_equal(first[0][view].numpy(), first[1][view].numpy())
        own, other = first[0][view][:BATCH], first[0][view][BATCH:]
        assert not torch.allclose(own, other), "the two halves are the same rows"


def test_two_process_training_ends_identical_in_both_processes(two_process_run):
    results, _ = two_process_run
    histories = [np.array(r["full"]["history"], dtype=float) for r in results]
    np.testing.assert_array_equal(histories[0], histories[1])  # the same global losses
    assert np.all(np.isfinite(histories[0]))
    # early stopping ended training and restored the best epoch's weights in both processes
    assert len(histories[0]) < 12, "early stopping did not trigger: load_best went unexercised"
    for run in ("full", "sparse"):
        weights = [r[run]["weights"] for r in results]
        assert weights[0].keys() == weights[1].keys()
        for name in weights[0]:
            torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0, msg=f"{run}: {name}")
        embeddings = [r[run]["embedding"] for r in results]
        assert embeddings[0].shape == (N_ROWS, 8) and np.all(np.isfinite(embeddings[0]))
        np.testing.assert_array_equal(embeddings[0], embeddings[1])


def test_two_process_model_transforms_in_one_process_as_on_rank_0(two_process_run, mp20_val_rows):
    results, out = two_process_run
    aligner = joblib.load(out / "aligner.joblib")
    X = mp20_val_rows[["structure"]].iloc[:N_ROWS].reset_index(drop=True)
    np.testing.assert_allclose(aligner.transform(X), results[0]["full"]["embedding"], rtol=1e-5, atol=1e-6)


def test_aligner_trains_through_an_accelerator_on_cpu(mp20_val_rows, tmp_path):
    accelerate = pytest.importorskip("accelerate")
    from skmat import MultiModalAligner
    from skmat.distributed import AcceleratedMultiViewNet

    X = mp20_val_rows[["structure"]].iloc[:40].reset_index(drop=True)

    def aligner(**kw):
        return MultiModalAligner(
            _two_views(), latent_dim=8, max_epochs=2, batch_size=16, validation_fraction=0.0, random_state=0, **kw
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
