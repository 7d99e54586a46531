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


#: per-element volumes (Å³ per atom) fitted to a classifier's training structures, saved beside
#: its model files by scripts/train_pretrained.py
ELEMENT_VOLUMES_FILE = "element_volumes.json"


def load_refiner(name: str = "xrd-composition", *, device: str | None = "cpu", **params: Any) -> Any:
    """A pretrained classifier inside a :class:`~skmat.supervised.LatticeRefiner`, ready to predict.

    Its ``predict`` gives the scaled lattice (a, b, c) / N^(1/3) of each row refined against
    the row's pattern, under the crystal system the classifier predicts, from the
    classifier's own lattice (``predict_auxiliary``); rows that do not refine keep the
    classifier's lattice. The element volumes that count the atoms in a refined cell were
    fitted to the model's MP-20 training structures (an element they lack, to all its
    training structures) and ship with it.

    Parameters
    ----------
    name : str, default="xrd-composition"
        A pretrained classifier with a lattice output (see :func:`list_models`).
    device : str or None, default="cpu"
        As for :func:`load`.
    **params
        Other :class:`~skmat.supervised.LatticeRefiner` parameters (e.g. ``search_range``).

    Returns
    -------
    LatticeRefiner
        Fitted (``prefit=True``).

    Examples
    --------
    >>> from skmat.datasets import load_prototypes
    >>> refiner = load_refiner()
    >>> X = load_prototypes().frame.query("material_id == 'AB_cF8_225_a_b'")[["structure", "composition"]]
    >>> lattice = refiner.predict(X)   # rock salt: the refined cell from its simulated pattern
    >>> lattice.shape, refiner.n_refined_
    ((1, 3), 1)
    """
    return _refiner_of(model_path(name), device=device, **params)


def _refiner_of(folder: Path, *, device: str | None = "cpu", with_predictor: bool = True, **params: Any):
    from skmat.supervised import LatticeRefiner

    volumes_file = folder / ELEMENT_VOLUMES_FILE
    if not volumes_file.is_file():
        raise UnknownModelError(f"pretrained model {folder.name!r} ships no element volumes: it cannot refine lattices")
    volumes = json.loads(volumes_file.read_text(encoding="utf-8"))
    predictor = None
    if with_predictor:
        from skmat.persist import load as load_model

        predictor = load_model(folder, device=device)
    return LatticeRefiner(predictor, prefit=True, element_volumes=volumes, **params).fit()


def shared_refiner(name: str):
    """A predictor-less :class:`~skmat.supervised.LatticeRefiner` with the element volumes of
    *name*, once per process: :func:`~skmat.pretrained.identify` calls its ``refine`` with
    the crystal systems and lattices its own networks gave (loading the full estimator would
    cost seconds)."""
    return _refiner_cached(str(model_path(name)))


@lru_cache(maxsize=2)
def _refiner_cached(folder: str):
    return _refiner_of(Path(folder), with_predictor=False)


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
