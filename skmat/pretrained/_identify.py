"""``identify``: what crystal is this measured powder pattern? Readers, checks, the answer.

A measured pattern is read (two-column text, or RRUFF's powder ``.txt`` with its ``##``
header), checked, resampled through d-spacing onto the pretrained models' Cu Kα grid and
given to two shipped models: the XRD + composition classifier (crystal-system probabilities and
the lattice as an auxiliary output; the composition view is simply missing when no formula is
given) and the aligner, whose XRD view embeds the pattern for a search of the reference index.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from skmat.exceptions import InvalidInputError

#: fewest measured points accepted: a coarser scan cannot resolve the peaks the models read
MIN_POINTS = 50
#: 2θ window (degrees, Cu Kα) a pattern must cover: the strong low-angle reflections of most
#: crystals lie here, and both models were trained on the 5-90° window
REQUIRED_RANGE = (10.0, 60.0)
#: Cu Kα (Å), the wavelength of the models' grid and of patterns whose file names none
CU_K_ALPHA = 1.5418
DEFAULT_CLASSIFIER = "xrd-composition"
DEFAULT_ALIGNER = "structure-xrd-composition"
#: references short-listed by the aligned embedding, then re-ranked by whole-pattern similarity
SHORTLIST = 200
#: strongest peaks of a reference drawn for that comparison (measured on augmented patterns of
#: index members: fewer, strong peaks match noisy measurements better than every weak one)
MATCH_PEAKS = 15
#: the re-rank orders the shortlist by whole-pattern similarity plus this times the cosine of
#: the aligned embeddings: the two err differently (the embedding knows intensities the
#: strain-tolerant similarity blurs). Measured on 300 augmented patterns of index members:
#: top-5 71.0 % with the similarity alone, 78.0 % with weight 1 (75.0 % at 0.5, 75.7 % at 2)
EMBEDDING_WEIGHT = 1.0
#: identify's crystal system blends the classifier's probabilities with a vote of the
#: VOTE_MATCHES best reference matches, each weighted by its whole-pattern similarity to the
#: power VOTE_POWER (close matches dominate), with weight MATCH_WEIGHT on the vote. Chosen on the
#: 250 RRUFF development patterns of the data home (the classifier's model card,
#: ``measured_rruff_dev``, lists the neighbouring settings)
VOTE_MATCHES = 5
VOTE_POWER = 8
MATCH_WEIGHT = 1.0
LATTICE_NAMES = ["a_scaled", "b_scaled", "c_scaled", "a", "b", "c", "alpha", "beta", "gamma"]

_WAVELENGTH_KEY = re.compile(r"^\s*#+\s*(?:X-RAY\s+)?WAVELENGTH\s*[=:]\s*([-+0-9.eE]+)", re.IGNORECASE)
_HEADER_FIELD = re.compile(r"^\s*##\s*([^=:]+?)\s*[=:]\s*(.*)$")


class MeasuredPattern(NamedTuple):
    """A measured powder pattern as read from a file.

    Attributes
    ----------
    two_theta, intensity : ndarray of shape (n_points,)
    wavelength : float or None
        Å, from the file's header when it names one.
    name : str
        The file name (or the label given).
    header : dict of str to str
        ``##KEY=value`` fields of a RRUFF-style header.
    """

    two_theta: np.ndarray
    intensity: np.ndarray
    wavelength: float | None
    name: str
    header: dict


def read_pattern(path: str | os.PathLike) -> MeasuredPattern:
    """Read a measured powder pattern: ``.xy``, ``.xye``, ``.csv``, ``.dat`` or RRUFF ``.txt``.

    Two numeric columns (2θ in degrees, intensity; further columns such as uncertainties are
    ignored), separated by whitespace, commas or semicolons, with comment or header lines
    before them (see :func:`~skmat.features.measured.read_xy`). A RRUFF powder file starts
    with ``##KEY=value`` lines; ``##X-RAY WAVELENGTH=1.541838`` (or ``WAVELENGTH:``) sets the
    wavelength, and every field is kept in ``header``.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    MeasuredPattern

    Raises
    ------
    InvalidInputError
        The file cannot be read, holds no two-column data, or fewer than 50 points.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "R050031-9.txt"
    >>> rows = "\\n".join(f"{t:.2f}, {1 + 100 * np.exp(-((t - 26.6) / 0.1) ** 2):.3f}" for t in np.arange(5, 90, 0.02))
    >>> _ = path.write_text("##NAMES=Quartz\\n##X-RAY WAVELENGTH=1.541838\\n" + rows + "\\n##END=\\n")
    >>> pattern = read_pattern(path)
    >>> pattern.wavelength, pattern.header["NAMES"], len(pattern.two_theta)
    (1.541838, 'Quartz', 4250)
    """
    from skmat.features._powder import read_xy

    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise InvalidInputError("no such file" if not path.exists() else "not a file", row=label, view="xrd")
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            head = [line for _, line in zip(range(200), handle, strict=False)]
    except OSError as exc:
        raise InvalidInputError(f"cannot read the file: {exc.strerror or exc}", row=label, view="xrd") from None
    if any("\x00" in line for line in head):
        raise InvalidInputError("not a text file (binary content): save the pattern as two columns", row=label, view="xrd")
    header: dict[str, str] = {}
    wavelength = None
    for line in head:
        match = _WAVELENGTH_KEY.match(line)
        if match and wavelength is None:
            try:
                wavelength = float(match.group(1))
            except ValueError:
                raise InvalidInputError(f"unreadable wavelength in the header: {line.strip()!r}", row=label, view="xrd") from None
        field_match = _HEADER_FIELD.match(line)
        if field_match:
            header[field_match.group(1).strip()] = field_match.group(2).strip()
    if wavelength is not None and not (math.isfinite(wavelength) and wavelength > 0):
        raise InvalidInputError(f"the header's wavelength must be positive, got {wavelength}", row=label, view="xrd")
    two_theta, intensity = read_xy(path)
    check_points(two_theta, intensity, label)
    return MeasuredPattern(two_theta, intensity, wavelength, path.name, header)


def check_points(two_theta: np.ndarray, intensity: np.ndarray, label: Any) -> None:
    """Refuse patterns with too few points or non-finite values (one clear message)."""
    two_theta, intensity = np.asarray(two_theta, dtype=float), np.asarray(intensity, dtype=float)
    if two_theta.shape != intensity.shape or two_theta.ndim != 1:
        raise InvalidInputError(
            f"2θ and intensity must be 1-D of one length, got {two_theta.shape} and {intensity.shape}", row=label, view="xrd"
        )
    if len(two_theta) < MIN_POINTS:
        raise InvalidInputError(
            f"only {len(two_theta)} data points; a powder pattern needs at least {MIN_POINTS}", row=label, view="xrd"
        )
    for name, values in (("2θ", two_theta), ("intensity", intensity)):
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise InvalidInputError(
                f"{len(bad)} {name} values are NaN or infinite (first at data point {int(bad[0]) + 1})", row=label, view="xrd"
            )


def check_wavelength(wavelength: Any, label: Any = None) -> float:
    try:
        value = float(wavelength)
    except (TypeError, ValueError):
        raise InvalidInputError(f"wavelength must be a number in Å, got {wavelength!r}", row=label, view="xrd") from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"wavelength must be positive (Å), got {wavelength!r}", row=label, view="xrd")
    return value


def check_range(two_theta: np.ndarray, wavelength: float, label: Any) -> None:
    """The pattern must cover :data:`REQUIRED_RANGE` once moved to Cu Kα through d-spacing."""
    sin_cu = np.sin(np.radians(np.asarray(two_theta, dtype=float) / 2)) * (CU_K_ALPHA / wavelength)
    reachable = sin_cu[sin_cu < 1]
    covered = np.degrees(2 * np.arcsin(reachable)) if len(reachable) else np.array([np.nan])
    low, high = float(np.nanmin(covered)), float(np.nanmax(covered))
    tolerance = 0.5  # a scan from 10.2° is a scan from 10°
    if not (low <= REQUIRED_RANGE[0] + tolerance and high >= REQUIRED_RANGE[1] - tolerance):
        at = "" if abs(wavelength - CU_K_ALPHA) < 1e-3 else f" (as Cu Kα: {low:.1f}-{high:.1f}°)"
        raise InvalidInputError(
            f"the pattern covers 2θ = {np.min(two_theta):.1f}-{np.max(two_theta):.1f}°{at}; identify needs "
            f"{REQUIRED_RANGE[0]:g}-{REQUIRED_RANGE[1]:g}° (Cu Kα) covered",
            row=label,
            view="xrd",
        )


# -- the answer ------------------------------------------------------------------------------------
@dataclass
class Identification:
    """What :func:`identify` says about one pattern.

    Attributes
    ----------
    name : str
    wavelength : float
        Å, as used.
    crystal_system : str
        The answer: the crystal system with the highest ``crystal_system_scores``.
    crystal_system_scores : dict of str to float
        The classifier's probabilities blended with the similarity-weighted vote of the best
        reference matches (``match_weight``), summing to 1, highest first.
    probabilities : dict of str to float
        The classifier's own crystal-system probabilities, most probable first.
    lattice : dict of str to float
        Predicted lattice of the Niggli-reduced primitive cell: ``a, b, c`` (Å), ``alpha,
        beta, gamma`` (°) and ``a_scaled, b_scaled, c_scaled`` (Å, divided by N^(1/3)).
    matches : list of dict
        The most similar references, best first: ``id``, ``formula``, ``space_group``,
        ``crystal_system``, ``source``, ``similarity`` (whole-pattern, in [0, 1]) and
        ``embedding_similarity`` (cosine of the aligned XRD embeddings). They are ranked by
        the sum of the two (see ``EMBEDDING_WEIGHT``), references made of exactly the given
        composition's elements first.
    pattern : ndarray
        The measured pattern on the models' grid (Cu Kα, max 1).
    two_theta : ndarray
        That grid.
    used_composition : str or None
    n_references : int
        Size of the searched reference index.
    refined_lattice : dict or None
        With ``identify(refine=True)`` and a composition: ``a_scaled, b_scaled, c_scaled``
        (Å) of the cell refined against the pattern's peaks under ``crystal_system``, the
        answer (:class:`~skmat.supervised.LatticeRefiner`, with the element volumes
        :func:`~skmat.pretrained.load_refiner` uses); ``None`` where the refinement was
        not asked for, had no composition, or did not take (the classifier's lattice stands).
    """

    name: str
    wavelength: float
    crystal_system: str
    probabilities: dict
    lattice: dict
    matches: list
    pattern: np.ndarray = field(repr=False)
    two_theta: np.ndarray = field(repr=False)
    used_composition: str | None = None
    n_references: int = 0
    crystal_system_scores: dict = field(default_factory=dict)
    refined_lattice: dict | None = None

    def to_dict(self) -> dict:
        """Plain JSON data (without the resampled pattern)."""
        return {
            "name": self.name,
            "wavelength": self.wavelength,
            "composition": self.used_composition,
            "crystal_system": self.crystal_system,
            "crystal_system_scores": self.crystal_system_scores,
            "probabilities": self.probabilities,
            "lattice": self.lattice,
            "refined_lattice": self.refined_lattice,
            "matches": self.matches,
        }

    def summary(self) -> str:
        """The answer as text, for the command line."""
        lines = [f"{self.name}  (λ = {self.wavelength:g} Å" + (f", composition {self.used_composition})" if self.used_composition else ", XRD alone)")]
        lines.append(f"crystal system: {self.crystal_system}")
        if self.crystal_system_scores and list(self.probabilities)[0] != self.crystal_system:
            lines.append("  (the reference matches outvote the classifier; the classifier's probabilities:)")
        for system, p in list(self.probabilities.items())[:4]:
            lines.append(f"  {system:13s} {p:6.1%}  {'#' * int(round(20 * p))}")
        lat = self.lattice
        lines.append(
            f"lattice (reduced primitive cell): a = {lat['a']:.2f} Å, b = {lat['b']:.2f} Å, c = {lat['c']:.2f} Å; "
            f"α = {lat['alpha']:.0f}°, β = {lat['beta']:.0f}°, γ = {lat['gamma']:.0f}°"
        )
        if self.refined_lattice is not None:
            ref = self.refined_lattice
            lines.append(
                f"lattice refined against the peaks ({ref['crystal_system']}), (a, b, c)/N^(1/3): "
                f"{ref['a_scaled']:.3f}, {ref['b_scaled']:.3f}, {ref['c_scaled']:.3f} Å (network: "
                f"{lat['a_scaled']:.3f}, {lat['b_scaled']:.3f}, {lat['c_scaled']:.3f} Å)"
            )
        lines.append(f"most similar reference structures (of {self.n_references} in the index):")
        lines.append(f"  {'#':>2s}  {'pattern':>7s}  {'aligned':>7s}  {'space group':>11s}  {'crystal system':14s}  "
                     "formula (id)")
        for rank, match in enumerate(self.matches, start=1):
            lines.append(
                f"  {rank:2d}  {match['similarity']:7.3f}  {match.get('embedding_similarity', float('nan')):7.3f}  "
                f"{match['space_group']:11d}  {match['crystal_system']:14s}  "
                f"{match['formula']} ({match['id']})"
            )
        return "\n".join(lines)


def _as_measurements(patterns: Any, wavelength: Any) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(label, two_theta, intensity, wavelength) of each input pattern."""
    if isinstance(patterns, str | os.PathLike | MeasuredPattern) or (
        isinstance(patterns, tuple) and len(patterns) == 2 and np.ndim(patterns[0]) == 1
    ):
        patterns = [patterns]
    items = list(patterns)
    if not items:
        raise InvalidInputError("no patterns given", view="xrd")
    wavelengths = list(wavelength) if isinstance(wavelength, list | tuple | np.ndarray) else [wavelength] * len(items)
    if len(wavelengths) != len(items):
        raise InvalidInputError(f"{len(wavelengths)} wavelengths for {len(items)} patterns", view="wavelength")
    out = []
    for row, (item, given) in enumerate(zip(items, wavelengths, strict=True)):
        if isinstance(item, str | os.PathLike):
            item = read_pattern(item)
        if isinstance(item, MeasuredPattern):
            label, x, y, header_wavelength = item.name, item.two_theta, item.intensity, item.wavelength
        else:
            try:
                x, y = item
            except (TypeError, ValueError):
                raise InvalidInputError(
                    "a pattern must be a file path or a (two_theta, intensity) pair", row=row, view="xrd"
                ) from None
            label, header_wavelength = f"pattern {row}", None
            check_points(x, y, label)
        chosen = given if given is not None else header_wavelength if header_wavelength is not None else CU_K_ALPHA
        value = check_wavelength(chosen, label)
        check_range(x, value, label)
        out.append((label, np.asarray(x, dtype=float), np.asarray(y, dtype=float), value))
    return out


def _compositions(composition: Any, n: int) -> list:
    if composition is None or isinstance(composition, str):
        values = [composition] * n
    else:
        values = list(composition)
        if len(values) != n:
            raise InvalidInputError(f"{len(values)} compositions for {n} patterns", view="composition")
    out = []
    for row, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            out.append(None)
            continue
        from pymatgen.core import Composition

        try:
            parsed = Composition(value)
            if parsed.num_atoms <= 0:
                raise ValueError("no atoms")
        except Exception as exc:  # pymatgen raises several types for a bad formula
            raise InvalidInputError(f"cannot read the composition {value!r} ({exc})", row=row, view="composition") from None
        out.append(parsed)
    return out


def _pattern_similarity():
    """:func:`skmat.features.matching.pattern_similarity` when this checkout has it, else None."""
    try:
        from skmat.features.matching import pattern_similarity
    except ImportError:
        return None
    return pattern_similarity


@functools.lru_cache(maxsize=65536)
def _elements(formula: str) -> frozenset | None:
    """Element symbols of an index formula (``"FeCuS2 (Chalcopyrite)"``), None if unreadable."""
    from pymatgen.core import Composition

    try:
        return frozenset(e.symbol for e in Composition(str(formula).split(" (")[0]).elements)
    except Exception:  # pymatgen raises several types for formulas it cannot read
        return None


def search_references(
    index,
    embeddings: np.ndarray,
    patterns: np.ndarray,
    two_theta: np.ndarray,
    *,
    k: int = 5,
    shortlist: int = SHORTLIST,
    match_peaks: int = MATCH_PEAKS,
    embedding_weight: float = EMBEDDING_WEIGHT,
    elements: list | None = None,
    similarity=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Index rows of the *k* references most similar to each pattern, best first, with scores.

    The aligned XRD embeddings pick a *shortlist* of candidates; these are re-ranked by the
    shift-tolerant whole-pattern similarity (:mod:`skmat.features.matching`) of the pattern
    (background removed) with each candidate's pattern drawn from its *match_peaks* strongest
    simulated peaks, plus *embedding_weight* times the embeddings' cosine similarity. With
    *elements* (one set of element symbols, or None, per pattern), the candidates made of
    exactly those elements come first, as a search-match program's element filter puts them.
    The returned scores are the whole-pattern similarities (in [0, 1]).

    ``shortlist=0``, or a checkout without :mod:`skmat.features.matching`, ranks by the
    embeddings alone (scores are then cosine similarities of embeddings): a plain cosine
    without the lattice-scaling scan re-ranks worse than the embeddings (measured: top-5 36 %
    against 46 % on 300 augmented patterns of the 18,376 references).
    *similarity*, ``f(patterns, references, two_theta) -> (n_patterns, n_references)``,
    replaces that function.
    """
    from skmat.features._powder import remove_background

    similarity_of = similarity if similarity is not None else _pattern_similarity()
    if shortlist <= 0 or similarity_of is None:
        return index.search(embeddings, k=k)
    candidates, cosines = index.search(embeddings, k=max(k, shortlist))
    step = (two_theta[-1] - two_theta[0]) / (len(two_theta) - 1)
    cleaned = remove_background(np.asarray(patterns, dtype=np.float64), "rolling_ball", step=step)
    rows = np.zeros((len(patterns), k), dtype=np.int64)
    scores = np.zeros((len(patterns), k), dtype=np.float32)
    # the library's similarity rescales the one pattern, not the shortlist (~15x faster)
    options = {"scale": "patterns"} if similarity is None else {}
    for i in range(len(patterns)):
        references = index.reference_patterns(candidates[i], two_theta, n_peaks=match_peaks)
        found = similarity_of(cleaned[i : i + 1], references, two_theta, **options)[0]
        rank_by = found + embedding_weight * np.asarray(cosines[i], dtype=np.float32)
        if elements is not None and elements[i]:
            same = np.array([_elements(index.formulas[c]) == elements[i] for c in candidates[i]])
            rank_by = rank_by + 10.0 * same  # above any blend of two scores in [-1, 1]
        order = np.argsort(-rank_by, kind="stable")[:k]
        rows[i], scores[i] = candidates[i][order], found[order]
    return rows, scores


def blend_match_votes(
    probabilities: np.ndarray,
    match_systems: np.ndarray,
    match_similarities: np.ndarray,
    classes: list,
    *,
    weight: float = MATCH_WEIGHT,
    power: float = VOTE_POWER,
    n_matches: int = VOTE_MATCHES,
) -> np.ndarray:
    """identify's crystal-system scores: the classifier's probabilities blended with a vote of
    the best reference matches.

    Each of the *n_matches* best matches of a row votes for its crystal system with its
    whole-pattern similarity to the *power*; the votes are normalised to sum to 1 and added
    with *weight* to the probabilities, and each row is renormalised (a row without votes
    keeps its probabilities).

    Parameters
    ----------
    probabilities : array of shape (n_rows, n_classes)
    match_systems : array of str, shape (n_rows, n_found)
        Crystal system of each row's matches, best first.
    match_similarities : array of shape (n_rows, n_found)
        Their whole-pattern similarities (negative values vote nothing).
    classes : list of str
        The class of each column of *probabilities*.

    Returns
    -------
    ndarray of shape (n_rows, n_classes)
        Rows summing to 1.

    Examples
    --------
    >>> blend_match_votes(np.array([[0.6, 0.4]]), np.array([["cubic", "cubic"]]), np.array([[0.9, 0.8]]),
    ...                   ["tetragonal", "cubic"]).round(2).tolist()
    [[0.3, 0.7]]
    """
    probabilities = np.asarray(probabilities, dtype=float)
    systems = np.asarray(match_systems).astype(str)[:, :n_matches]
    strength = np.clip(np.asarray(match_similarities, dtype=float)[:, :n_matches], 0.0, None) ** power
    vote = np.einsum("rm,rmc->rc", strength, systems[:, :, None] == np.asarray(classes, dtype=str))
    totals = vote.sum(axis=1, keepdims=True)
    vote = np.divide(vote, totals, out=np.zeros_like(vote), where=totals > 0)
    return (probabilities + weight * vote) / (1.0 + weight * (totals > 0))


def identify(
    patterns: Any,
    *,
    wavelength: Any = None,
    composition: Any = None,
    top: int = 5,
    model: str = DEFAULT_CLASSIFIER,
    aligner: str = DEFAULT_ALIGNER,
    shortlist: int = SHORTLIST,
    match_weight: float = MATCH_WEIGHT,
    refine: bool = False,
) -> list[Identification]:
    """Identify measured powder patterns with skmat's pretrained models.

    Parameters
    ----------
    patterns : path, (two_theta, intensity) pair, MeasuredPattern, or a list of them
        Files are read with :func:`read_pattern` (``.xy``, ``.xye``, ``.csv``, RRUFF ``.txt``).
        Each pattern must have at least 50 finite points covering 10-60° 2θ (Cu Kα equivalent).
    wavelength : float, list of float or None, default=None
        Wavelength of each measurement (Å). ``None``: the file header's, else Cu Kα (1.5418 Å).
    composition : str, Composition, list of them or None, default=None
        Chemical formula of each sample; ``None`` predicts from the XRD pattern alone. A
        formula also puts the references made of exactly its elements first among the matches.
    top : int, default=5
        Reference structures listed per pattern.
    model : str, default="xrd-composition"
        Pretrained classifier (see :func:`~skmat.pretrained.list_models`).
    aligner : str, default="structure-xrd-composition"
        Pretrained aligner whose reference index is searched: its XRD view embeds the
        pattern and the references nearest in the aligned space are found.
    shortlist : int, default=200
        Nearest references re-ranked by whole-pattern similarity (see
        ``search_references``); 0 ranks by the aligned embeddings alone.
    match_weight : float, default=1.0
        Weight of the reference matches' vote on the crystal system against the classifier's
        probabilities (weight 1): each of the 5 best matches votes for its crystal system with
        its whole-pattern similarity to the 8th power. 0 answers with the classifier alone, as
        does ``shortlist=0`` (embedding scores are not pattern similarities).
    refine : bool, default=False
        Also refine the lattice against each pattern's peaks (``refined_lattice``), for the
        patterns with a composition (the atoms in the refined cell are counted from it):
        :class:`~skmat.supervised.LatticeRefiner` under the answered crystal system, from the
        classifier's lattice. About 1 s per pattern (and ~1 s of imports on a cold start).

    Returns
    -------
    list of Identification
        One per pattern, in order.

    Examples
    --------
    >>> from skmat.datasets import load_prototypes
    >>> from skmat.features import XRDPattern
    >>> rocksalt = load_prototypes().frame.query("material_id == 'AB_cF8_225_a_b'")["structure"]
    >>> pattern = XRDPattern().fit_transform(list(rocksalt))[0]
    >>> grid = XRDPattern().two_theta_grid()
    >>> answer = identify([(grid, pattern)], top=3)[0]
    >>> len(answer.matches), sorted(answer.lattice)[:3]
    (3, ['a', 'a_scaled', 'alpha'])
    """
    from skmat.features._powder import _check_two_theta_range, measured_on_grid
    from skmat.pretrained._registry import load_index, shared_network

    top = int(top)
    if top < 1:
        raise InvalidInputError(f"top must be >= 1, got {top}", view="top")
    if not (isinstance(match_weight, int | float) and math.isfinite(match_weight) and match_weight >= 0):
        raise InvalidInputError(f"match_weight must be a number >= 0, got {match_weight!r}", view="match_weight")
    measurements = _as_measurements(patterns, wavelength)
    compositions = _compositions(composition, len(measurements))
    # the networks run forward without the estimators around them: scikit-learn and skorch
    # would triple the cold start (skmat.pretrained._inference; load() gives the estimators)
    classifier = shared_network(model)
    xrd = classifier.xrd_settings()
    lo, hi = _check_two_theta_range(xrd["two_theta_range"])
    grid = np.linspace(lo, hi, int(xrd["n_bins"]))
    # what MeasuredXRD(target_wavelength=..., two_theta_range=..., n_bins=..., background=...) gives
    grid_patterns = measured_on_grid(
        [(label, x, y, used, "intensity") for label, x, y, used in measurements],
        grid,
        xrd["wavelength"],
        background=xrd["background"],
    )
    views = {"xrd": list(grid_patterns)}
    if "composition" in classifier.views_:
        views["composition"] = compositions
    outputs = classifier.head_outputs(views)
    probabilities = classifier.predict_proba(outputs)
    lattice = classifier.predict_auxiliary(outputs)
    align = shared_network(aligner)
    index = load_index(aligner)
    embedded = align.embed(list(grid_patterns), view="xrd")
    searched = min(max(top, VOTE_MATCHES), len(index))
    elements = [None if c is None else frozenset(e.symbol for e in c.elements) for c in compositions]
    rows, scores = search_references(
        index, embedded, grid_patterns, grid, k=searched, shortlist=shortlist, elements=elements
    )
    from skmat._cosine import _normalized_embeddings

    unit_queries = _normalized_embeddings(np.asarray(embedded, dtype=np.float32), "embeddings")
    classes = [str(c) for c in classifier.classes_]
    # embedding scores (shortlist=0) are not pattern similarities: no vote then
    weight = match_weight if shortlist > 0 else 0.0
    match_systems = np.asarray(index.crystal_systems)[rows].astype(str)
    blended = blend_match_votes(probabilities, match_systems, scores, classes, weight=weight)
    names = list(LATTICE_NAMES)[: lattice.shape[1]]
    ranked = np.argsort(blended, axis=1)[:, ::-1]  # each answer's crystal systems, best first
    answer_systems = [classes[order[0]] for order in ranked]
    refined = (_refined_lattices(model, measurements, compositions, answer_systems, lattice[:, :3]) if refine
               else [None] * len(measurements))
    answers = []
    for i, (label, _, _, used) in enumerate(measurements):
        order = np.argsort(probabilities[i])[::-1]
        matches = [
            {
                "id": str(index.ids[r]),
                "formula": str(index.formulas[r]),
                "space_group": int(index.space_groups[r]),
                "crystal_system": str(index.crystal_systems[r]),
                "source": str(index.sources[r]),
                "similarity": round(float(s), 4),
                "embedding_similarity": round(float(unit_queries[i] @ index.unit_embeddings("xrd")[r]), 4),
            }
            for r, s in zip(rows[i, :top], scores[i, :top], strict=True)
        ]
        answer = Identification(
            name=label,
            wavelength=used,
            crystal_system=answer_systems[i],
            crystal_system_scores={classes[j]: round(float(blended[i, j]), 4) for j in ranked[i]},
            probabilities={str(classifier.classes_[j]): round(float(probabilities[i, j]), 4) for j in order},
            lattice={n: round(float(v), 3) for n, v in zip(names, lattice[i], strict=True)},
            matches=matches,
            pattern=grid_patterns[i],
            two_theta=grid,
            used_composition=None if compositions[i] is None else compositions[i].reduced_formula,
            n_references=len(index),
            refined_lattice=refined[i],
        )
        answers.append(answer)
    return answers


def _refined_lattices(model: str, measurements: list, compositions: list, systems: list, lattice: np.ndarray) -> list:
    """identify's ``refined_lattice`` of each pattern: its network lattice refined under its
    answered crystal system (None without a composition, or where the refinement keeps the
    classifier's lattice)."""
    import warnings

    import pandas as pd

    from skmat.pretrained._registry import shared_refiner

    out: list = [None] * len(measurements)
    rows = [i for i, c in enumerate(compositions) if c is not None]
    if not rows:
        return out
    refiner = shared_refiner(model)
    X = pd.DataFrame({
        "material_id": [measurements[i][0] for i in rows],
        "two_theta": [measurements[i][1] for i in rows],
        "intensity": [measurements[i][2] for i in rows],
        "wavelength": [measurements[i][3] for i in rows],
        "composition": [compositions[i] for i in rows],
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the rows kept are None in the answer
        lattices = refiner.refine(X, [systems[i] for i in rows], lattice[rows])
    for j, i in enumerate(rows):
        if refiner.refined_[j]:
            out[i] = {**{n: round(float(v), 3) for n, v in zip(LATTICE_NAMES[:3], lattices[j], strict=True)},
                      "crystal_system": str(refiner.refined_systems_[j])}
    return out


def plot_identification(answer: Identification, path: str | os.PathLike, *, aligner: str = DEFAULT_ALIGNER) -> Path:
    """Draw the measured pattern over the simulated pattern of the best match into *path* (PNG)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'skmat[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skmat.pretrained._registry import load_index

    index = load_index(aligner)
    best = answer.matches[0]
    row = int(np.flatnonzero(index.ids == best["id"])[0])
    simulated = index.reference_patterns([row], answer.two_theta)[0]
    figure, axis = plt.subplots(figsize=(8, 3.6))
    axis.plot(answer.two_theta, answer.pattern, color="black", lw=0.8, label=f"measured: {answer.name}")
    axis.plot(answer.two_theta, -simulated, color="tab:red", lw=0.8,
              label=f"simulated: {best['formula']} ({best['id']}, SG {best['space_group']}), similarity {best['similarity']:.2f}")
    axis.axhline(0, color="grey", lw=0.5)
    axis.set_xlabel("2θ (°, Cu Kα)")
    axis.set_ylabel("intensity (max 1; simulated below)")
    axis.set_title(f"{answer.name}: {answer.crystal_system} ({answer.crystal_system_scores.get(answer.crystal_system, 0):.0%})")
    axis.legend(loc="upper right", fontsize=7, frameon=False)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
