"""Encoders and aligners small enough to train in a blink, shared by the test modules.

One place for the sizes the tests train at, instead of a copy of the same factory in each
module. A test whose data depends on a size (the XRD bins of its patterns), or that must learn
something, passes that size; its training settings (epochs, batch size) it passes too.
Import with ``from _helpers import tiny_encoder`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from typing import Any

from skmat.align import MultiModalAligner
from skmat.datasets import load_prototypes
from skmat.encoders import (
    ChargeDensityEncoder,
    CompositionEncoder,
    DOSEncoder,
    ImageEncoder,
    StructureEncoder,
    TextEncoder,
    XRDEncoder,
)

#: view name -> (encoder class, the smallest sizes at which it still runs every code path)
TINY_ENCODERS: dict[str, tuple[type, dict[str, Any]]] = {
    "structure": (StructureEncoder, dict(hidden_dim=16, n_layers=1, max_neighbors=8)),
    "xrd": (XRDEncoder, dict(n_bins=128, channels=(4, 8))),
    "composition": (CompositionEncoder, dict(hidden_dims=(16,))),
    "dos": (DOSEncoder, dict(n_points=64)),
    "charge_density": (ChargeDensityEncoder, dict(channels=(4, 8))),
    "text": (TextEncoder, dict(hidden_dims=(16,))),
    "image": (ImageEncoder, dict(channels=(4, 8), size=16, pooled_size=2)),
}

#: an aligner's settings for one quick, reproducible epoch
TINY_ALIGNER = dict(latent_dim=8, max_epochs=1, batch_size=16, validation_fraction=0.0, random_state=0)


def tiny_encoder(kind: str, **params: Any):
    """The encoder of view *kind* at test size (an 8-dimensional embedding); *params* override
    or add any of its parameters (``set_params``, so a misspelt name fails)."""
    cls, sizes = TINY_ENCODERS[kind]
    return cls(out_dim=8, **sizes).set_params(**params)


def tiny_aligner(kinds=("structure", "xrd", "composition"), *, encoders=None, **params: Any) -> MultiModalAligner:
    """A :class:`MultiModalAligner` over tiny encoders of the views *kinds* (or over the given
    ``(name, encoder)`` list), with :data:`TINY_ALIGNER` settings that *params* override."""
    if encoders is None:
        encoders = [(kind, tiny_encoder(kind)) for kind in kinds]
    return MultiModalAligner(encoders=encoders, **{**TINY_ALIGNER, **params})


def prototype_crystals(n: int) -> tuple:
    """*n* real crystals of at most 8 sites (every third of pymatgen's AFLOW prototypes, offline):
    ``(X, a_scaled, crystal_system)``, X a one-column ``structure`` frame indexed by
    ``material_id``, with a float and a label target."""
    frame = load_prototypes().frame.set_index("material_id")
    frame = frame[frame["num_atoms"] <= 8].iloc[::3].iloc[:n]
    return frame[["structure"]], frame["a_scaled"].to_numpy(), frame["crystal_system"].to_numpy()


def amcsd_subset(path, ids) -> None:
    """Write at *path* a copy of larixite's bundled AMCSD holding only the entries *ids*.

    Real rows, with the others deleted around them: the loader's full first pass over 9,275
    entries takes minutes, a few dozen take seconds.
    """
    import shutil
    import sqlite3

    from skmat.datasets._amcsd import bundled_database

    shutil.copy(bundled_database(), path)
    keep = ",".join(str(int(i)) for i in ids)
    with sqlite3.connect(path) as connection:
        connection.execute(f"DELETE FROM cif WHERE id NOT IN ({keep})")
        connection.execute(f"DELETE FROM cif_elements WHERE CAST(cif_id AS INTEGER) NOT IN ({keep})")
    with sqlite3.connect(path) as connection:
        connection.execute("VACUUM")
