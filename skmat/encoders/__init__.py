"""scikit-learn faces of the single-view encoders (defined in :mod:`skmat.encoders._base` for
now; the next commit splits them into one module per view family)."""

from skmat.encoders._base import (
    ChargeDensityEncoder,
    CompositionEncoder,
    DOSEncoder,
    StructureEncoder,
    TextEncoder,
    XRDEncoder,
)

__all__ = [
    "StructureEncoder",
    "XRDEncoder",
    "CompositionEncoder",
    "DOSEncoder",
    "ChargeDensityEncoder",
    "TextEncoder",
]
