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
back-propagates it; the backward of the all-gather sums, for each process's own rows, the
gradients of all ``W`` copies of ``L`` (``W * dL/dx``), and DDP then averages parameter
gradients over the ``W`` processes, which gives exactly ``dL/dθ``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
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

    Processes may hold different numbers of rows (a last, shorter batch): rows are padded to
    the longest for the collective, then trimmed. Rows come in process (rank) order. Gradients
    of the result flow back to this process's own rows (summed over the processes that used
    them). Without an initialised ``torch.distributed`` group of two or more processes, the
    tensor itself is returned.

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
    from torch.distributed.nn.functional import all_gather

    sizes = _gather_sizes(tensor.shape[0], tensor.device)
    longest = max(sizes)
    is_bool = tensor.dtype == torch.bool
    local = tensor.to(torch.uint8) if is_bool else tensor  # gloo has no bool all-gather
    if tensor.shape[0] < longest:
        local = torch.cat([local, local.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))])
    if local.requires_grad:
        parts = all_gather(local)  # autograd-aware: its backward reduce-scatters the gradients
    else:
        parts = [torch.empty_like(local) for _ in sizes]
        dist.all_gather(parts, local.contiguous())
    gathered = torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])
    return gathered.bool() if is_bool else gathered


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
