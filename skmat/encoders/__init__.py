"""scikit-learn faces of the single-view encoders, one module per view family.

Each encoder is a full estimator on its own — ``fit(X, y)`` trains the network and an MLP head
on a supervised target (regression or classification, inferred from ``y``), then ``predict``,
``score`` and ``transform`` (the learned embedding) — and, inside
:class:`~skmat.align.MultiModalAligner`, it supplies the network and the data preparation for
its view. Views that can be derived from a crystal structure (graph, XRD pattern, composition)
are computed from the ``structure`` column when their own column is absent.

One module per view family, so a view's code is found by its name:

* ``structure.py`` — :class:`StructureEncoder` (periodic graph networks);
* ``xrd.py`` — :class:`XRDEncoder` (1-D CNN over powder patterns) and its training-time
  augmentation;
* ``composition.py`` — :class:`CompositionEncoder` (MLP over Magpie statistics);
* ``spectra.py`` — :class:`DOSEncoder` and :class:`ChargeDensityEncoder` (DFT outputs);
* ``text.py`` — :class:`TextEncoder`;
* ``image.py`` — :class:`ImageEncoder` (2-D CNN over images, e.g. SAED patterns);
* ``_base.py`` — what they all share (estimator API, supervised training, aligner hooks).

A new view family gets its own module here, re-exported below and listed in ``__all__``. Import
the encoders from ``skmat.encoders`` (or ``skmat``): that is the path the documentation and
model files (:mod:`skmat.persist`) name, whichever module defines the class.
"""

from skmat.encoders.composition import CompositionEncoder
from skmat.encoders.image import ImageEncoder
from skmat.encoders.spectra import ChargeDensityEncoder, DOSEncoder
from skmat.encoders.structure import StructureEncoder
from skmat.encoders.text import TextEncoder
from skmat.encoders.xrd import XRDEncoder

__all__ = [
    "StructureEncoder",
    "XRDEncoder",
    "CompositionEncoder",
    "DOSEncoder",
    "ChargeDensityEncoder",
    "TextEncoder",
    "ImageEncoder",
]
