"""MultiModalAligner: per-view encoders aligned in one latent space, then fused."""

from __future__ import annotations

from itertools import permutations
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.metaestimators import _BaseComposition
from sklearn.utils.validation import check_is_fitted

from skmat._inputs import check_has_rows, to_frame
from skmat.exceptions import InvalidInputError

_LOSSES = ("clip", "all_pairs", "anchored", "tensor", "barlow")
_FUSIONS = ("mean", "concat")


def _is_encoder_list(value) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(p, tuple | list) and len(p) == 2 for p in value)


def prepare_views_for_fit(encoders: list, frame) -> dict:
    """Every encoder's view of *frame*, its input statistics fitted; a view absent from
    every row is refused (shared by the aligner and the fused predictors)."""
    prepared = {name: enc._prepare(frame, name, fit=True) for name, enc in encoders}
    absent = [name for name, view in prepared.items() if not view.present.any()]
    if absent:
        raise InvalidInputError(
            f"views {absent} are absent from every row (columns are {list(frame.columns)})", view=absent[0]
        )
    return prepared


def default_encoders() -> list:
    """UniMat's three views: structure graph, simulated XRD pattern, composition."""
    from skmat.encoders import CompositionEncoder, StructureEncoder, XRDEncoder

    return [("structure", StructureEncoder()), ("xrd", XRDEncoder()), ("composition", CompositionEncoder())]


class MultiModalAligner(TransformerMixin, _BaseComposition, BaseEstimator):
    """Align several views of a material in one embedding space with a contrastive loss.

    Each view has an encoder (a network from :mod:`skmat.encoders`) and a projection head into
    a shared ``latent_dim`` space. Training is self-supervised: embeddings of the same material
    in different views are pulled together, those of different materials pushed apart
    (CLIP's symmetric InfoNCE and its generalisations to three or more views, or Barlow Twins).
    ``transform`` fuses the views present in ``X`` into one vector per material, so a
    downstream scikit-learn estimator can use whatever views a material has.

    Parameters
    ----------
    encoders : list of (str, estimator) or None, default=None
        ``(view name, encoder)`` pairs; the name is the DataFrame column the encoder reads.
        ``None`` means structure + XRD + composition (UniMat), all derivable from a
        ``structure`` column.
    loss : {"clip", "all_pairs", "anchored", "tensor", "barlow"}, default="all_pairs"
        Alignment objective. ``"clip"`` aligns the first two views (or ``clip_views``);
        ``"all_pairs"`` averages CLIP over every pair; ``"anchored"`` aligns every view to
        ``anchor``; ``"tensor"`` is MLCM's three-way similarity tensor; ``"barlow"`` is
        Barlow Twins (two- or three-way).
    anchor : str or None, default=None
        Anchor view of ``loss="anchored"`` (default: the first encoder's view).
    temperature : float, default=0.07
        Initial softmax temperature of the contrastive logits.
    learn_temperature : bool, default=True
        Learn the temperature (log-parameterised, clamped to [0.01, 1]).
    latent_dim : int, default=128
        Dimension of the shared space.
    fusion : {"mean", "concat"}, default="mean"
        How ``transform`` combines views: mean of the L2-normalised view embeddings over the
        views a row has (robust to missing views), or their concatenation (missing views are
        zeros; the downstream estimator plays the role of UniMat's fusion MLP).
    transform_views : tuple of str or None, default=None
        Views used by ``transform`` (e.g. ``("xrd", "composition")`` for the experimentally
        accessible setting of UniMat); ``None`` uses every fitted view present in ``X``.
        Can be changed after fitting with ``set_params``.
    view_dropout : float, default=0.0
        Probability of hiding each view of each row during training.
    max_epochs : int, default=20
        Passes over the data (early stopping may end sooner).
    batch_size : int, default=64
        Rows per step; contrastive negatives come from the same batch.
    lr : float, default=1e-3
        Peak AdamW learning rate (linear warm-up over ``warmup_fraction`` of the steps, then
        cosine decay).
    weight_decay : float, default=1e-4
        AdamW weight decay.
    warmup_fraction : float, default=0.05
        Share of the steps spent warming up.
    validation_fraction : float, default=0.1
        Share of the rows held out for early stopping on the contrastive loss.
    patience : int, default=5
        Epochs without validation improvement before stopping.
    max_grad_norm : float or None, default=None
        Clip the global L2 norm of the gradients (encoders, projections and the learned
        temperature together) to this value before every optimizer step; None does not clip.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available. Ignored when ``accelerator`` is given.
    accelerator : accelerate.Accelerator or None, default=None
        Train through Hugging Face Accelerate (skorch's ``AccelerateMixin``): the accelerator
        places the model, shards batches over the processes of an ``accelerate launch`` run
        (contrastive negatives are then gathered from every process) and applies its mixed
        precision. See ``docs/scaling.md``.
    random_state : int or None, default=None
        Seeds initialisation, shuffling, view dropout and the validation split.
    verbose : int, default=0
        ``> 0`` prints the training log with a progress bar.

    Attributes
    ----------
    encoders_ : list of (str, estimator)
        Fitted copies of the encoders (their input statistics).
    views_ : list of str
        Names of the fitted views.
    net_ : skorch.NeuralNet
        The trained network; ``net_.history`` holds the losses per epoch.
    temperature_ : float
        Temperature at the end of training, within the clamp [0.01, 1].
    n_features_in_ : int
        Number of columns of the ``X`` seen at ``fit``. Informational only: ``transform``
        matches views to columns by name and accepts other columns (see :meth:`transform`).

    See Also
    --------
    skmat.encoders.StructureEncoder, skmat.encoders.XRDEncoder, skmat.encoders.CompositionEncoder

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.pipeline import Pipeline
    >>> from skmat.datasets import load_prototypes
    >>> X, y = load_prototypes(return_X_y=True, target="a_scaled")
    >>> pipe = Pipeline([("align", MultiModalAligner(max_epochs=1, random_state=0)), ("reg", Ridge())])
    >>> pipe.fit(X[:64], y[:64]).predict(X[64:68]).shape
    (4,)
    """

    def __init__(
        self,
        encoders: list | None = None,
        loss: str = "all_pairs",
        anchor: str | None = None,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        latent_dim: int = 128,
        fusion: str = "mean",
        transform_views: tuple[str, ...] | None = None,
        view_dropout: float = 0.0,
        max_epochs: int = 20,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_fraction: float = 0.05,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.encoders = encoders
        self.loss = loss
        self.anchor = anchor
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.latent_dim = latent_dim
        self.fusion = fusion
        self.transform_views = transform_views
        self.view_dropout = view_dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    # Nested parameters work as in ColumnTransformer (``xrd__n_bins``) and, spelled out,
    # through the parameter that holds the encoders (``encoders__xrd__n_bins``).
    def get_params(self, deep: bool = True) -> dict:
        if not _is_encoder_list(self.encoders):  # None (the default) or invalid: fit says which
            return BaseEstimator.get_params(self, deep=deep)
        params = self._get_params("encoders", deep=deep)
        if deep:
            for name, encoder in self.encoders:
                for key, value in encoder.get_params(deep=True).items():
                    params[f"encoders__{name}__{key}"] = value
        return params

    def set_params(self, **params) -> MultiModalAligner:
        params = {k.removeprefix("encoders__"): v for k, v in params.items()}
        if self.encoders is None and any("__" in k for k in params):
            self.encoders = default_encoders()
        self._set_params("encoders", **params)
        return self

    # -- validation -------------------------------------------------------------------------
    def _checked_encoders(self) -> list:
        if self.encoders is not None and not _is_encoder_list(self.encoders):
            raise ValueError(
                f"encoders must be a list of (name, encoder) pairs or None, got {self.encoders!r}"
            )
        encoders = default_encoders() if self.encoders is None else list(self.encoders)
        if not encoders:
            raise ValueError("encoders must name at least one (view, encoder) pair")
        names = [name for name, _ in encoders]
        if len(set(names)) != len(names):
            raise ValueError(f"encoder names must be unique, got {names}")
        for name, enc in encoders:
            if not isinstance(name, str) or "__" in name:
                raise ValueError(f"encoder names must be strings without '__', got {name!r}")
            if not hasattr(enc, "_prepare"):
                raise TypeError(f"encoder {name!r} is a {type(enc).__name__}, not an skmat encoder")
        return encoders

    def _validate_params(self, names: list[str]) -> None:
        from skmat._training import check_max_grad_norm

        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.fusion not in _FUSIONS:
            raise ValueError(f"fusion must be one of {_FUSIONS}, got {self.fusion!r}")
        if self.loss == "anchored" and self.anchor is not None and self.anchor not in names:
            raise ValueError(f"anchor {self.anchor!r} is not one of the views {names}")
        if not 0.01 <= float(self.temperature) <= 1.0:
            # the range the learnable temperature is clamped to (ContrastiveLoss)
            raise ValueError(f"temperature must be in [0.01, 1], got {self.temperature!r}")
        if int(self.latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim!r}")
        if not 0 <= float(self.view_dropout) < 1:
            raise ValueError(f"view_dropout must be in [0, 1), got {self.view_dropout!r}")
        if int(self.max_epochs) < 1 or int(self.batch_size) < 2:
            raise ValueError("max_epochs must be >= 1 and batch_size >= 2")
        check_max_grad_norm(self.max_grad_norm)
        if self.loss == "tensor" and len(names) != 3:
            raise ValueError(f"loss='tensor' aligns exactly three views, got {len(names)}: {names}")

    def _loss_options(self, names: list[str]) -> dict:
        if self.loss == "anchored":
            return {"anchor": self.anchor or names[0]}
        if self.loss == "clip":
            return {"views": tuple(names[:2])}
        return {}

    def _network(self, encoders: list):
        """The untrained aligner network over *encoders* (prepared with ``fit=True``) that
        ``fit`` trains; :func:`skmat.persist.load` rebuilds it the same way."""
        from skmat.nn.losses import ContrastiveLoss
        from skmat.nn.multiview import MultiViewAligner

        names = [name for name, _ in encoders]
        return MultiViewAligner(
            {name: enc._make_module() for name, enc in encoders},
            latent_dim=int(self.latent_dim),
            loss=ContrastiveLoss(
                self.loss,
                temperature=float(self.temperature),
                learn_temperature=bool(self.learn_temperature),
                **self._loss_options(names),
            ),
            view_dropout=float(self.view_dropout),
        )

    def _net_options(self) -> dict:
        """Training settings of :func:`~skmat._training.build_net`, shared by ``fit`` and
        :func:`skmat.persist.load`."""
        from skmat._training import net_options

        return net_options(self)

    # -- fitting --------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> MultiModalAligner:
        """Align the views of the materials in *X* (self-supervised; *y* is ignored).

        Parameters
        ----------
        X : DataFrame or list of Structure
            One material per row, one column per view; views derivable from ``structure``
            are computed when their column is absent.
        y : ignored
            Accepted so the aligner can lead a :class:`~sklearn.pipeline.Pipeline`.

        Returns
        -------
        self
        """
        from skmat._training import (
            MultiViewDataset,
            bare_module,
            fit_with_encoder_hooks,
            resolve_device,
            seed_torch,
        )
        from skmat.distributed import training_net

        frame = to_frame(X)
        if len(frame) < 2:
            raise InvalidInputError(f"contrastive alignment needs at least 2 rows, got {len(frame)}")
        if y is not None and len(y) != len(frame):
            raise InvalidInputError(f"X has {len(frame)} rows but y has {len(y)} values", view="y")
        encoders = [(name, clone(enc)) for name, enc in self._checked_encoders()]
        names = [name for name, _ in encoders]
        self._validate_params(names)
        prepared = prepare_views_for_fit(encoders, frame)
        if len(names) > 1:
            co_present = np.stack([v.present for v in prepared.values()]).sum(axis=0) >= 2
            if co_present.sum() < 2:
                raise InvalidInputError("fewer than 2 rows have two or more views: nothing to align")
        seed_torch(self.random_state)
        module = self._network(encoders)
        self.device_ = str(self.accelerator.device) if self.accelerator is not None else resolve_device(self.device)
        self.net_ = training_net(
            module,
            n_rows=len(frame),
            device=self.device_,
            random_state=self.random_state,
            accelerator=self.accelerator,
            **self._net_options(),
        )
        dataset = MultiViewDataset(prepared)
        fit_with_encoder_hooks(self.net_, dataset, encoders, self.random_state)
        self.encoders_ = encoders
        self.views_ = names
        self.temperature_ = float(bare_module(self.net_.module_).contrastive.temperature)
        self.n_features_in_ = frame.shape[1]
        return self

    # -- embedding --------------------------------------------------------------------------
    def _embed_views(self, X: Any, views: list[str]) -> tuple[dict, dict]:
        """L2-normalised latent vectors and presence masks of *views* for every row."""
        from skmat._training import MultiViewDataset, run_inference

        check_is_fitted(self, "net_")
        frame = to_frame(X)
        fitted = dict(self.encoders_)
        unknown = [v for v in views if v not in fitted]
        if unknown:
            raise InvalidInputError(f"views {unknown} were not fitted; fitted views are {self.views_}", view=unknown[0])
        check_has_rows(frame)
        prepared = {name: fitted[name]._prepare(frame, name, fit=False) for name in views}

        def normalised(output):
            embeddings, presence = output
            out = {}
            for name, z in embeddings.items():
                z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
                out[name] = z.cpu().numpy()
            return out

        parts = run_inference(self.net_, MultiViewDataset(prepared), normalised)
        embeddings = {name: np.concatenate([p[name] for p in parts]).astype(np.float32) for name in views}
        presence = {name: prepared[name].present for name in views}
        return embeddings, presence

    def embed(self, X: Any, view: str) -> np.ndarray:
        """Latent vectors of one view (L2-normalised); rows without the view are NaN.

        Parameters
        ----------
        X : DataFrame or list of Structure
        view : str
            A fitted view name.

        Returns
        -------
        ndarray of shape (n_samples, latent_dim), float32
        """
        embeddings, presence = self._embed_views(X, [view])
        z = embeddings[view]
        z[~presence[view]] = np.nan
        return z

    def _views_for_transform(self) -> list[str]:
        if self.transform_views is None:
            return list(self.views_)
        views = [self.transform_views] if isinstance(self.transform_views, str) else list(self.transform_views)
        unknown = [v for v in views if v not in self.views_]
        if unknown:
            raise InvalidInputError(
                f"transform_views {unknown} were not fitted; fitted views are {self.views_}", view=unknown[0]
            )
        return views

    def transform(self, X: Any) -> np.ndarray:
        """Fused embedding of every row from the views it has (among ``transform_views``).

        Parameters
        ----------
        X : DataFrame or list of Structure
            One material per row. Columns are matched to the fitted views by name, as
            :class:`~sklearn.compose.ColumnTransformer` matches a DataFrame's columns: the
            columns need not be those seen at ``fit``. A fitted view may be absent (the row
            is then embedded from its other views), and a view column that was absent at
            ``fit`` is used when a fitted encoder reads it (e.g. measured ``xrd`` patterns
            where ``fit`` simulated them from ``structure``). Columns no fitted encoder reads
            (``material_id``, targets, views without an encoder) are ignored.

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
            ``latent_dim`` columns for ``fusion="mean"``; ``latent_dim`` per view for
            ``"concat"``.
        """
        check_is_fitted(self, "net_")
        views = self._views_for_transform()
        frame = to_frame(X)
        embeddings, presence = self._embed_views(frame, views)
        stacked = np.stack([np.where(presence[v][:, None], embeddings[v], 0.0) for v in views], axis=1)
        if self.fusion == "concat":
            return stacked.reshape(len(frame), -1).astype(np.float32)
        counts = np.stack([presence[v] for v in views], axis=1).sum(axis=1)
        if np.any(counts == 0):
            from skmat._inputs import row_labels

            bad = row_labels(frame)[int(np.flatnonzero(counts == 0)[0])]
            raise InvalidInputError(f"none of the views {views} is present", row=bad)
        return (stacked.sum(axis=1) / counts[:, None]).astype(np.float32)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean cross-view top-1 retrieval accuracy over every ordered pair of views.

        For each pair (a, b), each row's view-a embedding queries the view-b embeddings of
        all rows having both views; a hit is its own row ranked first (cosine similarity).
        Lets ``GridSearchCV`` tune the aligner without labels.
        """
        check_is_fitted(self, "net_")
        embeddings, presence = self._embed_views(X, list(self.views_))
        accuracies = []
        for a, b in permutations(self.views_, 2):
            both = presence[a] & presence[b]
            if both.sum() < 2:
                continue
            similarity = embeddings[a][both] @ embeddings[b][both].T
            accuracies.append(float(np.mean(similarity.argmax(axis=1) == np.arange(both.sum()))))
        if not accuracies:
            raise InvalidInputError("no two views are present together in 2 or more rows: cannot score")
        return float(np.mean(accuracies))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "net_")
        if self.fusion == "concat":
            names = [f"{v}{i}" for v in self._views_for_transform() for i in range(self.latent_dim)]
        else:
            names = [f"latent{i}" for i in range(self.latent_dim)]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags
