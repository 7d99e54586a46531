"""Pretrained models shipped with skmat, and ``identify``: what crystal is this pattern?

The models are ordinary fitted skmat estimators stored as safe model files (JSON +
safetensors, :mod:`skmat.persist`) inside the package, each with a model card (``card.json``
and ``CARD.md``: training data and rows, command, commit, seed, held-out metrics). They are
reproduced by ``python scripts/train_pretrained.py NAME`` of the source checkout.

* ``xrd-composition``: a :class:`~skmat.supervised.MultiModalClassifier` of the crystal system
  from a powder pattern and, when known, the composition, with the lattice as an auxiliary
  output (its ``predict_auxiliary``); :func:`load_refiner` wraps it in a
  :class:`~skmat.supervised.LatticeRefiner`, which refines that lattice against the pattern;
* ``structure-xrd-composition``: a :class:`~skmat.align.MultiModalAligner` of structure, XRD
  and composition, with the reference index that :func:`identify` searches.
"""

from __future__ import annotations

from skmat.pretrained._identify import (
    Identification,
    MeasuredPattern,
    identify,
    plot_identification,
    read_pattern,
)
from skmat.pretrained._index import ReferenceIndex
from skmat.pretrained._registry import UnknownModelError, list_models, load, load_index, load_refiner, model_card

__all__ = [
    "Identification",
    "MeasuredPattern",
    "ReferenceIndex",
    "UnknownModelError",
    "identify",
    "list_models",
    "load",
    "load_index",
    "load_refiner",
    "model_card",
    "plot_identification",
    "read_pattern",
]
