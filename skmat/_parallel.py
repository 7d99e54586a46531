"""Chunked, optionally parallel and cached map used by every featurizer.

Work is cut into chunks so that joblib sends few, large tasks (structures pickle slowly) and
so that a progress bar can advance per chunk. ``joblib.Parallel`` is used as is, which means
``joblib.parallel_config(backend="dask")`` moves the work to a Dask cluster unchanged.

With ``memory``, each chunk's result is cached under a *content digest* of its items
(:func:`chunk_digest`) instead of joblib's hash of the items themselves. joblib hashes by
pickling, and a pymatgen ``Structure`` pickles differently once anything (even ``repr``, which
joblib calls when it stores a cache entry) has filled the lazily computed Cartesian coordinates
of its sites: the same structure then misses the cache on the second call. Pickling it is also
slow (hashing a structure costs about as much as building its neighbour graph); the digest
reads only the arrays that define it, ~20x faster.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import joblib
import joblib.func_inspect
import numpy as np

from skmat._version import __version__


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


# --------------------------------------------------------------------------------------------
# Content digest of the items of a chunk
# --------------------------------------------------------------------------------------------


def _feed_sized(digest, tag: bytes, payload: bytes) -> None:
    # tag + length prefix: the concatenation of fields is unambiguous (no two different
    # sequences of fields produce the same byte stream)
    digest.update(tag)
    digest.update(struct.pack("<Q", len(payload)))
    digest.update(payload)


def _feed_structure(digest, structure) -> None:
    """What defines a pymatgen ``IStructure``/``Structure``, read from its arrays.

    Everything a featurizer could depend on is included (lattice and periodicity, fractional
    coordinates, species with oxidation states and occupancies, labels, site and structure
    properties, charge); lazily cached values (Cartesian coordinates, distance matrices) are not.
    """
    _feed_sized(digest, b"S", type(structure).__qualname__.encode())
    _feed(digest, np.asarray(structure.lattice.matrix, dtype=float))
    _feed(digest, tuple(bool(p) for p in structure.lattice.pbc))
    _feed(digest, np.asarray(structure.frac_coords, dtype=float))
    # str(species) keeps the oxidation state and spin ("Fe2+,spin=5"); sorted so that the
    # insertion order of a disordered site's species does not matter
    species = [tuple(sorted((str(sp), float(occu)) for sp, occu in site.species.items())) for site in structure]
    _feed_sized(digest, b"p", repr(species).encode())
    _feed(digest, list(structure.labels))
    _feed(digest, structure.site_properties)
    _feed(digest, dict(getattr(structure, "properties", None) or {}))
    # the charge as set (None: from oxidation states); the ``charge`` property warns when the
    # two disagree, on every read
    _feed(digest, getattr(structure, "_charge", None))


def _feed_pymatgen(digest, obj) -> bool:
    """Feed a pymatgen Structure, Lattice or Composition; False for other pymatgen types."""
    from pymatgen.core import Composition, IStructure, Lattice

    if isinstance(obj, IStructure):
        _feed_structure(digest, obj)
    elif isinstance(obj, Composition):
        items = sorted((str(sp), float(amount)) for sp, amount in obj.items())
        _feed_sized(digest, b"C", repr(items).encode())
    elif isinstance(obj, Lattice):
        _feed_sized(digest, b"L", b"")
        _feed(digest, np.asarray(obj.matrix, dtype=float))
        _feed(digest, tuple(bool(p) for p in obj.pbc))
    else:
        return False
    return True


def _feed(digest, obj: Any) -> None:
    """Add a canonical byte encoding of *obj* to *digest* (see :func:`chunk_digest`)."""
    if obj is None or isinstance(obj, bool | int | str | bytes):
        # exact for these types; the type name keeps 1, 1.0, True and "1" apart
        _feed_sized(digest, b"v", f"{type(obj).__name__}:{obj!r}".encode())
    elif isinstance(obj, float):
        _feed_sized(digest, b"f", struct.pack("<d", obj) if not math.isnan(obj) else b"nan")
    elif isinstance(obj, np.ndarray | np.generic):
        array = np.asarray(obj)
        if array.dtype.hasobject:
            _feed_sized(digest, b"O", repr(array.shape).encode())
            _feed(digest, array.ravel().tolist())
        else:
            _feed_sized(digest, b"a", f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).data)
    elif isinstance(obj, tuple | list):
        # the type name keeps a NamedTuple record apart from a plain tuple of the same fields
        _feed_sized(digest, b"t", f"{type(obj).__module__}.{type(obj).__qualname__}:{len(obj)}".encode())
        for element in obj:
            _feed(digest, element)
    elif isinstance(obj, dict):
        _feed_sized(digest, b"d", str(len(obj)).encode())
        # insertion order is not content: sort by the keys' repr
        for key, value in sorted(obj.items(), key=lambda kv: repr(kv[0])):
            _feed(digest, key)
            _feed(digest, value)
    elif type(obj).__module__.startswith("pymatgen.") and _feed_pymatgen(digest, obj):
        pass  # pymatgen is imported only when such an object is seen
    else:
        # anything else must pickle deterministically; joblib's hash is then its content
        _feed_sized(digest, b"j", joblib.hash(obj).encode())


def chunk_digest(items: Sequence[Any]) -> str:
    """Hex digest of the content of *items*, stable across calls and processes.

    Numbers, strings, numpy arrays, tuples (including NamedTuple records), lists and dicts are
    encoded exactly; pymatgen ``Structure``/``IStructure``, ``Lattice`` and ``Composition``
    by the arrays and species that define them (so lazily cached attributes never change the
    digest); any other object through :func:`joblib.hash`, which requires it to pickle
    deterministically.

    Parameters
    ----------
    items : sequence
        The items of one chunk.

    Returns
    -------
    str
        40 hexadecimal characters.

    Examples
    --------
    >>> import numpy as np
    >>> chunk_digest([np.zeros(3), "NaCl"]) == chunk_digest([np.zeros(3), "NaCl"])
    True
    >>> chunk_digest([np.zeros(3)]) == chunk_digest([np.zeros(3, dtype=np.float32)])
    False
    """
    digest = hashlib.blake2b(digest_size=20)
    for item in items:
        _feed(digest, item)
    return digest.hexdigest()


def _function_version(func: Callable) -> str:
    """Digest of *func*'s source and of the skmat version: a new version of either is a new key.

    joblib invalidates a cached function when its code changes; here the cached function is
    :func:`_run_chunk`, so *func*'s code goes into the key instead. Helpers that *func* calls
    are only covered through the skmat version, as with joblib.
    """
    code = joblib.func_inspect.get_func_code(func)[0]
    return hashlib.blake2b(f"{__version__}\n{code}".encode(), digest_size=16).hexdigest()


def _run_chunk(func: Callable, func_version: str, digest: str, kwargs: dict, chunk: list):
    # Cached with ``ignore=["chunk"]``: the key is (func by name, func_version, digest of the
    # chunk's content, kwargs), so joblib never pickles (or repr()s) the items themselves.
    return func(chunk, **kwargs)


def _concatenate(results: list) -> list | np.ndarray:
    if results and all(isinstance(r, np.ndarray) for r in results):
        # one copy instead of a list of per-row views that the caller stacks again
        return np.concatenate(results, axis=0)
    return [r for chunk in results for r in chunk]


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
) -> list | np.ndarray:
    """Apply ``func`` (list -> list of the same length) to *items* chunk by chunk.

    Parameters
    ----------
    func : callable
        ``func(chunk, **kwargs)`` takes a list of items and returns a list (or an array) of
        results, one per item. Must be a module-level function (picklable, and cacheable by
        joblib).
    items : sequence
        The work.
    kwargs : dict, optional
        Keyword arguments of ``func``; they are part of the cache key.
    n_jobs : int or None
        joblib's ``n_jobs``. ``1`` runs in this process without joblib; ``None`` defers to
        the active ``joblib.parallel_config`` (sequential when there is none).
    chunk_size : int
        Items per task, and per cache entry.
    verbose : int
        ``> 0`` shows a progress bar.
    desc : str
        Label of the progress bar.
    memory : None, str, path-like or joblib.Memory
        Cache of ``func`` results per chunk, keyed on ``func``'s name and source, the skmat
        version, ``kwargs`` and :func:`chunk_digest` of the chunk: featurising the same items
        again (even new objects equal in content) loads the results instead of computing them.
        Cached chunks are loaded in this process; only the others are sent to workers.
        Entries are per chunk, so the same items cut differently (another ``chunk_size``, or
        rows inserted before them) are new entries.

    Returns
    -------
    list or ndarray
        Results in the order of *items*: the concatenation of the chunks' arrays when
        ``func`` returns arrays, else a list.

    Examples
    --------
    >>> import numpy as np
    >>> map_chunks(np.negative, [1, 2, 3], chunk_size=2)  # chunks [1, 2] and [3]
    array([-1, -2, -3])
    """
    kwargs = kwargs or {}
    items = list(items)
    if not items:
        return []
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    tasks = _tasks(func, chunks, kwargs, memory)
    if n_jobs == 1:
        results = [call(*args) for call, args, _ in progress(tasks, total=len(tasks), desc=desc, verbose=verbose)]
    else:
        results = list(progress(_run_parallel(tasks, n_jobs), total=len(tasks), desc=desc, verbose=verbose))
    return _concatenate(results)


def chunks_in_cache(
    func: Callable,
    items: Sequence[Any],
    *,
    kwargs: dict | None = None,
    chunk_size: int = 256,
    memory=None,
) -> list[bool]:
    """Whether each chunk that :func:`map_chunks` would cut from *items* is already cached.

    Same arguments as :func:`map_chunks`; nothing is computed. Useful to check that a
    ``memory`` cache will hit before a long run.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     before = chunks_in_cache(np.negative, [1, 2, 3], chunk_size=2, memory=folder)
    ...     _ = map_chunks(np.negative, [1, 2, 3], chunk_size=2, memory=folder, n_jobs=1)
    ...     after = chunks_in_cache(np.negative, [1, 2, 3], chunk_size=2, memory=folder)
    >>> before, after
    ([False, False], [True, True])
    """
    items = list(items)
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    return [is_cached for _, _, is_cached in _tasks(func, chunks, kwargs or {}, memory)]


def _tasks(func: Callable, chunks: list, kwargs: dict, memory) -> list[tuple[Callable, tuple, bool]]:
    """``(callable, args, is_cached)`` for every chunk."""
    memory = None if memory is None else check_memory(memory)
    if memory is None or getattr(memory, "location", "") is None:
        plain = functools.partial(func, **kwargs)  # picklable when func is module-level
        return [(plain, (chunk,), False) for chunk in chunks]
    cached = memory.cache(_run_chunk, ignore=["chunk"])
    version = _function_version(func)
    check = getattr(cached, "check_call_in_cache", None)
    tasks = []
    for chunk in chunks:
        args = (func, version, chunk_digest(chunk), kwargs, chunk)
        tasks.append((cached, args, bool(check is not None and check(*args))))
    return tasks


def _run_parallel(tasks: list, n_jobs: int | None) -> Iterator:
    """Results of *tasks* in order: cached ones loaded here, the others computed by joblib."""
    to_compute = [(call, args) for call, args, is_cached in tasks if not is_cached]
    computed = iter(())
    if to_compute:
        parallel = joblib.Parallel(n_jobs=n_jobs, return_as="generator")
        computed = parallel(joblib.delayed(call)(*args) for call, args in to_compute)
    for call, args, is_cached in tasks:
        yield call(*args) if is_cached else next(computed)
