"""The shipped models' networks run forward without scikit-learn or skorch: ``identify``'s path.

:func:`skmat.pretrained.load` gives each model as an ordinary fitted estimator; importing what
that needs (scikit-learn, skorch, which imports torch_geometric, pandas, pymatgen's diffraction
module) takes ~5 s of a cold start before anything is predicted. :func:`~skmat.pretrained.identify`
only runs the networks forward on XRD patterns (and, when given, formulas), so it reads the
same model folder (:mod:`skmat.persist`'s JSON + safetensors) here instead:

* the settings and fitted statistics it needs are read from ``config.json``, value by value
  (nested estimators are never built), after the same version check as :func:`skmat.persist.load`;
* the torch modules are built from :mod:`skmat.nn` with the calls the estimators make
  (``XRDEncoder._make_module``, ``CompositionEncoder._make_module``,
  ``MultiModalAligner._network``, ``_MultiModalPredictor._network``); a view that is not fed
  (the aligner's structure graph) is not built and its weights are not read;
* inputs are prepared as the encoders' ``_prepare`` does (patterns scaled to a maximum of 1,
  standardised Magpie features) and run in batches of the model's ``batch_size``.

tests/test_pretrained_coldstart.py checks that the outputs equal the estimators' own
(``predict_proba``, ``predict_auxiliary``, ``embed``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skmat.exceptions import InvalidInputError
from skmat.persist import ModelFileError, _decode, read_model_config

CLASSIFIER = "skmat.supervised.MultiModalClassifier"
ALIGNER = "skmat.align.MultiModalAligner"
#: encoders whose view this path prepares and runs; other views are left out of the network
FED_ENCODERS = ("skmat.encoders.XRDEncoder", "skmat.encoders.CompositionEncoder")


def _value(section: dict, key: str, where: str) -> Any:
    """One setting or fitted value of a config section, decoded; nested estimators are refused
    (building one would import scikit-learn, and nothing read here is one)."""
    if key not in section:
        raise ModelFileError(f"{where}: no {key!r} in the model file")
    raw = section[key]
    if isinstance(raw, dict) and "__estimator__" in raw:
        raise ModelFileError(f"{where}.{key}: expected a value, found an estimator")
    return _decode(raw, f"{where}.{key}")


class _Encoder:
    """What one fitted view encoder of the file says: class, settings, fitted statistics."""

    def __init__(self, name: str, config: dict):
        self.name = name
        self.cls = config.get("class")
        self.params = dict(config.get("params", {}))
        self.fitted = dict(config.get("fitted", {}))
        self.where = f"encoders_.{name}"

    def param(self, key: str) -> Any:
        return _value(self.params, key, self.where)

    def attribute(self, key: str) -> Any:
        return _value(self.fitted, key, self.where)

    @property
    def fed(self) -> bool:
        return self.cls in FED_ENCODERS

    def module(self) -> nn.Module:
        """The encoder network, as the estimator's ``_make_module`` builds it."""
        if self.cls == "skmat.encoders.XRDEncoder":
            from skmat.nn.views import XRDConvNet

            return XRDConvNet(
                int(self.param("n_bins")), out_dim=self.param("out_dim"), channels=tuple(self.param("channels"))
            )
        from skmat.nn.views import MLPEncoder

        return MLPEncoder(
            len(self.attribute("feature_mean_")),
            out_dim=self.param("out_dim"),
            hidden_dims=tuple(self.param("hidden_dims")),
            dropout=self.param("dropout"),
        )


class _NotFed(nn.Module):
    """Stands for the encoder of a view this path never feeds: it has the width the projection
    and fusion head were built for, and no weights (none are read for it)."""

    def __init__(self, out_dim: int):
        super().__init__()
        self.out_dim = int(out_dim)

    def forward(self, x):  # pragma: no cover - the view is never in a batch
        raise RuntimeError("this view is not available on the inference path")


class InferenceModel:
    """A shipped classifier or aligner, read for prediction only.

    Parameters
    ----------
    folder : str or path-like
        A model folder written by :func:`skmat.persist.save` holding a
        :class:`~skmat.supervised.MultiModalClassifier` or a
        :class:`~skmat.align.MultiModalAligner`.

    Attributes
    ----------
    kind : {"classifier", "aligner"}
    views_ : list of str
        The fitted views, in the network's order.
    classes_ : ndarray or None
        The classifier's classes.
    auxiliary_mean_, auxiliary_scale_ : ndarray or None
        The classifier's auxiliary-target scaling.
    module : torch.nn.Module
        ``FusionPredictor`` (classifier) or ``MultiViewAligner`` (aligner), in eval mode, with
        the encoders of the fed views only.
    """

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        config, weights_path = read_model_config(folder)
        estimator = config.get("estimator") or {}
        cls = estimator.get("class")
        if cls not in (CLASSIFIER, ALIGNER):
            raise ModelFileError(f"{folder}: a {cls!r} model; identify reads a MultiModalClassifier or MultiModalAligner")
        self.kind = "classifier" if cls == CLASSIFIER else "aligner"
        params, fitted = dict(estimator.get("params", {})), dict(estimator.get("fitted", {}))
        self.views_ = list(_value(fitted, "views_", "estimator"))
        self.encoders = {str(name): _Encoder(str(name), sub) for name, sub in estimator.get("fitted_encoders", [])}
        if list(self.encoders) != self.views_:
            raise ModelFileError(f"{folder}: encoders {list(self.encoders)} do not match the views {self.views_}")
        self.batch_size = int(_value(params, "batch_size", "estimator"))
        if self.kind == "classifier":
            aligner = params.get("aligner")
            if not (isinstance(aligner, dict) and isinstance(aligner.get("__estimator__"), dict)):
                raise ModelFileError(f"{folder}: the classifier names no aligner")
            aligner_params = dict(aligner["__estimator__"].get("params", {}))
            self.classes_ = _value(fitted, "classes_", "estimator")
            self.auxiliary_mean_ = _value(fitted, "auxiliary_mean_", "estimator")
            self.auxiliary_scale_ = _value(fitted, "auxiliary_scale_", "estimator")
        else:
            aligner_params = params
            self.classes_ = self.auxiliary_mean_ = self.auxiliary_scale_ = None
        self.transform_views = _value(aligner_params, "transform_views", "aligner")
        self.module = self._network(params, aligner_params, weights_path)
        self.module.eval()

    # -- the network --------------------------------------------------------------------------
    def _network(self, params: dict, aligner_params: dict, weights_path: Path) -> nn.Module:
        from safetensors import SafetensorError, safe_open

        from skmat.nn.losses import ContrastiveLoss
        from skmat.nn.multiview import FusionPredictor, MultiViewAligner

        prefix = "aligner." if self.kind == "classifier" else ""
        try:
            with safe_open(str(weights_path), framework="pt", device="cpu") as handle:
                keys = set(handle.keys())

                def width(view: str) -> int:  # a left-out encoder's output width, from its projection
                    key = f"{prefix}projections.{view}.0.weight"
                    if key not in keys:
                        raise ModelFileError(f"{weights_path}: weights do not fit the network (no {key})")
                    return int(handle.get_slice(key).get_shape()[1])

                encoders = {name: enc.module() if enc.fed else _NotFed(width(name)) for name, enc in self.encoders.items()}
                loss, anchor = _value(aligner_params, "loss", "aligner"), _value(aligner_params, "anchor", "aligner")
                # MultiModalAligner._loss_options
                options = {"anchored": {"anchor": anchor or self.views_[0]}, "clip": {"views": tuple(self.views_[:2])}}
                aligner = MultiViewAligner(
                    encoders,
                    latent_dim=int(_value(aligner_params, "latent_dim", "aligner")),
                    loss=ContrastiveLoss(
                        loss,
                        temperature=float(_value(aligner_params, "temperature", "aligner")),
                        learn_temperature=bool(_value(aligner_params, "learn_temperature", "aligner")),
                        **options.get(loss, {}),
                    ),
                    view_dropout=float(_value(aligner_params, "view_dropout", "aligner")),
                )
                if self.kind == "classifier":
                    module = FusionPredictor(
                        aligner,
                        n_outputs=len(self.classes_),
                        task="classification",
                        hidden_dim=int(_value(params, "hidden_dim", "estimator")),
                        dropout=float(_value(params, "dropout", "estimator")),
                        contrastive_weight=float(_value(params, "contrastive_weight", "estimator")),
                        n_auxiliary=0 if self.auxiliary_mean_ is None else int(np.size(self.auxiliary_mean_)),
                        auxiliary_weight=float(_value(params, "auxiliary_weight", "estimator")),
                    )
                else:
                    module = aligner
                wanted = set(module.state_dict())
                left_out = tuple(f"{prefix}encoders.{name}." for name, enc in self.encoders.items() if not enc.fed)
                missing = sorted(wanted - keys)
                unexpected = sorted(k for k in keys - wanted if not k.startswith(left_out))
                if missing or unexpected:
                    raise ModelFileError(
                        f"{weights_path}: weights do not fit the network "
                        f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
                    )
                state = {key: handle.get_tensor(key) for key in wanted}
        except (SafetensorError, OSError) as exc:
            raise ModelFileError(f"{weights_path}: weights do not fit the network ({exc})") from exc
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(f"{weights_path}: weights do not fit the network ({exc})") from exc
        return module

    # -- inputs, as the encoders' ``_prepare`` makes them ---------------------------------------
    def xrd_settings(self) -> dict:
        """``wavelength``, ``two_theta_range``, ``n_bins`` and ``background`` of the XRD view."""
        encoder = self.encoders.get("xrd")
        if encoder is None or encoder.cls != "skmat.encoders.XRDEncoder":
            raise ModelFileError(f"the model has no XRD view (views: {self.views_})")
        return {key: encoder.param(key) for key in ("wavelength", "two_theta_range", "n_bins", "background")}

    def _prepare(self, view: str, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """Network input of the present rows and the presence mask (``None`` cells are absent)."""
        encoder = self.encoders[view]
        present = np.array([cell is not None for cell in cells], dtype=bool)
        chosen = [cell for cell in cells if cell is not None]
        if encoder.cls == "skmat.encoders.XRDEncoder":
            # XRDEncoder._prepare for given patterns: each scaled to a maximum of 1, then the
            # encoder's background removal
            n_bins = int(encoder.param("n_bins"))
            patterns = np.zeros((len(chosen), n_bins), dtype=np.float32)
            if chosen:
                given = np.stack([np.asarray(c, dtype=np.float32) for c in chosen])
                if given.shape[1:] != (n_bins,) or not np.isfinite(given).all() or (given < 0).any():
                    raise InvalidInputError(f"XRD patterns must be finite, non-negative and of {n_bins} bins", view=view)
                peak = given.max(axis=1, keepdims=True)
                patterns[:] = given / np.where(peak > 0, peak, 1.0)
            background = encoder.param("background")
            if background is not None:
                from skmat.features._powder import remove_background

                lo, hi = encoder.param("two_theta_range")
                patterns = remove_background(patterns, background, step=(hi - lo) / (n_bins - 1))
            # model files written before intensity_scale existed read linear intensities
            scale = encoder.params.get("intensity_scale")
            if scale is not None:
                from skmat.features._powder import scale_intensity

                patterns = scale_intensity(patterns, encoder.param("intensity_scale"))
            return patterns, present
        if encoder.cls == "skmat.encoders.CompositionEncoder":
            # CompositionEncoder._prepare: Magpie statistics standardised by the fitted ones
            mean, scale = encoder.attribute("feature_mean_"), encoder.attribute("feature_scale_")
            if not chosen:
                return np.zeros((0, len(mean)), dtype=np.float32), present
            from skmat.features.composition import CompositionFeatures  # only with a formula given

            features = CompositionFeatures().fit_transform(chosen).astype(np.float64)
            return np.nan_to_num((features - mean) / scale).astype(np.float32), present
        raise InvalidInputError(f"view {view!r} cannot be fed on the inference path", view=view)

    def _forward(self, views: dict, call) -> list:
        """*call(module, batch)* on every batch of the rows of ``{view: cells}``, in row order."""
        prepared = {view: self._prepare(view, cells) for view, cells in views.items()}
        n_rows = len(next(iter(views.values())))
        out = []
        with torch.no_grad():
            for start in range(0, n_rows, self.batch_size):
                rows = slice(start, start + self.batch_size)
                batch = {}
                for view, (values, present) in prepared.items():
                    # the present rows of this batch: their positions among the prepared values
                    first = int(present[:start].sum())
                    take = slice(first, first + int(present[rows].sum()))
                    batch[view] = (torch.from_numpy(np.ascontiguousarray(values[take])), torch.from_numpy(present[rows]))
                out.append(call(self.module, batch))
        return out

    # -- predictions --------------------------------------------------------------------------
    def head_outputs(self, views: dict) -> np.ndarray:
        """The classifier head's raw outputs: the class logits, then the auxiliary targets."""
        if self.kind != "classifier":
            raise TypeError("an aligner has no prediction head")
        unknown = [v for v in views if v not in self.views_]
        if unknown:
            raise InvalidInputError(f"views {unknown} were not fitted; fitted views are {self.views_}", view=unknown[0])
        parts = self._forward(views, lambda module, batch: module(batch)[0].float().cpu().numpy())
        return np.concatenate(parts)

    def predict_proba(self, outputs: np.ndarray) -> np.ndarray:
        """Class probabilities from :meth:`head_outputs` (as ``MultiModalClassifier.predict_proba``)."""
        logits = outputs[:, : len(self.classes_)]
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict_auxiliary(self, outputs: np.ndarray) -> np.ndarray:
        """Auxiliary targets from :meth:`head_outputs` (as ``predict_auxiliary``)."""
        if self.auxiliary_mean_ is None:
            raise AttributeError("predict_auxiliary needs a fit with auxiliary_targets")
        return outputs[:, len(self.classes_) :] * self.auxiliary_scale_ + self.auxiliary_mean_

    def embed(self, cells: list, view: str) -> np.ndarray:
        """L2-normalised latent vectors of one view (as ``MultiModalAligner.embed``); rows
        without the view are NaN."""
        if self.kind != "aligner":
            raise TypeError("embed is an aligner's")
        if view not in self.views_:
            raise InvalidInputError(f"views {[view]} were not fitted; fitted views are {self.views_}", view=view)

        def normalised(module, batch):
            z = module(batch)[0][view]
            return (z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)).cpu().numpy()

        z = np.concatenate(self._forward({view: cells}, normalised)).astype(np.float32)
        z[~np.array([c is not None for c in cells], dtype=bool)] = np.nan
        return z
