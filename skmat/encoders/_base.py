"""What every view encoder shares: :class:`_NeuralViewEncoder` (the estimator API, supervised
training through :mod:`skmat._training`, the hooks :class:`~skmat.align.MultiModalAligner`
calls) and the training-parameter section of their docstrings.

A view encoder subclasses :class:`_NeuralViewEncoder` and implements ``_prepare`` (a column of
raw cells -> a :class:`~skmat._training.PreparedView`) and ``_make_module`` (its torch network
from :mod:`skmat.nn`); nothing view-specific lives here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import (
    check_has_rows,
    is_missing,
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
    validation_fraction : float, default={validation_fraction}
        Share of the rows held out for early stopping (0 disables it: every epoch of the
        warm-up + cosine schedule runs, on all rows).
    patience : int, default=5
        Epochs without improvement before stopping: of the validation accuracy for a
        classifier (its cross-entropy rises while the accuracy still improves), of the
        validation loss otherwise.
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
        place themselves; ``fit`` passes ``accelerator`` on to
        :func:`~skmat.distributed.training_net`)."""
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
            check_max_grad_norm,
            fit_with_encoder_hooks,
            resolve_device,
            seed_torch,
        )
        from skmat.distributed import training_net

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
        self.net_ = training_net(
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


def _with_training_doc(max_epochs: int, validation_fraction: float = 0.1):
    """Class decorator: fill the ``%(training)s`` slot of an encoder's Parameters section with
    the training parameters every encoder shares (written once, in ``_TRAINING_DOC``)."""

    def fill(cls):
        cls.__doc__ = cls.__doc__.replace("%(training)s", _TRAINING_DOC.format(max_epochs=max_epochs, validation_fraction=validation_fraction).strip("\n"))
        return cls

    return fill
