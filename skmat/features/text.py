"""English descriptions of crystal structures, written by robocrystallographer.

robocrystallographer [1]_ (PyPI ``robocrys``, the ``text`` extra) condenses a structure into its
mineral/prototype name, space group, dimensionality, coordination polyhedra, their connectivity
and bond lengths, and writes that as prose. MultiMat made its text view this way.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_parameter_constraints

from skmat._inputs import row_labels, to_frame
from skmat._parallel import map_chunks
from skmat.exceptions import InvalidInputError
from skmat.features._base import BaseFeaturizer

__all__ = ["StructureDescription"]

MINERAL_MATCHING = ("aflow", "aflow+fingerprint")
_NUMPY_SCALAR = re.compile(r"np\.(?:int|float|uint)\d*\(([^()]*)\)")
_SHARING = "corner|edge|face"
_MIXTURE = re.compile(rf"a mixture of ((?:\w+ )?)((?:{_SHARING})(?:, (?:{_SHARING}))*,? and (?:{_SHARING}))-sharing")


def _sorted_mixture(match: re.Match) -> str:
    items = sorted(re.findall(_SHARING, match.group(2)))
    listed = " and ".join(items) if len(items) == 2 else ", ".join(items[:-1]) + ", and " + items[-1]
    return f"a mixture of {match.group(1)}{listed}-sharing"  # group 1: "distorted " or nothing


def _canonical_text(text: str) -> str:
    """robocrys' text made the same in every process.

    robocrys lists polyhedral connectivities in the order of a Python ``set`` of strings,
    which changes with the process' hash seed ("edge, corner, and face-sharing" in one run,
    "corner, edge, and face-sharing" in the next; 4 of 20 MP-20 descriptions differed between
    two processes), so workers of one ``n_jobs`` run disagreed. They are sorted here. robocrys
    also writes some numpy scalars with ``repr`` ("(np.int64(0), np.int64(0), np.int64(1))
    direction"), written as plain numbers here.
    """
    return _MIXTURE.sub(_sorted_mixture, _NUMPY_SCALAR.sub(r"\1", text))


class _Failure(NamedTuple):
    """What a worker returns for a structure robocrys could not describe (picklable, cacheable)."""

    message: str


@functools.lru_cache(maxsize=8)
def _robocrys(use_conventional_cell: bool, mineral_matching: str | None, symprec: float):
    """One condenser and describer per setting and process: the mineral matcher loads its
    table of prototypes and their fingerprints once."""
    try:
        from robocrys import StructureCondenser, StructureDescriber
        from robocrys.condense.mineral import MineralMatcher
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "StructureDescription needs robocrystallographer: pip install 'skmat[text]' (or robocrys)"
        ) from exc
    if mineral_matching is None:
        # robocrys builds a default matcher for None; a false value switches matching off
        matcher: Any = False
    else:
        matcher = _fast_matcher(MineralMatcher, fingerprints=mineral_matching == "aflow+fingerprint")
    condenser = _condenser_class(StructureCondenser)(
        use_conventional_cell=use_conventional_cell, mineral_matcher=matcher, symprec=symprec
    )
    return condenser, StructureDescriber()


def _condenser_class(base: type) -> type:
    """robocrys' ``StructureCondenser`` with one molecule namer for all structures.

    robocrys builds a ``MoleculeNamer`` for every structure, which reads its molecule table
    from disk each time (0.5 s of CPU, ~40 % of a description once mineral matching is fast),
    and which asks PubChem over the network for molecules not in that table. Here one offline
    namer (``use_online_pubchem=False``) serves every structure, so a description never
    depends on the network; robocrys' own table names the molecules.
    """
    import sys

    from robocrys.condense.molecule import MoleculeNamer

    namer = MoleculeNamer(use_online_pubchem=False)
    module = sys.modules[base.__module__]

    class SharedNamerCondenser(base):
        def _condense_components(self, *args, **kwargs):
            # robocrys looks MoleculeNamer up in its module when it condenses components
            original = module.MoleculeNamer
            module.MoleculeNamer = lambda *a, **k: namer
            try:
                return super()._condense_components(*args, **kwargs)
            finally:
                module.MoleculeNamer = original

    return SharedNamerCondenser


def _anonymous_key(composition) -> tuple:
    """What ``StructureMatcher.fit_anonymous`` needs equal before it compares two structures:
    the reduced formula up to a permutation of the elements, i.e. the sorted reduced amounts."""
    reduced = composition.reduced_composition
    return tuple(sorted(round(float(v), 6) for v in reduced.values()))


def _fast_matcher(base: type, fingerprints: bool):
    """robocrys' ``MineralMatcher`` with the AFLOW search limited to candidate prototypes.

    ``get_aflow_matches`` runs ``StructureMatcher.fit_anonymous`` against each of the 180
    named AFLOW prototypes in turn (twice when nothing matches: again with molecules replaced
    by atoms), reducing both cells (Niggli, primitive) before it compares their
    compositions; a prototype whose reduced formula is no permutation of the structure's never
    matches. Comparing only the prototypes that pass that test first gives the same matches
    for far less work. With ``fingerprints=False`` the ``CrystalNN`` fingerprint of every site
    and its distance to every prototype are not computed either (robocrys computes them even
    with ``use_fingerprint_matching=False``, to order the table): a mineral is then named only
    when an AFLOW prototype matches, and where several match at robocrys' tightest tolerances the
    first in table order (not the nearest fingerprint) names it.
    """
    from pymatgen.core import Structure
    from pymatgen.symmetry.structure import SymmetrizedStructure
    from robocrys.condense.mineral import ReducedAflowPrototypeMatcher

    class FastMineralMatcher(base):
        def __init__(self):
            super().__init__(use_fingerprint_matching=fingerprints)
            self.mineral_db = self.mineral_db.assign(
                anonymous_key=[_anonymous_key(p.composition) for p in self.mineral_db["structure"]]
            )

        def _set_distance_matrix(self, structure) -> None:
            if fingerprints:
                super()._set_distance_matrix(structure)
            elif self._mineral_db is None:
                # robocrys' value for an exact (AFLOW) match; table order kept
                self._mineral_db = self.mineral_db.assign(distance=-1.0)

        def get_aflow_matches(self, structure):
            # with use_conventional_cell=False robocrys passes a SymmetrizedStructure, which
            # pymatgen's Niggli reduction cannot rebuild (TypeError on 7 of 20 MP-20 rows)
            structure = Structure.from_sites(structure.sites) if isinstance(structure, SymmetrizedStructure) else structure
            self._set_distance_matrix(structure)
            table = self._mineral_db
            candidates = table[table["anonymous_key"] == _anonymous_key(structure.composition)]
            if candidates.empty:
                return None
            matcher = ReducedAflowPrototypeMatcher(
                initial_ltol=self.initial_ltol,
                initial_stol=self.initial_stol,
                initial_angle_tol=self.initial_angle_tol,
                mineral_db=candidates,
            )
            return matcher.get_prototypes(structure)

        def get_best_mineral_name(self, structure) -> dict[str, Any]:
            structure = Structure.from_sites(structure.sites) if isinstance(structure, SymmetrizedStructure) else structure
            if fingerprints:
                return super().get_best_mineral_name(structure)
            matches = self.get_aflow_matches(structure)
            return {"type": matches[0]["type"] if matches else None, "distance": -1, "n_species_type_match": True}

    return FastMineralMatcher()


def _describe_chunk(
    structures: list, *, use_conventional_cell: bool, mineral_matching: str | None, symprec: float
) -> list[str | _Failure]:
    # module level so that joblib can pickle it and Memory can key its cache on it
    condenser, describer = _robocrys(use_conventional_cell, mineral_matching, symprec)
    out: list[str | _Failure] = []
    for structure in structures:
        try:
            with warnings.catch_warnings():
                # robocrys and pymatgen warn about every unusual bond and oxidation-state guess
                warnings.simplefilter("ignore")
                text = describer.describe(condenser.condense_structure(structure))
        except Exception as exc:  # robocrys raises many types (ValueError, KeyError, IndexError, ...)
            out.append(_Failure(f"{type(exc).__name__}: {exc}"))
            continue
        if not isinstance(text, str) or not text.strip():
            # an empty description would be a text view that says nothing: a failure
            out.append(_Failure("empty description"))
            continue
        out.append(_canonical_text(text))
    return out


class StructureDescription(BaseFeaturizer):
    """English description of each structure, by robocrystallographer (the text view).

    Each structure is symmetrised with spglib, its bonds are found with ``CrystalNN``, its
    components (molecules, layers, frameworks) and their dimensionality are identified, and the
    result is written as prose: mineral or prototype name, space group, the coordination
    environment and polyhedral connectivity of every inequivalent site, bond lengths [1]_.
    The output is one string per row, in an object array of shape ``(n_samples, 1)`` whose
    single feature is named ``"text"``, so ``set_output(transform="pandas")`` gives the ``text``
    column :class:`~skmat.encoders.TextEncoder` reads.

    robocrys needs seconds per structure; ``memory`` caches descriptions, ``n_jobs`` spreads
    them over processes, ``verbose`` shows a progress bar. See Notes for what each setting costs.

    Parameters
    ----------
    mineral_matching : {"aflow+fingerprint", "aflow"} or None, default="aflow+fingerprint"
        How the mineral/prototype name ("NaCl is Halite, Rock Salt structured", "beta
        beryllia-derived", "Enargite-like") is found. ``"aflow+fingerprint"`` is robocrys' own
        method, and gives robocrys' text word for word (but for numpy 2 reprs such as
        ``np.int64(1)``, which robocrys leaves in some sentences and which are written ``1`` here): an AFLOW prototype matched by pymatgen's
        ``StructureMatcher``, else the nearest prototype by ``CrystalNN`` site fingerprints
        ("-derived", "-like"). ``"aflow"`` names exact prototype matches only and skips the
        fingerprints. ``None`` names no mineral.
    use_conventional_cell : bool, default=True
        Describe the conventional standard cell (robocrys' default); ``False`` describes the
        symmetrised given cell, which can count components differently (one "MgTb2 sheet"
        instead of two in 1 of 20 MP-20 rows).
    symprec : float, default=0.01
        spglib symmetry tolerance, Å.
    errors : {"raise", "skip"}, default="raise"
        What to do with a structure robocrys cannot describe: raise an
        :class:`~skmat.exceptions.InvalidInputError` naming its row, or put ``None`` (a missing
        text view) in that row and warn with the number of such rows.
    n_jobs : int or None, default=1
        Parallel jobs (joblib). ``None`` defers to ``joblib.parallel_config``.
    chunk_size : int, default=8
        Structures per task (and per cache entry with ``memory``): small, because each takes
        seconds, so that the progress bar moves and an interrupted run keeps its finished chunks.
    memory : None, str, path-like or joblib.Memory, default=None
        Cache of computed descriptions (failures too, so a rerun does not retry them).
    verbose : int, default=0
        ``> 0`` shows a progress bar.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns of the input seen in ``fit``.
    feature_names_in_ : ndarray of str
        Input column names, when the input was a DataFrame with string column names.
    n_failed_ : int
        Rows of the last ``transform`` that robocrys could not describe (``None`` in the
        output); only set with ``errors="skip"``.

    See Also
    --------
    skmat.encoders.TextEncoder : embeds the descriptions (all-MiniLM-L6-v2) and encodes them.

    Notes
    -----
    Where robocrys' time went, and what is changed here (its text is kept):

    * Its mineral matcher runs ``StructureMatcher.fit_anonymous`` against each of its 180
      named AFLOW prototypes, reducing both cells first, and again with molecules replaced by
      atoms when nothing matched: two thirds of its cost. Only prototypes whose reduced formula
      is a permutation of the structure's can match, so only those are compared.
    * It builds a ``MoleculeNamer`` for every structure, which reads its molecule table from
      disk (0.5 s of CPU) and may ask PubChem over the network; one offline namer is shared.
    * It lists polyhedral connectivities in ``set`` order, which changes with the process'
      hash seed (4 of 20 texts differed between two processes); they are sorted, so workers and
      reruns agree (20 of 20 identical across two hash seeds).

    CPU seconds per structure (robocrys 0.2.13, 20 random MP-20 val structures, seed 0, on a
    loaded 2-core machine; "named": descriptions that name a mineral/prototype):

    ============================================  ======  =====  =====
    setting                                       median  max    named
    ============================================  ======  =====  =====
    plain robocrys (``StructureCondenser()``)     3.05    5.42   6
    ``"aflow+fingerprint"`` (default)             0.85    3.14   6
    ``mineral_matching="aflow"``                  0.73    2.26   2
    ``mineral_matching=None``                     0.54    2.31   0
    ``None`` and ``use_conventional_cell=False``  0.52    1.39   0
    ============================================  ======  =====  =====

    ``"aflow"`` loses the approximate names ("-derived", "-like", 4 of 20 rows); ``None``
    loses the exact ones too; the primitive cell saves little and changed one text (a sheet
    count). What remains is robocrys' description itself: ``CrystalNN`` bonding, site
    fingerprints, and the site, polyhedra and connectivity analysis. At the default, MP-20 val
    (9,047 structures) takes about 2 core-hours instead of 7.7. Disordered structures
    (partial occupancies) fail in robocrys ("no majority species"): use ``errors="skip"``.

    References
    ----------
    .. [1] A. M. Ganose and A. Jain, "Robocrystallographer: automated crystal structure text
       descriptions and analysis", MRS Communications 9, 874-881 (2019).

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    >>> text = StructureDescription().fit_transform([nacl])
    >>> text.shape, text.dtype
    ((1, 1), dtype('O'))
    >>> "rock salt" in text[0, 0].lower() or "rocksalt" in text[0, 0].lower()
    True
    """

    _input_view = "structure"
    _chunk_function = _describe_chunk

    _parameter_constraints: dict = {
        "mineral_matching": [StrOptions(set(MINERAL_MATCHING)), None],
        "use_conventional_cell": ["boolean"],
        "symprec": [Interval(Real, 0, None, closed="neither")],
        "errors": [StrOptions({"raise", "skip"})],
        "n_jobs": [Integral, None],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        mineral_matching: str | None = "aflow+fingerprint",
        use_conventional_cell: bool = True,
        symprec: float = 0.01,
        errors: str = "raise",
        n_jobs: int | None = 1,
        chunk_size: int = 8,
        memory: Any = None,
        verbose: int = 0,
    ):
        self.mineral_matching = mineral_matching
        self.use_conventional_cell = use_conventional_cell
        self.symprec = symprec
        self.errors = errors
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size
        self.memory = memory
        self.verbose = verbose

    @property
    def _chunk_size(self) -> int:
        return self.chunk_size

    def _validate_params(self) -> None:
        validate_parameter_constraints(
            self._parameter_constraints, self.get_params(deep=False), caller_name=type(self).__name__
        )

    def _chunk_kwargs(self) -> dict:
        return {
            "use_conventional_cell": bool(self.use_conventional_cell),
            "mineral_matching": self.mineral_matching,
            "symprec": float(self.symprec),
        }

    def transform(self, X: Any) -> np.ndarray:
        """Describe every row of *X*.

        Parameters
        ----------
        X : DataFrame or list of Structure
            Materials, one per row (a ``structure`` or ``cif`` column).

        Returns
        -------
        ndarray of shape (n_samples, 1), dtype object
            One description per row; ``None`` where robocrys failed and ``errors="skip"``.
        """
        self._validate_params()
        structures = self._items(X)
        frame = to_frame(X, default_column="structure")
        view = "structure" if "structure" in frame.columns else "cif"
        results = map_chunks(
            _describe_chunk,
            structures,
            kwargs=self._chunk_kwargs(),
            n_jobs=self.n_jobs,
            chunk_size=self._chunk_size,
            verbose=self.verbose,
            desc=type(self).__name__,
            memory=self.memory,
        )
        labels = row_labels(frame)
        failed = [i for i, r in enumerate(results) if isinstance(r, _Failure)]
        if failed and self.errors == "raise":
            first = failed[0]
            others = f" ({len(failed) - 1} more row(s) fail too)" if len(failed) > 1 else ""
            raise InvalidInputError(
                f"robocrys cannot describe this structure ({results[first].message}){others}; "
                "pass errors='skip' to leave its text view missing",
                row=labels[first],
                view=view,
            )
        out = np.empty((len(structures), 1), dtype=object)
        for i, r in enumerate(results):
            out[i, 0] = None if isinstance(r, _Failure) else r
        if self.errors == "skip":
            self.n_failed_ = len(failed)
            if failed:
                shown = ", ".join(repr(labels[i]) for i in failed[:5])
                warnings.warn(
                    f"robocrys could not describe {len(failed)} of {len(structures)} structures "
                    f"(rows {shown}{', ...' if len(failed) > 5 else ''}); their text view is None "
                    f"(first reason: {results[failed[0]].message})",
                    UserWarning,
                    stacklevel=2,
                )
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The one output column, ``["text"]``.

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        ndarray of str
        """
        return np.asarray(["text"], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        return tags
