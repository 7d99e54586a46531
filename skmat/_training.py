"""The training engine shared by every neural estimator: batches of views, a skorch net, devices.

Each view of a dataset is prepared once into a :class:`PreparedView` (numbers for the rows
that have the view, and a presence mask). A :class:`MultiViewDataset` yields row indices and
its :meth:`~MultiViewDataset.collate` gathers a mini-batch of every view at once, vectorised,
so skorch never handles a pymatgen object or a per-row Python object.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, ProgressBar
from skorch.dataset import ValidSplit
from torch.utils.data import Dataset, Subset

from skmat.exceptions import NonFiniteLossError  # noqa: F401  (raised here; public in exceptions)


def resolve_device(device: str | torch.device | None) -> str:
    """``"auto"`` (or None) -> ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@dataclass
class PreparedView:
    """One view of *n* rows, ready for batching.

    Attributes
    ----------
    values : ndarray or CrystalGraphData
        Data of the rows that have the view, in row order (``present.sum()`` items).
    present : ndarray of bool, shape (n,)
        Which rows have the view.
    """

    values: Any
    present: np.ndarray

    def __post_init__(self):
        self.present = np.asarray(self.present, dtype=bool)
        # row -> position in ``values`` (or -1): lets a batch gather present rows in one take
        self.position = np.full(len(self.present), -1, dtype=np.int64)
        self.position[self.present] = np.arange(int(self.present.sum()))

    def __len__(self) -> int:
        return len(self.present)

    def batch(self, rows: np.ndarray):
        """Data of the present rows among *rows* (torch-ready) and their presence mask."""
        present = self.present[rows]
        take = self.position[rows][present]
        if isinstance(self.values, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(self.values[take]))
        else:  # a graph container: subset, then collate into one disjoint-union batch
            from skmat.nn.graph import collate_graphs

            x = collate_graphs(self.values[take])
        return x, torch.from_numpy(present)


class ViewBatch:
    """A mini-batch of several views: ``{view: (x, present)}`` plus the number of rows.

    Deliberately not a ``Mapping``: skorch measures a batch with ``len()``, and would
    otherwise try to take the length of every tensor inside.
    """

    def __init__(self, views: dict, n_rows: int):
        self.views = views
        self.n_rows = n_rows

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, view: str):
        return self.views[view]

    def __contains__(self, view: str) -> bool:
        return view in self.views

    def items(self):
        return self.views.items()

    def to(self, device) -> ViewBatch:
        return ViewBatch(move_to(self.views, device), self.n_rows)


class MultiViewDataset(Dataset):
    """Rows of several prepared views (and an optional target) for a torch DataLoader.

    ``__getitem__`` returns the row index; :meth:`collate` builds the batch.
    """

    def __init__(self, views: dict[str, PreparedView], y: np.ndarray | None = None):
        lengths = {name: len(v) for name, v in views.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"views have different numbers of rows: {lengths}")
        self.views = views
        self.y = y
        self.n_rows = next(iter(lengths.values())) if lengths else (0 if y is None else len(y))

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]):
        rows = np.asarray(indices, dtype=np.int64)
        batch = ViewBatch({name: view.batch(rows) for name, view in self.views.items()}, len(rows))
        y = None if self.y is None else torch.from_numpy(np.ascontiguousarray(self.y[rows]))
        return batch, y


def move_to(obj, device: str):
    """Move tensors (and objects with ``.to``) nested in tuples/dicts to *device*."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(move_to(v, device) for v in obj)
    return obj.to(device)


class WarmupCosine:
    """Learning-rate factor: linear warm-up, then cosine decay to zero (as MLCM trains).

    A class rather than a lambda so that a fitted net pickles.

    Examples
    --------
    >>> f = WarmupCosine(total_steps=100, warmup_steps=10)
    >>> round(f(0), 2), round(f(10), 2), round(f(100), 2)
    (0.1, 1.0, 0.0)
    """

    def __init__(self, total_steps: int, warmup_steps: int):
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class ClampParameters(Callback):
    """After every optimizer step, call ``clamp_()`` on each submodule that has one (the
    learned temperature of a contrastive loss), so constrained parameters stay in range."""

    def initialize(self):
        self.clamped_ = None
        return self

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        if self.clamped_ is None:
            self.clamped_ = [m for m in net.module_.modules() if callable(getattr(m, "clamp_", None))]
        for module in self.clamped_:
            module.clamp_()


class ValidAccuracy(Callback):
    """Record ``valid_acc``, the share of validation rows whose class is predicted right, at
    the end of each epoch of a classifier (a module whose ``task`` is ``"classification"``
    and that has ``count_correct(output, y) -> (n_right, n_rows)``).

    Early stopping of a classifier watches this rather than the validation cross-entropy:
    on MP-20 crystal systems the cross-entropy starts rising after about 5 epochs, as the
    network grows over-confident, while the accuracy still improves for 10 or more."""

    def on_epoch_begin(self, net, **kwargs):
        self.right_, self.rows_ = 0, 0

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training or y_pred is None:
            return
        right, rows = bare_module(net.module_).count_correct(y_pred, move_to(batch[1], net.device))
        self.right_ += right
        self.rows_ += rows

    def on_epoch_end(self, net, **kwargs):
        if self.rows_:
            net.history.record("valid_acc", self.right_ / self.rows_)


def is_classifier_module(module: torch.nn.Module) -> bool:
    module = bare_module(module)
    return getattr(module, "task", None) == "classification" and hasattr(module, "count_correct")


def bare_module(module: torch.nn.Module) -> torch.nn.Module:
    """*module* without a ``DistributedDataParallel`` wrapper, which hides its methods
    (``loss``, ``embed``) behind ``.module``."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.module
    return module


def non_finite_term(module: torch.nn.Module, y_pred, y_true) -> str:
    """Name of the loss term of *module* that is not finite, for an error message.

    A module may say it itself with ``loss_terms(output, y) -> {name: tensor}``; otherwise the
    term is read from what skmat's modules are: a contrastive aligner (``contrastive``), a
    supervised head (``task``), or a supervised head that adds its aligner's contrastive loss
    (``contrastive_weight``).
    """
    if hasattr(module, "loss_terms"):
        terms = module.loss_terms(y_pred, y_true)
        bad = [name for name, value in terms.items() if not torch.isfinite(value).all()]
        return " and ".join(f"{name} term" for name in bad) or "total"
    if hasattr(module, "contrastive"):
        return f"contrastive term (loss={module.contrastive.loss!r})"
    task = getattr(module, "task", None)
    task_term = f"task term ({'cross-entropy' if task == 'classification' else 'MSE'})"
    aligner = getattr(module, "aligner", None)
    if getattr(module, "contrastive_weight", 0) and hasattr(aligner, "contrastive") and len(y_pred) == 4:
        # the head's output carries the view embeddings its contrastive term is computed from
        with torch.no_grad():
            contrastive = aligner.contrastive(y_pred[2], y_pred[3])
        if not torch.isfinite(contrastive):
            return f"contrastive term (loss={aligner.contrastive.loss!r})"
    return task_term


def check_max_grad_norm(max_grad_norm: float | None) -> float | None:
    """``max_grad_norm`` as a float, or None; anything else but a positive number raises."""
    if max_grad_norm is None:
        return None
    try:
        value = float(max_grad_norm)
    except (TypeError, ValueError):
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"max_grad_norm must be a positive number or None, got {max_grad_norm!r}")
    return value


class MultiViewNet(NeuralNet):
    """skorch net whose batches come from :class:`MultiViewDataset` and whose module computes
    its own loss (``module_.loss(output, y)``), which keeps contrastive and supervised
    training on the same loop."""

    def get_iterator(self, dataset, training=False):
        base = dataset
        while isinstance(base, Subset):
            base = base.dataset
        prefix = "iterator_train" if training else "iterator_valid"
        kwargs = self.get_params_for(prefix)
        kwargs.setdefault("batch_size", self.batch_size)
        kwargs.setdefault("collate_fn", base.collate)
        iterator = self.iterator_train if training else self.iterator_valid
        return iterator(dataset, **kwargs)

    def infer(self, x, **fit_params):
        return self.module_(move_to(x, self.device))

    # skorch calls the net's own hooks before the callbacks': count batches per epoch and
    # phase so that a non-finite loss can say where it happened
    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_begin(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)
        self._batches_seen = {True: 0, False: 0}

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        super().on_batch_begin(net, batch=batch, training=training, **kwargs)
        seen = getattr(self, "_batches_seen", None) or {True: 0, False: 0}
        seen[bool(training)] += 1
        self._batches_seen = seen

    def get_loss(self, y_pred, y_true, X=None, training=False):
        module = bare_module(self.module_)
        y_true = move_to(y_true, self.device)
        loss = module.loss(y_pred, y_true)
        if not torch.isfinite(loss):
            epoch = len(self.history) if self.history else 0
            batch = getattr(self, "_batches_seen", {}).get(bool(training), 0)
            raise NonFiniteLossError(
                f"the loss became {loss.item()} in epoch {epoch}, {'training' if training else 'validation'} "
                f"batch {batch}, in its {non_finite_term(module, y_pred, y_true)}; lower `lr`, set "
                "`max_grad_norm`, or check the inputs for extreme values"
            )
        return loss

    def get_split_datasets(self, X, y=None, **fit_params):
        # MultiViewDataset carries its own target: skorch's y stays None
        return super().get_split_datasets(X, None, **fit_params)


def build_net(
    module: torch.nn.Module,
    *,
    n_rows: int,
    max_epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_fraction: float,
    validation_fraction: float,
    patience: int | None,
    device: str,
    verbose: int,
    random_state: int | None,
    grad_clip: float | None = None,
    net_class: type[MultiViewNet] | None = None,
    **net_kwargs: Any,
) -> MultiViewNet:
    """A :class:`MultiViewNet` with AdamW, warm-up + cosine schedule, early stopping and a
    progress bar, configured the way every skmat estimator trains.

    ``grad_clip`` (an estimator's ``max_grad_norm``) clips the global L2 norm of the
    gradients before each optimizer step; None disables clipping.

    ``net_class`` (a :class:`MultiViewNet` subclass, default :class:`MultiViewNet`) and
    ``net_kwargs`` (its own parameters) let a caller train through another net:
    :func:`skmat.distributed.training_net` passes its ``AcceleratedMultiViewNet`` and the
    accelerator this way, so this module never imports :mod:`skmat.distributed`.
    """
    n_valid = int(round(validation_fraction * n_rows)) if validation_fraction else 0
    use_valid = n_valid >= 2 and n_rows - n_valid >= 2
    n_train = n_rows - n_valid if use_valid else n_rows
    steps_per_epoch = max(math.ceil(n_train / batch_size), 1)
    total = steps_per_epoch * max_epochs
    callbacks: list = [
        (
            "lr_schedule",
            LRScheduler(
                policy=torch.optim.lr_scheduler.LambdaLR,
                lr_lambda=WarmupCosine(total, int(warmup_fraction * total)),
                step_every="batch",
            ),
        ),
        ("clamp", ClampParameters()),
    ]
    if use_valid and is_classifier_module(module):
        # before the early stopping, which reads what it records in the same epoch end
        callbacks.append(("valid_acc", ValidAccuracy()))
        if patience:
            stopping = EarlyStopping(monitor="valid_acc", lower_is_better=False, patience=patience, load_best=True)
            callbacks.append(("early_stopping", stopping))
    elif use_valid and patience:
        callbacks.append(("early_stopping", EarlyStopping(patience=patience, load_best=True)))
    if verbose:
        callbacks.append(("progress", ProgressBar()))
    grad_clip = check_max_grad_norm(grad_clip)
    if grad_clip is not None:
        from skorch.callbacks import GradientNormClipping

        # clips the L2 norm of all gradients together, before every optimizer step
        callbacks.append(("grad_clip", GradientNormClipping(gradient_clip_value=grad_clip)))
    seed = None if random_state is None else int(random_state)
    train_split = ValidSplit(validation_fraction, stratified=False, random_state=seed) if use_valid else None
    return (net_class or MultiViewNet)(
        module=module,
        criterion=torch.nn.MSELoss,  # unused: the module computes its own loss
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=weight_decay,
        # weight decay would pull a learned temperature towards 1 (log 0): CLIP exempts it too
        optimizer__param_groups=[("*log_temperature", {"weight_decay": 0.0})],
        lr=lr,
        max_epochs=max_epochs,
        batch_size=batch_size,
        iterator_train__shuffle=True,
        train_split=train_split,
        callbacks=callbacks,
        verbose=verbose,
        device=device,
        **net_kwargs,
    )


def net_options(estimator) -> dict:
    """:func:`build_net`'s training settings read from a multi-view estimator's parameters
    (the aligner and the fused predictors name them alike)."""
    return dict(
        max_epochs=int(estimator.max_epochs),
        batch_size=int(estimator.batch_size),
        lr=float(estimator.lr),
        weight_decay=float(estimator.weight_decay),
        warmup_fraction=float(estimator.warmup_fraction),
        validation_fraction=float(estimator.validation_fraction),
        patience=estimator.patience,
        grad_clip=estimator.max_grad_norm,
        verbose=int(estimator.verbose),
    )


def seed_torch(random_state: int | None) -> None:
    """Seed torch's global generator (weight init, shuffling, dropout) when a seed is given."""
    if random_state is not None:
        torch.manual_seed(int(random_state))


def fit_net(net: MultiViewNet, dataset: MultiViewDataset, random_state: int | None) -> MultiViewNet:
    """Seed torch (shuffling, dropout) and fit; a warning-free, reproducible run.

    The module must have been built after :func:`seed_torch` for identical initial weights.
    """
    seed_torch(random_state)
    with warnings.catch_warnings():
        # skorch warns that y is None, which is how self-supervised fitting works here
        warnings.filterwarnings("ignore", message=".*y.*None.*")
        net.fit(dataset, None)
    return net


def fit_with_encoder_hooks(net: MultiViewNet, dataset: MultiViewDataset, encoders: list, random_state) -> MultiViewNet:
    """:func:`fit_net` with each view encoder's training-only settings (per-batch XRD
    augmentation) in place during the fit and removed after it, as a standalone encoder fit
    does, so ``XRDEncoder(augment=True)`` inside an aligner or a fused predictor augments too."""
    for name, encoder in encoders:
        encoder._configure_training(net, dataset, name, random_state)
    try:
        return fit_net(net, dataset, random_state)
    finally:
        for _, encoder in encoders:
            encoder._end_training(net, dataset)


def run_inference(net: MultiViewNet, dataset: MultiViewDataset, fn, method: str | None = None) -> list:
    """Apply ``fn`` to the module's output on every batch (eval mode, no grad), in row order.

    ``method`` names a module method to call instead of ``forward`` (e.g. ``"embed"``).
    """
    outputs = []
    module = bare_module(net.module_)
    module.eval()
    call = module if method is None else getattr(module, method)
    device = inference_device(net)
    with torch.no_grad():
        # MultiViewNet's iterator, not an accelerated net's: that one would shard the rows
        # over the processes, and every process must embed every row
        for batch, _ in MultiViewNet.get_iterator(net, dataset, training=False):
            outputs.append(fn(call(move_to(batch, device))))
    return outputs


def inference_device(net: MultiViewNet) -> str | torch.device:
    """Where *net*'s module lives: its ``device``, or its accelerator's when that placed it."""
    if net.device is None and getattr(net, "accelerator", None) is not None:
        return net.accelerator.device
    return net.device
