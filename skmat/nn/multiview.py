"""Modules that combine view encoders: contrastive alignment and supervised heads.

A batch is ``{view: (x, present)}``: ``x`` holds only the rows that have the view (a tensor or a
:class:`~skmat.nn.graph.GraphBatch`), ``present`` is a boolean mask over the batch rows.
Encoders therefore never see placeholder data for a missing view.
"""

from __future__ import annotations

import torch
from torch import nn

from skmat.nn.losses import ContrastiveLoss


def scatter_rows(encoded: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Place the embeddings of the present rows into a zero (batch, dim) tensor."""
    out = encoded.new_zeros((present.shape[0], encoded.shape[1]))
    return out.index_copy(0, present.nonzero(as_tuple=True)[0], encoded)


def projection_head(in_dim: int, out_dim: int) -> nn.Module:
    """SimCLR/CLIP-style projection into the shared space: Linear, GELU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))


class MultiViewAligner(nn.Module):
    """Per-view encoders + projection heads into one latent space, trained by a contrastive loss.

    Parameters
    ----------
    encoders : dict of str -> nn.Module
        One encoder per view; each has an ``out_dim`` attribute.
    latent_dim : int
        Dimension of the shared space.
    loss : ContrastiveLoss
        The alignment objective (holds the temperature).
    view_dropout : float
        During training, the probability of hiding each view of each row (a row keeps at
        least one view), so the shared space stays useful when views are missing.
    """

    def __init__(self, encoders: dict, latent_dim: int, loss: ContrastiveLoss, view_dropout: float = 0.0):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.projections = nn.ModuleDict(
            {name: projection_head(enc.out_dim, latent_dim) for name, enc in encoders.items()}
        )
        self.contrastive = loss
        self.view_dropout = view_dropout
        self.latent_dim = latent_dim

    def embed_view(self, name: str, x, present: torch.Tensor) -> torch.Tensor:
        """Latent vectors (batch, latent_dim) of one view; zero rows where it is absent."""
        if not bool(present.any()):
            return torch.zeros(present.shape[0], self.latent_dim, device=present.device)
        z = self.projections[name](self.encoders[name](x))
        return scatter_rows(z, present)

    def forward(self, batch: dict):
        embeddings, presence = {}, {}
        for name, (x, present) in batch.items():
            if name not in self.encoders:
                continue
            embeddings[name] = self.embed_view(name, x, present)
            presence[name] = present
        if self.training and self.view_dropout > 0 and len(presence) > 1:
            presence = self._drop_views(presence)
        return embeddings, presence

    def _drop_views(self, presence: dict) -> dict:
        names = list(presence)
        mask = torch.stack([presence[n] for n in names], dim=1)
        keep = torch.rand(mask.shape, device=mask.device) >= self.view_dropout
        dropped = mask & keep
        # a row that lost every view keeps the ones it had
        lost_all = ~dropped.any(dim=1)
        dropped[lost_all] = mask[lost_all]
        return {n: dropped[:, i] for i, n in enumerate(names)}

    def loss(self, output, y=None) -> torch.Tensor:
        embeddings, presence = output
        return self.contrastive(embeddings, presence)


class SupervisedViewModel(nn.Module):
    """One view encoder with an MLP head for regression (MSE) or classification (cross-entropy).

    Rows without the view contribute nothing to the loss.
    """

    def __init__(self, view: str, encoder: nn.Module, n_outputs: int, task: str, dropout: float = 0.1):
        super().__init__()
        if task not in {"regression", "classification"}:
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
        self.view = view
        self.encoder = encoder
        self.task = task
        hidden = encoder.out_dim
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_outputs)
        )

    def embed(self, batch: dict):
        x, present = batch[self.view]
        return self.encoder(x), present

    def forward(self, batch: dict):
        h, present = self.embed(batch)
        return self.head(h), present

    def loss(self, output, y: torch.Tensor) -> torch.Tensor:
        prediction, present = output
        target = y[present]
        if target.shape[0] == 0:
            return prediction.sum() * 0.0
        if self.task == "classification":
            return nn.functional.cross_entropy(prediction, target.long())
        target = target.reshape(prediction.shape).to(prediction.dtype)
        return nn.functional.mse_loss(prediction, target)
