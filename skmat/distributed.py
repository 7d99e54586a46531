"""Training on several devices or machines: Hugging Face Accelerate and cross-process negatives.

Two pieces:

* :class:`AcceleratedMultiViewNet` — the skmat training net with skorch's
  :class:`~skorch.hf.AccelerateMixin`: an ``accelerate.Accelerator`` places the model, shards
  the batches over processes (DistributedDataParallel), and handles mixed precision. The
  neural estimators use it when given ``accelerator=``.
* :func:`gather_with_grad` / :func:`gather_views` — a contrastive loss on one process only
  sees the negatives of its own shard of the batch. As in MultiMat and OpenCLIP, embeddings are
  all-gathered across processes *with* gradients, so every process scores the global batch
  and gradients flow back to the rows each process computed. Outside a
  ``torch.distributed`` run both are the identity, so single-device training is unchanged.

Why the gradients come out right: every process computes the same global loss ``L`` and
back-propagates it into its own rows only, with weight ``W`` (the number of processes): the
sum of the gradients of the ``W`` copies of ``L`` (``W * dL/dx``), without communicating in the
backward pass. DDP then averages parameter gradients over the ``W`` processes, which gives
exactly ``dL/dθ``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from skorch.dataset import ValidSplit
from skorch.exceptions import DeviceWarning
from skorch.hf import AccelerateMixin
from torch import Tensor

from skmat._training import MultiViewNet

__all__ = ["AcceleratedMultiViewNet", "gather_views", "gather_with_grad", "is_distributed"]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one process is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_sizes(n_rows: int, device: torch.device) -> list[int]:
    import torch.distributed as dist

    size = torch.tensor([n_rows], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate *tensor* from every process along its first axis, keeping gradients.

    Processes may hold different numbers of rows (a last, shorter batch, or none): rows are
    padded to the longest for the collective, then trimmed. Rows come in process (rank)
    order. Without an initialised ``torch.distributed`` group of two or more processes, the
    tensor itself is returned.

    Gradients reach this process's own rows, multiplied by the number of processes ``W``:
    every process computes the same loss ``L`` on the gathered rows, so the gradient of its
    rows summed over the ``W`` copies of ``L`` is ``W * dL/dx``, and DDP's average of the
    parameter gradients over the processes then gives exactly ``dL/dθ``, as on one device.
    The collectives all run in the forward pass: the backward communicates nothing, so the
    processes never have to agree on the order in which autograd reaches this function
    (which they would not when a view is absent from one process's rows).

    Parameters
    ----------
    tensor : Tensor of shape (n_rows, ...)
        This process's rows. Boolean tensors (masks) are gathered too, without gradients.

    Returns
    -------
    Tensor of shape (total_rows, ...)

    Examples
    --------
    >>> import torch
    >>> x = torch.ones(4, 2, requires_grad=True)
    >>> gather_with_grad(x) is x  # a single process: nothing to gather
    True
    """
    if not is_distributed():
        return tensor
    import torch.distributed as dist

    sizes = _gather_sizes(tensor.shape[0], tensor.device)
    longest = max(sizes)
    is_bool = tensor.dtype == torch.bool
    local = tensor.detach()
    local = local.to(torch.uint8) if is_bool else local  # gloo has no bool all-gather
    if tensor.shape[0] < longest:
        local = torch.cat([local, local.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))])
    parts = [torch.empty_like(local) for _ in sizes]
    dist.all_gather(parts, local.contiguous())
    parts = [part[:n] for part, n in zip(parts, sizes, strict=True)]
    if is_bool:
        return torch.cat(parts).bool()
    if tensor.requires_grad:
        # this process's rows keep their autograd history; x + (W-1)(x - x.detach()) has the
        # value of x exactly and passes W times the gradient back (see above)
        world_size = len(sizes)
        parts[dist.get_rank()] = tensor + (world_size - 1) * (tensor - tensor.detach())
    return torch.cat(parts)


def gather_views(
    embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor] | None
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """:func:`gather_with_grad` applied to every view's embeddings and presence mask.

    The input of the losses in :mod:`skmat.nn.losses`; the identity outside a distributed run.

    Examples
    --------
    >>> import torch
    >>> emb, present = gather_views({"xrd": torch.zeros(3, 2)}, None)
    >>> emb["xrd"].shape, present
    (torch.Size([3, 2]), None)
    """
    if not is_distributed():
        return dict(embeddings), None if present is None else dict(present)
    gathered = {name: gather_with_grad(z) for name, z in embeddings.items()}
    masks = {}
    for name, z in embeddings.items():
        mask = None if present is None else present.get(name)
        if mask is None:  # a view without a mask is present in every row of this process
            mask = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
        masks[name] = gather_with_grad(torch.as_tensor(mask, device=z.device).reshape(-1).bool())
    return gathered, masks


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
