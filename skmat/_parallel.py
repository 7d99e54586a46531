"""Chunked, optionally parallel and cached map used by every featurizer.

Work is cut into chunks so that joblib sends few, large tasks (structures pickle slowly) and
so that a progress bar can advance per chunk. ``joblib.Parallel`` is used as is, which means
``joblib.parallel_config(backend="dask")`` moves the work to a Dask cluster unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import joblib


def progress(iterable, *, total: int | None = None, desc: str = "", verbose: int = 0):
    """Wrap *iterable* in a tqdm bar when ``verbose > 0`` (and tqdm is importable)."""
    if not verbose:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is never worth a crash
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False)


def check_memory(memory) -> joblib.Memory:
    """Turn ``None``, a path or a :class:`joblib.Memory` into a ``joblib.Memory``."""
    if memory is None or isinstance(memory, str | bytes) or hasattr(memory, "__fspath__"):
        return joblib.Memory(location=memory, verbose=0)
    if isinstance(memory, joblib.Memory) or hasattr(memory, "cache"):
        return memory
    raise ValueError(
        f"memory must be None, a path or a joblib.Memory, got {type(memory).__name__}"
    )


def map_chunks(
    func: Callable[..., list],
    items: Sequence[Any],
    *,
    kwargs: dict | None = None,
    n_jobs: int | None = None,
    chunk_size: int = 256,
    verbose: int = 0,
    desc: str = "",
    memory=None,
) -> list:
    """Apply ``func`` (list -> list of the same length) to *items* chunk by chunk.

    Parameters
    ----------
    func : callable
        ``func(chunk, **kwargs)`` takes a list of items and returns a list of results, one
        per item. Must be a module-level function (picklable, and cacheable by joblib).
    items : sequence
        The work.
    kwargs : dict, optional
        Keyword arguments of ``func``; they are part of the cache key.
    n_jobs : int or None
        joblib's ``n_jobs``. ``1`` runs in this process without joblib; ``None`` defers to
        the active ``joblib.parallel_config`` (sequential when there is none).
    chunk_size : int
        Items per task.
    verbose : int
        ``> 0`` shows a progress bar.
    desc : str
        Label of the progress bar.
    memory : None, str or joblib.Memory
        Cache of ``func`` results per chunk; repeated featurisation of the same chunk is free.

    Returns
    -------
    list
        Concatenated results, in the order of *items*.
    """
    kwargs = kwargs or {}
    items = list(items)
    if not items:
        return []
    cached = check_memory(memory).cache(func) if memory is not None else func
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    if n_jobs == 1:
        results = [cached(c, **kwargs) for c in progress(chunks, total=len(chunks), desc=desc, verbose=verbose)]
    else:
        parallel = joblib.Parallel(n_jobs=n_jobs, return_as="generator")
        results = list(
            progress(
                parallel(joblib.delayed(cached)(c, **kwargs) for c in chunks),
                total=len(chunks),
                desc=desc,
                verbose=verbose,
            )
        )
    return [r for chunk in results for r in chunk]
