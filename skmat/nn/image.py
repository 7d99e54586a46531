"""Torch encoder for image views: a small 2-D CNN (e.g. over :class:`~skmat.features.DiffractionImage`).

Same contract as the encoders of :mod:`skmat.nn.views`: a batch of one view in, ``(B, out_dim)``
out, attribute ``out_dim``, GroupNorm (never BatchNorm) so that a row's embedding does not
depend on the rest of its batch. Pure torch: nothing here imports scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from skmat.nn.views import _check_dropout, _check_positive_ints, _group_count, _param_dtype

__all__ = ["ImageCNN"]


class ImageCNN(nn.Module):
    """2-D CNN over multi-channel images: strided stages, positions kept, one linear head.

    Each stage is ``Conv2d(k, stride 2) -> GroupNorm -> GELU``, so the default four stages take
    a 64 x 64 image to 4 x 4 positions of 128 channels. The last stage is averaged to
    ``pooled_size x pooled_size`` windows (4 x 4: nothing to average at the defaults) and
    flattened into the output layer instead of being pooled globally: in a diffraction pattern
    *where* the spots are (their spacings and angles) is the lattice, as the positions of the
    peaks are in :class:`~skmat.nn.views.XRDConvNet`, whose global pooling made retrieval of
    unseen materials collapse. Stride-2 convolutions with kernel 3 skip no pixel; a spot of
    :class:`~skmat.features.DiffractionImage` is ~1.3 pixels wide at its defaults.

    Parameters
    ----------
    in_channels : int
        Channels of the input (the zone axes of a :class:`~skmat.features.DiffractionImage`).
    image_size : int or (int, int)
        Height and width of the input.
    out_dim : int, default=128
    channels : sequence of int, default=(16, 32, 64, 128)
        Channels of each stage; the image is downsampled by ``2 ** len(channels)``.
    kernel_size : int, default=3
        Odd kernel size.
    dropout : float, default=0.1
        Before the output layer.
    pooled_size : int, default=4
        The last stage is average-pooled to ``pooled_size x pooled_size`` windows and
        flattened; ``0`` pools globally (mean and max), which makes the embedding blind to
        where the spots are.

    Examples
    --------
    Batches come as ``(B, C, H, W)`` or flattened to ``(B, C * H * W)``, the layout
    :class:`~skmat.features.DiffractionImage` returns:

    >>> import torch
    >>> net = ImageCNN(in_channels=3, image_size=64, out_dim=16)
    >>> net(torch.rand(4, 3, 64, 64)).shape
    torch.Size([4, 16])
    >>> net(torch.rand(4, 3 * 64 * 64)).shape
    torch.Size([4, 16])
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int | Sequence[int],
        out_dim: int = 128,
        channels: Sequence[int] = (16, 32, 64, 128),
        kernel_size: int = 3,
        dropout: float = 0.1,
        pooled_size: int = 4,
    ):
        super().__init__()
        (in_channels,) = _check_positive_ints("in_channels", [in_channels])
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2:
            raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
        height, width = _check_positive_ints("image_size", size)
        (out_dim,) = _check_positive_ints("out_dim", [out_dim])
        channels = _check_positive_ints("channels", channels)
        if isinstance(kernel_size, bool) or int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        if isinstance(pooled_size, bool) or int(pooled_size) < 0:
            raise ValueError(f"pooled_size must be >= 0, got {pooled_size!r}")
        self.in_channels, self.height, self.width = in_channels, height, width
        self.out_dim = out_dim
        self.pooled_size = int(pooled_size)
        layers: list[nn.Module] = []
        previous = in_channels
        for stage_width in channels:
            layers += [
                nn.Conv2d(previous, stage_width, kernel_size, stride=2, padding=kernel_size // 2),
                nn.GroupNorm(_group_count(stage_width), stage_width),
                nn.GELU(),
            ]
            previous = stage_width
        self.features = nn.Sequential(*layers)
        pooled_width = previous * self.pooled_size**2 if self.pooled_size else 2 * previous
        self.head = nn.Sequential(nn.Dropout(_check_dropout(dropout)), nn.Linear(pooled_width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images of shape ``(B, C, H, W)`` or ``(B, C * H * W)``."""
        expected = (self.in_channels, self.height, self.width)
        if x.dim() == 2 and x.shape[1] == self.in_channels * self.height * self.width:
            x = x.reshape(len(x), *expected)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected shape (B, {', '.join(map(str, expected))}) or (B, {self.in_channels * self.height * self.width}), "
                f"got {tuple(x.shape)}"
            )
        h = self.features(x.to(_param_dtype(self)))
        if self.pooled_size:
            pooled = nn.functional.adaptive_avg_pool2d(h, self.pooled_size).flatten(1)
        else:
            pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)
