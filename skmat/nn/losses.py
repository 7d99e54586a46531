"""Contrastive and redundancy-reduction losses that align several views of a material.

Every loss has one signature::

    loss(embeddings, present, temperature, **options) -> scalar tensor

``embeddings`` maps a view name to a ``(B, D)`` tensor (row ``i`` of every view is the same
material), ``present`` maps the same names to ``(B,)`` boolean masks saying which rows actually
have that view. Rows where a view is missing are *ignored* (they may hold zeros or even NaN):
each pair or triple of views is scored only on the rows where all its views are present.

The losses are CLIP (symmetric InfoNCE) and its generalisations to more than two views from
MLCM (Moro et al., "Multimodal Learning for Crystalline Materials", arXiv:2312.00111):
AllPairsCLIP, AnchoredCLIP, TensorCLIP and 3-D Barlow Twins. :class:`ContrastiveLoss` wraps
any of them as an ``nn.Module`` with a (learnable, clamped) temperature.

Degenerate batches never produce NaN: a pair or triple of views with fewer than two co-present
rows contributes nothing, averages are taken over the pairs/triples that did contribute, and a
batch where nothing contributes returns a zero that is still connected to the inputs, so
``backward()`` runs and gives zero gradients.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LOSSES",
    "ContrastiveLoss",
    "all_pairs_loss",
    "anchored_loss",
    "barlow_loss",
    "clip_loss",
    "l2_normalize",
    "tensor_loss",
]

# A contrastive pair/triple needs at least one negative, Barlow Twins needs a batch variance.
_MIN_ROWS = 2


def l2_normalize(x: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    """Scale vectors to unit Euclidean length; zero vectors stay zero instead of becoming NaN.

    Parameters
    ----------
    x : Tensor
        Input of any shape.
    dim : int, default=-1
        Axis holding the vector components.
    eps : float, default=1e-8
        Norms below ``eps`` are replaced by ``eps`` before dividing.

    Returns
    -------
    Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import torch
    >>> l2_normalize(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    """
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)


# --------------------------------------------------------------------------- input handling


def _check_inputs(
    embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor] | None
) -> dict[str, Tensor]:
    """Validate shapes and return one boolean ``(B,)`` mask per view, on the embeddings' device."""
    if not embeddings:
        raise ValueError("embeddings is empty: pass at least one view")
    batch_size = None
    for name, emb in embeddings.items():
        if not isinstance(emb, Tensor) or emb.ndim != 2:
            raise ValueError(f"embeddings[{name!r}] must be a 2-D tensor (batch, dim)")
        if batch_size is None:
            batch_size = emb.shape[0]
        elif emb.shape[0] != batch_size:
            raise ValueError(
                f"embeddings[{name!r}] has {emb.shape[0]} rows, other views have {batch_size}"
            )
    masks = {}
    for name, emb in embeddings.items():
        if present is None or name not in present or present[name] is None:
            # No mask given for a view means every row has it.
            masks[name] = torch.ones(batch_size, dtype=torch.bool, device=emb.device)
            continue
        mask = torch.as_tensor(present[name], device=emb.device).reshape(-1)
        if mask.shape[0] != batch_size:
            raise ValueError(
                f"present[{name!r}] has {mask.shape[0]} entries, embeddings have {batch_size} rows"
            )
        masks[name] = mask.bool()
    return masks


def _connected_zero(embeddings: Mapping[str, Tensor], temperature: Tensor | float) -> Tensor:
    """A scalar 0 that depends on every input, so ``backward()`` works and yields zero gradients.

    Summing an empty slice (rather than multiplying by 0) keeps the result 0 even if the
    embeddings hold NaN in rows of missing views.
    """
    zero = sum(emb[:0].sum() for emb in embeddings.values())
    if isinstance(temperature, Tensor):
        zero = zero + temperature.reshape(-1)[:0].sum()
    return zero


def _mean_or_zero(
    terms: list[Tensor], embeddings: Mapping[str, Tensor], temperature: Tensor | float
) -> Tensor:
    # The connected zero is added even when terms exist, so every input (a view missing from
    # the whole batch included) gets a zero gradient rather than ``None``.
    zero = _connected_zero(embeddings, temperature)
    if not terms:
        return zero
    return torch.stack(terms).mean() + zero


def _select_views(embeddings: Mapping[str, Tensor], views: Sequence[str] | None) -> list[str]:
    names = list(embeddings) if views is None else list(views)
    unknown = [v for v in names if v not in embeddings]
    if unknown:
        raise ValueError(f"views {unknown} are not in embeddings (have {list(embeddings)})")
    if len(set(names)) != len(names):
        raise ValueError(f"views must be distinct, got {names}")
    return names


def _co_present(masks: Mapping[str, Tensor], views: Sequence[str]) -> Tensor:
    rows = masks[views[0]]
    for view in views[1:]:
        rows = rows & masks[view]
    return rows


# --------------------------------------------------------------------------- InfoNCE family


def _pair_infonce(a: Tensor, b: Tensor, temperature: Tensor | float) -> Tensor:
    """Symmetric InfoNCE on rows that are already aligned and all present."""
    logits = l2_normalize(a) @ l2_normalize(b).T / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def _pair_term(
    embeddings: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    pair: Sequence[str],
    temperature: Tensor | float,
) -> Tensor | None:
    rows = _co_present(masks, pair)
    if int(rows.sum()) < _MIN_ROWS:
        return None
    a, b = (embeddings[view][rows] for view in pair)
    return _pair_infonce(a, b, temperature)


def clip_loss(
    embeddings: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None,
    temperature: Tensor | float,
    *,
    views: Sequence[str] | None = None,
) -> Tensor:
    r"""Symmetric InfoNCE (CLIP) between two views.

    With :math:`u_i, v_j` the L2-normalised embeddings of the ``n`` rows where both views are
    present and :math:`s_{ij} = u_i \cdot v_j / \tau`,

    .. math::
        L = \frac{1}{2n} \sum_i \Big[ -\log \frac{e^{s_{ii}}}{\sum_j e^{s_{ij}}}
            - \log \frac{e^{s_{ii}}}{\sum_j e^{s_{ji}}} \Big].

    Parameters
    ----------
    embeddings : dict of str to Tensor of shape (B, D)
        One embedding batch per view.
    present : dict of str to bool Tensor of shape (B,) or None
        Which rows have each view; a view without a mask (or ``present=None``) is fully present.
    temperature : Tensor or float
        Softmax temperature :math:`\tau` (a tensor receives gradients).
    views : pair of str, optional
        The two views to align. Defaults to the two views of ``embeddings`` when there are
        exactly two.

    Returns
    -------
    Tensor
        Scalar loss; a connected zero when fewer than two rows have both views.

    Examples
    --------
    >>> import torch
    >>> emb = {"structure": torch.eye(3), "xrd": torch.eye(3)}
    >>> round(clip_loss(emb, None, 1.0).item(), 4)
    0.5514
    """
    masks = _check_inputs(embeddings, present)
    if views is None:
        if len(embeddings) != 2:
            raise ValueError(
                f"clip_loss needs views=(a, b) when embeddings has {len(embeddings)} views "
                f"({list(embeddings)}) instead of exactly two"
            )
        views = list(embeddings)
    pair = _select_views(embeddings, views)
    if len(pair) != 2:
        raise ValueError(f"clip_loss aligns exactly two views, got {pair}")
    term = _pair_term(embeddings, masks, pair, temperature)
    return _mean_or_zero([] if term is None else [term], embeddings, temperature)


def all_pairs_loss(
    embeddings: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None,
    temperature: Tensor | float,
    *,
    views: Sequence[str] | None = None,
) -> Tensor:
    """AllPairsCLIP: the mean CLIP loss over every unordered pair of views.

    Each pair is scored on its own co-present rows, so a material missing one view still
    aligns its other views. The mean is over the pairs with at least two co-present rows.

    Parameters
    ----------
    embeddings, present, temperature
        See :func:`clip_loss`.
    views : sequence of str, optional
        Restrict to these views (default: all views in ``embeddings``).

    Returns
    -------
    Tensor
        Scalar loss.

    Examples
    --------
    >>> import torch
    >>> emb = {v: torch.eye(3) for v in ("structure", "xrd", "composition")}
    >>> round(all_pairs_loss(emb, None, 1.0).item(), 4)
    0.5514
    """
    masks = _check_inputs(embeddings, present)
    names = _select_views(embeddings, views)
    terms = [_pair_term(embeddings, masks, pair, temperature) for pair in combinations(names, 2)]
    return _mean_or_zero([t for t in terms if t is not None], embeddings, temperature)


def anchored_loss(
    embeddings: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None,
    temperature: Tensor | float,
    *,
    anchor: str = "structure",
) -> Tensor:
    """AnchoredCLIP: the mean CLIP loss between one anchor view and each other view.

    Parameters
    ----------
    embeddings, present, temperature
        See :func:`clip_loss`.
    anchor : str, default="structure"
        The view every other view is aligned to.

    Returns
    -------
    Tensor
        Scalar loss, averaged over the (anchor, other) pairs with at least two co-present rows.

    Examples
    --------
    >>> import torch
    >>> emb = {v: torch.eye(3) for v in ("structure", "dos", "charge_density")}
    >>> round(anchored_loss(emb, None, 1.0, anchor="structure").item(), 4)
    0.5514
    """
    masks = _check_inputs(embeddings, present)
    if anchor not in embeddings:
        raise ValueError(f"anchor view {anchor!r} is not in embeddings (have {list(embeddings)})")
    terms = [
        _pair_term(embeddings, masks, (anchor, other), temperature)
        for other in embeddings
        if other != anchor
    ]
    return _mean_or_zero([t for t in terms if t is not None], embeddings, temperature)


def _triple_tensor_infonce(a: Tensor, b: Tensor, c: Tensor, temperature: Tensor | float) -> Tensor:
    a, b, c = l2_normalize(a), l2_normalize(b), l2_normalize(c)
    logits = torch.einsum("id,jd,kd->ijk", a, b, c) / temperature
    rows = torch.arange(logits.shape[0], device=logits.device)
    positives = logits[rows, rows, rows]
    # Cross-entropy with view q as the query is logsumexp over the other two axes minus the
    # positive; reducing over axes in place avoids three permuted (n, n*n) copies.
    normalizers = [logits.logsumexp(dim=axes) for axes in ((1, 2), (0, 2), (0, 1))]
    return (torch.stack(normalizers).mean(dim=0) - positives).mean()


def tensor_loss(
    embeddings: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None,
    temperature: Tensor | float,
    *,
    views: Sequence[str] | None = None,
) -> Tensor:
    r"""TensorCLIP: InfoNCE on a three-way similarity tensor (MLCM).

    For three views with L2-normalised embeddings :math:`a, b, c` of the ``n`` rows where all
    three are present, the similarity tensor is

    .. math:: S_{ijk} = \frac{1}{\tau} \sum_d a_{id} b_{jd} c_{kd}.

    Each view in turn is the query: material ``i`` of view ``a`` must pick the pair
    :math:`(i, i)` out of all :math:`n^2` pairs :math:`(j, k)` of the other two views,

    .. math:: L_a = -\frac{1}{n} \sum_i \log
              \frac{e^{S_{iii}}}{\sum_{j,k} e^{S_{ijk}}},

    and likewise :math:`L_b` (softmax over :math:`(i, k)`) and :math:`L_c` (over
    :math:`(i, j)`). The loss is :math:`(L_a + L_b + L_c) / 3`. All :math:`n^2 - 1` other pairs
    are negatives, including the partly matching ones such as :math:`(i, k \neq i)` (MultiMat's
    default, ``mask_neg=False``). MultiMat sums the three axes; the mean used here keeps the
    scale comparable with :func:`clip_loss`.

    Unlike a cosine similarity, :math:`S_{iii}` is a cubic form: three identical unit vectors
    do not maximise it (for a unit vector :math:`a`, :math:`\sum_d a_d^3` can be negative), so
    the encoders must learn embeddings on which the triple product is large for matching
    materials; non-negative embeddings make identical views score highest.

    With two views this is :func:`clip_loss`. With more than three views it is the mean over
    every triple of views. Memory grows as :math:`n^3`: a batch of 512 needs ~0.5 GB in float32.

    Parameters
    ----------
    embeddings, present, temperature
        See :func:`clip_loss`.
    views : sequence of str, optional
        Restrict to these views (default: all views in ``embeddings``).

    Returns
    -------
    Tensor
        Scalar loss, averaged over the triples with at least two rows where all three views
        are present.

    Examples
    --------
    >>> import torch
    >>> emb = {v: torch.eye(3) for v in ("structure", "dos", "charge_density")}
    >>> round(tensor_loss(emb, None, 1.0).item(), 4)
    1.372
    """
    masks = _check_inputs(embeddings, present)
    names = _select_views(embeddings, views)
    if len(names) < 2:
        raise ValueError(f"tensor_loss needs at least two views, got {names}")
    if len(names) == 2:
        return clip_loss(embeddings, masks, temperature, views=names)
    terms = []
    for triple in combinations(names, 3):
        rows = _co_present(masks, triple)
        if int(rows.sum()) < _MIN_ROWS:
            continue
        a, b, c = (embeddings[view][rows] for view in triple)
        terms.append(_triple_tensor_infonce(a, b, c, temperature))
    return _mean_or_zero(terms, embeddings, temperature)


# --------------------------------------------------------------------------- Barlow Twins


def _standardize(z: Tensor, eps: float) -> Tensor:
    # Same statistics as BatchNorm1d(affine=False) in training mode: biased variance.
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def _barlow_pair(z1: Tensor, z2: Tensor, lambda_offdiag: float) -> Tensor:
    corr = z1.T @ z2 / z1.shape[0]
    diag = torch.diagonal(corr)
    on_diag = (diag - 1.0).pow(2).sum()
    off_diag = corr.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambda_offdiag * off_diag


def _barlow_triple(z1: Tensor, z2: Tensor, z3: Tensor, lambda_offdiag: float) -> Tensor:
    corr = torch.einsum("bd,be,bf->def", z1, z2, z3) / z1.shape[0]
    idx = torch.arange(corr.shape[0], device=corr.device)
    diag = corr[idx, idx, idx]
    on_diag = (diag - 1.0).pow(2).sum()
    off_diag = corr.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambda_offdiag * off_diag


def barlow_loss(
    embeddings: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None,
    temperature: Tensor | float | None = None,
    *,
    lambda_offdiag: float = 5e-3,
    views: Sequence[str] | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Barlow Twins redundancy reduction for two views, and its 3-D version (MLCM).

    Each view's embeddings are standardised over the co-present rows (zero mean, unit biased
    variance per dimension, as ``BatchNorm1d(affine=False)``), giving :math:`z^{(v)}`.

    Two views: :math:`C_{de} = \frac{1}{n} \sum_b z^{(1)}_{bd} z^{(2)}_{be}` and

    .. math:: L = \sum_d (1 - C_{dd})^2 + \lambda \sum_{d \neq e} C_{de}^2.

    Three views: the cross-correlation *tensor*
    :math:`C_{def} = \frac{1}{n} \sum_b z^{(1)}_{bd} z^{(2)}_{be} z^{(3)}_{bf}`, with
    :math:`C_{ddd}` pushed to 1 and all other entries to 0 with weight :math:`\lambda`. Note the
    3-D diagonal is a third-order moment, not a correlation: it is not bounded by 1.
    More than three views: the mean over every triple.

    Parameters
    ----------
    embeddings, present
        See :func:`clip_loss`.
    temperature : ignored
        Accepted so that every loss shares one signature.
    lambda_offdiag : float, default=5e-3
        Weight :math:`\lambda` of the off-diagonal terms.
    views : sequence of str, optional
        Restrict to these views (default: all views in ``embeddings``).
    eps : float, default=1e-5
        Added to the variance before standardising (a constant dimension stays finite).

    Returns
    -------
    Tensor
        Scalar loss, averaged over the pairs/triples with at least two co-present rows.

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> round(barlow_loss({"a": z, "b": z}, None, None, eps=0.0).item(), 4)
    0.0
    """
    masks = _check_inputs(embeddings, present)
    names = _select_views(embeddings, views)
    if len(names) < 2:
        raise ValueError(f"barlow_loss needs at least two views, got {names}")
    groups = [tuple(names)] if len(names) == 2 else list(combinations(names, 3))
    terms = []
    for group in groups:
        rows = _co_present(masks, group)
        if int(rows.sum()) < _MIN_ROWS:
            continue
        standardized = [_standardize(embeddings[view][rows], eps) for view in group]
        if len(group) == 2:
            terms.append(_barlow_pair(*standardized, lambda_offdiag))
        else:
            terms.append(_barlow_triple(*standardized, lambda_offdiag))
    return _mean_or_zero(terms, embeddings, temperature)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "clip": clip_loss,
    "all_pairs": all_pairs_loss,
    "anchored": anchored_loss,
    "tensor": tensor_loss,
    "barlow": barlow_loss,
}


# --------------------------------------------------------------------------- module


class ContrastiveLoss(nn.Module):
    """One of :data:`LOSSES` with its temperature, as an ``nn.Module``.

    The temperature is stored as its logarithm, so gradient steps stay positive and scale-free
    (as CLIP's ``logit_scale``), and is clamped into ``[min_temperature, max_temperature]`` at
    every forward pass.

    Parameters
    ----------
    loss : {"clip", "all_pairs", "anchored", "tensor", "barlow"}, default="clip"
        Which loss; see the functions of the same name in this module.
    temperature : float, default=0.07
        Initial softmax temperature (ignored by ``"barlow"``).
    learn_temperature : bool, default=True
        Whether the temperature is an ``nn.Parameter`` (learned) or a fixed buffer.
    min_temperature, max_temperature : float, default=0.01, 1.0
        Clamp range of the temperature.
    **options
        Keyword options of the loss function (``views``, ``anchor``, ``lambda_offdiag``, ...).

    Attributes
    ----------
    log_temperature : Tensor
        ``log(temperature)``, a parameter when ``learn_temperature`` else a buffer.

    Examples
    --------
    >>> import torch
    >>> criterion = ContrastiveLoss("anchored", temperature=0.1, anchor="structure")
    >>> emb = {v: torch.randn(8, 4, requires_grad=True) for v in ("structure", "xrd")}
    >>> present = {"structure": torch.ones(8, dtype=torch.bool), "xrd": torch.arange(8) < 6}
    >>> loss = criterion(emb, present)
    >>> loss.backward()
    >>> round(criterion.temperature, 3)
    0.1
    """

    def __init__(
        self,
        loss: str = "clip",
        temperature: float = 0.07,
        learn_temperature: bool = True,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        **options,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid losses are {sorted(LOSSES)}")
        if not 0 < min_temperature <= max_temperature:
            raise ValueError(
                "need 0 < min_temperature <= max_temperature, got "
                f"{min_temperature} and {max_temperature}"
            )
        if not min_temperature <= temperature <= max_temperature:
            raise ValueError(
                f"temperature={temperature} is outside [{min_temperature}, {max_temperature}]"
            )
        accepted = {
            name
            for name, p in inspect.signature(LOSSES[loss]).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(
                f"loss {loss!r} does not take options {unknown}; it takes {sorted(accepted)}"
            )
        self.loss = loss
        self.learn_temperature = learn_temperature
        self.min_temperature = float(min_temperature)
        self.max_temperature = float(max_temperature)
        self.options = dict(options)
        log_t = torch.tensor(math.log(temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def current_temperature(self) -> Tensor:
        """The clamped temperature as a scalar tensor (differentiable when learned)."""
        return self.log_temperature.exp().clamp(self.min_temperature, self.max_temperature)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Put a learned temperature back inside its clamp, in place (after an optimizer step).

        Clamping only in the forward pass leaves the parameter free to drift outside, where
        its gradient is zero and it can never return (measured: lr=2 sent it to 22); CLIP
        clamps its ``logit_scale`` the same way after every step.
        """
        low, high = math.log(self.min_temperature), math.log(self.max_temperature)
        self.log_temperature.clamp_(low, high)

    @property
    def temperature(self) -> float:
        """The clamped temperature as a Python float."""
        return float(self.current_temperature().detach())

    def forward(
        self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Loss of one batch; see the loss function for the meaning of the arguments.

        In a ``torch.distributed`` run (``accelerate launch``), the embeddings and masks of
        every process are gathered first (with gradients), so each row is contrasted with the
        negatives of the global batch, as when training on one device.
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            from skmat.nn.distributed import gather_views

            embeddings, present = gather_views(embeddings, present)
        return LOSSES[self.loss](
            embeddings, present, self.current_temperature(), **self.options
        )

    def extra_repr(self) -> str:
        learned = "learned" if self.learn_temperature else "fixed"
        return (
            f"loss={self.loss!r}, temperature={self.temperature:.4g} ({learned}, clamp "
            f"[{self.min_temperature:g}, {self.max_temperature:g}]), options={self.options}"
        )
