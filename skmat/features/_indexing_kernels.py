"""Compiled inner loops of :mod:`skmat.features.indexing`.

The refinement of one pattern makes hundreds of assignment/least-squares rounds over a few
dozen candidate cells and scores tens of thousands of grid cells; in numpy each round was a
dozen small array operations, and the interpreter's per-call cost, not arithmetic, was most of
the time (profiled on 100 MP-20 rows: the numpy round and its nearest-line search 10 s of 41 s
in 31,000 calls). numba compiles these loops once (about 6 s, cached on disk beside this
module; loading them takes 0.2 s after that) and runs a candidate's rounds, or a start's grid
search, in one call without temporary arrays: 100 rows took 16 s instead of 41.

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
    """One assignment + weighted least-squares step for each candidate (free parameters (m,
    n_parameters), zero shifts (m,)) against the first *n_use* peaks: each peak is assigned to
    its nearest line, and the free parameters (and the zero shift, with *refine_zero*) solve
    the least-squares problem of the residuals in degrees 2θ, where the measurement error
    lives, Cauchy-weighted with the candidate's *scale* so that overlapped or wrongly assigned
    peaks pull less. Returns the new parameters, zero shifts, the residuals before the step
    (m, n_use) and their median absolute value per candidate."""
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
    absolute = np.empty(n_use)  # of the residuals, whose median sets the next Cauchy scale
    normal = np.empty((n_unknowns, n_unknowns))
    right = np.empty(n_unknowns)
    row = np.empty(n_unknowns)
    for i in range(m):
        for j in range(n_use):
            t = two_theta[j] - zero[i]
            q_obs[j] = (2 * math.sin(t * _DEGREE / 2) / wavelength) ** 2
            theta = t * _DEGREE / 2
            dq[j] = (4 / wavelength**2) * math.sin(theta) * math.cos(theta) * _DEGREE
        for k in range(n_lines):
            total = 0.0
            for p in range(n_par):
                total += parameters[i, p] * lines[k, p]
            q_line[k] = total
        _nearest_lines(q_line, q_obs, n_use, first_gap, below_q, below_k, above_q, above_k, assigned)
        normal[:] = 0.0
        right[:] = 0.0
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
def _score_cell(parameters, lines, weight, nearest, offset, inverse_step, q_least, q_most, per_peak):
    """How well the lines of one cell (free parameters *parameters*, basis rows *lines*)
    match the peaks, from the tables of ``skmat.features.indexing._score_tables`` (the
    *weight* and *nearest* peak per log-Q bin, bin 0 and the last empty); a line below
    *q_least* or above *q_most* surely falls in an empty end bin and adds nothing, so it skips
    the logarithm, most of the cost. *per_peak* is scratch."""
    n_par = parameters.shape[0]
    top = weight.shape[0] - 1
    per_peak[:] = 0.0
    for k in range(lines.shape[0]):
        q = 0.0
        for p in range(n_par):
            q += parameters[p] * lines[k, p]
        if not (q_least < q < q_most):  # or NaN
            continue
        where = (math.log(q) - offset) * inverse_step
        index = min(max(int(np.rint(where)), 0), top)
        per_peak[nearest[index]] += weight[index]
    total = 0.0
    for j in range(per_peak.shape[0]):
        total += min(per_peak[j], 1.0)
    return total


@njit(cache=True, nogil=True)
def _best_of(rows, scores, distance, n):
    """The *n* of *rows* with the highest *scores*; of equal scores the lowest *distance* (of
    every grid row), then the first (``rows[np.lexsort((distance[rows], -scores))[:n]]``).
    Ties are common: once a cell indexes every low peak, its neighbours on the grid do too,
    and grid order would favour the smallest cells."""
    near = np.argsort(distance[rows], kind="mergesort")
    order = near[np.argsort(-scores[near], kind="mergesort")]
    return rows[order[:n]]


@njit(cache=True, nogil=True)
def _cell_parameters(cell, system, out):
    """The free parameters of one conventional cell (a, b, c, alpha, beta, gamma) of a system
    (by code) into *out*: the independent terms of its reciprocal metric, the inverse of its
    direct metric by the adjugate (``skmat.features.indexing._inverse_symmetric_3x3``'s
    operations, the same numbers to the bit)."""
    a, b, c = cell[0], cell[1], cell[2]
    g00, g11, g22 = a * a, b * b, c * c
    g12 = b * c * math.cos(cell[3] * (math.pi / 180.0))
    g02 = a * c * math.cos(cell[4] * (math.pi / 180.0))
    g01 = a * b * math.cos(cell[5] * (math.pi / 180.0))
    cofactor_aa, cofactor_ab, cofactor_ac = g11 * g22 - g12 * g12, g02 * g12 - g01 * g22, g01 * g12 - g02 * g11
    determinant = g00 * cofactor_aa + g01 * cofactor_ab + g02 * cofactor_ac
    r00 = cofactor_aa / determinant
    r11 = (g00 * g22 - g02 * g02) / determinant
    r22 = (g00 * g11 - g01 * g01) / determinant
    out[0] = r00
    if system == 1 or system == 2:
        out[1] = r22
    elif system >= 3:
        out[1], out[2] = r11, r22
        if system == 4:
            out[3] = 2 * (cofactor_ac / determinant)
        elif system == 5:
            out[3] = 2 * ((g01 * g02 - g00 * g12) / determinant)
            out[4] = 2 * (cofactor_ac / determinant)
            out[5] = 2 * (cofactor_ab / determinant)


@njit(cache=True, nogil=True)
def _score_rows(cells, system, n_par, rows, lines, tables, per_peak, scores):
    """Scores (:func:`_score_cell`) of the grid cells ``cells[rows]`` into *scores*, in chunks
    of about 128 rows: a chunk scans only the lines whose least Q over its cells falls below
    the top of the table (the others, the corners of the box of Miller indices and more for a
    chunk of near cells, score nothing: dropping them leaves the scores as they were; chunks
    of 128 rather than 4,096 rows took 100 MP-20 rows from 16.7 to 15.8 s)."""
    weight, nearest, offset, inverse_step = tables
    q_cut = math.exp(offset + (weight.shape[0] - 1.5) / inverse_step) * (1 + 1e-9)
    q_least = math.exp(offset + 0.5 / inverse_step) * (1 - 1e-9)  # above: q_cut, the same bound
    n_rows = rows.shape[0]
    n_chunks = max(1, n_rows // 128)
    parameters = np.empty((min(n_rows, 2 * 128), n_par))
    low, high = np.empty(n_par), np.empty(n_par)
    keep = np.empty(lines.shape[0], dtype=np.bool_)
    for chunk in range(n_chunks):
        first, last = chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks
        low[:], high[:] = np.inf, -np.inf
        for i in range(first, last):
            _cell_parameters(cells[rows[i]], system, parameters[i - first])
            for p in range(n_par):
                low[p] = min(low[p], parameters[i - first, p])
                high[p] = max(high[p], parameters[i - first, p])
        for k in range(lines.shape[0]):
            least = 0.0
            for p in range(n_par):
                least += lines[k, p] * (low[p] if lines[k, p] > 0 else high[p])
            keep[k] = least <= q_cut
        chunk_lines = lines[keep]
        for i in range(first, last):
            scores[i] = _score_cell(parameters[i - first], chunk_lines, weight, nearest, offset, inverse_step, q_least,
                                    q_cut, per_peak)


@njit(cache=True, nogil=True)
def best_grid_rows(cells, system, n_par, position, distance, lines, fine_tables, coarse_tables, n_peaks, n_lengths,
                   coarse_to_fine, n_best, n_keep):
    """The *n_best* rows of a search grid (its conventional *cells* (m, 6) of the system by
    its code, with *n_par* free parameters, and each cell's *position* on the grid (m,
    n_axes), the lengths first) whose lines best match the peaks, ties broken by *distance*
    (``skmat.features.indexing._refine_cells``).

    With *coarse_to_fine*, every other length of the grid is scored first with the
    *coarse_tables* (twice the tolerance), and the fine grid only around the *n_keep* best of
    those (one step either way on each length); otherwise every row, with the *fine_tables*.
    Each table set is ``(weight, nearest, offset, inverse_step)``.
    """
    m, n_axes = position.shape
    per_peak = np.empty(n_peaks)
    if not coarse_to_fine:
        rows = np.arange(m)
        scores = np.empty(m)
        _score_rows(cells, system, n_par, rows, lines, fine_tables, per_peak, scores)
        return _best_of(rows, scores, distance, n_best)
    n_coarse = 0
    coarse = np.empty(m, dtype=np.int64)
    for r in range(m):
        even = True
        for axis in range(n_lengths):
            if position[r, axis] % 2 != 0:
                even = False
        if even:
            coarse[n_coarse] = r
            n_coarse += 1
    coarse = coarse[:n_coarse]
    scores = np.empty(n_coarse)
    _score_rows(cells, system, n_par, coarse, lines, coarse_tables, per_peak, scores)
    kept = _best_of(coarse, scores, distance, n_keep)
    shape = np.empty(n_axes, dtype=np.int64)
    for axis in range(n_axes):
        shape[axis] = position[:, axis].max() + 1
    # the fine grid around the kept cells: a mask over the grid's rows (C order, as np.indices)
    around = np.zeros(m, dtype=np.bool_)
    for row in kept:
        for step in range(3**n_lengths):
            flat, code = 0, step
            for axis in range(n_axes):
                value = position[row, axis]
                if axis < n_lengths:
                    value = min(max(value + code % 3 - 1, 0), shape[axis] - 1)
                    code //= 3
                flat = flat * shape[axis] + value
            around[flat] = True
    fine = np.flatnonzero(around)
    scores = np.empty(fine.shape[0])
    _score_rows(cells, system, n_par, fine, lines, fine_tables, per_peak, scores)
    return _best_of(fine, scores, distance, n_best)


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


@njit(cache=True, nogil=True)
def _is_proper(parameters, system):
    """Whether free parameters (by system code) are those of a real, not nearly flat, cell:
    finite, a positive definite reciprocal metric, and no direction 10^4 times shorter than
    another. A diagonal metric's eigenvalues are its parameters (no LAPACK call)."""
    n_par = parameters.shape[0]
    for p in range(n_par):
        if not math.isfinite(parameters[p]):
            return False
    if system == 0 or system == 1 or system == 3:  # a diagonal metric: its parameters
        least, most = parameters.min(), parameters.max()
    else:
        metric = np.zeros((3, 3))
        metric[0, 0] = parameters[0]
        if system == 2:
            metric[1, 1] = parameters[0]
            metric[0, 1] = metric[1, 0] = parameters[0] / 2
            metric[2, 2] = parameters[1]
        else:
            metric[1, 1], metric[2, 2] = parameters[1], parameters[2]
            if system == 4:
                metric[0, 2] = metric[2, 0] = parameters[3] / 2
            else:
                metric[1, 2] = metric[2, 1] = parameters[3] / 2
                metric[0, 2] = metric[2, 0] = parameters[4] / 2
                metric[0, 1] = metric[1, 0] = parameters[5] / 2
        eigenvalues = np.linalg.eigvalsh(metric)
        least, most = eigenvalues[0], eigenvalues[2]
    return least > 0 and least > 1e-8 * most


@njit(cache=True, nogil=True)
def refine_candidates(parameters, system, lines, peaks, wavelength, n_start, refine_zero, tolerance, max_iter):
    """``skmat.features.indexing._refine_candidates``: each candidate (row of *parameters*)
    refined by assignment/least-squares rounds (:func:`solve_step`) over more and more peaks,
    until its assignment is stable (its residuals to the 0.001 degree the same twice running
    with every peak in use); a step to an improper cell is not taken. The candidates do not
    interact, so each runs its own rounds. Returns the parameters and zero shifts."""
    m, n_par = parameters.shape
    n_peaks = peaks.shape[0]
    out = parameters.copy()
    zero = np.zeros(m)
    for i in range(m):
        current = out[i:i + 1].copy()
        current_zero = np.zeros(1)
        scale = np.full(1, 4 * tolerance)
        n_use = n_start
        previous = np.empty(0)
        for _ in range(max_iter):
            stepped, stepped_zero, residual, typical = solve_step(current, current_zero, lines, peaks, wavelength,
                                                                  n_use, refine_zero, scale)
            if _is_proper(stepped[0], system):
                current, current_zero = stepped, stepped_zero
            # np.round(|residual|, 3) compared as whole thousandths
            state = np.rint(np.abs(residual[0]) * 1000.0)
            # the Cauchy scale follows the typical residual down, so that merged (overlapped)
            # peaks and wrong assignments lose their pull once the cell is close
            scale[0] = min(max(3 * typical[0], 0.2 * tolerance), 4 * tolerance)
            if n_use == n_peaks and previous.shape[0] == state.shape[0]:
                if np.all(previous == state):
                    break
            previous = state
            n_use = min(n_peaks, int(math.ceil(n_use * 1.5)))
        out[i] = current[0]
        zero[i] = current_zero[0]
    return out, zero


@njit(cache=True, nogil=True)
def cell_parameters(cells, system, n_par):
    """The free parameters (m, *n_par*) of conventional cells (m, 6) by system code
    (:func:`_cell_parameters` of each)."""
    out = np.empty((cells.shape[0], n_par))
    for i in range(cells.shape[0]):
        _cell_parameters(cells[i], system, out[i])
    return out


@njit(cache=True, nogil=True)
def proper_cells(parameters, system):
    """:func:`_is_proper` of each row of *parameters* (m, n_parameters), by system code."""
    proper = np.empty(parameters.shape[0], dtype=np.bool_)
    for i in range(parameters.shape[0]):
        proper[i] = _is_proper(parameters[i], system)
    return proper
