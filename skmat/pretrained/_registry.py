"""The models shipped inside the package: names, model cards, loading."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from skmat.exceptions import SkmatError

MODELS_DIR = Path(__file__).resolve().parent / "models"


class UnknownModelError(SkmatError, KeyError):
    """A pretrained model name that is not shipped."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _models_dir() -> Path:
    # SKMAT_PRETRAINED_DIR points at another folder of model folders (a retrained set, tests)
    override = os.environ.get("SKMAT_PRETRAINED_DIR")
    return Path(override) if override else MODELS_DIR


def list_models() -> list[str]:
    """Names of the pretrained models shipped with skmat.

    Returns
    -------
    list of str
        Sorted names; each is a folder of ``skmat/pretrained/models`` with a model file and
        a model card.

    Examples
    --------
    >>> "xrd-composition" in list_models()
    True
    """
    folder = _models_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file() and (p / "card.json").is_file())


def model_path(name: str) -> Path:
    """Folder of the pretrained model *name*.

    Raises
    ------
    UnknownModelError
        When no model of that name is shipped (the message lists the available ones).
    """
    available = list_models()
    if not isinstance(name, str) or name not in available:
        raise UnknownModelError(
            f"no pretrained model named {name!r}; available: {', '.join(available) if available else 'none'}"
        )
    return _models_dir() / name


def model_card(name: str) -> dict:
    """The model card of *name*: training data and rows, command, commit, seed, held-out metrics.

    Examples
    --------
    >>> card = model_card("xrd-composition")
    >>> sorted(k for k in ("command", "commit", "seed", "held_out", "training_data") if k in card)
    ['command', 'commit', 'held_out', 'seed', 'training_data']
    """
    return json.loads((model_path(name) / "card.json").read_text(encoding="utf-8"))


def load(name: str, *, device: str | None = "cpu") -> Any:
    """A pretrained model: an ordinary fitted skmat estimator, read through :func:`skmat.persist.load`.

    Parameters
    ----------
    name : str
        One of :func:`list_models`.
    device : str or None, default="cpu"
        Torch device of the network (``None``: the model's own ``device`` setting).

    Returns
    -------
    estimator
        ``xrd-composition`` and ``xrd-only``: a fitted
        :class:`~skmat.supervised.MultiModalClassifier` (``predict``, ``predict_proba``,
        ``predict_auxiliary`` for the lattice); ``structure-xrd-composition``: a fitted
        :class:`~skmat.align.MultiModalAligner`. They transform, predict, go into a Pipeline,
        and save and load again like any skmat model.

    Raises
    ------
    UnknownModelError
        An unknown name (the message lists the available ones).
    skmat.persist.ModelFileError
        A model file written by another major/minor skmat version.

    Examples
    --------
    >>> from skmat.datasets import load_prototypes
    >>> clf = load("xrd-composition")
    >>> X = load_prototypes().frame[["structure", "composition"]][:3]
    >>> clf.predict_proba(X).shape == (3, len(clf.classes_))
    True
    """
    from skmat.persist import load as load_model

    return load_model(model_path(name), device=device)


def shared_network(name: str):
    """The model *name* read for prediction only (:class:`~skmat.pretrained._inference.InferenceModel`),
    once per process: what :func:`~skmat.pretrained.identify` runs, without the estimator's
    scikit-learn and skorch imports (see :mod:`skmat.pretrained._inference`)."""
    return _network_cached(str(model_path(name)))


@lru_cache(maxsize=8)
def _network_cached(folder: str):
    from skmat.pretrained._inference import InferenceModel

    return InferenceModel(folder)


def load_index(name: str = "structure-xrd-composition"):
    """The reference index shipped with the aligner *name* (see :class:`ReferenceIndex`)."""
    return _index_cached(str(model_path(name) / "index"))


@lru_cache(maxsize=2)
def _index_cached(folder: str):
    from skmat.pretrained._index import ReferenceIndex

    return ReferenceIndex.load(folder)
