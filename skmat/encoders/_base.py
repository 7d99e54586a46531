"""scikit-learn faces of the single-view encoders.

Each encoder is a full estimator on its own — ``fit(X, y)`` trains the network and an MLP head
on a supervised target (regression or classification, inferred from ``y``), then ``predict``,
``score`` and ``transform`` (the learned embedding) — and, inside
:class:`~skmat.align.MultiModalAligner`, it supplies the network and the data preparation for
its view. Views that can be derived from a crystal structure (graph, XRD pattern, composition)
are computed from the ``structure`` column when their own column is absent.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import (
    as_compositions,
    check_has_rows,
    is_missing,
    present_structures,
    row_labels,
    standardized_targets,
    to_frame,
)
from skmat.exceptions import InvalidInputError

_TRAINING_DOC = """
    max_epochs : int, default={max_epochs}
        Passes over the training rows (early stopping may end sooner).
    batch_size : int, default=64
        Rows per optimisation step.
    lr : float, default=1e-3
        Peak learning rate of AdamW (linear warm-up, then cosine decay).
    weight_decay : float, default=1e-4
        AdamW weight decay.
    validation_fraction : float, default=0.1
        Share of the rows held out for early stopping (0 disables it).
    patience : int, default=5
        Epochs without improvement of the validation loss before stopping.
    max_grad_norm : float or None, default=None
        Clip the global L2 norm of the gradients to this value before every optimizer step
        (a guard against a single bad batch blowing the weights up); None does not clip.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU; or any torch device string.
        Ignored when ``accelerator`` is given.
    accelerator : accelerate.Accelerator or None, default=None
        Train through Hugging Face Accelerate (devices, processes of an ``accelerate launch``
        run, mixed precision); see ``docs/scaling.md``.
    random_state : int or None, default=None
        Seeds weight initialisation, shuffling and the validation split.
    verbose : int, default=0
        ``> 0`` prints the training log and a progress bar.
"""


class _NeuralViewEncoder(TransformerMixin, BaseEstimator):
    """Shared behaviour: preparation hooks for the aligner and supervised training."""

    #: the DataFrame column this encoder reads by default
    _default_view: str = ""

    # -- hooks every subclass implements -------------------------------------------------
    def _prepare(self, frame: pd.DataFrame, view: str, *, fit: bool):
        """Return a :class:`~skmat._training.PreparedView`; with ``fit=True`` also learn input
        statistics (scales, sizes) the network needs."""
        raise NotImplementedError

    def _make_module(self):
        """Build the torch encoder (after ``_prepare(..., fit=True)``)."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    def _view_name(self) -> str:
        return getattr(self, "view", None) or self._default_view

    def _array_cells(self, frame: pd.DataFrame, view: str, shape_of_row) -> tuple[np.ndarray, list]:
        """Present mask and validated float arrays of an array-valued view column."""
        present = np.zeros(len(frame), dtype=bool)
        arrays = []
        if view not in frame.columns:
            return present, arrays
        for i, (label, value) in enumerate(zip(row_labels(frame), frame[view], strict=True)):
            if is_missing(value):
                continue
            try:
                array = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"cannot read as a numeric array: {exc}", row=label, view=view) from exc
            expected = shape_of_row(array)
            if expected is not None and array.shape != tuple(expected):
                raise InvalidInputError(
                    f"expected an array of shape {tuple(expected)}, got {array.shape}", row=label, view=view
                )
            if not np.all(np.isfinite(array)):
                raise InvalidInputError("array contains NaN or inf", row=label, view=view)
            arrays.append(array)
            present[i] = True
        return present, arrays

    # -- supervised, standalone use -------------------------------------------------------
    def _training_params(self) -> dict:
        """Keyword arguments of :func:`~skmat._training.build_net` (plus ``device``,
        ``accelerator`` and ``random_state``, which ``fit`` and :func:`skmat.persist.load`
        place themselves)."""
        params = {
            k: getattr(self, k)
            for k in (
                "max_epochs",
                "batch_size",
                "lr",
                "weight_decay",
                "validation_fraction",
                "patience",
                "device",
                "accelerator",
                "random_state",
                "verbose",
            )
        }
        # build_net's name; getattr: estimators pickled before the parameter existed lack it
        params["grad_clip"] = getattr(self, "max_grad_norm", None)
        return params

    def _encode_target(self, y: Any, frame: pd.DataFrame) -> tuple[np.ndarray, int]:
        """Validate *y*, set ``task_`` (and ``classes_`` or the target scaling); return the
        training target and the number of network outputs.

        Floating-point targets are regressed even when every value is a whole number (a bulk
        modulus of 120.0 GPa is not a class); integers, booleans and strings are class labels.
        """
        for stale in ("classes_", "y_mean_", "y_scale_"):  # a refit may switch the task
            self.__dict__.pop(stale, None)
        y_array = np.asarray(y)
        labels = row_labels(frame)
        if y_array.ndim == 0 or y_array.shape[0] != len(frame):
            n_y = "a scalar" if y_array.ndim == 0 else f"{y_array.shape[0]} values"
            raise InvalidInputError(f"X has {len(frame)} rows but y has {n_y}", view="y")
        if y_array.ndim > 2:
            raise InvalidInputError(f"y must be 1-D or 2-D, got shape {y_array.shape}", view="y")
        if y_array.dtype.kind in "fc":
            kind = "continuous"
        else:
            missing = pd.isna(y_array.reshape(len(y_array), -1)).any(axis=1)
            if missing.any():
                raise InvalidInputError("target y is missing", row=labels[int(np.flatnonzero(missing)[0])], view="y")
            kind = type_of_target(y_array)
        if kind in {"binary", "multiclass"}:
            self.task_ = "classification"
            self.classes_, codes = np.unique(y_array, return_inverse=True)
            if len(self.classes_) < 2:
                raise InvalidInputError(f"y has a single class {self.classes_[0]!r}: nothing to learn", view="y")
            return codes.astype(np.int64), len(self.classes_)
        if kind not in {"continuous", "continuous-multioutput"}:
            raise InvalidInputError(
                f"y is {kind!r}: expected float targets (regression) or one label per row (classification)",
                view="y",
            )
        self.task_ = "regression"
        target, self.y_mean_, self.y_scale_ = standardized_targets(y_array, labels, name="target y", view="y")
        return target, 1 if target.ndim == 1 else target.shape[1]

    @staticmethod
    def _require_all_present(prepared, frame: pd.DataFrame, view: str) -> None:
        if not prepared.present.all():
            missing = [row_labels(frame)[i] for i in np.flatnonzero(~prepared.present)]
            shown = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise InvalidInputError(
                f"view {view!r} is missing for {len(missing)} row(s) ({shown}); a standalone encoder "
                "needs it in every row (MultiModalAligner handles missing views)",
                row=missing[0],
                view=view,
            )

    def fit(self, X: Any, y: Any) -> _NeuralViewEncoder:
        """Train the encoder and an MLP head to predict *y* from this view.

        Parameters
        ----------
        X : DataFrame or list
            One material per row; the view's column (or ``structure`` to derive it from). Every
            row must have the view.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Floating-point targets are regressed (standardised internally); integer, boolean
            or string labels are classified (cross-entropy). Cast whole-number regression
            targets to float.

        Returns
        -------
        self
        """
        from skmat._training import (
            MultiViewDataset,
            build_net,
            check_max_grad_norm,
            fit_with_encoder_hooks,
            resolve_device,
            seed_torch,
        )

        check_max_grad_norm(self.max_grad_norm)
        if y is None:
            # sklearn's wording, which its tooling recognises
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None; for "
                "self-supervised alignment use MultiModalAligner"
            )
        frame = to_frame(X, default_column=self._default_view)
        view = self._view_name()
        check_has_rows(frame, view=view)
        target, n_outputs = self._encode_target(y, frame)
        prepared = self._prepare(frame, view, fit=True)
        self._require_all_present(prepared, frame, view)
        params = self._training_params()
        device = params.pop("device")
        self.device_ = str(self.accelerator.device) if self.accelerator is not None else resolve_device(device)
        seed_torch(self.random_state)
        module = self._network(n_outputs)
        dataset = MultiViewDataset({view: prepared}, target)
        random_state = params.pop("random_state")
        self.net_ = build_net(
            module,
            n_rows=len(frame),
            warmup_fraction=0.05,
            device=self.device_,
            random_state=random_state,
            **params,
        )
        fit_with_encoder_hooks(self.net_, dataset, [(view, self)], random_state)
        self.n_features_in_ = frame.shape[1]
        return self

    def _configure_training(self, net, dataset, view: str, random_state: int | None = None) -> None:
        """Adjust the net before training (e.g. per-batch augmentation); default: nothing.

        *random_state* is the seed of the estimator that trains (an aligner's, when this
        encoder is one of its views), used when the encoder has none of its own."""

    def _end_training(self, net, dataset) -> None:
        """Undo training-only settings of :meth:`_configure_training`; default: nothing."""

    def _network(self, n_outputs: int):
        """The untrained encoder + head that ``fit`` trains (also rebuilt by :func:`skmat.persist.load`)."""
        from skmat.nn.multiview import SupervisedViewModel

        return SupervisedViewModel(self._view_name(), self._make_module(), n_outputs, self.task_)

    def _checked_view(self, X: Any):
        """Prepared data of this encoder's view for every row of *X* (all rows must have it)."""
        check_is_fitted(self, "net_")
        frame = to_frame(X, default_column=self._default_view)
        view = self._view_name()
        check_has_rows(frame, view=view)
        prepared = self._prepare(frame, view, fit=False)
        self._require_all_present(prepared, frame, view)
        return view, prepared

    def _head_outputs(self, X: Any) -> np.ndarray:
        from skmat._training import MultiViewDataset, run_inference

        view, prepared = self._checked_view(X)
        parts = run_inference(self.net_, MultiViewDataset({view: prepared}), lambda out: out[0].cpu().numpy())
        return np.concatenate(parts)

    def transform(self, X: Any) -> np.ndarray:
        """The learned embedding of each row (output of the encoder, before the head).

        Parameters
        ----------
        X : DataFrame or list
            One material per row, each with this encoder's view. As with
            :class:`~sklearn.compose.ColumnTransformer`, the view is found by column name, so
            the columns need not be those seen at ``fit``: other columns are ignored, and
            the view's own column is used when present even if ``fit`` derived the view from
            ``structure`` (e.g. measured ``xrd`` patterns).

        Returns
        -------
        ndarray of shape (n_samples, out_dim), float32
        """
        from skmat._training import MultiViewDataset, run_inference

        view, prepared = self._checked_view(X)
        dataset = MultiViewDataset({view: prepared})
        parts = run_inference(self.net_, dataset, lambda out: out[0].cpu().numpy(), method="embed")
        return np.concatenate(parts).astype(np.float32)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets (regression) or class labels (classification)."""
        raw = self._head_outputs(X)
        if self.task_ == "classification":
            return self.classes_[raw.argmax(axis=1)]
        out = raw * self.y_scale_ + self.y_mean_
        return out.ravel() if np.ndim(self.y_mean_) == 0 else out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (classification only)."""
        check_is_fitted(self, "net_")
        if self.task_ != "classification":
            raise AttributeError("predict_proba is only available for classification targets")
        logits = self._head_outputs(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def score(self, X: Any, y: Any) -> float:
        """R² for regression, accuracy for classification.

        *y* is checked as at ``fit``: one value per row of *X*, no NaN or missing label.
        """
        check_is_fitted(self, "net_")
        frame = to_frame(X, default_column=self._default_view)
        y_true = self._checked_score_target(y, frame)
        prediction = self.predict(frame)
        if self.task_ == "classification":
            return float(accuracy_score(y_true, prediction))
        return float(r2_score(y_true, prediction))

    def _checked_score_target(self, y: Any, frame: pd.DataFrame) -> np.ndarray:
        """*y* of :meth:`score` as an array, refused (naming the row) when its length differs
        from *X*'s or a value is missing or, for regression, not finite."""
        y_array = np.asarray(y)
        if y_array.ndim == 0 or y_array.shape[0] != len(frame):
            n_y = "a scalar" if y_array.ndim == 0 else f"{y_array.shape[0]} values"
            raise InvalidInputError(f"X has {len(frame)} rows but y has {n_y}", view="y")
        missing = pd.isna(y_array.reshape(len(y_array), -1)).any(axis=1)
        if self.task_ == "regression":
            try:
                y_array = y_array.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"cannot read y as numbers: {exc}", view="y") from exc
            missing |= ~np.isfinite(y_array).reshape(len(y_array), -1).all(axis=1)
        if missing.any():
            bad = row_labels(frame)[int(np.flatnonzero(missing)[0])]
            raise InvalidInputError("target y is missing, NaN or inf", row=bad, view="y")
        return y_array

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the embedding columns of :meth:`transform`: ``<classname><i>``."""
        check_is_fitted(self, "net_")
        n = self.net_.module_.encoder.out_dim
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(n)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # rows are materials (a DataFrame of views), not a numeric feature matrix
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        return tags


def _init_doc(cls, max_epochs: int):
    cls.__doc__ = cls.__doc__.replace("%(training)s", _TRAINING_DOC.format(max_epochs=max_epochs).strip("\n"))
    return cls


class StructureEncoder(_NeuralViewEncoder):
    """Periodic graph neural network over the crystal structure.

    Parameters
    ----------
    architecture : {"cgcnn", "schnet", "dimenetpp"}, default="cgcnn"
        CGCNN is the fast CPU default; SchNet and DimeNet++ are PyG's models fed periodic
        edges.
    hidden_dim : int, default=64
        Width of the message-passing layers.
    n_layers : int, default=3
        Message-passing layers (interaction blocks).
    out_dim : int, default=128
        Size of the embedding.
    cutoff : float, default=6.0
        Neighbour cutoff radius in Å.
    max_neighbors : int, default=12
        Nearest neighbours kept per atom.
    view : str or None, default=None
        Column holding the structures; ``None`` means ``"structure"``.
    memory : None, str or joblib.Memory, default=None
        Cache for the neighbour lists.
%(training)s

    Examples
    --------
    >>> from skmat.datasets import load_prototypes
    >>> X, y = load_prototypes(return_X_y=True, target="a_scaled")
    >>> enc = StructureEncoder(max_epochs=1, random_state=0).fit(X[:32], y[:32])
    >>> enc.transform(X[:4]).shape
    (4, 128)
    """

    _default_view = "structure"

    def __init__(
        self,
        architecture: str = "cgcnn",
        hidden_dim: int = 64,
        n_layers: int = 3,
        out_dim: int = 128,
        cutoff: float = 6.0,
        max_neighbors: int = 12,
        view: str | None = None,
        memory=None,
        max_epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.architecture = architecture
        self.hidden_dim = hidden_dim
        self.n_layers = n_layers
        self.out_dim = out_dim
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.view = view
        self.memory = memory
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView
        from skmat.features.graph import CrystalGraph

        source = frame if view in ("structure", "cif") else frame.rename(columns={view: "structure"})
        present, structures = present_structures(source)
        labels = row_labels(frame)
        for row, structure in zip(np.flatnonzero(present), structures, strict=True):
            if not structure.is_ordered:
                raise InvalidInputError(
                    "structure has partially occupied (disordered) sites; a graph node needs one "
                    "element per site (order it first, e.g. with pymatgen's "
                    "OrderDisorderedStructureTransformation)",
                    row=labels[row],
                    view=view,
                )
        featurizer = CrystalGraph(
            cutoff=self.cutoff,
            max_neighbors=self.max_neighbors,
            triplets=False,
            memory=self.memory,
            verbose=self.verbose,
        )
        graphs = featurizer.fit_transform(structures) if structures else featurizer.fit([]).transform([])
        return PreparedView(graphs, present)

    def _make_module(self):
        from skmat.nn.gnn import make_structure_encoder

        depth = {"n_blocks" if str(self.architecture).lower() == "dimenetpp" else "n_layers": self.n_layers}
        return make_structure_encoder(
            self.architecture,
            hidden_dim=self.hidden_dim,
            out_dim=self.out_dim,
            cutoff=self.cutoff,
            # the model keeps the same neighbours the featurizer stored (ties included)
            max_neighbors=self.max_neighbors,
            **depth,
        )


class XRDEncoder(_NeuralViewEncoder):
    """1-D convolutional network over a powder XRD pattern (as UniMat).

    Patterns come from the ``xrd`` column (1-D arrays on this encoder's 2θ grid) or are
    simulated from ``structure`` with :class:`~skmat.features.XRDPattern` when the column is
    absent or a cell is missing. Each pattern is scaled to a maximum of 1.

    Parameters
    ----------
    wavelength : str or float, default="CuKa"
        Radiation used to simulate patterns.
    two_theta_range : tuple of float, default=(5.0, 90.0)
        2θ window in degrees.
    n_bins : int, default=1701
        Grid points over the window.
    peak_width : float, default=0.15
        Full width at half maximum of simulated peaks, degrees 2θ.
    channels : tuple of int, default=(16, 32, 64, 64, 128, 128)
        Convolution channels per stage (each halves the 2θ resolution; see
        :class:`~skmat.nn.views.XRDConvNet` for the measured choice).
    out_dim : int, default=128
        Size of the embedding.
    view : str or None, default=None
        Column of patterns; ``None`` means ``"xrd"``.
    memory : None, str or joblib.Memory, default=None
        Cache for simulated patterns.
    augment : bool or XRDAugmenter, default=False
        Train on a fresh measurement-like pattern of each structure in every mini-batch
        (:class:`~skmat.features.augment.XRDAugmenter`: strain, shifts, preferred orientation,
        Kα2, broadening, background, noise, ...), seeded by ``random_state``. ``True`` uses
        the augmenter's defaults; pass an ``XRDAugmenter`` to choose them (its grid is set to
        this encoder's). Rows without a structure keep their given pattern. Never applied at
        ``transform``/``predict``, nor to the validation rows.
    background : {"rolling_ball", "polynomial"} or None, default=None
        Baseline removed from every pattern (given, simulated or augmented), identically at
        fit and transform (:func:`~skmat.features.measured.remove_background`).
%(training)s

    Examples
    --------
    >>> from skmat.datasets import load_prototypes
    >>> X, y = load_prototypes(return_X_y=True, target="crystal_system")
    >>> enc = XRDEncoder(n_bins=512, max_epochs=1, random_state=0).fit(X[:32], y[:32])
    >>> enc.predict(X[:2]).shape
    (2,)
    """

    _default_view = "xrd"

    def __init__(
        self,
        wavelength: str | float = "CuKa",
        two_theta_range: tuple[float, float] = (5.0, 90.0),
        n_bins: int = 1701,
        peak_width: float = 0.15,
        channels: tuple[int, ...] = (16, 32, 64, 64, 128, 128),
        out_dim: int = 128,
        view: str | None = None,
        memory=None,
        augment=False,
        background: str | None = None,
        max_epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.wavelength = wavelength
        self.two_theta_range = two_theta_range
        self.n_bins = n_bins
        self.peak_width = peak_width
        self.channels = channels
        self.out_dim = out_dim
        self.view = view
        self.memory = memory
        self.augment = augment
        self.background = background
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    def _featurizer(self):
        from skmat.features.xrd import XRDPattern

        return XRDPattern(
            wavelength=self.wavelength,
            two_theta_range=self.two_theta_range,
            n_bins=self.n_bins,
            peak_width=self.peak_width,
            normalize="max",
            memory=self.memory,
            verbose=self.verbose,
        )

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView

        present, arrays = self._array_cells(frame, view, lambda a: (self.n_bins,))
        patterns = np.zeros((len(frame), self.n_bins), dtype=np.float32)
        if arrays:
            given = np.stack(arrays)
            if np.any(given < 0):
                rows = np.flatnonzero(present)
                bad = rows[int(np.flatnonzero((given < 0).any(axis=1))[0])]
                raise InvalidInputError("XRD intensities must be non-negative", row=row_labels(frame)[bad], view=view)
            peak = given.max(axis=1, keepdims=True)
            patterns[present] = given / np.where(peak > 0, peak, 1.0)
        has_structure, structures = present_structures(frame)
        derive = has_structure & ~present
        if derive.any():
            keep = derive[has_structure]
            chosen = [s for s, k in zip(structures, keep, strict=True) if k]
            patterns[derive] = self._featurizer().fit_transform(chosen)
            present = present | derive
        if self.background is not None:
            from skmat.features.measured import remove_background

            lo, hi = self.two_theta_range
            patterns = remove_background(patterns, self.background, step=(hi - lo) / (self.n_bins - 1))
        if fit:
            self._fit_augmenter(has_structure, structures)
        return PreparedView(patterns[present], present)

    def _fit_augmenter(self, has_structure: np.ndarray, structures: list) -> None:
        """Sticks of every row with a structure, for per-batch augmentation (``augment``)."""
        from sklearn.base import clone

        from skmat.features.augment import XRDAugmenter

        if self.augment is False or self.augment is None:
            self.augmenter_ = None
            return
        template = XRDAugmenter() if self.augment is True else clone(self.augment)
        if not isinstance(template, XRDAugmenter):
            raise ValueError(f"augment must be a bool or an XRDAugmenter, got {self.augment!r}")
        template.set_params(
            wavelength=self.wavelength, two_theta_range=self.two_theta_range, n_bins=self.n_bins
        )
        # fitted in _configure_training, which knows the seed of the estimator that trains
        # (cell_growth draws its grown cells at fit time)
        self.augmenter_ = template
        self._augmented_structures = structures
        # row -> position among the augmenter's structures, -1 for rows without one
        self.augmented_row_ = np.full(len(has_structure), -1, dtype=np.int64)
        self.augmented_row_[has_structure] = np.arange(int(has_structure.sum()))

    def _configure_training(self, net, dataset, view: str, random_state: int | None = None) -> None:
        if getattr(self, "augmenter_", None) is None:
            return
        seed = self.random_state if self.random_state is not None else random_state
        structures = vars(self).pop("_augmented_structures", None)
        if structures is not None:
            if self.augmenter_.random_state is None:
                self.augmenter_.set_params(random_state=seed)
            self.augmenter_.fit(structures)
        lo, hi = self.two_theta_range
        # wrap whatever collates the batches so far: inside an aligner, several encoders may
        # each adjust their own view of the same batch
        collate = vars(net).get("iterator_train__collate_fn", dataset.collate)
        net.set_params(
            iterator_train__collate_fn=_AugmentedBatches(
                collate,
                view,
                self.augmenter_,
                self.augmented_row_,
                np.random.default_rng(seed),
                self.background,
                (hi - lo) / (self.n_bins - 1),
            )
        )

    def _end_training(self, net, dataset) -> None:
        if getattr(self, "augmenter_", None) is not None:
            # the fitted estimator must not carry the sticks of every training structure
            # (skorch's set_params refuses iterator changes on an initialised net; the attribute
            # is what get_params_for reads, and without it MultiViewNet uses dataset.collate)
            vars(net).pop("iterator_train__collate_fn", None)
            self.augmenter_ = None
            del self.augmented_row_

    def _make_module(self):
        from skmat.nn.views import XRDConvNet

        return XRDConvNet(self.n_bins, out_dim=self.out_dim, channels=tuple(self.channels))


class _AugmentedBatches:
    """``collate_fn`` of training batches: the XRD view of rows with a structure is redrawn by
    the augmenter (fresh every batch, from one seeded generator), then background-corrected as
    at transform."""

    def __init__(self, collate, view, augmenter, augmented_row, rng, background, step):
        self.collate = collate
        self.view = view
        self.augmenter = augmenter
        self.augmented_row = augmented_row
        self.rng = rng
        self.background = background
        self.step = step

    def __call__(self, indices):
        import torch

        from skmat.features.measured import remove_background

        batch, y = self.collate(indices)
        x, present = batch[self.view]
        rows = self.augmented_row[np.asarray(indices, dtype=np.int64)[present.numpy()]]
        redraw = np.flatnonzero(rows >= 0)
        if len(redraw):
            drawn = self.augmenter.sample(rows[redraw], random_state=self.rng)
            drawn = remove_background(drawn, self.background, step=self.step)
            x = x.clone()
            x[torch.from_numpy(redraw)] = torch.from_numpy(drawn).to(x.dtype)
            batch.views[self.view] = (x, present)
        return batch, y


class CompositionEncoder(_NeuralViewEncoder):
    """MLP over Magpie element-property statistics of the composition (as UniMat).

    The composition comes from a ``composition`` column (Composition or formula string) or
    from ``structure``. Features are standardised with statistics learned at fit.

    Parameters
    ----------
    hidden_dims : tuple of int, default=(256, 256)
        Hidden layer widths.
    out_dim : int, default=128
        Size of the embedding.
    dropout : float, default=0.1
        Dropout between hidden layers.
    view : str or None, default=None
        Column of compositions; ``None`` means ``"composition"``.
    memory : None, str or joblib.Memory, default=None
        Cache for the Magpie features.
%(training)s

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"composition": ["NaCl", "KCl", "MgO", "CaO"] * 4})
    >>> y = [5.6, 6.3, 4.2, 4.8] * 4
    >>> CompositionEncoder(max_epochs=2, validation_fraction=0, random_state=0).fit(X, y).transform(X).shape
    (16, 128)
    """

    _default_view = "composition"

    def __init__(
        self,
        hidden_dims: tuple[int, ...] = (256, 256),
        out_dim: int = 128,
        dropout: float = 0.1,
        view: str | None = None,
        memory=None,
        max_epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.hidden_dims = hidden_dims
        self.out_dim = out_dim
        self.dropout = dropout
        self.view = view
        self.memory = memory
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView
        from skmat.features.composition import CompositionFeatures

        present = np.zeros(len(frame), dtype=bool)
        compositions: list = [None] * len(frame)
        if view in frame.columns:
            rows = [i for i, v in enumerate(frame[view]) if not is_missing(v)]
            parsed = as_compositions(frame.iloc[rows][[view]].set_axis([row_labels(frame)[i] for i in rows]), column=view)
            for i, c in zip(rows, parsed, strict=True):
                compositions[i] = c
                present[i] = True
        has_structure, structures = present_structures(frame)
        for i, s in zip(np.flatnonzero(has_structure), structures, strict=True):
            if not present[i]:
                compositions[i] = s.composition
                present[i] = True
        chosen = [compositions[i] for i in np.flatnonzero(present)]
        featurizer = CompositionFeatures(memory=self.memory, verbose=self.verbose)
        if chosen:
            features = featurizer.fit_transform(chosen).astype(np.float64)
        else:
            features = np.zeros((0, len(featurizer.fit(["H"]).get_feature_names_out())))
        if fit:
            if len(features) == 0:
                raise InvalidInputError("no row has a composition or structure", view=view)
            self.feature_mean_ = np.nanmean(features, axis=0)
            self.feature_scale_ = np.nanstd(features, axis=0)
            self.feature_scale_[~(self.feature_scale_ > 1e-12)] = 1.0
            self.feature_mean_ = np.nan_to_num(self.feature_mean_)
        check_is_fitted(self, "feature_mean_")
        scaled = np.nan_to_num((features - self.feature_mean_) / self.feature_scale_).astype(np.float32)
        return PreparedView(scaled, present)

    def _make_module(self):
        from skmat.nn.views import MLPEncoder

        return MLPEncoder(
            len(self.feature_mean_), out_dim=self.out_dim, hidden_dims=tuple(self.hidden_dims), dropout=self.dropout
        )


class DOSEncoder(_NeuralViewEncoder):
    """Transformer over the electronic density of states (as MLCM).

    Cells of the ``dos`` column are ``(2, L)`` arrays (energy − E_F in eV, density); every
    material's grid differs, so each is resampled onto a fixed window around the Fermi level.

    Parameters
    ----------
    energy_window : tuple of float, default=(-10.0, 10.0)
        Energies (eV, relative to E_F) kept.
    n_points : int, default=256
        Points of the resampled grid.
    out_dim : int, default=128
        Size of the embedding.
    view : str or None, default=None
        Column of DOS arrays; ``None`` means ``"dos"``.
%(training)s

    Examples
    --------
    Free-electron densities of states, ``g(E) ~ sqrt(E - E_bottom)``, of simple metals, with
    their textbook Fermi energies (eV, Ashcroft & Mermin) as the target. On real data use the
    ``dos`` column of :func:`~skmat.datasets.fetch_multimat_sample`.

    >>> import numpy as np
    >>> import pandas as pd
    >>> fermi_energy = {"Li": 4.74, "Na": 3.24, "K": 2.12, "Cu": 7.00, "Ag": 5.49, "Mg": 7.08, "Al": 11.7, "Pb": 9.47}
    >>> energy = np.linspace(-15.0, 5.0, 401)  # E - E_F, eV
    >>> X = pd.DataFrame({"dos": [np.stack([energy, np.sqrt(np.clip(energy + e_f, 0.0, None))])
    ...                           for e_f in fermi_energy.values()]}, index=list(fermi_energy))
    >>> y = list(fermi_energy.values())
    >>> enc = DOSEncoder(n_points=64, out_dim=16, max_epochs=2, validation_fraction=0, random_state=0).fit(X, y)
    >>> enc.transform(X).shape, enc.predict(X).shape
    ((8, 16), (8,))
    """

    _default_view = "dos"

    def __init__(
        self,
        energy_window: tuple[float, float] = (-10.0, 10.0),
        n_points: int = 256,
        out_dim: int = 128,
        view: str | None = None,
        max_epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.energy_window = energy_window
        self.n_points = n_points
        self.out_dim = out_dim
        self.view = view
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView
        from skmat.features.spectra import resample_dos

        present, arrays = self._array_cells(frame, view, lambda a: None)
        labels = [row_labels(frame)[i] for i in np.flatnonzero(present)]
        values = np.zeros((len(arrays), self.n_points), dtype=np.float32)
        for i, (label, array) in enumerate(zip(labels, arrays, strict=True)):
            try:
                values[i] = resample_dos([array], energy_window=tuple(self.energy_window), n_points=self.n_points)[0]
            except InvalidInputError as exc:
                # resample_dos names the position in the list it was given; name the material
                raise InvalidInputError(exc.reason, row=label, view=view) from exc
        if fit:
            if len(values) == 0:
                raise InvalidInputError("no row has a DOS", view=view)
            # one global scale: densities are states/eV/cell and span orders of magnitude
            self.dos_scale_ = float(np.percentile(values, 99)) or 1.0
        check_is_fitted(self, "dos_scale_")
        return PreparedView(np.log1p(np.clip(values, 0, None) / self.dos_scale_).astype(np.float32), present)

    def _make_module(self):
        from skmat.nn.views import DOSEncoder as DOSNet

        return DOSNet(self.n_points, out_dim=self.out_dim)


class ChargeDensityEncoder(_NeuralViewEncoder):
    """3-D convolutional network with periodic padding over the charge density (as MLCM).

    Parameters
    ----------
    channels : tuple of int, default=(16, 32, 64)
        Channels per convolution stage.
    out_dim : int, default=128
        Size of the embedding.
    view : str or None, default=None
        Column of 3-D arrays; ``None`` means ``"charge_density"``.
%(training)s

    Examples
    --------
    >>> enc = ChargeDensityEncoder(max_epochs=1)
    >>> enc.get_params()["channels"]
    (16, 32, 64)
    """

    _default_view = "charge_density"

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64),
        out_dim: int = 128,
        view: str | None = None,
        max_epochs: int = 30,
        batch_size: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.channels = channels
        self.out_dim = out_dim
        self.view = view
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView
        from skmat.features.spectra import normalize_charge_density

        # at fit the grid shape is learned anew (a refit may see another grid)
        grid = None if fit else self.grid_shape_
        present, arrays = self._array_cells(frame, view, lambda a: grid)
        for label, array in zip([row_labels(frame)[i] for i in np.flatnonzero(present)], arrays, strict=True):
            if array.ndim != 3:
                raise InvalidInputError(f"a charge density must be a 3-D grid, got shape {array.shape}", row=label, view=view)
        if fit:
            if not arrays:
                raise InvalidInputError("no row has a charge density", view=view)
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                raise InvalidInputError(f"charge-density grids differ in shape: {sorted(shapes)}", view=view)
            self.grid_shape_ = arrays[0].shape
        labels = [row_labels(frame)[i] for i in np.flatnonzero(present)]
        values = np.zeros((len(arrays), *self.grid_shape_), dtype=np.float32)
        for i, (label, array) in enumerate(zip(labels, arrays, strict=True)):
            try:
                values[i] = normalize_charge_density(array)
            except InvalidInputError as exc:
                raise InvalidInputError(exc.reason, row=label, view=view) from exc
        return PreparedView(values, present)

    def _make_module(self):
        from skmat.nn.views import ChargeDensityCNN

        return ChargeDensityCNN(grid=tuple(self.grid_shape_), out_dim=self.out_dim, channels=tuple(self.channels))


@functools.lru_cache(maxsize=2)
def _sentence_embedder(model_name: str):
    """One loaded sentence-transformers model per name and process: loading takes ~1 s, and
    fit, transform and predict each embed their strings."""
    from skmat.nn.views import SentenceEmbedder

    return SentenceEmbedder(model_name)


class TextEncoder(_NeuralViewEncoder):
    """MLP over text embeddings (precomputed vectors, e.g. MatBERT, or raw text embedded with
    sentence-transformers when it is installed).

    Parameters
    ----------
    hidden_dims : tuple of int, default=(256,)
        Hidden layer widths.
    out_dim : int, default=128
        Size of the embedding.
    sentence_model : str, default="all-MiniLM-L6-v2"
        sentence-transformers model used for cells holding raw strings.
    view : str or None, default=None
        Column of embeddings or strings; ``None`` means ``"text"``.
%(training)s

    Examples
    --------
    Raw strings are embedded with the sentence model (384-d for MiniLM), then encoded:

    >>> import pandas as pd
    >>> X = pd.DataFrame({"text": ["NaCl adopts the cubic rock-salt structure.",
    ...                            "Silicon crystallizes in the diamond structure.",
    ...                            "ZnO is a wide-gap semiconductor with the wurtzite structure.",
    ...                            "Copper is a face-centred cubic metal."]})
    >>> band_gap = [8.5, 1.12, 3.37, 0.0]  # eV
    >>> enc = TextEncoder(out_dim=16, max_epochs=2, validation_fraction=0, random_state=0).fit(X, band_gap)
    >>> enc.embedding_dim_, enc.transform(X).shape
    (384, (4, 16))
    """

    _default_view = "text"

    def __init__(
        self,
        hidden_dims: tuple[int, ...] = (256,),
        out_dim: int = 128,
        sentence_model: str = "all-MiniLM-L6-v2",
        view: str | None = None,
        max_epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.hidden_dims = hidden_dims
        self.out_dim = out_dim
        self.sentence_model = sentence_model
        self.view = view
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView

        if view in frame.columns and any(isinstance(v, str) for v in frame[view]):
            strings = [v if isinstance(v, str) else None for v in frame[view]]
            rows = [i for i, s in enumerate(strings) if s is not None]
            embedded = _sentence_embedder(self.sentence_model).encode([strings[i] for i in rows])
            cells = list(frame[view])
            for i, e in zip(rows, embedded, strict=True):
                cells[i] = e
            frame = frame.assign(**{view: cells})
        dim = None if fit else self.embedding_dim_
        present, arrays = self._array_cells(frame, view, lambda a: None if dim is None else (dim,))
        for label, array in zip([row_labels(frame)[i] for i in np.flatnonzero(present)], arrays, strict=True):
            if array.ndim != 1:
                raise InvalidInputError(
                    f"a text cell must be a string or a 1-D embedding, got shape {array.shape}", row=label, view=view
                )
        if fit:
            if not arrays:
                raise InvalidInputError("no row has a text embedding", view=view)
            self.embedding_dim_ = arrays[0].shape[0]
            present, arrays = self._array_cells(frame, view, lambda a: (self.embedding_dim_,))
        values = np.stack(arrays) if arrays else np.zeros((0, self.embedding_dim_), dtype=np.float32)
        return PreparedView(values.astype(np.float32), present)

    def _make_module(self):
        from skmat.nn.views import MLPEncoder

        return MLPEncoder(self.embedding_dim_, out_dim=self.out_dim, hidden_dims=tuple(self.hidden_dims))


for _cls, _epochs in [
    (StructureEncoder, 30),
    (XRDEncoder, 30),
    (CompositionEncoder, 30),
    (DOSEncoder, 30),
    (ChargeDensityEncoder, 30),
    (TextEncoder, 30),
]:
    _init_doc(_cls, _epochs)
