"""Fusion heads: turn the per-view embeddings of a material into one vector.

Every fusion module is called as ``fusion(embeddings, present)`` with ``embeddings`` a dict of
``(B, D)`` tensors and ``present`` a dict of ``(B,)`` boolean masks, and returns ``(B, out_dim)``.
A view that is missing for a row (mask ``False``, or the view absent from the dict) never
leaks into the output, whatever its embedding holds (zeros, garbage or NaN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from skmat.nn.losses import l2_normalize

__all__ = ["FUSIONS", "ConcatFusion", "MeanFusion", "make_fusion"]


def _batch_reference(embeddings: Mapping[str, Tensor], views: Sequence[str]) -> Tensor:
    """Any one of the requested views' tensors: gives batch size, dtype and device."""
    for view in views:
        if view in embeddings:
            return embeddings[view]
    raise ValueError(
        f"none of the fusion views {list(views)} is in embeddings ({list(embeddings)})"
    )


def _masked_view(
    embeddings: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None,
    view: str,
    reference: Tensor,
    dim: int | None,
) -> tuple[Tensor, Tensor]:
    """The view's embeddings with missing rows set to exactly zero, and its presence mask."""
    batch_size = reference.shape[0]
    if view not in embeddings:
        width = reference.shape[1] if dim is None else dim
        zeros = reference.new_zeros(batch_size, width)
        return zeros, torch.zeros(batch_size, dtype=torch.bool, device=reference.device)
    emb = embeddings[view]
    if emb.ndim != 2 or emb.shape[0] != batch_size:
        raise ValueError(
            f"embeddings[{view!r}] has shape {tuple(emb.shape)}, expected ({batch_size}, D)"
        )
    if dim is not None and emb.shape[1] != dim:
        raise ValueError(f"embeddings[{view!r}] has width {emb.shape[1]}, the fusion expects {dim}")
    if present is None or present.get(view) is None:
        mask = torch.ones(batch_size, dtype=torch.bool, device=emb.device)
    else:
        mask = torch.as_tensor(present[view], device=emb.device).reshape(-1).bool()
    # torch.where (not multiplication by the mask) so NaN in missing rows cannot reach the
    # output or, through 0 * NaN, the gradients.
    zero = torch.zeros((), dtype=emb.dtype, device=emb.device)
    return torch.where(mask[:, None], emb, zero), mask


class ConcatFusion(nn.Module):
    """Concatenate the views in a fixed order, then an MLP (UniMat's fusion).

    A view missing for a row contributes a block of zeros, so the input width never changes.

    Parameters
    ----------
    views : list of str
        View names, in concatenation order.
    in_dim : int
        Width ``D`` of every view's embedding.
    out_dim : int
        Width of the fused embedding.
    hidden_dim : int or None, default=256
        Hidden width of the two-layer MLP; ``None`` or ``0`` gives a single linear layer.
    dropout : float, default=0.0
        Dropout after the hidden activation.

    Examples
    --------
    >>> import torch
    >>> fusion = ConcatFusion(["xrd", "composition"], in_dim=4, out_dim=3, hidden_dim=8)
    >>> emb = {"xrd": torch.randn(5, 4), "composition": torch.randn(5, 4)}
    >>> present = {"xrd": torch.tensor([True, True, False, True, True])}
    >>> fusion(emb, present).shape
    torch.Size([5, 3])
    """

    def __init__(
        self,
        views: Sequence[str],
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = 256,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not views:
            raise ValueError("ConcatFusion needs at least one view")
        self.views = list(views)
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        concat_dim = self.in_dim * len(self.views)
        if hidden_dim:
            self.mlp = nn.Sequential(
                nn.Linear(concat_dim, hidden_dim),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, self.out_dim),
            )
        else:
            self.mlp = nn.Linear(concat_dim, self.out_dim)

    def forward(
        self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        reference = _batch_reference(embeddings, self.views)
        blocks = [
            _masked_view(embeddings, present, view, reference, self.in_dim)[0]
            for view in self.views
        ]
        return self.mlp(torch.cat(blocks, dim=1))


class MeanFusion(nn.Module):
    """Mean of the L2-normalised embeddings of the views present in each row.

    Rows with no view present give a zero vector. No parameters.

    Parameters
    ----------
    views : list of str
        Views to average.
    dim : int, optional
        Embedding width, if known; only recorded as ``out_dim`` and checked in ``forward``.

    Examples
    --------
    >>> import torch
    >>> fusion = MeanFusion(["structure", "xrd"])
    >>> emb = {"structure": torch.tensor([[3.0, 4.0]]), "xrd": torch.tensor([[1.0, 0.0]])}
    >>> fusion(emb, {"xrd": torch.tensor([False])})
    tensor([[0.6000, 0.8000]])
    """

    def __init__(self, views: Sequence[str], dim: int | None = None):
        super().__init__()
        if not views:
            raise ValueError("MeanFusion needs at least one view")
        self.views = list(views)
        self.out_dim = dim

    def forward(
        self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        reference = _batch_reference(embeddings, self.views)
        dim = self.out_dim if self.out_dim is not None else reference.shape[1]
        total = reference.new_zeros(reference.shape[0], dim)
        count = reference.new_zeros(reference.shape[0], 1)
        for view in self.views:
            emb, mask = _masked_view(embeddings, present, view, reference, dim)
            total = total + l2_normalize(emb)  # missing rows are exact zeros and stay zero
            count = count + mask[:, None].to(total.dtype)
        return total / count.clamp_min(1.0)


FUSIONS = {"concat": ConcatFusion, "mean": MeanFusion}


def make_fusion(
    name: str, views: Sequence[str], dim: int, out_dim: int | None = None, **options
) -> nn.Module:
    """Build a fusion module by name.

    Parameters
    ----------
    name : {"concat", "mean"}
        Which fusion.
    views : list of str
        Views to fuse (concatenation order for ``"concat"``).
    dim : int
        Width of each view's embedding.
    out_dim : int, optional
        Width of the fused embedding; defaults to ``dim``. ``"mean"`` only supports ``dim``.
    **options
        Passed to the module (``hidden_dim``, ``dropout`` for ``"concat"``).

    Returns
    -------
    nn.Module

    Examples
    --------
    >>> make_fusion("concat", ["xrd", "composition"], dim=16, out_dim=8, hidden_dim=32).out_dim
    8
    >>> make_fusion("mean", ["xrd", "composition"], dim=16).out_dim
    16
    """
    out_dim = dim if out_dim is None else out_dim
    if name == "concat":
        return ConcatFusion(views, dim, out_dim, **options)
    if name == "mean":
        if out_dim != dim:
            raise ValueError(
                f"mean fusion keeps the embedding width ({dim}); got out_dim={out_dim}"
            )
        if options:
            raise ValueError(f"mean fusion takes no options, got {sorted(options)}")
        return MeanFusion(views, dim=dim)
    raise ValueError(f"unknown fusion {name!r}; valid fusions are {sorted(FUSIONS)}")
