"""Look at the views: XRD patterns and a map of composition features
==================================================================

The structures pymatgen ships (no data home needed) become simulated powder patterns and Magpie
composition statistics; :func:`skmat.plotting.plot_latent_map` projects the statistics to 2-D,
coloured by crystal system. The same functions draw aligned embeddings
(``aligner.transform(X)``) once a :class:`~skmat.align.MultiModalAligner` is fitted.

Run: python examples/plot_prototypes.py   (writes prototypes_views.png next to where it runs
unless SKMAT_EXAMPLE_SMALL=1)
"""

import os

import matplotlib

if "MPLBACKEND" not in os.environ and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # a headless machine (CI, a cluster node) has no screen to draw on
import matplotlib.pyplot as plt
import numpy as np

from skmat.datasets import load_prototypes
from skmat.features import CompositionFeatures, XRDPattern
from skmat.plotting import plot_latent_map

frame = load_prototypes().frame
frame = frame[[s.is_ordered for s in frame["structure"]]]

# %%
# Simulated powder patterns
# -------------------------
# Cu Kα, 2θ from 10° to 80° on 1401 bins; each pattern is scaled to a maximum of 1.
two_theta = np.linspace(10, 80, 1401)
xrd = XRDPattern(wavelength="CuKa", two_theta_range=(10, 80), n_bins=1401)
examples = frame.iloc[:4]
patterns = xrd.fit_transform(examples["structure"])

fig, ax = plt.subplots(figsize=(7, 4))
for offset, (pattern, structure) in enumerate(zip(patterns, examples["structure"])):
    ax.plot(two_theta, pattern + 1.1 * offset, lw=0.8, label=structure.composition.reduced_formula)
ax.set_xlabel("2θ (°)")
ax.set_ylabel("intensity (offset)")
ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
fig.tight_layout()
print(f"{len(patterns)} patterns of {patterns.shape[1]} bins; brightest peaks at 2θ = "
      + ", ".join(f"{two_theta[p.argmax()]:.1f}°" for p in patterns))

# %%
# A map of composition features
# -----------------------------
# 132 Magpie statistics per material, standardised, projected to two dimensions.
magpie = CompositionFeatures().fit_transform(frame["structure"])
usable = np.isfinite(magpie).all(axis=1)
features = magpie[usable]
features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-12)
ax = plot_latent_map(features, color=frame["crystal_system"].to_numpy()[usable].astype(str),
                     method="pca", label="crystal system")
ax.set_title("Magpie features of the pymatgen prototypes")
print(f"{int(usable.sum())} of {len(frame)} prototypes mapped from {magpie.shape[1]} Magpie features")

if os.environ.get("SKMAT_EXAMPLE_SMALL") != "1":
    ax.figure.savefig("prototypes_views.png", dpi=150)
