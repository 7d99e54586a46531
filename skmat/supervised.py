"""Multi-view regression and classification: aligned view encoders fused by an MLP head.

:class:`~skmat.align.MultiModalAligner` learns a shared space without labels; a downstream
scikit-learn estimator then reads its frozen embeddings. UniMat gets its best numbers by
training further: the view encoders, their fusion and a task head are tuned together on the
labels, optionally keeping the contrastive alignment loss as a second term and optionally
starting from a contrastively pretrained aligner. :class:`MultiModalRegressor` and
:class:`MultiModalClassifier` do that, as ordinary scikit-learn predictors.

:class:`LatticeRefiner` wraps a lattice predictor and a crystal-system predictor (e.g. one
multitask :class:`MultiModalClassifier`) and refines each row's predicted lattice against the
peaks of its powder pattern, constrained to the predicted crystal system
(:mod:`skmat.features.indexing`), keeping the prediction where the refinement fails.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import check_has_rows, row_labels, standardized_targets, to_frame
from skmat.exceptions import InvalidInputError

_PARAMETERS_DOC = """
    aligner : MultiModalAligner or None, default=None
        The views, their encoders, the shared space (``latent_dim``) and the alignment loss;
        ``None`` means ``MultiModalAligner()`` (structure + XRD + composition). Its training
        settings are used only by ``pretrain``. Nested parameters reach it as
        ``aligner__temperature`` or ``aligner__encoders__xrd__n_bins``. Its
        ``transform_views`` chooses the views ``predict`` reads, e.g.
        ``set_params(aligner__transform_views=("structure",))`` to predict from the
        structure alone with a model trained on structure + XRD (otherwise the XRD pattern is
        derived from the structure, as at fit).
    pretrain : bool, default=False
        First align the views of ``X`` contrastively (self-supervised, the aligner's own
        ``max_epochs`` and ``lr``), then fine-tune from those weights on the labels.
    contrastive_weight : float, default=0.0
        Weight of the aligner's contrastive loss added to the task loss during fine-tuning
        (0 trains on the task alone).
    auxiliary_weight : float, default=1.0
        Weight of the auxiliary targets' MSE (``fit(..., auxiliary_targets=...)``), for
        multitask training, e.g. lattice lengths next to the crystal system.
    hidden_dim : int, default=256
        Width of the two hidden layers of the fusion head.
    dropout : float, default=0.1
        Dropout in the fusion head.
    max_epochs : int, default=30
        Passes over the data during fine-tuning (early stopping may end sooner).
    batch_size : int, default=64
    lr : float, default=1e-3
        Peak AdamW learning rate (warm-up, then cosine decay).
    weight_decay : float, default=1e-4
    warmup_fraction : float, default=0.05
    validation_fraction : float, default=0.1
        Share of the rows held out for early stopping on the training loss (0 disables it).
    patience : int, default=5
        Epochs without improvement before stopping: of the validation accuracy for a
        classifier (its cross-entropy rises while the accuracy still improves), of the
        validation loss otherwise.
    max_grad_norm : float or None, default=None
        Clip the gradient norm of every step to this value.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available. Ignored when ``accelerator`` is given.
    accelerator : accelerate.Accelerator or None, default=None
        Train through Hugging Face Accelerate (see ``docs/scaling.md``).
    random_state : int or None, default=None
        Seeds initialisation, shuffling and the validation split (and the aligner's
        pretraining when its own ``random_state`` is None).
    verbose : int, default=0
        ``> 0`` prints the training log with a progress bar.
"""

_TRAINING_PARAMS = (
    "max_epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_fraction",
    "validation_fraction",
    "patience",
    "max_grad_norm",
    "device",
    "accelerator",
    "random_state",
    "verbose",
)


class _MultiModalPredictor(BaseEstimator):
    """Fit/predict shared by the regressor and the classifier; subclasses encode the target."""

    _task: str = ""

    def __init__(
        self,
        aligner: Any = None,
        pretrain: bool = False,
        contrastive_weight: float = 0.0,
        auxiliary_weight: float = 1.0,
        hidden_dim: int = 256,
        dropout: float = 0.1,
        max_epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_fraction: float = 0.05,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.aligner = aligner
        self.pretrain = pretrain
        self.contrastive_weight = contrastive_weight
        self.auxiliary_weight = auxiliary_weight
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    # -- hooks of the subclasses ----------------------------------------------------------
    def _encode_target(self, y: Any, labels: list) -> np.ndarray:
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    # -- validation -------------------------------------------------------------------------
    def _template_aligner(self):
        from skmat.align import MultiModalAligner

        if self.aligner is None:
            return MultiModalAligner()
        if not isinstance(self.aligner, MultiModalAligner):
            raise TypeError(f"aligner must be a MultiModalAligner or None, got {type(self.aligner).__name__}")
        return clone(self.aligner)

    def _validate_params(self) -> None:
        from skmat._training import check_max_grad_norm

        for name in ("contrastive_weight", "auxiliary_weight"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if int(self.hidden_dim) < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {self.hidden_dim!r}")
        if not 0 <= float(self.dropout) < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if int(self.max_epochs) < 1 or int(self.batch_size) < 2:
            raise ValueError("max_epochs must be >= 1 and batch_size >= 2")
        check_max_grad_norm(self.max_grad_norm)

    # -- the network, built by fit and by skmat.persist.load ---------------------------------
    def _network(self, encoders: list, aligner_module=None):
        """The fusion network over *encoders* (prepared with ``fit=True``); with
        *aligner_module*, around those (pretrained) view encoders instead of fresh ones."""
        from skmat.nn.multiview import FusionPredictor

        if aligner_module is None:
            aligner = self._template_aligner()
            aligner_module = aligner._network(encoders)
        return FusionPredictor(
            aligner_module,
            n_outputs=self._n_outputs(),
            task=self._task,
            hidden_dim=int(self.hidden_dim),
            dropout=float(self.dropout),
            contrastive_weight=float(self.contrastive_weight),
            n_auxiliary=0 if self.auxiliary_mean_ is None else int(np.size(self.auxiliary_mean_)),
            auxiliary_weight=float(self.auxiliary_weight),
        )

    def _net_options(self) -> dict:
        """Training settings of :func:`~skmat._training.build_net` (also used by persist.load)."""
        from skmat._training import net_options

        return net_options(self)

    # -- fitting ----------------------------------------------------------------------------
    def _pretrained(self, frame, aligner):
        """The aligner fitted contrastively on *frame*: its encoders and its bare network."""
        from skmat._training import bare_module

        # the aligner inherits what it leaves unset: a seeded fit stays seeded end to end
        inherited = {"random_state": self.random_state, "accelerator": self.accelerator}
        aligner.set_params(**{k: v for k, v in inherited.items() if getattr(aligner, k) is None})
        if not aligner.verbose:
            aligner.set_params(verbose=self.verbose)
        aligner.fit(frame)
        module = bare_module(aligner.net_.module_)
        return aligner.encoders_, module.cpu()

    def _encode_auxiliary(self, auxiliary_targets: Any, labels: list) -> np.ndarray | None:
        """Standardised auxiliary targets (n, k), or None; sets ``auxiliary_mean_/scale_``."""
        self.auxiliary_mean_ = self.auxiliary_scale_ = None
        if auxiliary_targets is None:
            return None
        values = np.asarray(auxiliary_targets, dtype=object)
        values = values.reshape(len(values), -1) if values.ndim == 1 else values
        if values.ndim != 2 or values.shape[0] != len(labels):
            raise InvalidInputError(
                f"X has {len(labels)} rows but auxiliary_targets has shape {values.shape}", view="auxiliary_targets"
            )
        values, self.auxiliary_mean_, self.auxiliary_scale_ = standardized_targets(
            values, labels, name="auxiliary_targets", view="auxiliary_targets"
        )
        return values

    def fit(self, X: Any, y: Any, auxiliary_targets: Any = None) -> _MultiModalPredictor:
        """Train the view encoders and the fusion head on *y* (after optional pretraining).

        Parameters
        ----------
        X : DataFrame or list of Structure
            One material per row, one column per view; views derivable from ``structure``
            are computed when their column is absent. A row may lack some views, not all.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        auxiliary_targets : array-like of shape (n_samples,) or (n_samples, n_auxiliary), default=None
            Extra numeric targets learned alongside *y* (weighted by ``auxiliary_weight``) and
            returned by :meth:`predict_auxiliary`: one fit for a crystal system and the
            lattice lengths. Route it through a Pipeline as ``<step>__auxiliary_targets``.

        Returns
        -------
        self
        """
        from skmat._training import MultiViewDataset, fit_with_encoder_hooks, resolve_device, seed_torch
        from skmat.distributed import training_net
        from skmat.align import prepare_views_for_fit

        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        frame = to_frame(X)
        check_has_rows(frame)
        labels = row_labels(frame)
        target = self._encode_target(y, labels)
        auxiliary = self._encode_auxiliary(auxiliary_targets, labels)
        if auxiliary is not None:
            target = np.column_stack([target.reshape(len(target), -1).astype(np.float32), auxiliary])
        self._validate_params()
        aligner = self._template_aligner()
        encoders = [(name, clone(enc)) for name, enc in aligner._checked_encoders()]
        names = [name for name, _ in encoders]
        aligner._validate_params(names)
        aligner_module = None
        if self.pretrain:
            encoders, aligner_module = self._pretrained(frame, aligner)
        prepared = prepare_views_for_fit(encoders, frame)
        self._check_some_view(prepared, labels)
        seed_torch(self.random_state)
        module = self._network(encoders, aligner_module)
        self.device_ = str(self.accelerator.device) if self.accelerator is not None else resolve_device(self.device)
        self.net_ = training_net(
            module,
            n_rows=len(frame),
            device=self.device_,
            random_state=self.random_state,
            accelerator=self.accelerator,
            **self._net_options(),
        )
        fit_with_encoder_hooks(self.net_, MultiViewDataset(prepared, target), encoders, self.random_state)
        self.encoders_ = encoders
        self.views_ = names
        self.n_features_in_ = frame.shape[1]
        return self

    @staticmethod
    def _check_some_view(prepared: dict, labels: list) -> None:
        any_view = np.stack([view.present for view in prepared.values()]).any(axis=0)
        if not any_view.all():
            bad = labels[int(np.flatnonzero(~any_view)[0])]
            raise InvalidInputError(f"none of the views {list(prepared)} is present", row=bad)

    # -- prediction -------------------------------------------------------------------------
    def _predict_views(self) -> list[str]:
        """Views ``predict`` reads: the aligner's ``transform_views``, or every fitted view."""
        chosen = None if self.aligner is None else self.aligner.transform_views
        if chosen is None:
            return list(self.views_)
        views = [chosen] if isinstance(chosen, str) else list(chosen)
        unknown = [v for v in views if v not in self.views_]
        if unknown:
            raise InvalidInputError(
                f"aligner__transform_views {unknown} were not fitted; fitted views are {self.views_}", view=unknown[0]
            )
        return views

    def _head_outputs(self, X: Any, auxiliary: bool = False) -> np.ndarray:
        """The head's task outputs of every row (or, with *auxiliary*, its auxiliary ones)."""
        from skmat._training import MultiViewDataset, run_inference

        check_is_fitted(self, "net_")
        frame = to_frame(X)
        check_has_rows(frame)
        views = self._predict_views()
        prepared = {name: enc._prepare(frame, name, fit=False) for name, enc in self.encoders_ if name in views}
        self._check_some_view(prepared, row_labels(frame))
        parts = run_inference(self.net_, MultiViewDataset(prepared), lambda out: out[0].float().cpu().numpy())
        outputs = np.concatenate(parts)
        n_task = self._n_outputs()
        return outputs[:, n_task:] if auxiliary else outputs[:, :n_task]

    def predict_auxiliary(self, X: Any) -> np.ndarray:
        """Predicted auxiliary targets, shape (n_samples, n_auxiliary).

        Raises
        ------
        AttributeError
            When ``fit`` was given no ``auxiliary_targets``.
        """
        check_is_fitted(self, "net_")
        if self.auxiliary_mean_ is None:
            raise AttributeError("predict_auxiliary needs a fit with auxiliary_targets")
        raw = self._head_outputs(X, auxiliary=True)
        return raw * self.auxiliary_scale_ + self.auxiliary_mean_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # rows are materials (a DataFrame of views), not a numeric feature matrix
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        return tags


class MultiModalRegressor(RegressorMixin, _MultiModalPredictor):
    """Regress a property from several views of each material, encoders tuned end to end.

    Every view goes through its encoder and projection into a shared space (as in
    :class:`~skmat.align.MultiModalAligner`); the view embeddings of a row, with a flag per
    view saying whether the row has it, are concatenated and read by an MLP head. Encoders,
    projections and head are trained on the (standardised) targets, plus
    ``contrastive_weight`` times the alignment loss; with ``pretrain=True`` training starts
    from a contrastively aligned network, as UniMat fine-tunes its pretrained encoders.
    Rows may lack views (not all of them), at fit and at predict.

    Parameters
    ----------
%(parameters)s

    Attributes
    ----------
    encoders_ : list of (str, estimator)
        Fitted copies of the view encoders (their input statistics).
    views_ : list of str
    y_mean_, y_scale_ : ndarray
        Target standardisation.
    net_ : skorch.NeuralNet
        The trained network; ``net_.history`` holds the losses per epoch.

    See Also
    --------
    MultiModalClassifier, skmat.align.MultiModalAligner

    Examples
    --------
    >>> from skmat import MultiModalAligner
    >>> from skmat.datasets import load_prototypes
    >>> from skmat.encoders import CompositionEncoder, XRDEncoder
    >>> X, y = load_prototypes(return_X_y=True, target="a_scaled")
    >>> aligner = MultiModalAligner(
    ...     encoders=[("xrd", XRDEncoder(n_bins=256)), ("composition", CompositionEncoder())]
    ... )
    >>> reg = MultiModalRegressor(aligner, contrastive_weight=0.1, max_epochs=2, random_state=0)
    >>> reg.fit(X[:64], y[:64]).predict(X[64:67]).shape
    (3,)
    """

    _task = "regression"

    def _encode_target(self, y: Any, labels: list) -> np.ndarray:
        y_array = np.asarray(y)
        if y_array.ndim == 0 or y_array.shape[0] != len(labels):
            n_y = "a scalar" if y_array.ndim == 0 else f"{y_array.shape[0]} values"
            raise InvalidInputError(f"X has {len(labels)} rows but y has {n_y}", view="y")
        if y_array.ndim > 2:
            raise InvalidInputError(f"y must be 1-D or 2-D, got shape {y_array.shape}", view="y")
        target, self.y_mean_, self.y_scale_ = standardized_targets(y_array, labels, name="target y", view="y")
        return target

    def _n_outputs(self) -> int:
        return 1 if np.ndim(self.y_mean_) == 0 else int(np.shape(self.y_mean_)[0])

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, shape (n_samples,) or (n_samples, n_targets) as *y* was."""
        out = self._head_outputs(X)
        out = out * self.y_scale_ + self.y_mean_
        return out.ravel() if np.ndim(self.y_mean_) == 0 else out


class MultiModalClassifier(ClassifierMixin, _MultiModalPredictor):
    """Classify materials from several views, encoders tuned end to end.

    The network is :class:`MultiModalRegressor`'s with a cross-entropy loss; see there.

    Parameters
    ----------
%(parameters)s

    Attributes
    ----------
    classes_ : ndarray
        Class labels, in the order of :meth:`predict_proba`'s columns.
    encoders_ : list of (str, estimator)
    views_ : list of str
    net_ : skorch.NeuralNet

    See Also
    --------
    MultiModalRegressor, skmat.align.MultiModalAligner

    Examples
    --------
    >>> from skmat import MultiModalAligner
    >>> from skmat.datasets import load_prototypes
    >>> from skmat.encoders import CompositionEncoder, XRDEncoder
    >>> X, y = load_prototypes(return_X_y=True, target="crystal_system")
    >>> aligner = MultiModalAligner(
    ...     encoders=[("xrd", XRDEncoder(n_bins=256)), ("composition", CompositionEncoder())]
    ... )
    >>> clf = MultiModalClassifier(aligner, max_epochs=2, random_state=0).fit(X[:64], y[:64])
    >>> clf.predict_proba(X[64:67]).shape == (3, len(clf.classes_))
    True
    """

    _task = "classification"

    def _encode_target(self, y: Any, labels: list) -> np.ndarray:
        import pandas as pd

        y_array = np.asarray(y)
        if y_array.ndim != 1 or y_array.shape[0] != len(labels):
            shape = "a scalar" if y_array.ndim == 0 else f"shape {y_array.shape}"
            raise InvalidInputError(f"X has {len(labels)} rows; y must be one label per row, got {shape}", view="y")
        missing = pd.isna(y_array)
        if missing.any():
            raise InvalidInputError("target y is missing", row=labels[int(np.flatnonzero(missing)[0])], view="y")
        kind = type_of_target(y_array)
        if kind not in {"binary", "multiclass"}:
            raise InvalidInputError(f"y is {kind!r}: expected class labels", view="y")
        self.classes_, codes = np.unique(y_array, return_inverse=True)
        if len(self.classes_) < 2:
            raise InvalidInputError(f"y has a single class {self.classes_[0]!r}: nothing to learn", view="y")
        return codes.astype(np.int64)

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes)."""
        logits = self._head_outputs(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each row."""
        logits = self._head_outputs(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[logits.argmax(axis=1)]


for _cls in (MultiModalRegressor, MultiModalClassifier):
    _cls.__doc__ = _cls.__doc__.replace("%(parameters)s", _PARAMETERS_DOC.strip("\n"))


# ------------------------------------------------------------------------------------------
# Lattice refinement on the predict path (the per-row work is in skmat._lattice_rows)
# ------------------------------------------------------------------------------------------


class LatticeRefiner(RegressorMixin, BaseEstimator):
    """Scaled lattice of a predictor, refined against each row's powder pattern.

    A network that predicts the lattice from a pattern image is off by a few per cent; the
    pattern's peak positions fix the cell to ~1e-4 Å when the peaks are indexed. This
    meta-estimator wraps a lattice predictor and a crystal-system predictor. ``predict``
    takes their estimates for each row, refines a conventional cell constrained to the
    predicted crystal system against the row's peaks
    (:func:`~skmat.features.indexing.refine_cell`), reduces it to the Niggli primitive cell
    (:func:`~skmat.features.indexing.primitive_niggli`), counts its atoms N from its volume
    and the composition (:func:`~skmat.features.indexing.atoms_in_cell`, with per-element
    volumes fitted in ``fit``) and returns (a, b, c) / N^(1/3), the target the predictor
    was trained on. Where the refinement does not converge, or the row's input cannot be
    refined (no peaks, too few peaks, an element without a volume), the predictor's own
    estimate is kept and counted (``n_kept_``), with one warning per call naming the rows
    and saying why.

    Parameters
    ----------
    predictor : estimator or None
        Predicts the scaled lattice (a, b, c) / N^(1/3) of the Niggli primitive cell in its
        first three output columns (a <= b <= c). With ``system_predictor=None`` it also
        predicts the crystal system: a :class:`MultiModalClassifier` fitted on crystal systems
        with the lattice as ``auxiliary_targets`` (columns a_scaled, b_scaled, c_scaled
        first), as ``benchmarks/unimat.py`` trains it. ``None`` (with ``prefit=True`` and
        *element_volumes*): only :meth:`refine`, which takes the estimates as arguments, works.
    system_predictor : classifier or None, default=None
        Predicts the crystal system (one of
        :data:`~skmat.features.indexing.CRYSTAL_SYSTEMS`); ``None`` uses
        ``predictor.predict``.
    prefit : bool, default=False
        ``True``: the predictors are already fitted and are used as they are (``fit`` only
        learns the element volumes). ``False``: ``fit`` fits clones of them. As for any
        scikit-learn meta-estimator, ``clone`` (hence a grid search) re-creates unfitted
        predictors; wrap fitted ones in :class:`sklearn.frozen.FrozenEstimator` to keep them.
    lattice_method : {"auto", "predict", "predict_auxiliary"}, default="auto"
        Method of *predictor* giving the lattice; ``"auto"`` is ``"predict_auxiliary"``
        without a *system_predictor*, else ``"predict"``.
    two_theta_range : (float, float), default=(5.0, 90.0)
        First and last 2θ point (degrees) of the patterns in the ``xrd`` column (and of those
        simulated from structures when there is none).
    wavelength : str or float, default="CuKa"
        Radiation of the ``xrd`` column's patterns, and of measured rows without a
        ``wavelength`` value.
    refine_zero_shift : bool or None, default=None
        Refine a zero offset of the 2θ scale; ``None`` does so for measured rows only: rows
        of ``two_theta``/``intensity`` columns or (two_theta, intensity) pairs, and ``xrd``
        patterns with counting noise (:func:`~skmat.features.indexing.noise_level` > 0).
    search_range : float, default=0.15
        Relative span of the starting lengths searched around each start
        (:func:`~skmat.features.indexing.refine_cell`).
    fallback_search_range : float or None, default=0.3
        Simulated rows that do not converge within *search_range*, nor from the cells found
        from the peaks alone (*ab_initio*), are searched again this wide (None: no second
        search; measured rows and triclinic cells never are: on measurement-like patterns,
        and with a triclinic cell's six free parameters, the wider search converges onto wrong
        cells). Measured with the XRD + composition network on 300 MP-20 test
        rows, two seeds: 0.191 Å with ±15 % alone, 0.184 Å with ±30 % for every row (3x the
        time), 0.178 Å with ±15 % then ±30 % for the ~35 % of rows the first leaves (about
        twice the time of ±15 % alone).
    n_systems : int, default=3
        Crystal systems considered per row: the most probable ones (the crystal-system
        model's ``predict_proba``; a model without it gives its predicted system alone). A
        system scores its log probability, plus, where its refinement converges,
        *converged_weight* + *symmetry_weight* x its rank in the chain triclinic (0),
        monoclinic, orthorhombic, tetragonal, trigonal or hexagonal, cubic (5) + *merit_weight*
        x log(min(M, 100)), M being de Wolff's figure of merit of the refined cell. The
        best-scoring system gives the lattice and the crystal system (``crystal_systems_``); a
        system must score above the most probable one's log probability, so where the only
        refinements index the peaks poorly (M below about 4) the predictor's lattice is kept.
        This is the crystallographer's rule, the highest symmetry that indexes the pattern
        well, weighed against the classifier: a lower-symmetry family holds the higher ones'
        cells, so that it converges says less, and a wrong cell that converges has the lower
        M. Systems are refined best bound first, and only while they can still win (about 1.3
        refinements per row). Measured with the XRD + composition network on held-out MP-20
        rows: weighing the network's three most probable systems took 300 rows (weights then
        chosen on seed 0) from 85.0 to 88.3 % (seed 0) and 81.7 to 86.3 % (seed 1), and the
        merit term (its weights chosen on the first 600 rows of both seeds) took those 600
        rows from 89.0 to 92.2 % and 85.8 to 88.0 %, for about 25 % more time (see
        ``docs/results.md`` for the other rows). A system that does not converge from the
        predictor's lattice is refined again, in a narrow search, from the chosen system's
        refined lattice while it can still win: the predictor's lattice may be too far off
        for the right system, and a lower one converges instead (e.g. monoclinic for a
        C-centred orthorhombic crystal): over the 1,809 held-out MP-20 rows of the shipped
        classifier, 88.4 to 89.1 % for 0.03 s a row. Measured rows (see *refine_zero_shift*)
        consider their most probable system only: a short peak list is indexed by wrong
        higher-symmetry cells as well (on 300 measurement-like held-out patterns the weighing
        cost 5 right systems of 220). A single system (*n_systems* = 1, or :meth:`refine`) is
        refined wherever it converges. The speed it buys, on the 1,809 held-out MP-20 rows of
        the shipped classifier (refinement alone, 2 processes): 48 -> 28 ms a row, for 89.1 ->
        84.9 % right systems (the classifier's own) and 0.110 -> 0.123 Å.
    converged_weight, symmetry_weight, merit_weight : float, default=-2.0, 2.0, 1.5
        The evidence of a converged refinement (see *n_systems*), in units of log probability:
        with the defaults a converged triclinic cell counts for the classifier's odds once its
        M exceeds e^(2/1.5), about 3.8. *symmetry_weight* and *merit_weight* must be >= 0.
    ab_initio : bool, default=True
        Also index each simulated row from its peaks alone (cubic to monoclinic; TREOR's way:
        the lowest peaks taken as low-index reflections), keeping a cell only if its volume
        holds whole formula units and its scaled lengths are within a factor e^0.5 of the
        predictor's. These cells compete with the starts' (see Notes): a start refined from
        the predictor's wrong shape can index a clean pattern's few peaks too, with a lower
        figure of merit than the true cell. Measured with the XRD + composition network on
        300 held-out MP-20 rows: 0.122 -> 0.105 Å (seed 0) and 0.158 -> 0.120 Å (seed 1)
        against trials for cubic to orthorhombic rows that no start refines (the monoclinic
        rows: 0.249 -> 0.190 Å and 0.288 -> 0.182 Å), for about 2.5 times the time.
    atoms_from : {"composition+lattice", "composition"}, default="composition+lattice"
        How N, the atoms in the refined primitive cell, is chosen among multiples of the
        reduced formula: nearest the cell volume over the formula's fitted volume per atom
        (``"composition"``), or nearest that and the volume per atom the predictor's scaled
        lengths imply, together (:func:`~skmat.features.indexing.atoms_in_cell`'s
        ``volume_per_atom_hint``).
    min_peaks_per_parameter : float, default=3.0
        A measured row (see *refine_zero_shift*) is refined only when its peaks number at
        least this many per refined parameter (the cell's free lengths and angles, plus the
        zero shift): a measurement's peak list is short and holds strays, and an
        underdetermined refinement converges onto wrong cells. Measured on 300 augmented
        patterns of held-out MP-20 rows with the pretrained classifier's lattice: 0.291 Å
        from the network, 0.303 Å refining every converged row, 0.292 Å with 3 (89 rows
        refined); on other draws of the same rows, in three parts of 100 (where 3 was chosen),
        0.262, 0.267 and 0.302 Å against the network's 0.260, 0.269 and 0.315 Å. The rule
        stops the harm; it does not make refinement pay on such patterns. Simulated rows are
        always refined.
    element_volumes : dict of str to float or None, default=None
        Volume per atom of each element (Å³). ``None`` fits them in ``fit`` to the training
        structures (:func:`~skmat.features.indexing.fit_element_volumes`); a dict is used as
        given, and ``fit`` then needs no structures (``fit()`` with ``prefit=True``), as for a
        pretrained predictor shipped with its volumes (:func:`skmat.pretrained.load_refiner`).
    n_jobs : int or None, default=None
        Processes that refine rows (joblib's ``n_jobs``; ``None`` defers to the active
        ``joblib.parallel_config``, sequential without one). Rows are independent: 300
        held-out MP-20 rows took 0.26 s each in one process, 0.135 s with ``n_jobs=2`` on 2 idle cores.
    verbose : int, default=0
        ``> 0`` shows a progress bar over the rows refined.

    Attributes
    ----------
    predictor_ : estimator
        The fitted lattice predictor.
    system_predictor_ : classifier or None
        The fitted crystal-system predictor (None when *predictor* gives it).
    element_volumes_ : dict of str to float
        Volume per atom of each element of the training structures
        (:func:`~skmat.features.indexing.fit_element_volumes`).
    n_refined_, n_kept_ : int
        Rows of the last ``predict`` call whose lattice was refined / kept from the predictor.
    refined_ : ndarray of bool
        Which rows of the last ``predict`` call were refined.
    refined_systems_ : ndarray of str
        Crystal system each row of the last ``predict`` call was refined under ("" where the
        predictor's lattice was kept).
    crystal_systems_ : ndarray of str
        Crystal system of each row of the last ``predict`` call: the one refined under, else
        the most probable (see *n_systems*). More often right than the classifier's alone.

    Notes
    -----
    **Input.** ``X`` is a DataFrame of views, as the predictors read it. The pattern of a row
    comes from, in this order: the ``two_theta`` and ``intensity`` columns (a measured
    pattern, at the row's ``wavelength`` or *wavelength*; the cell is refined at that
    wavelength, through d-spacing, with a zero shift), the ``xrd`` column (a pattern on
    ``np.linspace(*two_theta_range, n_bins)`` at *wavelength*, or a measured
    ``(two_theta, intensity)`` pair as :class:`~skmat.features.measured.MeasuredXRD` reads), or a
    pattern simulated from
    the ``structure`` column (:class:`~skmat.features.XRDPattern`). The composition comes
    from the ``composition`` column or the structure. ``fit`` needs the ``structure``
    column (the element volumes are fitted to the training cells).

    **Start.** The predictor gives scaled primitive lengths, which say nothing of N or of
    the lattice centring. For each centring the system allows, the starting conventional cell
    is the one, on a grid of axis ratios (and of beta for monoclinic), whose reduced primitive
    cell has the shape nearest the predictor's lengths; it is scaled so that its primitive
    cell holds Z formula units, for Z in 1, 2 and 4, the formula's volume being the sum of its
    elements' fitted volumes. Each start is refined within ``search_range`` (and
    ``fallback_search_range`` where neither the starts nor the cells from the peaks alone
    converge). Of the converged cells that index the
    most peaks, those whose primitive volume is within 22 % (0.2 in log) of a whole number of
    formula units at the composition's volume per atom go first: a short peak list is also
    indexed by sub- and super-cells (on MP-20, 95 % of compositions' fitted volume per atom
    lie within 0.24 in log of the true one); of those the best de Wolff figure of merit wins.
    The cells found from the peaks alone (*ab_initio*) join the starts' cells in that choice.

    Examples
    --------
    >>> from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    >>> from sklearn.pipeline import make_pipeline
    >>> from skmat.datasets import load_prototypes
    >>> from skmat.features import CompositionFeatures
    >>> X, y = load_prototypes(return_X_y=True, target=["a_scaled", "b_scaled", "c_scaled", "crystal_system"])
    >>> lattice = make_pipeline(CompositionFeatures(), RandomForestRegressor(n_estimators=20, random_state=0))
    >>> system = make_pipeline(CompositionFeatures(), RandomForestClassifier(n_estimators=20, random_state=0))
    >>> _ = lattice.fit(X, y.iloc[:, :3].to_numpy(float)), system.fit(X, y["crystal_system"])
    >>> refiner = LatticeRefiner(lattice, system, prefit=True).fit(X)
    >>> lengths = refiner.predict(X.iloc[:4])
    >>> lengths.shape, refiner.n_refined_ + refiner.n_kept_
    ((4, 3), 4)
    """

    def __init__(
        self,
        predictor: Any,
        system_predictor: Any = None,
        *,
        prefit: bool = False,
        lattice_method: str = "auto",
        two_theta_range: tuple[float, float] = (5.0, 90.0),
        wavelength: str | float = "CuKa",
        refine_zero_shift: bool | None = None,
        search_range: float = 0.15,
        fallback_search_range: float | None = 0.3,
        n_systems: int = 3,
        converged_weight: float = -2.0,
        symmetry_weight: float = 2.0,
        merit_weight: float = 1.5,
        ab_initio: bool = True,
        atoms_from: str = "composition+lattice",
        min_peaks_per_parameter: float = 3.0,
        element_volumes: dict | None = None,
        n_jobs: int | None = None,
        verbose: int = 0,
    ):
        self.predictor = predictor
        self.system_predictor = system_predictor
        self.prefit = prefit
        self.lattice_method = lattice_method
        self.two_theta_range = two_theta_range
        self.wavelength = wavelength
        self.refine_zero_shift = refine_zero_shift
        self.search_range = search_range
        self.fallback_search_range = fallback_search_range
        self.n_systems = n_systems
        self.converged_weight = converged_weight
        self.symmetry_weight = symmetry_weight
        self.merit_weight = merit_weight
        self.ab_initio = ab_initio
        self.atoms_from = atoms_from
        self.min_peaks_per_parameter = min_peaks_per_parameter
        self.element_volumes = element_volumes
        self.n_jobs = n_jobs
        self.verbose = verbose

    # -- fitting ----------------------------------------------------------------------------
    def _method(self) -> str:
        if self.lattice_method not in ("auto", "predict", "predict_auxiliary"):
            raise ValueError(
                f"lattice_method must be 'auto', 'predict' or 'predict_auxiliary', got {self.lattice_method!r}"
            )
        if self.lattice_method != "auto":
            return self.lattice_method
        return "predict_auxiliary" if self.system_predictor is None else "predict"

    def fit(self, X: Any = None, y: Any = None, *, crystal_systems: Any = None, **fit_params: Any) -> LatticeRefiner:
        """Fit the element volumes on the structures of *X* (and the predictors, unless prefit).

        Parameters
        ----------
        X : DataFrame, list of Structure or None
            Training materials; needs a ``structure`` column, unless *element_volumes* is
            given and the predictors are prefit (then ``None`` will do).
        y : array-like, default=None
            Target of ``predictor.fit`` (ignored with ``prefit=True``): the scaled lattice,
            or, for a multitask :class:`MultiModalClassifier`, the crystal systems (the
            lattice going in ``auxiliary_targets``, passed through *fit_params*).
        crystal_systems : array-like of str, default=None
            Target of ``system_predictor.fit``; ``None`` takes each structure's crystal
            system (spglib, ``symprec=0.1``).
        **fit_params
            Passed to ``predictor.fit``.

        Returns
        -------
        self
        """
        from skmat._inputs import _parse_structure
        from skmat.features.indexing import fit_element_volumes

        self._method()
        if not (isinstance(self.search_range, int | float) and 0 <= self.search_range < 0.5):
            raise ValueError(f"search_range must be in [0, 0.5), got {self.search_range!r}")
        if self.fallback_search_range is not None and not (
                isinstance(self.fallback_search_range, int | float) and 0 <= self.fallback_search_range < 0.5):
            raise ValueError(f"fallback_search_range must be None or in [0, 0.5), got {self.fallback_search_range!r}")
        if not (isinstance(self.n_systems, int) and 1 <= self.n_systems <= 7):
            raise ValueError(f"n_systems must be an integer in [1, 7], got {self.n_systems!r}")
        if not (isinstance(self.converged_weight, int | float) and math.isfinite(self.converged_weight)):
            raise ValueError(f"converged_weight must be a finite number, got {self.converged_weight!r}")
        for name in ("symmetry_weight", "merit_weight"):
            weight = getattr(self, name)
            if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}")
        if not (isinstance(self.min_peaks_per_parameter, int | float) and self.min_peaks_per_parameter >= 0):
            raise ValueError(f"min_peaks_per_parameter must be a number >= 0, got {self.min_peaks_per_parameter!r}")
        if self.atoms_from not in ("composition+lattice", "composition"):
            raise ValueError(f"atoms_from must be 'composition+lattice' or 'composition', got {self.atoms_from!r}")
        given_volumes = self.element_volumes is not None
        if given_volumes:
            volumes = dict(self.element_volumes)
            if not volumes or not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in volumes.values()):
                raise ValueError("element_volumes must map element symbols to positive volumes (Å³ per atom)")
        if X is None and given_volumes and self.prefit:
            structures = []
        else:
            if X is None:
                raise InvalidInputError(
                    "LatticeRefiner.fit needs training structures, unless element_volumes is given and prefit=True",
                    view="structure",
                )
            frame = to_frame(X)
            check_has_rows(frame)
            labels = row_labels(frame)
            if "structure" not in frame.columns:
                raise InvalidInputError(
                    "LatticeRefiner.fit needs a 'structure' column: the element volumes are fitted to the training cells",
                    view="structure",
                )
            structures = [_parse_structure(s, label, "structure") for s, label in zip(frame["structure"], labels,
                                                                                         strict=True)]
        self.element_volumes_ = volumes if given_volumes else fit_element_volumes(structures)
        if self.prefit:
            if self.predictor is not None:  # None: only refine(), with the estimates given
                check_is_fitted(self.predictor)
            self.predictor_ = self.predictor
            if self.system_predictor is not None:
                check_is_fitted(self.system_predictor)
            self.system_predictor_ = self.system_predictor
        else:
            self.predictor_ = clone(self.predictor).fit(X, y, **fit_params)
            self.system_predictor_ = None
            if self.system_predictor is not None:
                if crystal_systems is None:
                    crystal_systems = [_crystal_system(s) for s in structures]
                self.system_predictor_ = clone(self.system_predictor).fit(X, np.asarray(crystal_systems))
        return self

    # -- prediction -------------------------------------------------------------------------
    def predict_crystal_system(self, X: Any) -> np.ndarray:
        """The crystal system each row's cell is constrained to, shape (n_samples,)."""
        return np.asarray(self._fitted_model(systems=True).predict(X)).astype(str)

    def _fitted_model(self, *, systems: bool = False):
        """The fitted lattice predictor, or with *systems* the crystal-system one (the lattice
        predictor when there is no separate one)."""
        check_is_fitted(self, "predictor_")
        model = self.system_predictor_ if systems and self.system_predictor_ is not None else self.predictor_
        if model is None:
            raise ValueError("this LatticeRefiner has no predictor: call refine(X, crystal_systems, lattice)")
        return model

    def _candidate_systems(self, X: Any, n_rows: int) -> list[list[tuple[str, float]]]:
        """Per row, the crystal systems to consider with their log probabilities."""
        model = self._fitted_model(systems=True)
        if self.n_systems == 1 or not hasattr(model, "predict_proba"):
            return [[(system, 0.0)] for system in self.predict_crystal_system(X)]
        probabilities = np.asarray(model.predict_proba(X), dtype=float).reshape(n_rows, -1)
        classes = np.asarray(model.classes_).astype(str)
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.n_systems]
        with np.errstate(divide="ignore"):
            log_probabilities = np.log(probabilities)
        return [[(classes[k], float(log_probabilities[row, k])) for k in ks] for row, ks in enumerate(order)]

    def _predicted_lattice(self, X: Any, n_rows: int) -> np.ndarray:
        values = np.asarray(getattr(self.predictor_, self._method())(X), dtype=float)
        values = values.reshape(n_rows, -1)
        if values.shape[1] < 3:
            raise ValueError(
                f"the predictor's {self._method()} gives {values.shape[1]} columns; the scaled lattice needs 3"
            )
        return values[:, :3]

    def predict(self, X: Any) -> np.ndarray:
        """Scaled lattice lengths (a, b, c) / N^(1/3), refined where the pattern allows.

        Returns
        -------
        ndarray of shape (n_samples, 3)
            a <= b <= c of the Niggli primitive cell over N^(1/3); the predictor's estimate in
            the rows that were not refined (``refined_`` is False there).
        """
        self._fitted_model()
        frame = to_frame(X)
        check_has_rows(frame)
        labels = row_labels(frame)
        patterns = self._patterns(frame, labels)  # validates before the (slow) predictors run
        compositions = self._compositions(frame, labels)
        estimate = self._predicted_lattice(X, len(frame))
        candidates = self._candidate_systems(X, len(frame))
        return self._refine_rows(frame, labels, patterns, compositions, estimate, candidates)

    def refine(self, X: Any, crystal_systems: Any, lattice: Any) -> np.ndarray:
        """Refine given estimates: each row's scaled lattice under the given crystal system.

        ``predict`` without the predictors: for a caller that has the crystal system and the
        starting lattice already (as :func:`skmat.pretrained.identify` has, from its own
        networks). Sets ``refined_``, ``refined_systems_``, ``crystal_systems_``, ``n_refined_`` and ``n_kept_`` as
        ``predict`` does.

        Parameters
        ----------
        X : DataFrame
            The rows' patterns and compositions (see the class notes).
        crystal_systems : array-like of str, shape (n_samples,)
        lattice : array-like of shape (n_samples, 3)
            Starting scaled lattice (a, b, c) / N^(1/3), kept where a row does not refine.

        Returns
        -------
        ndarray of shape (n_samples, 3)
        """
        check_is_fitted(self, "element_volumes_")
        frame = to_frame(X)
        check_has_rows(frame)
        labels = row_labels(frame)
        estimate = np.asarray(lattice, dtype=float)
        systems = np.asarray(crystal_systems).astype(str)
        if estimate.shape != (len(frame), 3) or systems.shape != (len(frame),):
            raise InvalidInputError(
                f"{len(frame)} rows need crystal_systems of shape ({len(frame)},) and lattice of shape "
                f"({len(frame)}, 3), got {systems.shape} and {estimate.shape}", view="lattice",
            )
        patterns = self._patterns(frame, labels)
        compositions = self._compositions(frame, labels)
        return self._refine_rows(frame, labels, patterns, compositions, estimate, [[(s, 0.0)] for s in systems])

    def _refine_rows(self, frame, labels, patterns, compositions, estimate, candidates) -> np.ndarray:
        import warnings

        from skmat._lattice_rows import RowRefinement, refine_rows
        from skmat._parallel import map_chunks

        refinement = RowRefinement(
            dict(self.element_volumes_), self.refine_zero_shift, self.min_peaks_per_parameter, self.search_range,
            self.fallback_search_range, self.atoms_from, self.converged_weight, self.symmetry_weight,
            self.merit_weight, bool(self.ab_initio),
        )
        results = map_chunks(
            refine_rows, list(zip(patterns, candidates, estimate, compositions, strict=True)),
            kwargs={"refinement": refinement}, n_jobs=self.n_jobs, chunk_size=8, verbose=self.verbose,
            desc="refining lattices",
        )
        lattice = estimate.copy()
        refined = np.zeros(len(frame), dtype=bool)
        refined_systems = np.full(len(frame), "", dtype=object)
        reasons: dict[str, list] = {}
        for row, (result, system, reason) in enumerate(results):
            if result is None:
                reasons.setdefault(reason, []).append(labels[row])
            else:
                lattice[row], refined[row], refined_systems[row] = result, True, system
        self.refined_systems_ = refined_systems.astype(str)
        most_probable = [max(row, key=lambda candidate: candidate[1])[0] for row in candidates]
        self.crystal_systems_ = np.where(refined, self.refined_systems_, np.asarray(most_probable, dtype=str))
        self.refined_ = refined
        self.n_refined_ = int(refined.sum())
        self.n_kept_ = int((~refined).sum())
        if reasons:
            detail = "; ".join(
                f"{reason}: rows {rows[:5]!r}{' ...' if len(rows) > 5 else ''} ({len(rows)})"
                for reason, rows in reasons.items()
            )
            warnings.warn(
                f"kept the predictor's lattice for {self.n_kept_} of {len(frame)} rows: {detail}", UserWarning,
                stacklevel=3,
            )
        return lattice

    # -- the pieces of predict ----------------------------------------------------------------
    def _patterns(self, frame, labels: list) -> list:
        """Per row: (peak positions in degrees 2θ, wavelength in Å, measured?) or a reason
        string when the pattern has no usable peaks."""
        from skmat._inputs import is_missing
        from skmat.features._powder import resolve_wavelength

        wavelength = resolve_wavelength(self.wavelength)
        wavelengths = list(frame["wavelength"]) if "wavelength" in frame.columns else [None] * len(frame)
        out: list = []
        if "two_theta" in frame.columns and "intensity" in frame.columns:
            for label, x, y, w in zip(labels, frame["two_theta"], frame["intensity"], wavelengths, strict=True):
                if is_missing(x) or is_missing(y):
                    raise InvalidInputError("no measured pattern in this row", row=label, view="two_theta")
                out.append(self._measured_peaks(x, y, w, label, "intensity"))
            return out
        if "xrd" in frame.columns:
            cells = list(frame["xrd"])
        elif "structure" in frame.columns:
            from skmat.features import XRDPattern

            cells = list(XRDPattern(wavelength=self.wavelength, two_theta_range=self.two_theta_range).fit_transform(
                frame[["structure"]]))
        else:
            raise InvalidInputError(
                "no pattern to refine against: X needs 'two_theta' and 'intensity' columns, an 'xrd' column or a "
                "'structure' column", view="xrd",
            )
        for label, cell, w in zip(labels, cells, wavelengths, strict=True):
            if is_missing(cell):
                raise InvalidInputError("no XRD pattern in this row", row=label, view="xrd")
            pair = _measured_pair(cell)
            if pair is not None:  # a (two_theta, intensity) measurement, as MeasuredXRD reads
                out.append(self._measured_peaks(*pair, w, label, "xrd"))
                continue
            try:
                pattern = np.asarray(cell, dtype=float).ravel()
            except (TypeError, ValueError):
                raise InvalidInputError("the XRD pattern is not an array of numbers", row=label, view="xrd") from None
            if not np.all(np.isfinite(pattern)):
                raise InvalidInputError("the XRD pattern has NaN or infinite intensities", row=label, view="xrd")
            if len(pattern) < 3:
                raise InvalidInputError(f"the XRD pattern has {len(pattern)} points", row=label, view="xrd")
            grid = np.linspace(float(self.two_theta_range[0]), float(self.two_theta_range[1]), len(pattern))
            out.append(self._peaks(pattern, grid, wavelength, False))
        return out

    def _measured_peaks(self, x, y, w, label, view: str):
        from skmat._inputs import is_missing
        from skmat.features._powder import _measurement_wavelength
        from skmat.features.indexing import measured_peaks

        lam = _measurement_wavelength(self.wavelength if is_missing(w) else w, label, view)
        try:
            # satellites kept: see indexing_peaks' drop_satellites for the measurement
            positions, _ = measured_peaks(x, y, lam, drop_satellites=False, row=label)
        except InvalidInputError as exc:
            if "no positive intensity" in exc.reason:
                return "the pattern has no positive intensity (no peaks)"
            if "(no peaks)" in exc.reason:
                return exc.reason
            raise InvalidInputError(exc.reason, row=label, view=view) from None
        return positions, lam, True

    @staticmethod
    def _peaks(pattern, grid, wavelength, measured):
        from skmat.features.indexing import indexing_peaks

        if not pattern.max(initial=0.0) > 0:
            return "the pattern has no positive intensity (no peaks)"
        try:
            positions, _, noisy = indexing_peaks(pattern, grid, wavelength, drop_satellites=False)
        except InvalidInputError as exc:
            return exc.reason
        # a noisy pattern is treated as measured (zero shift refined) wherever it came from
        return positions, wavelength, measured or noisy

    @staticmethod
    def _compositions(frame, labels: list) -> list:
        from pymatgen.core import Composition

        from skmat._inputs import _parse_structure, is_missing

        out = []
        for row, label in enumerate(labels):
            value = frame["composition"].iloc[row] if "composition" in frame.columns else None
            if value is None or is_missing(value):
                if "structure" not in frame.columns or is_missing(frame["structure"].iloc[row]):
                    raise InvalidInputError("no composition (and no structure to take it from)", row=label,
                                            view="composition")
                out.append(_parse_structure(frame["structure"].iloc[row], label, "structure").composition)
                continue
            try:
                out.append(Composition(value))
            except (ValueError, TypeError) as exc:
                raise InvalidInputError(f"cannot read the composition {value!r}: {exc}", row=label,
                                        view="composition") from None
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.required = False
        return tags


def _measured_pair(cell: Any):
    """(two_theta, intensity) of an ``xrd`` cell holding a measurement (a pair of arrays, or a
    (2, n) / (n, 2) array), or None for a pattern on the grid (one 1-D array)."""
    if isinstance(cell, tuple | list) and len(cell) == 2 and all(np.ndim(part) == 1 and np.size(part) > 2
                                                                  for part in cell):
        return cell[0], cell[1]
    if isinstance(cell, np.ndarray) and cell.ndim == 2:
        if cell.shape[0] == 2:
            return cell[0], cell[1]
        if cell.shape[1] == 2:
            return cell[:, 0], cell[:, 1]
    return None


def _crystal_system(structure) -> str:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return SpacegroupAnalyzer(structure, symprec=0.1).get_crystal_system()
