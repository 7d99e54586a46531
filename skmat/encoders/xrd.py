"""The powder-diffraction view: :class:`XRDEncoder`, a 1-D CNN over XRD patterns given in an
``xrd`` column or simulated from structures, with the per-batch augmentation it trains with."""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np

from skmat._inputs import present_structures, row_labels
from skmat.encoders._base import _NeuralViewEncoder, _with_training_doc
from skmat.exceptions import InvalidInputError


@_with_training_doc(max_epochs=30, validation_fraction=0.0)
class XRDEncoder(_NeuralViewEncoder):
    """1-D convolutional network over a powder XRD pattern (as UniMat).

    Patterns come from the ``xrd`` column (1-D arrays on this encoder's 2θ grid) or are
    simulated from ``structure`` with :class:`~skmat.features.XRDPattern` when the column is
    absent or a cell is missing. Each pattern is scaled to a maximum of 1.

    Parameters
    ----------
    wavelength : str or float, default="CuKa"
        Radiation used to simulate patterns.
    two_theta_range : tuple of float, default=(5.0, 90.0)
        2θ window in degrees.
    n_bins : int, default=1701
        Grid points over the window.
    peak_width : float, default=0.15
        Full width at half maximum of simulated peaks, degrees 2θ.
    channels : tuple of int, default=(16, 32, 64, 64, 128, 128)
        Convolution channels per stage (each halves the 2θ resolution; see
        :class:`~skmat.nn.views.XRDConvNet` for the measured choice).
    out_dim : int, default=128
        Size of the embedding.
    view : str or None, default=None
        Column of patterns; ``None`` means ``"xrd"``.
    memory : None, str or joblib.Memory, default=None
        Cache for simulated patterns.
    augment : bool or XRDAugmenter, default=False
        Train on a fresh measurement-like pattern of each structure in every mini-batch
        (:class:`~skmat.features.augment.XRDAugmenter`: strain, shifts, preferred orientation,
        Kα2, broadening, background, noise, ...), seeded by ``random_state``. ``True`` uses
        the augmenter's defaults; pass an ``XRDAugmenter`` to choose them (its grid is set to
        this encoder's). Rows without a structure keep their given pattern. Never applied at
        ``transform``/``predict``, nor to the validation rows.
    augment_fraction : float, default=1.0
        Share of the training rows (drawn afresh in every mini-batch) whose pattern the
        augmenter redraws; the others train on their clean pattern. Lower values favour
        simulated patterns over measured ones: the pretrained classifier's recipe at 0.5 gained
        7 points on clean held-out MP-20 patterns (75.0 -> 82.3 %) and lost 5 on measured RRUFF
        patterns (64.0 -> 58.4 %; ``docs/results.md``). The shipped classifier trains at 0.5
        for 30 epochs (84.9 % on clean MP-20 patterns, 70.8 % from ``identify`` on RRUFF).
    background : {"rolling_ball", "polynomial"} or None, default=None
        Baseline removed from every pattern (given, simulated or augmented), identically at
        fit and transform (:func:`~skmat.features.measured.remove_background`).
    intensity_scale : {"linear", "sqrt"}, default="linear"
        Intensities the network reads, after the scaling to a maximum of 1 and the background
        removal (:func:`~skmat.features.measured.scale_intensity`). ``"sqrt"`` transfers
        better from simulated to measured patterns (measured on RRUFF: see
        ``benchmarks/measured_xrd.py`` and ``docs/results.md``).
%(training)s

    Notes
    -----
    Unlike the other encoders, the XRD encoder trains every epoch on all rows by default
    (``validation_fraction=0``). Measured on MP-20 crystal systems (7,238 training patterns,
    20 epochs, ``benchmarks/early_stopping.py``, seeds 0 and 1): 74.0 % (75.9, 72.1) test
    accuracy training every epoch, 71.9 % (73.3, 70.5) with 10 % held out and early stopping
    on the validation accuracy, and 72.0 % (one seed) when it stopped on the validation
    cross-entropy, which rises from about epoch 5 while the accuracy still improves. The
    warm-up + cosine schedule is laid out over ``max_epochs``: stopping early leaves the
    learning rate high.

    Examples
    --------
    >>> from skmat.datasets import load_prototypes
    >>> X, y = load_prototypes(return_X_y=True, target="crystal_system")
    >>> enc = XRDEncoder(n_bins=512, max_epochs=1, random_state=0).fit(X[:32], y[:32])
    >>> enc.predict(X[:2]).shape
    (2,)
    """

    _default_view = "xrd"

    def __init__(
        self,
        wavelength: str | float = "CuKa",
        two_theta_range: tuple[float, float] = (5.0, 90.0),
        n_bins: int = 1701,
        peak_width: float = 0.15,
        channels: tuple[int, ...] = (16, 32, 64, 64, 128, 128),
        out_dim: int = 128,
        view: str | None = None,
        memory=None,
        augment=False,
        augment_fraction: float = 1.0,
        background: str | None = None,
        intensity_scale: str = "linear",
        max_epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.0,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.wavelength = wavelength
        self.two_theta_range = two_theta_range
        self.n_bins = n_bins
        self.peak_width = peak_width
        self.channels = channels
        self.out_dim = out_dim
        self.view = view
        self.memory = memory
        self.augment = augment
        self.augment_fraction = augment_fraction
        self.background = background
        self.intensity_scale = intensity_scale
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    def _featurizer(self):
        from skmat.features.xrd import XRDPattern

        return XRDPattern(
            wavelength=self.wavelength,
            two_theta_range=self.two_theta_range,
            n_bins=self.n_bins,
            peak_width=self.peak_width,
            normalize="max",
            memory=self.memory,
            verbose=self.verbose,
        )

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView
        from skmat.features._powder import scale_intensity

        present, arrays = self._array_cells(frame, view, lambda a: (self.n_bins,))
        patterns = np.zeros((len(frame), self.n_bins), dtype=np.float32)
        if arrays:
            given = np.stack(arrays)
            if np.any(given < 0):
                rows = np.flatnonzero(present)
                bad = rows[int(np.flatnonzero((given < 0).any(axis=1))[0])]
                raise InvalidInputError("XRD intensities must be non-negative", row=row_labels(frame)[bad], view=view)
            peak = given.max(axis=1, keepdims=True)
            patterns[present] = given / np.where(peak > 0, peak, 1.0)
        has_structure, structures = present_structures(frame)
        derive = has_structure & ~present
        if derive.any():
            keep = derive[has_structure]
            chosen = [s for s, k in zip(structures, keep, strict=True) if k]
            patterns[derive] = self._featurizer().fit_transform(chosen)
            present = present | derive
        if self.background is not None:
            from skmat.features.measured import remove_background

            lo, hi = self.two_theta_range
            patterns = remove_background(patterns, self.background, step=(hi - lo) / (self.n_bins - 1))
        patterns = scale_intensity(patterns, self.intensity_scale)
        if fit:
            self._fit_augmenter(has_structure, structures)
        return PreparedView(patterns[present], present)

    def _fit_augmenter(self, has_structure: np.ndarray, structures: list) -> None:
        """Sticks of every row with a structure, for per-batch augmentation (``augment``)."""
        from sklearn.base import clone

        from skmat.features.augment import XRDAugmenter

        if self.augment is False or self.augment is None:
            self.augmenter_ = None
            return
        template = XRDAugmenter() if self.augment is True else clone(self.augment)
        if not isinstance(template, XRDAugmenter):
            raise ValueError(f"augment must be a bool or an XRDAugmenter, got {self.augment!r}")
        if not (isinstance(self.augment_fraction, Real) and 0 <= self.augment_fraction <= 1):
            raise ValueError(f"augment_fraction must be a number in [0, 1], got {self.augment_fraction!r}")
        template.set_params(
            wavelength=self.wavelength, two_theta_range=self.two_theta_range, n_bins=self.n_bins
        )
        # fitted in _configure_training, which knows the seed of the estimator that trains
        # (cell_growth draws its grown cells at fit time)
        self.augmenter_ = template
        self._augmented_structures = structures
        # row -> position among the augmenter's structures, -1 for rows without one
        self.augmented_row_ = np.full(len(has_structure), -1, dtype=np.int64)
        self.augmented_row_[has_structure] = np.arange(int(has_structure.sum()))

    def _configure_training(self, net, dataset, view: str, random_state: int | None = None) -> None:
        if getattr(self, "augmenter_", None) is None:
            return
        seed = self.random_state if self.random_state is not None else random_state
        structures = vars(self).pop("_augmented_structures", None)
        if structures is not None:
            if self.augmenter_.random_state is None:
                self.augmenter_.set_params(random_state=seed)
            self.augmenter_.fit(structures)
        lo, hi = self.two_theta_range
        # wrap whatever collates the batches so far: inside an aligner, several encoders may
        # each adjust their own view of the same batch
        collate = vars(net).get("iterator_train__collate_fn", dataset.collate)
        net.set_params(
            iterator_train__collate_fn=_AugmentedBatches(
                collate,
                view,
                self.augmenter_,
                self.augmented_row_,
                np.random.default_rng(seed),
                self.background,
                (hi - lo) / (self.n_bins - 1),
                self.intensity_scale,
                self.augment_fraction,
            )
        )

    def _end_training(self, net, dataset) -> None:
        if getattr(self, "augmenter_", None) is not None:
            # the fitted estimator must not carry the sticks of every training structure
            # (skorch's set_params refuses iterator changes on an initialised net; the attribute
            # is what get_params_for reads, and without it MultiViewNet uses dataset.collate)
            vars(net).pop("iterator_train__collate_fn", None)
            self.augmenter_ = None
            del self.augmented_row_

    def _make_module(self):
        from skmat.nn.views import XRDConvNet

        return XRDConvNet(self.n_bins, out_dim=self.out_dim, channels=tuple(self.channels))


class _AugmentedBatches:
    """``collate_fn`` of training batches: the XRD view of rows with a structure is redrawn by
    the augmenter (fresh every batch, from one seeded generator), then background-corrected and
    intensity-scaled as at transform."""

    def __init__(self, collate, view, augmenter, augmented_row, rng, background, step, intensity_scale="linear",
                 fraction=1.0):
        self.collate = collate
        self.view = view
        self.augmenter = augmenter
        self.augmented_row = augmented_row
        self.rng = rng
        self.background = background
        self.step = step
        self.intensity_scale = intensity_scale
        self.fraction = fraction

    def __call__(self, indices):
        import torch

        from skmat.features._powder import remove_background, scale_intensity

        batch, y = self.collate(indices)
        x, present = batch[self.view]
        rows = self.augmented_row[np.asarray(indices, dtype=np.int64)[present.numpy()]]
        redraw = np.flatnonzero(rows >= 0)
        if self.fraction < 1:
            redraw = redraw[self.rng.random(len(redraw)) < self.fraction]
        if len(redraw):
            drawn = self.augmenter.sample(rows[redraw], random_state=self.rng)
            drawn = scale_intensity(remove_background(drawn, self.background, step=self.step), self.intensity_scale)
            x = x.clone()
            x[torch.from_numpy(redraw)] = torch.from_numpy(drawn).to(x.dtype)
            batch.views[self.view] = (x, present)
        return batch, y
