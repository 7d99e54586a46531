"""Compiled inner loops of :mod:`skmat.features.indexing`.

The refinement of one pattern makes hundreds of assignment/least-squares rounds over a few
dozen candidate cells and scores tens of thousands of grid cells; in numpy each round was a
dozen small array operations, and the interpreter's per-call cost, not arithmetic, was most of
the time (profiled on 100 MP-20 rows: ``_solve`` and its nearest-line search 10 s of 41 s,
31,000 calls). numba compiles these loops once (cached on disk beside this module) and runs
a candidate's whole round in one call, without temporary arrays.

numba is imported here only, and this module only when a refinement first runs, so that
``import skmat`` and the commands that never refine do not pay for it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_DEGREE = math.pi / 180


@njit(cache=True, nogil=True)
def solve_step(parameters, zero, lines, two_theta, wavelength, n_use, refine_zero, scale):
    """One assignment + weighted least-squares step for each candidate (see
    ``skmat.features.indexing._solve``): the new parameters, zero shifts, the residuals
    (degrees 2θ) before the step (m, n_use) and their median absolute value per candidate."""
    m, n_par = parameters.shape
    n_lines = lines.shape[0]
    n_unknowns = n_par + 1 if refine_zero else n_par
    new_parameters = np.empty_like(parameters)
    new_zero = zero.copy()
    residual = np.empty((m, n_use))
    typical = np.empty(m)
    q_obs = np.empty(n_use)
    below_q, above_q = np.empty(n_use + 1), np.empty(n_use + 1)
    below_k, above_k = np.empty(n_use + 1, dtype=np.int64), np.empty(n_use + 1, dtype=np.int64)
    dq = np.empty(n_use)
    first_gap = np.empty(4 * n_use, dtype=np.int64)
    q_line = np.empty(n_lines)
    assigned = np.empty(n_use, dtype=np.int64)
    normal = np.empty((n_unknowns, n_unknowns))
    right = np.empty(n_unknowns)
    row = np.empty(n_unknowns)
    for i in range(m):
        for j in range(n_use):
            t = two_theta[j] - zero[i]
            q_obs[j] = (2 * math.sin(t * _DEGREE / 2) / wavelength) ** 2
            theta = t * _DEGREE / 2
            dq[j] = (4 / wavelength**2) * math.sin(theta) * math.cos(theta) * _DEGREE
        # the nearest line to each peak (of two equally near, the lower), without sorting the
        # lines: each line falls between two peaks (the peaks are in ascending order), and a
        # peak's nearest line is the highest line below it or the lowest at or above it
        for k in range(n_lines):
            total = 0.0
            for p in range(n_par):
                total += parameters[i, p] * lines[k, p]
            q_line[k] = total
        _nearest_lines(q_line, q_obs, n_use, first_gap, below_q, below_k, above_q, above_k, assigned)
        normal[:] = 0.0
        right[:] = 0.0
        absolute = np.empty(n_use)  # of the residuals, whose median sets the next Cauchy scale
        for j in range(n_use):
            q_model = 0.0
            for p in range(n_par):
                q_model += lines[assigned[j], p] * parameters[i, p]
            r = (q_obs[j] - q_model) / dq[j]
            residual[i, j] = r
            absolute[j] = abs(r)
            # Cauchy weights: peaks that are overlapped or wrongly assigned pull less
            root_weight = math.sqrt(1.0 / (1.0 + (r / scale[i]) ** 2))
            for p in range(n_par):
                row[p] = lines[assigned[j], p] / dq[j] * root_weight
            if refine_zero:
                # Q_obs(zero + dz) ~ Q_obs(zero) - dq dz: unknowns (parameters, dz)
                row[n_par] = root_weight
            rhs = q_obs[j] / dq[j] * root_weight
            for p in range(n_unknowns):
                right[p] += row[p] * rhs
                for s in range(n_unknowns):
                    normal[p, s] += row[p] * row[s]
        trace = 0.0
        for p in range(n_unknowns):
            trace += normal[p, p]
        for p in range(n_unknowns):
            normal[p, p] += 1e-10 * trace
        solution = _solve_small(normal, right)
        for p in range(n_par):
            new_parameters[i, p] = solution[p]
        if refine_zero:
            new_zero[i] = zero[i] + solution[n_par]
        typical[i] = np.median(absolute)
    return new_parameters, new_zero, residual, typical


@njit(cache=True, nogil=True)
def score_matches(parameters, lines, weight, nearest, offset, inverse_step, n_peaks):
    """How well the lines of each cell (free parameters *parameters* (m, n_parameters), basis
    rows *lines*) match the peaks, from the tables (``skmat.features.indexing._score_tables``: the
    *weight* and *nearest* peak per Q bin, bin 0 and the last empty), without forming the
    (m, n_lines) arrays."""
    m, n_par = parameters.shape
    n_lines = lines.shape[0]
    top = weight.shape[0] - 1
    scores = np.empty(m)
    per_peak = np.empty(n_peaks)
    for i in range(m):
        per_peak[:] = 0.0
        for k in range(n_lines):
            q = 0.0
            for p in range(n_par):
                q += parameters[i, p] * lines[k, p]
            where = (q - offset) * inverse_step
            if not (0.0 < where < top - 0.5):  # outside the table (the empty end bins), or NaN
                continue
            index = int(where + 0.5)
            per_peak[nearest[index]] += weight[index]
        total = 0.0
        for j in range(n_peaks):
            total += min(per_peak[j], 1.0)
        scores[i] = total
    return scores


@njit(cache=True, nogil=True)
def _solve_small(matrix, right):
    """Solution of a small linear system (at most 7 unknowns) by Gaussian elimination with
    partial pivoting, in place: LAPACK through ``np.linalg.solve`` cost a few microseconds a
    call in copies and checks, for a 7x7 system solved ~300 times a pattern (measured)."""
    n = right.shape[0]
    a = matrix.copy()
    b = right.copy()
    for column in range(n):
        pivot = column
        for row in range(column + 1, n):
            if abs(a[row, column]) > abs(a[pivot, column]):
                pivot = row
        if pivot != column:
            for k in range(n):
                a[column, k], a[pivot, k] = a[pivot, k], a[column, k]
            b[column], b[pivot] = b[pivot], b[column]
        for row in range(column + 1, n):
            factor = a[row, column] / a[column, column]
            for k in range(column, n):
                a[row, k] -= factor * a[column, k]
            b[row] -= factor * b[column]
    solution = np.empty(n)
    for row in range(n - 1, -1, -1):
        total = b[row]
        for k in range(row + 1, n):
            total -= a[row, k] * solution[k]
        solution[row] = total / a[row, row]
    return solution


@njit(cache=True, nogil=True)
def _is_allowed(h, k, l, centring):  # noqa: E741 (Miller index)
    """``skmat.features.indexing._allowed`` of one reflection (centring by its code)."""
    if centring == 0:
        return True
    if centring == 1:
        return (h + k) % 2 == 0
    if centring == 2:
        return (k + l) % 2 == 0
    if centring == 3:
        return (h + l) % 2 == 0
    if centring == 4:
        return (h + k + l) % 2 == 0
    if centring == 5:
        return (h + k) % 2 == 0 and (k + l) % 2 == 0
    return (-h + k + l) % 3 == 0


@njit(cache=True, nogil=True)
def distinct_lines(system, centring, h_max, k_max, l_max):
    """The distinct basis rows (float, lexicographic order) of the allowed reflections of one
    Friedel half of the box |h| <= h_max, |k| <= k_max, |l| <= l_max, by system and centring
    code (``skmat.features.indexing._SYSTEM_CODES``, ``_CENTRING_CODES``); and False instead
    of True when a sort key would overflow, the rows then being unsorted and repeated."""
    n_par = 1 if system == 0 else 2 if system <= 2 else 3 if system == 3 else 4 if system == 4 else 6
    basis = np.empty(((h_max + 1) * (2 * k_max + 1) * (2 * l_max + 1), n_par), dtype=np.int64)
    n = 0
    for h in range(h_max + 1):
        for k in range(-k_max, k_max + 1):
            for l in range(-l_max, l_max + 1):  # noqa: E741 (Miller index)
                first = h if h != 0 else k if k != 0 else l
                if first <= 0 or not _is_allowed(h, k, l, centring):
                    continue
                if system == 0:
                    basis[n, 0] = h * h + k * k + l * l
                elif system == 1:
                    basis[n, 0], basis[n, 1] = h * h + k * k, l * l
                elif system == 2:
                    basis[n, 0], basis[n, 1] = h * h + h * k + k * k, l * l
                else:
                    basis[n, 0], basis[n, 1], basis[n, 2] = h * h, k * k, l * l
                    if system == 4:
                        basis[n, 3] = h * l
                    elif system == 5:
                        basis[n, 3], basis[n, 4], basis[n, 5] = k * l, h * l, h * k
                n += 1
    basis = basis[:n]
    if n == 0:
        return basis.astype(np.float64), True
    # one integer key per row, the first column most significant: its order is lexicographic
    low = np.empty(n_par, dtype=np.int64)
    radix = np.empty(n_par, dtype=np.int64)
    bits = 0.0
    for p in range(n_par):
        low[p] = basis[:, p].min()
        radix[p] = basis[:, p].max() - low[p] + 1
        bits += math.log2(radix[p])
    if bits > 62:
        return basis.astype(np.float64), False
    key = np.zeros(n, dtype=np.int64)
    for p in range(n_par):
        key = key * radix[p] + (basis[:, p] - low[p])
    order = np.argsort(key)
    lines = np.empty((n, n_par), dtype=np.float64)
    n_distinct = 0
    for i in range(n):
        if i > 0 and key[order[i]] == key[order[i - 1]]:
            continue
        lines[n_distinct] = basis[order[i]]
        n_distinct += 1
    return lines[:n_distinct].copy(), True


@njit(cache=True, nogil=True)
def _nearest_lines(q_line, q_obs, n_use, first_gap, below_q, below_k, above_q, above_k, assigned):
    """The index of the line (of Q values *q_line*) nearest each of the first *n_use* peaks
    *q_obs* (ascending), into *assigned*; of two equally near, the lower; the other arrays are
    scratch space (4 n_use, and n_use + 1 for the rest).

    Without sorting the lines: each line falls between two peaks, and a peak's nearest line is
    the highest line below it or the lowest at or above it. A line's place among the peaks
    starts from a table of bins of equal width in Q (the count of peaks below each bin's start).
    """
    n_bins = first_gap.shape[0]
    q_top = q_obs[n_use - 1]
    inverse_width = n_bins / q_top
    gap = 0
    for b in range(n_bins):
        while gap < n_use and q_obs[gap] < b / inverse_width:
            gap += 1
        first_gap[b] = gap
    below_q[:n_use + 1] = -np.inf
    below_k[:n_use + 1] = -1
    above_q[:n_use + 1] = np.inf
    above_k[:n_use + 1] = -1
    for k in range(q_line.shape[0]):
        q = q_line[k]
        if not math.isfinite(q):
            continue
        if q >= q_top:
            gap = n_use
        else:
            gap = first_gap[min(int(q * inverse_width), n_bins - 1)] if q > 0 else 0
        while gap < n_use and q_obs[gap] <= q:  # gap: the peaks at or below q
            gap += 1
        if q >= below_q[gap]:  # of equal lines, the last (as a stable sort would order them)
            below_q[gap], below_k[gap] = q, k
        if q < above_q[gap]:  # of equal lines, the first
            above_q[gap], above_k[gap] = q, k
    # highest line below peak j: the best of the gaps 0..j; lowest at or above it: of gaps j+1..
    for gap in range(1, n_use + 1):
        if below_k[gap - 1] >= 0 and (below_k[gap] < 0 or below_q[gap - 1] > below_q[gap]):
            below_q[gap], below_k[gap] = below_q[gap - 1], below_k[gap - 1]
    for gap in range(n_use - 1, -1, -1):
        if above_k[gap + 1] >= 0 and (above_k[gap] < 0 or above_q[gap + 1] <= above_q[gap]):
            above_q[gap], above_k[gap] = above_q[gap + 1], above_k[gap + 1]
    for j in range(n_use):
        lower, upper = below_k[j], above_k[j + 1]
        if lower < 0:
            lower = upper
        if upper < 0:
            upper = lower
        if upper >= 0 and abs(above_q[j + 1] - q_obs[j]) < abs(below_q[j] - q_obs[j]):
            assigned[j] = upper
        else:
            assigned[j] = max(lower, 0)


@njit(cache=True, nogil=True)
def matched_peaks(parameters, lines, q_obs, tolerance):
    """How many of the peaks *q_obs* (ascending) lie within *tolerance* (relative Q) of their
    nearest line, for each cell (free parameters *parameters* (m, n_parameters), basis rows
    *lines*)."""
    m, n_par = parameters.shape
    n_peaks = q_obs.shape[0]
    counts = np.zeros(m, dtype=np.int64)
    q_line = np.empty(lines.shape[0])
    first_gap = np.empty(4 * n_peaks, dtype=np.int64)
    below_q, above_q = np.empty(n_peaks + 1), np.empty(n_peaks + 1)
    below_k, above_k = np.empty(n_peaks + 1, dtype=np.int64), np.empty(n_peaks + 1, dtype=np.int64)
    assigned = np.empty(n_peaks, dtype=np.int64)
    for i in range(m):
        for k in range(lines.shape[0]):
            total = 0.0
            for p in range(n_par):
                total += parameters[i, p] * lines[k, p]
            q_line[k] = total
        _nearest_lines(q_line, q_obs, n_peaks, first_gap, below_q, below_k, above_q, above_k, assigned)
        for j in range(n_peaks):
            if abs(math.log(q_line[assigned[j]] / q_obs[j])) <= tolerance:
                counts[i] += 1
    return counts


@njit(cache=True, nogil=True)
def evaluate_cell(parameters, zero, lines, peaks, wavelength, tolerance):
    """``skmat.features.indexing._evaluate`` of one cell (free parameters (n_parameters,)) with
    at least one line: (fraction indexed, misfit, de Wolff M)."""
    n_lines, n_par = lines.shape
    q_calc = np.empty(n_lines)
    for k in range(n_lines):
        total = 0.0
        for p in range(n_par):
            total += parameters[p] * lines[k, p]
        q_calc[k] = total
    q_calc.sort()
    n_distinct = 0
    for k in range(n_lines):  # distinct values (np.unique)
        if k == 0 or q_calc[k] != q_calc[n_distinct - 1]:
            q_calc[n_distinct] = q_calc[k]
            n_distinct += 1
    distinct = q_calc[:n_distinct]
    n_indexed, sum_delta, sum_q_error, q_last = 0, 0.0, 0.0, 0.0
    for j in range(peaks.shape[0]):
        t = peaks[j] - zero
        q_obs = (2 * math.sin(t * _DEGREE / 2) / wavelength) ** 2
        q_last = q_obs
        position = 0
        if n_distinct > 1:
            position = min(max(np.searchsorted(distinct, q_obs), 1), n_distinct - 1)
        lower, upper = distinct[max(position - 1, 0)], distinct[position]
        delta_lower = abs(_two_theta(lower, wavelength) - t)
        delta_upper = abs(_two_theta(upper, wavelength) - t)
        delta, chosen = (delta_lower, lower) if delta_lower <= delta_upper else (delta_upper, upper)
        if delta <= tolerance:
            n_indexed += 1
            sum_delta += delta
            sum_q_error += abs(chosen - q_obs)
    if n_indexed == 0:
        return 0.0, np.inf, 0.0
    n_calc = 0
    for k in range(n_distinct):
        if distinct[k] <= q_last * (1 + 1e-9):
            n_calc += 1
    q_error = sum_q_error / n_indexed
    merit = q_last / (2 * max(q_error, 1e-12) * max(n_calc, 1))
    return n_indexed / peaks.shape[0], sum_delta / n_indexed, merit


@njit(cache=True, nogil=True)
def _two_theta(q, wavelength):
    return math.degrees(2 * math.asin(min(max(wavelength * math.sqrt(max(q, 0.0)) / 2, 0.0), 1.0)))
