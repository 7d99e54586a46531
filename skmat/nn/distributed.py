"""Contrastive negatives across processes: the all-gather of embeddings, in pure torch.

A contrastive loss on one process only sees the negatives of its own shard of the batch. As in
MultiMat and OpenCLIP, embeddings are all-gathered across processes *with* gradients, so every
process scores the global batch and gradients flow back to the rows each process computed.
Outside a ``torch.distributed`` run of two or more processes both functions are the identity,
so single-device training is unchanged. :class:`skmat.nn.losses.ContrastiveLoss` gathers this
way; :mod:`skmat.distributed` (the Accelerate-driven training net) re-exports these names.

Why the gradients come out right: every process computes the same global loss ``L`` and
back-propagates it into its own rows only, with weight ``W`` (the number of processes): the
sum of the gradients of the ``W`` copies of ``L`` (``W * dL/dx``), without communicating in the
backward pass. DDP then averages parameter gradients over the ``W`` processes, which gives
exactly ``dL/dθ``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["gather_views", "gather_with_grad", "is_distributed"]


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
