"""skmat: one embedding space for a material across its views.

Crystal structure, powder XRD, composition, density of states, charge density and text are
encoded by per-view networks, aligned with contrastive losses and fused, all behind
scikit-learn estimators.

Heavy dependencies (torch, torch-geometric, pymatgen) are imported on first use, so
``import skmat`` stays fast; the public names below resolve lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from skmat._version import __version__
from skmat.exceptions import InvalidInputError, SkmatError

# public name -> module that defines it; resolved on first attribute access (PEP 562)
_LAZY = {
    "MultiModalAligner": "skmat.align",
    "MultiModalRegressor": "skmat.supervised",
    "MultiModalClassifier": "skmat.supervised",
    "StructureEncoder": "skmat.encoders",
    "XRDEncoder": "skmat.encoders",
    "CompositionEncoder": "skmat.encoders",
    "DOSEncoder": "skmat.encoders",
    "ChargeDensityEncoder": "skmat.encoders",
    "TextEncoder": "skmat.encoders",
    "ImageEncoder": "skmat.encoders",
    "XRDPattern": "skmat.features",
    "CompositionFeatures": "skmat.features",
    "CrystalGraph": "skmat.features",
    # what crystal is this measured pattern? (the pretrained models)
    "identify": "skmat.pretrained",
}

__all__ = ["__version__", "InvalidInputError", "SkmatError", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in {"datasets", "features", "nn", "retrieval", "plotting", "persist", "supervised", "pretrained"}:
        return importlib.import_module(f"skmat.{name}")
    raise AttributeError(f"module 'skmat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
