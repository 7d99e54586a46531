"""The input-validation catalogue and the training guards (issue 6, parts 1 and 3).

One test per kind of bad input, parametrized over the public entry points it reaches:
the featurizers of :mod:`skmat.features`, the encoders' ``fit``/``transform``/``predict`` and
:class:`~skmat.align.MultiModalAligner`'s ``fit``/``transform``/``embed``/``score``. Each bad
input raises :class:`~skmat.exceptions.InvalidInputError` (a ``ValueError``) whose ``row`` and
``view`` name the offending material and column. Inputs are real (MP-20, pymatgen's bundled
structures, the MultiMat sample); the defects are put into copies of them. Networks are tiny
and train for one epoch.
"""

from __future__ import annotations

import copy
import functools
import re

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.core.periodic_table import DummySpecies

import _helpers
from skmat._inputs import is_missing
from skmat.exceptions import NonFiniteLossError
from skmat.datasets import fetch_multimat_sample
from skmat.exceptions import InvalidInputError, SkmatError
from skmat.features import CompositionFeatures, CrystalGraph, XRDPattern
from skmat.features.measured import MeasuredXRD
from skmat.features.spectra import DOSResampler

#: XRD patterns made here must be on the tiny XRD encoder's grid
N_BINS = _helpers.TINY_ENCODERS["xrd"][1]["n_bins"]
TINY = dict(max_epochs=1, batch_size=8, validation_fraction=0.0, random_state=0)
#: the row that receives the defect; its label must appear in the error
BAD = 3


#: the shared tiny encoders (see _helpers.py), trained with this module's settings
tiny_encoder = functools.partial(_helpers.tiny_encoder, **TINY)


def tiny_aligner(kinds=("structure", "xrd", "composition"), **overrides):
    return _helpers.tiny_aligner(kinds, **{"latent_dim": 4, "batch_size": 8, **overrides})


# -- data -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mp20(mp20_val_rows):
    """10 real MP-20 crystals (labels: ``material_id``) and their formation energy, eV/atom."""
    rows = mp20_val_rows.iloc[:10].reset_index(drop=True)
    return rows[["material_id", "structure"]], rows["formation_energy_per_atom"].to_numpy()


@pytest.fixture(scope="module")
def multimat(data_home):
    """8 MultiMat materials with every array view (DOS, charge density, text embedding)."""
    X, y = fetch_multimat_sample(data_home=data_home, return_X_y=True, target="bulk_modulus")
    # mp-696961's DOS has a corrupted header (see tests/test_encoders.py)
    keep = X["dos"].notna() & X["charge_density"].notna() & X["text"].notna() & y.notna()
    keep &= X.index != "mp-696961"
    return X[keep].iloc[:8], y[keep].iloc[:8].to_numpy()


@pytest.fixture(scope="module")
def fitted(mp20, multimat):
    """One fitted tiny encoder per view, and an aligner over structure, XRD and composition."""
    X, y = mp20
    XA, yA = multimat
    out = {kind: tiny_encoder(kind).fit(X, y) for kind in ("structure", "xrd", "composition")}
    out.update({kind: tiny_encoder(kind).fit(XA[[kind]], yA) for kind in ("dos", "charge_density", "text")})
    out["aligner"] = tiny_aligner().fit(X)
    return out


def with_cell(X: pd.DataFrame, column: str, value, row: int = BAD) -> pd.DataFrame:
    """A copy of *X* whose cell (*row*, *column*) holds *value* (X itself is left alone)."""
    out = X.copy()
    cells = list(out[column]) if column in out.columns else [None] * len(out)
    cells[row] = value
    out[column] = pd.Series(cells, index=out.index, dtype=object)
    return out


def label_of(X: pd.DataFrame, row: int = BAD):
    return X["material_id"].iloc[row] if "material_id" in X.columns else X.index[row]


ENCODER_NAMES = {"structure": "StructureEncoder", "xrd": "XRDEncoder", "composition": "CompositionEncoder"}
# Every entry point that reads a ``structure`` column: name -> call(X, y, fitted).
STRUCTURE_ENTRY_POINTS = {
    "XRDPattern": lambda X, y, f: XRDPattern(n_bins=N_BINS).fit_transform(X),
    "CompositionFeatures": lambda X, y, f: CompositionFeatures().fit_transform(X),
    "CrystalGraph": lambda X, y, f: CrystalGraph(max_neighbors=6).fit_transform(X),
    **{
        f"{ENCODER_NAMES[kind]}.{method}": (
            lambda kind, method: lambda X, y, f: (
                tiny_encoder(kind).fit(X, y) if method == "fit" else getattr(f[kind], method)(X)
            )
        )(kind, method)
        for kind in ("structure", "xrd", "composition")
        for method in ("fit", "transform", "predict")
    },
    "MultiModalAligner.fit": lambda X, y, f: tiny_aligner().fit(X),
    "MultiModalAligner.transform": lambda X, y, f: f["aligner"].transform(X),
    "MultiModalAligner.embed": lambda X, y, f: f["aligner"].embed(X, "structure"),
    "MultiModalAligner.score": lambda X, y, f: f["aligner"].score(X),
}
# those that build a crystal graph, which needs one element per site
GRAPH_ENTRY_POINTS = ["CrystalGraph", *(f"StructureEncoder.{m}" for m in ("fit", "transform", "predict"))] + [
    f"MultiModalAligner.{m}" for m in ("fit", "transform", "embed", "score")
]


def refused(entry, X, y, fitted, *, view: str, match: str, row=None):
    """Call *entry* on *X*; it must raise InvalidInputError naming *row* (default: BAD's label)
    and *view*, with *match* in the message."""
    with pytest.raises(InvalidInputError, match=match) as caught:
        STRUCTURE_ENTRY_POINTS[entry](X, y, fitted) if isinstance(entry, str) else entry(X, y, fitted)
    expected_row = label_of(X) if row is None else row
    assert caught.value.row == expected_row, str(caught.value)
    assert caught.value.view == view, str(caught.value)
    assert repr(expected_row) in str(caught.value) and repr(view) in str(caught.value)
    return caught.value


structure_entry_points = pytest.mark.parametrize("entry", list(STRUCTURE_ENTRY_POINTS))


# -- 1. malformed CIF text ------------------------------------------------------------------------
@structure_entry_points
def test_malformed_cif_text(entry, mp20, fitted):
    X, y = mp20
    cif = X["structure"].iloc[BAD].to(fmt="cif")
    truncated = cif[: cif.index("_atom_site_occupancy")]  # a header and no atoms
    refused(entry, with_cell(X, "structure", truncated), y, fitted, view="structure", match="malformed CIF")


# -- 2. structure with no sites -------------------------------------------------------------------
@structure_entry_points
def test_structure_with_no_sites(entry, mp20, fitted):
    X, y = mp20
    empty = Structure(X["structure"].iloc[BAD].lattice, [], [])
    refused(entry, with_cell(X, "structure", empty), y, fitted, view="structure", match="no sites")


# -- 3. partial occupancies -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def disordered(bundled_structures):
    """Li10GeP2S12, a real superionic conductor with partially occupied Li/Ge/P sites."""
    found = [s for s in bundled_structures if not s.is_ordered]
    assert found, "pymatgen's bundled structures no longer include a disordered one"
    return found[0]


@pytest.mark.parametrize(
    "entry",
    ["XRDPattern", "CompositionFeatures", "XRDEncoder.fit", "XRDEncoder.transform", "CompositionEncoder.fit",
     "CompositionEncoder.predict"],
)
def test_partial_occupancy_is_supported_by_xrd_and_composition(entry, mp20, fitted, disordered):
    X, y = mp20
    out = np.asarray(STRUCTURE_ENTRY_POINTS[entry](with_cell(X, "structure", disordered), y, fitted), dtype=object)
    if out.dtype == object and out.ndim == 0:  # fit returns the estimator
        return
    assert np.all(np.isfinite(out.astype(float)))


@pytest.mark.parametrize("entry", GRAPH_ENTRY_POINTS)
def test_partial_occupancy_is_refused_by_graph_encoders(entry, mp20, fitted, disordered):
    X, y = mp20
    refused(entry, with_cell(X, "structure", disordered), y, fitted, view="structure", match="partially occupied")


# -- 4. unknown element symbol --------------------------------------------------------------------
@structure_entry_points
@pytest.mark.parametrize("form", ["Structure", "CIF"])
def test_unknown_element_symbol_in_a_structure(entry, form, mp20, fitted):
    X, y = mp20
    real = X["structure"].iloc[BAD]
    if form == "Structure":
        bad = real.copy()
        bad.replace(0, DummySpecies("Xx"), coords=bad[0].frac_coords)
    else:
        # the type symbol column of the atom-site loop only: labels (Mn0) and formulas (Mn2) differ
        symbol = real[0].specie.symbol
        bad = re.sub(rf"(?m)^(\s+){symbol}(\s+{symbol}\d+\s)", r"\1Xx\2", real.to(fmt="cif"), count=1)
    refused(entry, with_cell(X, "structure", bad), y, fitted, view="structure", match="unknown element symbol 'Xx'")


@pytest.mark.parametrize(
    "entry",
    ["CompositionFeatures", "CompositionEncoder.fit", "CompositionEncoder.transform", "MultiModalAligner.transform"],
)
def test_unknown_element_symbol_in_a_formula(entry, mp20, fitted):
    X, y = mp20
    formulas = [s.composition.reduced_formula for s in X["structure"]]
    frame = with_cell(pd.DataFrame({"material_id": X["material_id"], "composition": formulas}), "composition", "Xx2O3")
    refused(entry, frame, y, fitted, view="composition", match="unknown element symbol 'Xx'")


# -- 5. NaN / inf in coordinates, lattice, patterns -----------------------------------------------
@structure_entry_points
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_coordinates(entry, value, mp20, fitted):
    X, y = mp20
    real = X["structure"].iloc[BAD]
    coords = real.frac_coords.copy()
    coords[0, 1] = value
    bad = Structure(real.lattice, real.species, coords)
    refused(entry, with_cell(X, "structure", bad), y, fitted, view="structure", match="coordinates contain NaN or inf")


@structure_entry_points
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_lattice(entry, value, mp20, fitted):
    X, y = mp20
    real = X["structure"].iloc[BAD]
    matrix = real.lattice.matrix.copy()
    matrix[1, 1] = value
    bad = Structure(Lattice(matrix), real.species, real.frac_coords)
    refused(entry, with_cell(X, "structure", bad), y, fitted, view="structure", match="lattice contains NaN or inf")


def array_entry_points():
    """(view, entry name, call(X, y, fitted)) for every entry point reading an array view."""
    out = []
    for kind in ("xrd", "dos", "charge_density", "text"):
        out.append((kind, f"{kind}.fit", lambda X, y, f, kind=kind: tiny_encoder(kind).fit(X, y)))
        out.append((kind, f"{kind}.transform", lambda X, y, f, kind=kind: f[kind].transform(X)))
        out.append((kind, f"{kind}.predict", lambda X, y, f, kind=kind: f[kind].predict(X)))
    out.append(("xrd", "MultiModalAligner.transform", lambda X, y, f: f["aligner"].transform(X)))
    out.append(("dos", "DOSResampler", lambda X, y, f: DOSResampler(n_points=32).fit_transform(X)))
    out.append(("xrd", "MeasuredXRD", lambda X, y, f: MeasuredXRD(n_bins=N_BINS).fit_transform(X)))
    return out


ARRAY_ENTRY_POINTS = array_entry_points()


@pytest.fixture(scope="module")
def array_views(mp20, multimat):
    """Real cells of every array view, each entry point's frame, and its target."""
    X, y = mp20
    XA, yA = multimat
    patterns = XRDPattern(n_bins=N_BINS).fit_transform(X)
    xrd = pd.DataFrame({"material_id": X["material_id"], "xrd": list(patterns)})
    two_theta = np.linspace(5.0, 90.0, N_BINS)
    measured = pd.DataFrame({"material_id": X["material_id"], "xrd": [(two_theta, p) for p in patterns]})
    return {"xrd": (xrd, y), "xrd_measured": (measured, y), **{k: (XA[[k]], yA) for k in ("dos", "charge_density", "text")}}


def frame_for(view, name, array_views):
    return array_views["xrd_measured" if name == "MeasuredXRD" else view]


def nonfinite_cell(cell, value):
    if isinstance(cell, tuple):  # a measured (two_theta, intensity) pair
        return cell[0], nonfinite_cell(cell[1], value)
    bad = np.array(cell, dtype=float)
    bad.flat[bad.size // 2] = value
    return bad


@pytest.mark.parametrize(("view", "name", "call"), ARRAY_ENTRY_POINTS, ids=[n for _, n, _ in ARRAY_ENTRY_POINTS])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_an_array_view(view, name, call, value, array_views, fitted):
    X, y = frame_for(view, name, array_views)
    bad = with_cell(X, view, nonfinite_cell(X[view].iloc[BAD], value))
    refused(call, bad, y, fitted, view=view, match="NaN|inf|infinite")


# -- 6. wrong array shapes / lengths per view -----------------------------------------------------
WRONG_SHAPES = {
    "xrd": {"too short": lambda a: a[:-1], "2-D": lambda a: np.stack([a, a])},
    "dos": {"1-D": lambda a: a[1], "3-D": lambda a: a[None]},
    "charge_density": {"2-D": lambda a: a[0], "other grid": lambda a: a[:-1]},
    "text": {"too short": lambda a: a[:-1], "2-D": lambda a: a[None]},
}
SHAPE_CASES = [
    (view, name, call, how)
    for view, name, call in ARRAY_ENTRY_POINTS
    if name != "MeasuredXRD"  # a measured pattern may have any length: it is resampled
    for how in WRONG_SHAPES[view]
]


@pytest.mark.parametrize(
    ("view", "name", "call", "how"), SHAPE_CASES, ids=[f"{n}-{h}" for _, n, _, h in SHAPE_CASES]
)
def test_wrong_array_shape_for_the_view(view, name, call, how, array_views, fitted):
    X, y = frame_for(view, name, array_views)
    cell = WRONG_SHAPES[view][how](np.asarray(X[view].iloc[BAD]))
    if name.endswith(".fit") and how == "other grid":
        # at fit the grid is learned from the rows, so the error names the view and both grids
        with pytest.raises(InvalidInputError, match="differ in shape") as caught:
            call(with_cell(X, view, cell), y, fitted)
        assert caught.value.view == view
        return
    refused(call, with_cell(X, view, cell), y, fitted, view=view, match="shape")


# -- 7. a view column of mixed types --------------------------------------------------------------
@structure_entry_points
@pytest.mark.parametrize("garbage", [1.5, 7, {"lattice": "cubic"}, ["Na", "Cl"]], ids=["float", "int", "dict", "list"])
def test_mixed_types_in_a_view_column(entry, garbage, mp20, fitted):
    """Structures, CIF strings and missing cells mix freely; anything else names its row."""
    X, y = mp20
    mixed = with_cell(X, "structure", X["structure"].iloc[1].to(fmt="cif"), row=1)
    mixed = with_cell(mixed, "structure", garbage)
    refused(entry, mixed, y, fitted, view="structure", match="Structure|CIF")


def test_structure_objects_cif_strings_and_missing_marks_mix(mp20, fitted):
    """A Structure and its CIF text give the same embedding; None, NaN and pd.NA all mean 'this
    row lacks the view' to the aligner."""
    X, _ = mp20
    cif_row = with_cell(X, "structure", X["structure"].iloc[BAD].to(fmt="cif"))
    aligner = fitted["aligner"]
    np.testing.assert_allclose(aligner.transform(cif_row), aligner.transform(X), atol=1e-5)
    for missing in (None, np.nan, pd.NA):
        frame = with_cell(X, "structure", missing)
        frame["composition"] = [s.composition for s in X["structure"]]
        z = aligner.embed(frame, "structure")
        assert np.isnan(z[BAD]).all() and np.isfinite(np.delete(z, BAD, axis=0)).all()


# -- 8. X and y of different lengths --------------------------------------------------------------
Y_ENTRY_POINTS = {
    "StructureEncoder.fit": lambda X, y, f: tiny_encoder("structure").fit(X, y),
    "CompositionEncoder.fit": lambda X, y, f: tiny_encoder("composition").fit(X, y),
    "CompositionEncoder.score": lambda X, y, f: f["composition"].score(X, y),
    "MultiModalAligner.fit": lambda X, y, f: tiny_aligner().fit(X, y),
}


@pytest.mark.parametrize("entry", list(Y_ENTRY_POINTS))
@pytest.mark.parametrize("change", [-1, +2])
def test_X_and_y_of_different_lengths(entry, change, mp20, fitted):
    X, y = mp20
    y_bad = np.resize(y, len(y) + change)
    with pytest.raises(InvalidInputError, match=rf"X has {len(X)} rows but y has {len(y_bad)} values") as caught:
        Y_ENTRY_POINTS[entry](X, y_bad, fitted)
    assert caught.value.view == "y"


# -- 9. y with NaN (regression) or None labels (classification) -----------------------------------
@pytest.mark.parametrize("entry", ["StructureEncoder.fit", "CompositionEncoder.fit", "CompositionEncoder.score"])
@pytest.mark.parametrize("value", [np.nan, np.inf, None])
def test_regression_target_with_nan(entry, value, mp20, fitted):
    X, y = mp20
    y_bad = y.astype(object) if value is None else y.copy()
    y_bad[BAD] = value
    refused(Y_ENTRY_POINTS[entry], X, y_bad, fitted, view="y", match="target y")


def test_classification_labels_with_none(mp20):
    X, y = mp20
    labels = np.where(y > np.median(y), "higher", "lower").astype(object)
    labels[BAD] = None
    refused(lambda X, y, f: tiny_encoder("composition").fit(X, y), X, labels, None, view="y", match="missing")


# -- 10. an empty DataFrame -----------------------------------------------------------------------
@pytest.mark.parametrize("entry", [e for e in STRUCTURE_ENTRY_POINTS if "." in e])
@pytest.mark.parametrize("columns", [[], ["material_id", "structure"]], ids=["no columns", "no rows"])
def test_empty_dataframe(entry, columns, mp20, fitted):
    X, y = mp20
    empty = pd.DataFrame(columns=columns)
    with pytest.raises(InvalidInputError, match="no rows|at least 2 rows"):
        STRUCTURE_ENTRY_POINTS[entry](empty, y[:0], fitted)


@pytest.mark.parametrize("featurizer", [XRDPattern(n_bins=N_BINS), CompositionFeatures(), CrystalGraph()], ids=lambda f: type(f).__name__)
def test_empty_dataframe_at_a_featurizer(featurizer):
    """Stateless featurizers map zero rows to zero rows (documented); a frame without the
    view's column is refused naming the view."""
    with pytest.raises(InvalidInputError, match="column") as caught:
        featurizer.fit_transform(pd.DataFrame())
    assert caught.value.view in ("structure", "composition")
    assert len(featurizer.fit_transform(pd.DataFrame({"structure": []}))) == 0


# -- 11. unseen view names ------------------------------------------------------------------------
def test_embed_with_a_view_that_was_not_fitted(mp20, fitted):
    X, _ = mp20
    with pytest.raises(InvalidInputError, match=r"views \['dos'\] were not fitted") as caught:
        fitted["aligner"].embed(X, "dos")
    assert caught.value.view == "dos"


def test_transform_views_naming_a_view_that_was_not_fitted(mp20, fitted):
    X, _ = mp20
    aligner = copy.deepcopy(fitted["aligner"]).set_params(transform_views=("xrd", "dos"))
    with pytest.raises(InvalidInputError, match=r"transform_views \['dos'\] were not fitted") as caught:
        aligner.transform(X)
    assert caught.value.view == "dos"


# -- 12. a view present at transform that was absent at fit ---------------------------------------
def test_columns_no_fitted_encoder_reads_are_ignored_at_transform(mp20, multimat, fitted):
    """As ColumnTransformer with DataFrames: columns are matched by name, extra ones ignored."""
    X, _ = mp20
    XA, _ = multimat
    extra = X.assign(dos=list(XA["dos"].iloc[:2]) * 5, band_gap=np.arange(len(X), dtype=float))
    np.testing.assert_array_equal(fitted["aligner"].transform(extra), fitted["aligner"].transform(X))
    np.testing.assert_array_equal(fitted["composition"].transform(extra), fitted["composition"].transform(X))


def test_a_view_column_absent_at_fit_is_used_at_transform(mp20, fitted):
    """The aligner and the XRD encoder were fitted on structures only (patterns simulated); a
    given ``xrd`` column is read at transform: the simulated patterns give the same result,
    other patterns a different one."""
    X, _ = mp20
    aligner, encoder = fitted["aligner"], fitted["xrd"]
    simulated = list(XRDPattern(n_bins=N_BINS).fit_transform(X))
    for estimator in (aligner, encoder):
        same = estimator.transform(X.assign(xrd=simulated))
        np.testing.assert_allclose(same, estimator.transform(X), atol=1e-5)
        other = estimator.transform(X.assign(xrd=simulated[1:] + simulated[:1]))
        assert not np.allclose(other, same, atol=1e-4)


# -- inputs are never mutated ---------------------------------------------------------------------
def same_cell(a, b) -> bool:
    if isinstance(a, Structure):
        return isinstance(b, Structure) and a.as_dict() == b.as_dict() and a.properties == b.properties
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(same_cell, a, b))
    if is_missing(a):
        return is_missing(b)
    return bool(a == b)


def assert_unchanged(before, after):
    if isinstance(before, pd.DataFrame):
        assert list(after.columns) == list(before.columns) and after.index.equals(before.index)
        assert after.dtypes.equals(before.dtypes)
        for column in before.columns:
            assert all(map(same_cell, before[column], after[column])), column
    else:
        np.testing.assert_array_equal(np.asarray(after), np.asarray(before))


def mutation_cases():
    return {
        "XRDPattern": ("mp20", lambda X, y: XRDPattern(n_bins=N_BINS).fit(X).transform(X)),
        "CompositionFeatures": ("mp20", lambda X, y: CompositionFeatures().fit(X).transform(X)),
        "CrystalGraph": ("mp20", lambda X, y: CrystalGraph(max_neighbors=6).fit(X).transform(X)),
        "DOSResampler": ("dos", lambda X, y: DOSResampler(n_points=32).fit(X).transform(X)),
        "MeasuredXRD": ("xrd_measured", lambda X, y: MeasuredXRD(n_bins=N_BINS).fit(X).transform(X)),
        **{
            name: (kind, lambda X, y, kind=kind: tiny_encoder(kind).fit(X, y).predict(X))
            for kind, name in [
                ("structure", "StructureEncoder"), ("xrd", "XRDEncoder"), ("composition", "CompositionEncoder"),
                ("dos", "DOSEncoder"), ("charge_density", "ChargeDensityEncoder"), ("text", "TextEncoder"),
            ]
        },
        # SAED images rendered from the structures
        "ImageEncoder": ("structure", lambda X, y: tiny_encoder("image").fit(X, y).predict(X)),
        "MultiModalAligner": ("mp20", lambda X, y: tiny_aligner().fit(X, y).transform(X)),
    }


MUTATION_CASES = mutation_cases()


@pytest.mark.parametrize("estimator", list(MUTATION_CASES))
def test_inputs_are_never_mutated(estimator, mp20, array_views):
    data, run = MUTATION_CASES[estimator]
    if data == "mp20" or data in ("structure", "composition"):
        X, y = mp20
        X = X.assign(note=["real"] * len(X))  # a column no estimator reads, kept as is too
    else:
        X, y = array_views[data]
    X_before, y_before = copy.deepcopy(X), copy.deepcopy(y)
    run(X, y)
    assert_unchanged(X_before, X)
    assert_unchanged(y_before, y)


# -- training guards ------------------------------------------------------------------------------
def gradient_norms_seen_by_the_optimizer(fit):
    """Global L2 norm of the gradients at every optimizer step of *fit*() (a torch hook run
    after each step, when the gradients the step used are still in place)."""
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad.detach() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(record)
    try:
        fit()
    finally:
        handle.remove()
    return norms


@pytest.mark.parametrize("estimator", ["CompositionEncoder", "MultiModalAligner"])
def test_max_grad_norm_clips_the_gradients_seen_by_the_optimizer(estimator, mp20):
    X, y = mp20
    make = {
        "CompositionEncoder": lambda **kw: tiny_encoder("composition", max_epochs=2, **kw).fit(X, y),
        "MultiModalAligner": lambda **kw: tiny_aligner(("xrd", "composition"), max_epochs=2, **kw).fit(X),
    }[estimator]
    limit = 1e-3
    unclipped = gradient_norms_seen_by_the_optimizer(lambda: make())
    clipped = gradient_norms_seen_by_the_optimizer(lambda: make(max_grad_norm=limit))
    assert len(clipped) == len(unclipped) > 0
    assert max(unclipped) > 10 * limit  # without clipping the limit would be exceeded
    assert max(clipped) <= limit * (1 + 1e-4)


@pytest.mark.parametrize("bad", [0, -1.0, np.nan, np.inf, "big"])
@pytest.mark.parametrize("estimator", ["CompositionEncoder", "MultiModalAligner"])
def test_max_grad_norm_must_be_positive_or_none(estimator, bad, mp20):
    X, y = mp20
    make = {"CompositionEncoder": lambda: tiny_encoder("composition"), "MultiModalAligner": lambda: tiny_aligner()}
    with pytest.raises(ValueError, match="max_grad_norm must be a positive number or None"):
        make[estimator]().set_params(max_grad_norm=bad).fit(X, y)


def test_max_grad_norm_survives_save_and_load(mp20, tmp_path):
    from skmat.persist import load, save

    X, y = mp20
    encoder = tiny_encoder("composition", max_grad_norm=0.5).fit(X, y)
    loaded = load(save(encoder, tmp_path / "enc"))
    assert loaded.get_params()["max_grad_norm"] == 0.5
    assert dict(loaded.net_.callbacks)["grad_clip"].gradient_clip_value == 0.5
    np.testing.assert_allclose(loaded.predict(X), encoder.predict(X), rtol=1e-5)


@pytest.mark.parametrize(
    ("estimator", "term"),
    [("regressor", r"task term \(MSE\)"), ("classifier", r"task term \(cross-entropy\)"),
     ("aligner", r"contrastive term \(loss='all_pairs'\)")],
)
def test_non_finite_loss_stops_training_naming_epoch_batch_and_term(estimator, term, mp20):
    """A learning rate of 1e30 blows the weights up at the first step: the second batch's loss
    is not finite, and training stops there instead of returning a NaN model."""
    X, y = mp20
    huge = dict(lr=1e30, max_epochs=3, batch_size=4)
    fit = {
        "regressor": lambda: tiny_encoder("composition", **huge).fit(X, y),
        "classifier": lambda: tiny_encoder("composition", **huge).fit(X, y > np.median(y)),
        "aligner": lambda: tiny_aligner(("xrd", "composition"), **huge).fit(X),
    }[estimator]
    with pytest.raises(NonFiniteLossError, match=rf"in epoch 1, training batch 2, in its {term}") as caught:
        fit()
    assert isinstance(caught.value, SkmatError) and isinstance(caught.value, FloatingPointError)
    assert re.search(r"the loss became (nan|inf|-inf)", str(caught.value))


def test_temperature_stays_in_its_clamp(mp20):
    """A learning rate of 2 pushes log(temperature) hard; after every step the learned
    parameter itself is put back into [0.01, 1] (as CLIP clamps its logit scale), so it never
    drifts where its gradient is zero."""
    X, _ = mp20
    aligner = tiny_aligner(("xrd", "composition"), lr=2.0, warmup_fraction=0.0, max_epochs=3).fit(X)
    contrastive = aligner.net_.module_.contrastive
    raw = float(contrastive.log_temperature.detach().exp())
    assert 0.01 - 1e-6 <= raw <= 1.0 + 1e-6
    assert raw != pytest.approx(0.07)  # it did move
    assert 0.01 <= aligner.temperature_ <= 1.0
    # and weight decay does not pull it towards 1: the optimizer exempts it
    groups = aligner.net_.optimizer_.param_groups
    (group,) = [g for g in groups if any(p is contrastive.log_temperature for p in g["params"])]
    assert group["weight_decay"] == 0.0
