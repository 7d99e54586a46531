"""Refining the lattice of one row, for :class:`skmat.supervised.LatticeRefiner`.

:class:`RowRefinement` holds what the refinement of a row needs and nothing else (not the
predictors), so that ``LatticeRefiner(n_jobs=...)`` sends it to worker processes cheaply. It
lays the starting cells out from the predictor's scaled lattice and the composition, refines
each against the peaks (:func:`skmat.features.indexing.refine_cell`) and scales the best
Niggli cell by its number of atoms.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from itertools import product

import numpy as np

from skmat.exceptions import InvalidInputError
from skmat.features.indexing import (
    _MULTIPLICITY,
    _N_PARAMETERS,
    _TO_PRIMITIVE,
    CENTRINGS,
    CRYSTAL_SYSTEMS,
    _cell_volume,
    _direct_metric,
    _refine_cells,
    _trial_cells,
    atoms_in_cell,
    primitive_niggli,
    volume_per_atom,
)

#: Conventional cells per formula unit searched by LatticeRefiner's start (see its Notes).
_FORMULA_MULTIPLES = (1, 2, 4)

#: Steps up the chain of crystal-system lattices (trigonal and hexagonal share a rank: a
#: primitive trigonal lattice is hexagonal).
_SYMMETRY_RANK = {
    "triclinic": 0, "monoclinic": 1, "orthorhombic": 2, "tetragonal": 3, "trigonal": 4, "hexagonal": 4, "cubic": 5,
}

#: Largest |log(cell volume / (N x volume per atom))| of a plausible refined cell.
_VOLUME_SLACK = 0.2

#: de Wolff's M beyond which a refinement counts as no better (see ``RowRefinement.__call__``):
#: a right cell of a clean pattern scores hundreds to thousands, and bounding the term lets a
#: system's refinement be skipped once it cannot win.
_MERIT_CAP = 100.0

#: Relative search range of a system refined again from another system's refined lattice (see
#: ``RowRefinement.__call__``): that lattice is the crystal's, not a network's guess.
_RESEED_SEARCH_RANGE = 0.04

#: Largest |log| ratio of an ab initio cell's scaled lengths to the predictor's (sorted).
_AB_INITIO_REACH = 0.5

#: Axes of a conventional cell halved together when looking for a smaller cell that indexes
#: the same peaks (the axes a system's symmetry ties together move together).
_HALVED_AXES = {
    "cubic": ((0, 1, 2),),
    "tetragonal": ((0, 1), (2,)),
    "hexagonal": ((0, 1), (2,)),
    "trigonal": ((0, 1), (2,)),
}


@dataclass(frozen=True)
class RowRefinement:
    """The settings of :class:`~skmat.supervised.LatticeRefiner` that refining a row reads
    (see its parameters), with its fitted element volumes."""

    element_volumes: dict
    refine_zero_shift: bool | None
    min_peaks_per_parameter: float
    search_range: float
    fallback_search_range: float | None
    atoms_from: str
    converged_weight: float = -2.0
    symmetry_weight: float = 2.0
    merit_weight: float = 1.5
    ab_initio: bool = True
    # not a LatticeRefiner parameter: the switch its measurement (RowRefinement.__call__) was made with
    reseed: bool = True

    def __call__(
        self, peaks, candidates: list[tuple[str, float]], scaled: np.ndarray, composition
    ) -> tuple[np.ndarray | None, str, str | None]:
        """Refine under the candidate crystal systems (``(system, log probability)`` pairs) and
        choose one: ``(scaled lattice, system, None)``, or ``(None, "", reason)`` with the most
        probable system's reason when none refines (the prediction being kept).

        A system scores its log probability, plus, where its refinement converges,
        ``converged_weight + symmetry_weight * rank + merit_weight * log(min(M, _MERIT_CAP))``:
        rank counts the steps up the chain triclinic, monoclinic, orthorhombic, tetragonal,
        trigonal or hexagonal, cubic (a lower-symmetry cell family holds the higher ones'
        cells, so that it converges too says less), and M is de Wolff's figure of merit of the
        chosen cell (a wrong cell that converges indexes the peaks worse, and a lower-symmetry
        cell's many lines lower its M: the crystallographer's criterion). A system wins only
        by scoring above the most probable one's log probability, so a refinement that indexes
        the peaks too poorly keeps the predictor's lattice. Systems are refined best bound
        first, and only while their bound can still win; one that did not converge from the
        predictor's lattice is refined again from the chosen system's (*reseed*), where its bound
        can still win. A measured row (*peaks*' third item)
        considers its most probable system only, and a single candidate is refined wherever it
        converges: there is nothing to weigh it against.
        """
        def evidence(system, merit):
            """What a converged refinement under *system* with figure of merit *merit* adds."""
            return (self.converged_weight + self.symmetry_weight * _SYMMETRY_RANK.get(system, 0)
                    + self.merit_weight * np.log(min(max(merit, 1.0), _MERIT_CAP)))

        def bound(candidate):
            return candidate[1] + evidence(candidate[0], _MERIT_CAP)

        most_probable, floor = max(candidates, key=lambda candidate: candidate[1])
        if not isinstance(peaks, str) and peaks[2]:
            # a measured row's short peak list is indexed by wrong higher-symmetry cells too: on
            # 300 augmented held-out MP-20 patterns the weighing cost 5 right systems of 220
            candidates = [(most_probable, floor)]
        if len(candidates) == 1:  # nothing to weigh
            result = self.refine(peaks, most_probable, scaled, composition)
            return (None, "", result) if isinstance(result, str) else (result, most_probable, None)
        # a system that does not converge scores its log probability alone, so none can beat
        # the most probable one's (the floor)
        best, best_score, reasons = None, floor, {}

        def can_win(score):
            # the floor itself suffices while nothing is chosen (zero weights refine the most
            # probable system); after that, only a higher score
            return score > best_score or (best is None and score == best_score)

        failed = []
        for candidate in sorted(candidates, key=bound, reverse=True):
            if not can_win(bound(candidate)):
                break
            system, log_p = candidate
            result = self.refine_entry(peaks, system, scaled, composition)
            if isinstance(result, str):
                reasons[system] = result
                failed.append(candidate)
                continue
            merit = result[0].figure_of_merit
            score = log_p + evidence(system, merit)
            if can_win(score):
                best, best_score = (result[1], system), score
            elif best is None:
                # the predictor's lattice beats a cell that indexes the peaks this poorly: over
                # 600 held-out rows of two seeds, keeping these ~10 rows a seed took 0.0927 ->
                # 0.0922 A and 0.1062 -> 0.1040 A
                reasons[system] = f"the refined cell's figure of merit (M = {merit:.1f}) is too low to count"
        if best is not None and self.reseed and failed:
            # the chosen system's refined lattice is the crystal's, where the predictor's may be
            # too far off for a higher-symmetry system to converge (a C-centred orthorhombic
            # crystal the classifier names right, refined only as monoclinic). Over the 1,809
            # held-out MP-20 rows of the shipped classifier: 88.4 -> 89.1 % right systems for
            # 0.03 s a row (the full search_range and its fallback: 89.2 % for 0.16 s)
            narrow = dataclasses.replace(self, search_range=_RESEED_SEARCH_RANGE, fallback_search_range=None,
                                         ab_initio=False)
            for system, log_p in failed:  # in bound order: once one cannot win, none can
                if not can_win(bound((system, log_p))):
                    break
                result = narrow.refine_entry(peaks, system, best[0], composition)
                if isinstance(result, str):
                    continue
                score = log_p + evidence(system, result[0].figure_of_merit)
                if can_win(score):
                    best, best_score = (result[1], system), score
        if best is not None:
            return best[0], best[1], None
        reason = reasons.get(most_probable) or next(iter(reasons.values()), "the refinement did not converge")
        return None, "", reason

    def formula_volume(self, composition) -> float | None:
        """Volume (Å³) of the reduced formula from the element volumes; None if one is unknown."""
        try:
            per_atom = volume_per_atom(composition, self.element_volumes)
        except InvalidInputError:
            return None
        return per_atom * composition.element_composition.get_reduced_composition_and_factor()[0].num_atoms

    def starts(self, system: str, scaled: np.ndarray, composition) -> list[tuple[np.ndarray, str]]:
        """Starting conventional cells with their centrings (see LatticeRefiner's Notes), or []
        when the formula's volume is unknown."""
        formula_volume = self.formula_volume(composition)
        if formula_volume is None:
            return []
        target = np.log(np.sort(np.clip(np.asarray(scaled, dtype=float), 1e-3, None)))
        starts = []
        for centring in CENTRINGS[system]:
            shape = _best_shape(system, centring, target)
            volume = _cell_volume(shape)
            for multiple in _FORMULA_MULTIPLES:
                cell = shape.copy()
                cell[:3] *= (_MULTIPLICITY[centring] * multiple * formula_volume / volume) ** (1 / 3)
                starts.append((cell, centring))
        return starts

    def refine(self, peaks, system: str, scaled: np.ndarray, composition) -> np.ndarray | str:
        """The refined scaled lattice of one row, or the reason it keeps the predictor's."""
        result = self.refine_entry(peaks, system, scaled, composition)
        return result if isinstance(result, str) else result[1]

    def refine_entry(self, peaks, system: str, scaled: np.ndarray, composition) -> tuple | str:
        """``(fit, scaled lattice, volume misfit)`` of the cell chosen for one row under
        *system*, or the reason it keeps the predictor's."""
        if isinstance(peaks, str):
            return peaks
        positions, wavelength, measured = peaks
        if system not in CRYSTAL_SYSTEMS:
            return f"unknown crystal system {system!r}"
        zero = measured if self.refine_zero_shift is None else bool(self.refine_zero_shift)
        n_parameters = _N_PARAMETERS[system] + int(zero)
        if measured and len(positions) < self.min_peaks_per_parameter * n_parameters:
            return (f"a measured pattern with too few peaks for its cell (fewer than {self.min_peaks_per_parameter:g} "
                    f"per refined parameter)")
        starts = self.starts(system, scaled, composition)
        if not starts:
            return "an element of the composition has no known volume per atom"
        search = [start for start, _ in starts], [(centring,) for _, centring in starts]
        converged, reason = self.converged_fits(positions, system, *search, wavelength, zero, self.search_range)
        if not measured and self.ab_initio:
            # cells from the peaks alone compete with the starts' on the same terms: a start
            # refined from the predictor's wrong shape also indexes a clean pattern's few peaks,
            # with a lower figure of merit than the true cell (300 held-out rows, two seeds, cubic
            # to orthorhombic trials: 0.140 -> 0.127 A against trials only where no start refined)
            trials = self.ab_initio_fits(positions, system, wavelength, zero, scaled, composition)
        else:
            trials = []
        # the wider search only where neither the starts nor the cells from the peaks alone
        # converged: over the 1,809 held-out MP-20 rows of the shipped classifier, 136 -> 108 ms
        # a row (one process) for 1,613 -> 1,612 right systems and 0.1096 -> 0.1097 A against the
        # wider search wherever the starts alone did not converge. Not for measured rows: their
        # short peak lists let a wider search find wrong cells. Nor for triclinic cells, whose six
        # free parameters let it index the peaks with wrong cells: refining the 81 triclinic
        # rows of those 1,809 as triclinic alone, it refined 35 rows instead of 27 and took the
        # lattice MAE from 0.270 to 0.276 A, in 4x the time; with the classifier's 3 systems it
        # changed no row and cost 14 % of the time (108 -> 93 ms a row)
        if (not measured and not converged and not trials and system != "triclinic"
                and self.fallback_search_range is not None and self.fallback_search_range > self.search_range):
            converged, reason = self.converged_fits(positions, system, *search, wavelength, zero,
                                                    self.fallback_search_range, reason)
        converged = converged + trials
        if not converged:
            return reason
        most = max(fit.fraction_indexed for fit in converged)
        lattices = []  # (fit, scaled lattice, volume misfit) of the fits that index the most peaks
        for fit in converged:
            if fit.fraction_indexed < most - 1e-9:
                continue
            lattice = self.scaled_lattice(fit, composition, scaled)
            if isinstance(lattice, str):
                reason = lattice
                continue
            lattices.append((fit, *lattice))
        if not lattices:
            return reason
        # a cell that holds no whole number of formula units at the composition's volume per
        # atom is a sub- or super-cell that happens to index the peaks (a short peak list
        # is indexed by many): such cells go last
        plausible = [entry for entry in lattices if entry[2] <= _VOLUME_SLACK] or lattices
        # then the de Wolff figure of merit, not nearness to the predictor's lattice: that choice
        # fixed two cubic rows of 60 and broke five (held-out MP-20, seed 0)
        best = max(plausible, key=lambda entry: entry[0].figure_of_merit)
        return self.smallest_cell(best, positions, system, wavelength, zero, composition, scaled)

    def converged_fits(self, positions, system: str, cells: list, centrings: list, wavelength: float, zero: bool,
                       search_range: float, reason: str = "the refinement did not converge") -> tuple[list, str]:
        """The converged refinements of the starting *cells* searched over *search_range*, and
        the reason of the last that failed (*reason* if none did)."""
        try:
            fits = _refine_cells(positions, system, cells, centrings, wavelength=wavelength, refine_zero_shift=zero,
                                 search_range=search_range)
        except InvalidInputError as exc:  # the peaks, for every start
            return [], exc.reason
        converged = []
        for fit in fits:
            if isinstance(fit, InvalidInputError):
                reason = fit.reason
            elif fit.converged:
                converged.append(fit)
        return converged, reason

    def smallest_cell(self, entry: tuple, positions, system: str, wavelength: float, zero: bool, composition,
                      scaled: np.ndarray) -> tuple:
        """The chosen ``(fit, scaled lattice, volume misfit)``, or the smallest cell with an axis
        (or axes tied by symmetry) halved, refined, that indexes as many peaks at a plausible
        volume. A cell with a doubled axis indexes every peak its sub-cell does, and the formula
        allows twice the atoms, so neither the count of peaks nor the volume tells them apart:
        indexing takes the smallest cell the lines allow (e.g. CrB, Cmcm, whose c doubled
        indexed all 16 peaks with a higher figure of merit than any other start's cell)."""
        while True:
            fit = entry[0]
            halved = []
            for axes in _HALVED_AXES.get(system, ((0,), (1,), (2,))):
                cell = np.array(fit.cell, dtype=float)
                cell[list(axes)] /= 2
                halved.append(cell)
            # refined together (one batch), taken in order: the first that qualifies wins
            for smaller in self.plausible_refits(positions, system, halved, (fit.centring,), wavelength, zero,
                                                 composition, scaled):
                if smaller is None or smaller[0].fraction_indexed < fit.fraction_indexed - 1e-9:
                    continue
                # a refinement that grew back to the cell it started from would loop for ever
                if _cell_volume(smaller[0].cell) > 0.75 * _cell_volume(fit.cell):
                    continue
                entry = smaller
                break
            else:
                return entry

    def plausible_refits(self, positions, system: str, cells: list, centrings: tuple[str, ...], wavelength: float,
                         zero: bool, composition, scaled: np.ndarray) -> list[tuple | None]:
        """For each of *cells*: ``(fit, scaled lattice, volume misfit)`` of the cell refined in
        place (no search), or None where it does not converge or its volume holds no whole number
        of formula units (``_VOLUME_SLACK``)."""
        if not cells:
            return []
        try:
            fits = _refine_cells(positions, system, cells, [centrings] * len(cells), wavelength=wavelength,
                                 refine_zero_shift=zero, search_range=0)
        except InvalidInputError:
            return [None] * len(cells)
        out = []
        for fit in fits:
            lattice = None
            if not isinstance(fit, InvalidInputError) and fit.converged:
                lattice = self.scaled_lattice(fit, composition, scaled)
            out.append(None if lattice is None or isinstance(lattice, str) or lattice[1] > _VOLUME_SLACK
                       else (fit, *lattice))
        return out

    def ab_initio_fits(self, positions, system: str, wavelength: float, zero: bool, scaled: np.ndarray,
                       composition) -> list:
        """Converged refinements of cells found from the peaks alone (``_trial_cells``), which
        compete with the starts' refinements. Only cells of plausible volume (see
        ``_VOLUME_SLACK``) within a factor ``exp(_AB_INITIO_REACH)`` of the predictor's scaled
        lengths are kept: trials far from both are the wrong cells a free search also finds."""
        formula_volume = self.formula_volume(composition)
        if formula_volume is None:
            return []
        predicted = np.sort(np.clip(np.asarray(scaled, dtype=float), 1e-3, None))
        fits = []
        longest = None
        if system == "monoclinic":
            # thousands of monoclinic trials: the reach below bounds a trial's longest axis per
            # cube root of its formula units before it is scored (10 rows, 24 -> 3 s a row without
            # the room for centring). A trial is a conventional cell taken as primitive; a centred
            # one's axis per unit is up to 2^(2/3) times its primitive reduced cell's (body-centred,
            # c >> a)
            per_unit = np.cbrt(composition.element_composition.get_reduced_composition_and_factor()[0].num_atoms)
            longest = float(np.exp(_AB_INITIO_REACH) * 2 ** (2 / 3) * predicted[-1] * per_unit)
        cells = list(_trial_cells(positions, system, wavelength, formula_volume, max_axis_per_unit=longest))
        for refit in self.plausible_refits(positions, system, cells, CENTRINGS[system], wavelength, zero, composition,
                                           scaled):
            if refit is not None and np.max(np.abs(np.log(np.sort(refit[1]) / predicted))) <= _AB_INITIO_REACH:
                fits.append(refit[0])
        return fits

    def scaled_lattice(self, fit, composition, scaled: np.ndarray) -> tuple[np.ndarray, float] | str:
        """Scaled Niggli lengths (a, b, c) / N^(1/3) of a refined cell and how far (in log) its
        volume is from N atoms of the composition's volume per atom; or why there are none."""
        try:
            primitive = primitive_niggli(fit.cell, fit.centring)
            volume = _cell_volume(primitive)
            hint = None
            if self.atoms_from == "composition+lattice":
                # the predictor's scaled lengths say a*b*c / N; the refined cell's angles turn
                # that into a volume per atom independent of the element volumes
                lengths = float(np.prod(primitive[:3]))
                hint = float(np.prod(np.clip(scaled, 1e-3, None))) * volume / lengths
            n_atoms = atoms_in_cell(volume, composition, self.element_volumes, volume_per_atom_hint=hint)
            misfit = abs(np.log(volume / (n_atoms * volume_per_atom(composition, self.element_volumes))))
        except InvalidInputError as exc:
            return exc.reason
        return primitive[:3] / n_atoms ** (1 / 3), float(misfit)


def _reduced_log_lengths(cells: np.ndarray, centring: str) -> np.ndarray:
    """log of the three successive minima (the Niggli/Buerger cell's a <= b <= c) of the
    primitive lattices of conventional *cells* (m, 6) with *centring*, minus the log of the
    cube root of the primitive volume: the cells' reduced shapes (m, 3)."""
    metric = _direct_metric(cells)  # (m, 3, 3)
    coefficients = np.array([n for n in product(range(-2, 3), repeat=3) if any(n)], dtype=float)
    vectors = coefficients @ _TO_PRIMITIVE[centring]  # conventional fractional coordinates (v, 3)
    gram = (vectors @ metric) @ vectors.T  # (m, v, v); an unoptimised three-operand einsum was 50x slower
    norms = np.einsum("mvv->mv", gram)
    rows = np.arange(len(cells))
    first = norms.argmin(axis=1)
    n0 = norms[rows, first]
    d0 = gram[rows, first]  # (m, v)
    area = n0[:, None] * norms - d0**2
    second = np.where(area > 1e-6 * n0[:, None] * norms, norms, np.inf).argmin(axis=1)
    n1, d1, d01 = norms[rows, second], gram[rows, second], d0[rows, second]
    volume2 = (n0[:, None] * (n1[:, None] * norms - d1**2) - d01[:, None] * (d01[:, None] * norms - d1 * d0)
               + d0 * (d01[:, None] * d1 - n1[:, None] * d0))
    third = np.where(volume2 > 1e-6 * n0[:, None] * n1[:, None] * norms, norms, np.inf).argmin(axis=1)
    lengths = 0.5 * np.log(np.stack([n0, n1, norms[rows, third]], axis=1))
    primitive_volume = np.sqrt(np.linalg.det(metric)) / np.abs(np.linalg.det(_TO_PRIMITIVE[centring]) ** -1)
    return lengths - np.log(primitive_volume)[:, None] / 3


def _best_shape(system: str, centring: str, target_log: np.ndarray) -> np.ndarray:
    """The conventional cell of *system* and *centring* (unit scale) whose reduced primitive
    shape is nearest the predictor's (log lengths *target_log*, sorted), on a grid of axis
    ratios (and of beta for monoclinic); triclinic takes the predicted lengths at right angles."""
    target = target_log - target_log.mean()
    if system == "triclinic":
        return np.concatenate([np.exp(target_log), [90.0, 90.0, 90.0]])
    cells, shapes = _shape_grid(system, centring)
    mismatch = np.sum((shapes - target) ** 2, axis=1)
    return cells[int(np.argmin(mismatch))]  # read-only: callers copy


@functools.lru_cache(maxsize=None)
def _shape_grid(system: str, centring: str) -> tuple[np.ndarray, np.ndarray]:
    """The grid of unit-scale conventional cells :func:`_best_shape` chooses from, and their
    reduced shapes centred on zero mean (the same for every row: computed once)."""
    ratios = np.geomspace(0.3, 4.0, 41)
    if system == "cubic":
        cells = np.array([[1.0, 1.0, 1.0, 90.0, 90.0, 90.0]])
    elif system in ("tetragonal", "hexagonal", "trigonal"):
        gamma = 90.0 if system == "tetragonal" else 120.0
        cells = np.array([[1.0, 1.0, r, 90.0, 90.0, gamma] for r in ratios])
    else:
        coarse = np.geomspace(0.3, 4.0, 17)
        betas = (90.0,) if system == "orthorhombic" else (95.0, 105.0, 115.0)
        cells = np.array([[1.0, rb, rc, 90.0, beta, 90.0] for rb in coarse for rc in coarse for beta in betas])
    shapes = _reduced_log_lengths(cells, centring)
    shapes -= shapes.mean(axis=1, keepdims=True)
    cells.flags.writeable = shapes.flags.writeable = False  # shared by every later call
    return cells, shapes


def refine_rows(rows: list, refinement: RowRefinement) -> list:
    """*refinement* of each ``(peaks, systems, lattice, composition)`` row: the chunk function
    of ``LatticeRefiner``'s ``map_chunks`` (module level, here, so that joblib's workers import
    this module and the indexing code only, not the estimators)."""
    return [refinement(*row) for row in rows]
