"""Physics featurizers: crystal structure -> arrays the encoders learn from.

* :class:`XRDPattern` — powder X-ray diffraction on a fixed 2θ grid.
* :class:`CompositionFeatures` — Magpie element-property statistics.
* :class:`CrystalGraph` — periodic neighbour graphs (:class:`CrystalGraphData`).
* :class:`StructureDescription` — English descriptions by robocrystallographer (the text view).
* :class:`DiffractionImage` — electron diffraction (SAED) spot patterns as images (the image view).

All are stateless scikit-learn transformers with ``n_jobs``, ``verbose`` and ``memory``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "XRDPattern": "skmat.features.xrd",
    "CompositionFeatures": "skmat.features.composition",
    "CrystalGraph": "skmat.features.graph",
    "CrystalGraphData": "skmat.features.graph",
    "StructureDescription": "skmat.features.text",
    "DiffractionImage": "skmat.features.saed",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skmat.features' has no attribute {name!r}")
