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

    def count_correct(self, output, y: torch.Tensor) -> tuple[int, int]:
        """(rows whose class is predicted right, rows with the view), for a classifier."""
        prediction, present = output
        target = y[present]
        return int((prediction.argmax(dim=1) == target.reshape(-1).long()).sum()), int(target.shape[0])

    def loss(self, output, y: torch.Tensor) -> torch.Tensor:
        prediction, present = output
        target = y[present]
        if target.shape[0] == 0:
            return prediction.sum() * 0.0
        if self.task == "classification":
            return nn.functional.cross_entropy(prediction, target.long())
        target = target.reshape(prediction.shape).to(prediction.dtype)
        return nn.functional.mse_loss(prediction, target)


class FusionPredictor(nn.Module):
    """A :class:`MultiViewAligner` whose view embeddings are fused by an MLP head for a task.

    The head reads the concatenation of every view's latent vector (zeros where the row lacks
    the view) and one presence flag per view, so it can tell an absent view from an
    embedding near zero. The training loss is the task loss (MSE on standardised targets, or
    cross-entropy) plus ``contrastive_weight`` times the aligner's contrastive loss, UniMat's
    recipe for keeping the views aligned while the encoders are tuned to the task.

    Parameters
    ----------
    aligner : MultiViewAligner
        View encoders and projections (possibly pretrained).
    n_outputs : int
        Regression targets or classes.
    task : {"regression", "classification"}
    hidden_dim : int, default=256
        Width of the head's two hidden layers.
    dropout : float, default=0.1
    contrastive_weight : float, default=0.0
        Weight of the alignment loss next to the task loss.
    n_auxiliary : int, default=0
        Extra regression outputs (standardised auxiliary targets) after the task's, trained
        with MSE: multitask learning, e.g. lattice lengths next to the crystal system.
        ``y`` then holds the task's columns (the class code, or the regression targets) first
        and the auxiliary targets after them.
    auxiliary_weight : float, default=1.0
        Weight of the auxiliary MSE in the loss.
    """

    def __init__(
        self,
        aligner: MultiViewAligner,
        n_outputs: int,
        task: str,
        hidden_dim: int = 256,
        dropout: float = 0.1,
        contrastive_weight: float = 0.0,
        n_auxiliary: int = 0,
        auxiliary_weight: float = 1.0,
    ):
        super().__init__()
        if task not in {"regression", "classification"}:
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
        self.n_outputs = int(n_outputs)
        self.n_auxiliary = int(n_auxiliary)
        self.auxiliary_weight = float(auxiliary_weight)
        self.aligner = aligner
        self.views = list(aligner.encoders)
        self.task = task
        self.contrastive_weight = float(contrastive_weight)
        fused_dim = len(self.views) * (aligner.latent_dim + 1)
        self.head = nn.Sequential(
            nn.LayerNorm(fused_dim),
            nn.Linear(fused_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, n_outputs + self.n_auxiliary),
        )

    def fuse(self, embeddings: dict, presence: dict) -> torch.Tensor:
        """(batch, n_views * (latent_dim + 1)): each view's latent vector, then its flag."""
        n_rows = next(iter(presence.values())).shape[0]
        device = next(iter(presence.values())).device
        parts = []
        for name in self.views:
            if name in embeddings:
                present = presence[name].to(embeddings[name].dtype).unsqueeze(1)
                parts += [embeddings[name] * present, present]
            else:  # a view with no column in this batch
                parts += [torch.zeros(n_rows, self.aligner.latent_dim + 1, device=device)]
        return torch.cat(parts, dim=1)

    def embed(self, batch: dict):
        """The fused vector the head reads, and which rows have at least one view."""
        embeddings, presence = self.aligner(batch)
        return self.fuse(embeddings, presence), torch.stack(list(presence.values()), dim=1).any(dim=1)

    def forward(self, batch: dict):
        embeddings, presence = self.aligner(batch)
        fused = self.fuse(embeddings, presence)
        any_view = torch.stack(list(presence.values()), dim=1).any(dim=1)
        return self.head(fused), any_view, embeddings, presence

    def count_correct(self, output, y: torch.Tensor) -> tuple[int, int]:
        """(rows whose class is predicted right, rows with some view), for a classifier."""
        prediction, any_view = output[0], output[1]
        target = y[any_view]
        if self.n_auxiliary:
            target = target[:, 0]
        right = prediction[any_view][:, : self.n_outputs].argmax(dim=1) == target.reshape(-1).long()
        return int(right.sum()), int(target.shape[0])

    def loss_terms(self, output, y: torch.Tensor) -> dict:
        """Each term of the loss, unweighted: ``task``, then ``auxiliary`` and ``contrastive``
        when they are used."""
        prediction, any_view, embeddings, presence = output
        prediction, target = prediction[any_view], y[any_view]
        auxiliary_prediction = prediction[:, self.n_outputs :]
        prediction = prediction[:, : self.n_outputs]
        if self.n_auxiliary:
            # the task's columns first (one class code, or the regression targets), then the rest
            width = 1 if self.task == "classification" else self.n_outputs
            target, auxiliary_target = target[:, :width], target[:, width:]
            if self.task == "classification":
                target = target[:, 0]
        terms = {}
        if target.shape[0] == 0:
            terms["task"] = prediction.sum() * 0.0
        elif self.task == "classification":
            terms["task"] = nn.functional.cross_entropy(prediction, target.long())
        else:
            terms["task"] = nn.functional.mse_loss(prediction, target.reshape(prediction.shape).to(prediction.dtype))
        if self.n_auxiliary:
            terms["auxiliary"] = (
                nn.functional.mse_loss(auxiliary_prediction, auxiliary_target.to(prediction.dtype))
                if target.shape[0]
                else auxiliary_prediction.sum() * 0.0
            )
        if self.contrastive_weight and len(presence) > 1:
            terms["contrastive"] = self.aligner.contrastive(embeddings, presence)
        return terms

    def loss(self, output, y: torch.Tensor) -> torch.Tensor:
        terms = self.loss_terms(output, y)
        weights = {"task": 1.0, "auxiliary": self.auxiliary_weight, "contrastive": self.contrastive_weight}
        return sum(weights[name] * value for name, value in terms.items())
