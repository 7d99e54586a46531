"""Turn crystal structures into the views skmat learns from.
=========================================================

Powder XRD (same physics as pymatgen's XRDCalculator, vectorised), Magpie composition
statistics (same numbers as matminer's preset), and periodic neighbour graphs.

Run: python examples/featurize_structures.py
"""

import numpy as np

from skmat.datasets import load_prototypes
from skmat.features import CompositionFeatures, CrystalGraph, XRDPattern

structures = [s for s in load_prototypes().frame["structure"] if s.is_ordered]

patterns = XRDPattern(wavelength="CuKa", two_theta_range=(5, 90), n_bins=1701).fit_transform(structures)
magpie = CompositionFeatures().fit_transform(structures)
graphs = CrystalGraph(cutoff=6.0, max_neighbors=12).fit_transform(structures)

print(f"{len(structures)} structures")
print(f"XRD patterns      {patterns.shape}, brightest peak of the first at 2θ = "
      f"{np.linspace(5, 90, 1701)[patterns[0].argmax()]:.2f}°")
print(f"Magpie features   {magpie.shape}")
print(f"graphs            {graphs}")
