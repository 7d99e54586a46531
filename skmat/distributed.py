"""Training on several devices or machines: Hugging Face Accelerate and cross-process negatives.

Two pieces:

* :class:`AcceleratedMultiViewNet` — the skmat training net with skorch's
  :class:`~skorch.hf.AccelerateMixin`: an ``accelerate.Accelerator`` places the model, shards
  the batches over processes (DistributedDataParallel), and handles mixed precision. The
  neural estimators use it when given ``accelerator=``.
* :func:`~skmat.nn.distributed.gather_with_grad` / :func:`~skmat.nn.distributed.gather_views`
  — the all-gather of embeddings with gradients, so a contrastive loss sees the negatives of
  the global batch. They live in :mod:`skmat.nn.distributed` (pure torch: the losses call
  them) and are re-exported here with :func:`~skmat.nn.distributed.is_distributed`.

One way only: this module builds on :mod:`skmat._training`, which never imports it back. The
estimators build their net through ``training_net`` here, the one place that picks the
accelerated net when they are given ``accelerator=``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from skorch.dataset import ValidSplit
from skorch.exceptions import DeviceWarning
from skorch.hf import AccelerateMixin

from skmat._training import MultiViewNet, build_net
from skmat.nn.distributed import gather_views, gather_with_grad, is_distributed

__all__ = ["AcceleratedMultiViewNet", "gather_views", "gather_with_grad", "is_distributed"]


def training_net(
    module: torch.nn.Module, *, device: str | None, accelerator: Any = None, **options: Any
) -> MultiViewNet:
    """The net an estimator trains *module* with: :func:`skmat._training.build_net`'s
    :class:`~skmat._training.MultiViewNet`, or an :class:`AcceleratedMultiViewNet` when an
    ``accelerate.Accelerator`` is given (it then places the model: ``device`` is ignored).

    The one place that chooses between the two, here rather than in ``_training`` so that the
    imports run one way (this module imports ``_training``, never the reverse).
    """
    if accelerator is None:
        return build_net(module, device=device, **options)
    # skorch requires device=None when the accelerator places the model
    return build_net(module, device=None, net_class=AcceleratedMultiViewNet, accelerator=accelerator, **options)


def _discard(text: str) -> None:
    """Print-log sink of a silent net (module-level, so the net pickles)."""


class AcceleratedMultiViewNet(AccelerateMixin, MultiViewNet):
    """:class:`~skmat._training.MultiViewNet` trained through an ``accelerate.Accelerator``.

    Built by the estimators when they are given ``accelerator=``; ``device`` must then be
    ``None`` (the accelerator places the model and the batches). After training the module and
    optimizer are unwrapped and the accelerator releases what it prepared
    (``Accelerator.free_memory``), so the fitted estimator pickles and runs on a CPU-only
    machine.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~skmat._training.MultiViewNet` (skorch ``NeuralNet``).
    accelerator : accelerate.Accelerator
        Device placement, data sharding over processes, mixed precision
        (``Accelerator(mixed_precision="bf16")``), gradient accumulation.

    Notes
    -----
    In a run of several processes, every process must issue the same collectives in the same
    order, or the run hangs. The net sees to it:

    * every trainable parameter takes part in every step's loss (with weight zero where it
      was not used), so DistributedDataParallel all-reduces the same buckets in every process
      even when a view is absent from all of one process's rows and its encoder did not run;
    * the held-out validation rows are the same in every process: without a ``random_state``
      the split's seed is drawn on the main process and broadcast;
    * the accelerator must keep ``even_batches=True`` (its default), which pads the last
      batch so that every process runs the same number of steps; ``False`` is refused.
      The padding repeats a few rows, which then meet themselves as negatives in that one
      batch.

    Examples
    --------
    >>> from accelerate import Accelerator
    >>> from skmat import CompositionEncoder, MultiModalAligner, XRDEncoder
    >>> from skmat.datasets import load_prototypes
    >>> X = load_prototypes(return_X_y=True)[0]
    >>> encoders = [("xrd", XRDEncoder(n_bins=128)), ("composition", CompositionEncoder())]
    >>> aligner = MultiModalAligner(encoders, max_epochs=1, accelerator=Accelerator(cpu=True), random_state=0)
    >>> aligner.fit(X[:32]).transform(X[:4]).shape
    (4, 128)
    """

    def _initialize_callbacks(self):
        # skorch's mixin prints the epoch log through ``accelerator.print``, which ignores
        # ``verbose``; a silent estimator stays silent
        if self.callbacks__print_log__sink == "auto" and not self.verbose:
            self.callbacks__print_log__sink = _discard
        return super()._initialize_callbacks()

    def _initialize_accelerator(self):
        # skmat's criterion is a placeholder without parameters (the module computes its own
        # loss); in a multi-process run accelerate would wrap it in DistributedDataParallel,
        # which refuses modules without trainable parameters. Prepare only criteria that learn.
        criteria = self._criteria
        self._criteria = [
            name
            for name in criteria
            if any(p.requires_grad for p in getattr(getattr(self, name + "_"), "parameters", list)())
        ]
        try:
            return super()._initialize_accelerator()
        finally:
            self._criteria = criteria

    def initialize(self):
        if is_distributed() and not getattr(self.accelerator, "even_batches", True):
            raise ValueError(
                "accelerator.even_batches=False lets processes run different numbers of steps, "
                "and a process waiting for the others' collectives hangs; keep the default True"
            )
        return super().initialize()

    def get_split_datasets(self, X, y=None, **fit_params):
        split = self.train_split
        if not (is_distributed() and isinstance(split, ValidSplit) and split.random_state is None):
            return super().get_split_datasets(X, y, **fit_params)
        # with random_state=None each process would hold out different rows and train on rows
        # another process validates on: draw one seed on the main process for all of them
        import torch.distributed as dist

        seed = [int(np.random.default_rng().integers(2**31 - 1)) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(seed, src=0)
        self.train_split = ValidSplit(split.cv, stratified=split.stratified, random_state=seed[0])
        try:
            return super().get_split_datasets(X, y, **fit_params)
        finally:
            self.train_split = split

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if training and is_distributed():
            # DistributedDataParallel all-reduces a bucket of gradients once all its parameters
            # have one; an encoder that did not run in this process (its view is absent from
            # all of this process's rows) would leave its bucket pending here while the other
            # processes wait for it. A zero-weighted term gives every parameter a (zero)
            # gradient. find_unused_parameters=True is no way out: the learned temperature is
            # used outside ``forward`` and DDP would then mark it ready twice.
            loss = loss + 0.0 * sum(p.sum() for p in self.module_.parameters() if p.requires_grad)
        return loss

    def _unwrap_accelerator(self):
        super()._unwrap_accelerator()
        # skorch unwraps the modules only. accelerate's optimizer wrapper holds a ``step``
        # patched by the learning-rate scheduler, which does not pickle: keep the plain
        # optimizer (the next ``fit`` prepares a new one)
        for name in self._optimizers:
            optimizer = getattr(self, name + "_")
            inner = getattr(optimizer, "optimizer", None)
            if isinstance(inner, torch.optim.Optimizer):
                setattr(self, name + "_", inner)
        for _, callback in self.callbacks_:
            scheduler = getattr(callback, "lr_scheduler_", None)
            inner = getattr(getattr(scheduler, "optimizer", None), "optimizer", None)
            if isinstance(inner, torch.optim.Optimizer):
                scheduler.optimizer = inner

    def notify(self, method_name, **cb_kwargs):
        if method_name != "on_train_end":
            return super().notify(method_name, **cb_kwargs)
        # skorch calls the net's own handler first, which unwraps the module from
        # DistributedDataParallel; EarlyStopping(load_best=True) then restores weights it copied
        # from the *wrapped* module ("module."-prefixed keys) and fails on every process. The
        # callbacks finish their training first, while the module is still wrapped
        for _, callback in self.callbacks_:
            callback.on_train_end(self, **cb_kwargs)
        self.on_train_end(self, **cb_kwargs)
        return None

    def on_train_end(self, net, X=None, y=None, **kwargs):
        super().on_train_end(net, X=X, y=y, **kwargs)
        if self.unwrap_after_train:
            # the accelerator keeps every object it prepared (optimizer wrappers, one data
            # loader per epoch); release them so memory returns and the estimator, which holds
            # the accelerator as a parameter, pickles
            self.accelerator.free_memory()

    def __setstate__(self, state):
        # trained with device=None (the accelerator placed it): skorch loads the tensors on
        # the CPU and warns that no device was requested; that is the documented behaviour
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting self.device", category=DeviceWarning)
            super().__setstate__(state)
