"""Reading a measured-pattern set keeps memory proportional to the data.

Regression test: the benchmark's reader indexed the ``NpzFile`` inside its loop over patterns, so
each pattern decompressed the whole array again and kept it alive through its slice; a 658-pattern
set reached 22.6 GB. Here a set of 750 patterns is written in the ``rruff_xrd`` layout from the
real RRUFF patterns (each one three times, so nothing is invented) and read back while
:mod:`tracemalloc` (which sees numpy's buffers) records the peak.
"""

from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from skmat.datasets._rruff import read_pattern_set
from skmat.exceptions import InvalidInputError


@pytest.fixture(scope="module")
def large_set(data_home, tmp_path_factory):
    folder = tmp_path_factory.mktemp("measured_750")
    with np.load(data_home / "rruff_xrd" / "patterns.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    meta = pd.read_csv(data_home / "rruff_xrd" / "meta.csv")
    offsets = arrays["offsets"]
    lengths = np.diff(offsets)
    repeats = 3
    ids = np.concatenate([[f"{i}_copy{k}" for i in arrays["ids"].astype(str)] for k in range(repeats)])
    np.savez_compressed(
        folder / "patterns.npz",
        two_theta=np.tile(arrays["two_theta"], repeats),
        intensity=np.tile(arrays["intensity"], repeats),
        offsets=np.r_[0, np.cumsum(np.tile(lengths, repeats))],
        wavelength=np.tile(arrays["wavelength"], repeats),
        ids=ids,
    )
    pd.concat([meta] * repeats, ignore_index=True).assign(id=ids).to_csv(folder / "meta.csv", index=False)
    data_bytes = repeats * (arrays["two_theta"].nbytes + arrays["intensity"].nbytes)
    return folder, repeats * len(lengths), data_bytes


def test_peak_memory_is_proportional_to_the_data(large_set):
    folder, n_patterns, data_bytes = large_set
    tracemalloc.start()
    try:
        frame = read_pattern_set(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frame) == n_patterns == 750
    # the arrays once, their per-pattern copies once, and decompression buffers: a few times the
    # data (the per-pattern reads of the old code needed ~750 times)
    assert peak < 4 * data_bytes, (peak / 1e6, data_bytes / 1e6)


def test_patterns_are_independent_copies(large_set):
    folder, _, _ = large_set
    frame = read_pattern_set(folder)
    first, second = frame["intensity"].iloc[0], frame["intensity"].iloc[1]
    assert first.base is None or first.base is not second.base
    before = second.copy()
    first[:] = -1.0
    np.testing.assert_array_equal(frame["intensity"].iloc[1], before)


def test_mismatched_ids_are_refused(large_set, tmp_path):
    folder, _, _ = large_set
    shutil.copy(folder / "patterns.npz", tmp_path / "patterns.npz")
    meta = pd.read_csv(folder / "meta.csv")
    meta.iloc[:-1].to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(InvalidInputError, match="different pattern ids"):
        read_pattern_set(tmp_path)
