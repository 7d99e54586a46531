"""Multi-view regression and classification: aligned view encoders fused by an MLP head.

:class:`~skmat.align.MultiModalAligner` learns a shared space without labels; a downstream
scikit-learn estimator then reads its frozen embeddings. UniMat gets its best numbers by
training further: the view encoders, their fusion and a task head are tuned together on the
labels, optionally keeping the contrastive alignment loss as a second term and optionally
starting from a contrastively pretrained aligner. :class:`MultiModalRegressor` and
:class:`MultiModalClassifier` do that, as ordinary scikit-learn predictors.
"""

from __future__ import annotations

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
        Epochs without validation improvement before stopping.
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
