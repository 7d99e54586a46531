"""Model files that are safe to share: a JSON config plus ``safetensors`` weights, no pickle.

``joblib.dump`` stores a fitted estimator exactly, but loading a joblib (pickle) file runs
whatever code the file names, so a model downloaded from someone else is a program. A folder
written by :func:`save` holds only data:

``config.json``
    The estimator's class (one of skmat's public estimators), its parameters, its fitted
    attributes that are numbers, strings, lists or small numpy arrays, the training history,
    and the versions of skmat, torch and scikit-learn that wrote it.
``weights.safetensors``
    The network's ``state_dict``, in the safetensors format (tensors only).

:func:`load` rebuilds the estimator from its parameters, puts back the fitted attributes, builds
the network the way ``fit`` does and fills in the weights. It imports nothing the file names
outside skmat's allow-list and refuses a file written by another major/minor skmat version.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from skmat._version import __version__
from skmat.exceptions import SkmatError

FORMAT = "skmat-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"

#: estimators :func:`load` may build: public class path -> (public module, name); all skmat
ALLOWED_CLASSES = {
    "skmat.align.MultiModalAligner": ("skmat.align", "MultiModalAligner"),
    "skmat.supervised.MultiModalRegressor": ("skmat.supervised", "MultiModalRegressor"),
    "skmat.supervised.MultiModalClassifier": ("skmat.supervised", "MultiModalClassifier"),
    **{
        f"skmat.encoders.{name}": ("skmat.encoders", name)
        for name in (
            "StructureEncoder",
            "XRDEncoder",
            "CompositionEncoder",
            "DOSEncoder",
            "ChargeDensityEncoder",
            "TextEncoder",
            "ImageEncoder",
        )
    },
    # an XRDEncoder's ``augment`` setting: a recipe of training draws, data only
    "skmat.features.augment.XRDAugmenter": ("skmat.features.augment", "XRDAugmenter"),
}

# numpy dtypes a model file may hold (kinds: bool, signed, unsigned, float, unicode, object-of-str)
_SAFE_DTYPE_KINDS = set("biufUO")
# fitted statistics are small; a bigger array in a config is a sign of a crafted file
_MAX_ARRAY_SIZE = 1_000_000
_ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]*_$")
# set by ``set_output``: not a fitted attribute, but part of how the estimator behaves
_KEPT_PRIVATE = ("_sklearn_output_config",)


class ModelFileError(SkmatError, ValueError):
    """A model folder that :func:`load` refuses: not an skmat model, tampered with, or written
    by an incompatible skmat version."""


# -- JSON encoding of parameters and fitted attributes -------------------------------------------
def _encode(value: Any, where: str) -> Any:
    """*value* as JSON data; tuples, numpy values and nested skmat estimators are tagged."""
    from sklearn.base import BaseEstimator

    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) and not isinstance(value, np.generic):
        if isinstance(value, float) and not np.isfinite(value):
            return {"__float__": repr(value)}  # JSON has no NaN/inf
        return value
    if isinstance(value, np.generic):
        array = _encode_array(np.asarray(value), where)
        return {"__numpy_scalar__": array}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _encode_array(value, where)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{where}.{k}") for k, v in value.items()}}
    if isinstance(value, BaseEstimator):
        return {"__estimator__": _estimator_config(value, fitted=False)}
    if hasattr(value, "location") and type(value).__name__ == "Memory":
        # a joblib.Memory cache: keep where it lives (a cache is an optimisation, not the model)
        return None if value.location is None else str(value.location)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ModelFileError(f"cannot store {where} = {type(value).__name__} in a model file (JSON data only)")


def _encode_array(array: np.ndarray, where: str) -> dict:
    if array.dtype.kind not in _SAFE_DTYPE_KINDS:
        raise ModelFileError(f"cannot store {where}: arrays of dtype {array.dtype} are not supported")
    if array.size > _MAX_ARRAY_SIZE:
        raise ModelFileError(f"cannot store {where}: {array.size} values is too large for the config")
    if array.dtype.kind == "O":
        items = array.ravel().tolist()
        if not all(isinstance(v, str | int | float | bool) for v in items):
            raise ModelFileError(f"cannot store {where}: object array holds non-primitive values")
        data: list = items
    else:
        data = [_encode(v, where) for v in array.ravel().tolist()]
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": data}


def _decode(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ModelFileError(f"{where}: unexpected object with keys {sorted(value)}")
    (tag, body), = value.items()
    if tag == "__tuple__":
        return tuple(_decode(v, f"{where}[{i}]") for i, v in enumerate(body))
    if tag == "__dict__":
        return {str(k): _decode(v, f"{where}.{k}") for k, v in body.items()}
    if tag == "__float__":
        if body not in ("nan", "inf", "-inf"):
            raise ModelFileError(f"{where}: {body!r} is not a float")
        return float(body)
    if tag == "__ndarray__":
        return _decode_array(body, where)
    if tag == "__numpy_scalar__":
        return _decode_array(body, where)[()]
    if tag == "__estimator__":
        return _build_estimator(body, where)
    raise ModelFileError(f"{where}: unknown tag {tag!r}")


def _decode_array(body: dict, where: str) -> np.ndarray:
    try:
        dtype = np.dtype(body["dtype"])
        shape = tuple(int(n) for n in body["shape"])
        data = body["data"]
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{where}: malformed array ({exc})") from exc
    if dtype.kind not in _SAFE_DTYPE_KINDS or int(np.prod(shape)) > _MAX_ARRAY_SIZE:
        raise ModelFileError(f"{where}: refused array of dtype {dtype} and shape {shape}")
    if dtype.kind == "O":
        if not all(isinstance(v, str | int | float | bool) for v in data):
            raise ModelFileError(f"{where}: object array holds non-primitive values")
        array = np.empty(len(data), dtype=object)
        array[:] = data
    else:
        array = np.asarray([_decode(v, where) for v in data], dtype=dtype)
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise ModelFileError(f"{where}: {len(data)} values do not fill shape {shape}") from exc


# -- estimators <-> configs ------------------------------------------------------------------------
def _class_path(estimator) -> str:
    """The public path a model file names the estimator's class by (``skmat.encoders.XRDEncoder``).

    Looked up by identity, not built from ``__module__``: the encoders are defined in modules
    per view family (``skmat.encoders.xrd``) that may move, while files name the public path
    they are imported from, so files written before and after a move load alike.
    """
    cls = type(estimator)
    for path, (module, name) in ALLOWED_CLASSES.items():
        if getattr(sys.modules.get(module), name, None) is cls:
            return path
    raise ModelFileError(
        f"{cls.__name__} cannot be saved as a safe model file; supported: "
        f"{sorted(p.rsplit('.', 1)[1] for p in ALLOWED_CLASSES)}"
    )


def _fitted_attributes(estimator) -> dict:
    """Fitted state that is data (statistics, classes, sizes), without the network."""
    out = {}
    for name, value in vars(estimator).items():
        if name in ("net_", "encoders_"):
            continue
        if _ATTRIBUTE_NAME.match(name) or name in _KEPT_PRIVATE:
            out[name] = _encode(value, f"{type(estimator).__name__}.{name}")
    return out


def _estimator_config(estimator, *, fitted: bool) -> dict:
    config: dict[str, Any] = {
        "class": _class_path(estimator),
        "params": {
            # an Accelerator is a live training context, not a setting: a saved model loads
            # for inference on one device
            k: _encode(None if k == "accelerator" else v, f"{type(estimator).__name__}.{k}")
            for k, v in estimator.get_params(deep=False).items()
        },
    }
    if fitted:
        config["fitted"] = _fitted_attributes(estimator)
        if hasattr(estimator, "encoders_"):
            config["fitted_encoders"] = [
                [name, _estimator_config(encoder, fitted=True)] for name, encoder in estimator.encoders_
            ]
    return config


def _resolve_class(path: Any, where: str) -> type:
    import importlib

    if path not in ALLOWED_CLASSES:
        raise ModelFileError(
            f"{where}: class {path!r} is not an skmat estimator this loader builds; refusing the "
            f"file (allowed: {sorted(ALLOWED_CLASSES)})"
        )
    module, name = ALLOWED_CLASSES[path]
    return getattr(importlib.import_module(module), name)


def _build_estimator(config: dict, where: str, *, fitted: bool = False):
    if not isinstance(config, dict):
        raise ModelFileError(f"{where}: an estimator entry must be an object")
    cls = _resolve_class(config.get("class"), where)
    params = {k: _decode(v, f"{where}.{k}") for k, v in dict(config.get("params", {})).items()}
    unknown = set(params) - set(cls._get_param_names())
    if unknown:
        raise ModelFileError(f"{where}: {cls.__name__} has no parameters {sorted(unknown)}")
    estimator = cls(**params)
    if not fitted:
        return estimator
    for name, value in dict(config.get("fitted", {})).items():
        if not (_ATTRIBUTE_NAME.match(name) or name in _KEPT_PRIVATE) or hasattr(cls, name):
            raise ModelFileError(f"{where}: refused fitted attribute {name!r}")
        setattr(estimator, name, _decode(value, f"{where}.{name}"))
    if "fitted_encoders" in config:
        estimator.encoders_ = [
            (str(name), _build_estimator(sub, f"{where}.encoders_.{name}", fitted=True))
            for name, sub in config["fitted_encoders"]
        ]
    return estimator


# -- the networks, built by the estimators' own ``_network`` (as fit builds them) --------------------------------------------------------
def _n_outputs(encoder) -> int:
    if encoder.task_ == "classification":
        return len(encoder.classes_)
    return 1 if np.ndim(encoder.y_mean_) == 0 else int(np.shape(encoder.y_mean_)[0])


def _rebuild_net(estimator, device: str):
    """An initialised skorch net around a freshly built (untrained) module."""
    from skmat._training import build_net

    if hasattr(estimator, "encoders_"):
        module = estimator._network(estimator.encoders_)
        options = estimator._net_options()
    else:
        module = estimator._network(_n_outputs(estimator))
        options = estimator._training_params()
        options.pop("device")
        options.pop("random_state")
        options.pop("accelerator", None)
        options["warmup_fraction"] = 0.05
    # n_rows only shapes the learning-rate schedule and validation split of a later fit
    net = build_net(module, n_rows=1, device=device, random_state=estimator.random_state, **options)
    net.initialize()
    return net


# -- public API ---------------------------------------------------------------------------------
def _versions() -> dict:
    import sklearn
    import torch

    return {"skmat": __version__, "torch": torch.__version__, "sklearn": sklearn.__version__}


def save(estimator, path: str | os.PathLike) -> Path:
    """Write a fitted skmat estimator to the folder *path* as JSON + safetensors (no pickle).

    Parameters
    ----------
    estimator : MultiModalAligner or one of the skmat encoders
        Fitted.
    path : str or path-like
        Folder to create (or overwrite the model files in).

    Returns
    -------
    Path
        The folder.

    Examples
    --------
    >>> import pandas as pd, tempfile
    >>> from skmat.encoders import CompositionEncoder
    >>> X = pd.DataFrame({"composition": ["NaCl", "KCl", "MgO", "CaO"] * 4})
    >>> enc = CompositionEncoder(hidden_dims=(8,), out_dim=4, max_epochs=1, validation_fraction=0,
    ...                          random_state=0).fit(X, [5.6, 6.3, 4.2, 4.8] * 4)
    >>> folder = save(enc, tempfile.mkdtemp())
    >>> bool(abs(load(folder).transform(X) - enc.transform(X)).max() < 1e-6)
    True
    """
    from safetensors.torch import save_model
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "net_")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "estimator": _estimator_config(estimator, fitted=True),
    }
    history = _history_of(estimator.net_)
    if history is not None:
        config["history"] = history
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=1, allow_nan=False)
    module = estimator.net_.module_
    save_model(module, str(folder / WEIGHTS_FILE), metadata={"format": FORMAT, "skmat": __version__})
    (folder / CONFIG_FILE).write_text(text, encoding="utf-8")
    return folder


def _history_of(net) -> list | None:
    """The training log (losses per epoch) when it is plain JSON data."""
    try:
        return json.loads(json.dumps(list(net.history), allow_nan=False))
    except (TypeError, ValueError):
        return None


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not match:
        raise ModelFileError(f"unreadable skmat version {version!r} in the model file")
    return tuple(int(g or 0) for g in match.groups())


def _check_versions(config: dict) -> None:
    if config.get("format") != FORMAT:
        raise ModelFileError(f"not an skmat model file (format {config.get('format')!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"model file format version {config.get('format_version')!r}; this skmat reads {FORMAT_VERSION}"
        )
    written = dict(config.get("versions") or {}).get("skmat")
    mine, theirs = _release(__version__), _release(written)
    if mine[:2] != theirs[:2]:
        raise ModelFileError(
            f"model file written by skmat {written}, this is skmat {__version__}: major/minor versions "
            f"differ, so the networks may not match; load it with skmat {theirs[0]}.{theirs[1]}.x"
        )
    if mine != theirs:
        warnings.warn(
            f"model file written by skmat {written}, loading with skmat {__version__}", UserWarning, stacklevel=3
        )


def read_model_config(path: str | os.PathLike) -> tuple[dict, Path]:
    """The checked ``config.json`` of a model folder and the path of its weights file.

    Shared by :func:`load` and the inference-only path of :mod:`skmat.pretrained`, which must not
    import skorch: the folder must hold both files, the config must be a JSON object, and the
    versions it was written with must be readable here.
    """
    folder = Path(path)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelFileError(f"{folder} is not an skmat model folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelFileError(f"{config_path}: expected a JSON object")
    _check_versions(config)
    return config, weights_path


def load(path: str | os.PathLike, *, device: str | None = None):
    """Read a model folder written by :func:`save`; nothing in it is executed.

    Parameters
    ----------
    path : str or path-like
        The folder.
    device : str or None, default=None
        Torch device for the network; ``None`` follows the estimator's ``device`` parameter
        (``"auto"``: CUDA when available).

    Returns
    -------
    estimator
        Fitted, giving the same ``transform``/``predict`` as the saved one. The training history
        is restored; optimiser state is not (a new ``fit`` starts over).

    Raises
    ------
    ModelFileError
        When the folder is not an skmat model, names a class outside skmat's estimators, or was
        written by another major/minor skmat version.

    Examples
    --------
    See :func:`save`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    from skorch.history import History

    from skmat._training import resolve_device

    config, weights_path = read_model_config(path)
    estimator = _build_estimator(config.get("estimator"), "estimator", fitted=True)
    estimator.device_ = resolve_device(device if device is not None else estimator.device)
    net = _rebuild_net(estimator, estimator.device_)
    try:
        missing, unexpected = load_model(net.module_, str(weights_path), strict=False, device=estimator.device_)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"{weights_path}: weights do not fit the network ({exc})") from exc
    if missing or unexpected:
        raise ModelFileError(
            f"{weights_path}: weights do not fit the network (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    net.module_.eval()
    if isinstance(config.get("history"), list):
        net.history = History(config["history"])
    estimator.net_ = net
    return estimator
