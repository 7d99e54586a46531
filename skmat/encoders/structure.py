"""The crystal-structure view: :class:`StructureEncoder`, a periodic graph network (CGCNN,
SchNet or DimeNet++) over the graphs of :class:`~skmat.features.CrystalGraph`."""

from __future__ import annotations

from typing import Any

import numpy as np

from skmat._inputs import present_structures, row_labels
from skmat.encoders._base import _NeuralViewEncoder, _with_training_doc
from skmat.exceptions import InvalidInputError


@_with_training_doc(max_epochs=30)
class StructureEncoder(_NeuralViewEncoder):
    """Periodic graph neural network over the crystal structure.

    Parameters
    ----------
    architecture : {"cgcnn", "schnet", "dimenetpp"}, default="cgcnn"
        CGCNN is the fast CPU default; SchNet and DimeNet++ are PyG's models fed periodic
        edges.
    hidden_dim : int, default=64
        Width of the message-passing layers.
    n_layers : int, default=3
        Message-passing layers (interaction blocks).
    out_dim : int, default=128
        Size of the embedding.
    cutoff : float, default=6.0
        Neighbour cutoff radius in Å.
    max_neighbors : int, default=12
        Nearest neighbours kept per atom.
    view : str or None, default=None
        Column holding the structures; ``None`` means ``"structure"``.
    memory : None, str or joblib.Memory, default=None
        Cache for the neighbour lists.
%(training)s

    Examples
    --------
    >>> from skmat.datasets import load_prototypes
    >>> X, y = load_prototypes(return_X_y=True, target="a_scaled")
    >>> enc = StructureEncoder(max_epochs=1, random_state=0).fit(X[:32], y[:32])
    >>> enc.transform(X[:4]).shape
    (4, 128)
    """

    _default_view = "structure"

    def __init__(
        self,
        architecture: str = "cgcnn",
        hidden_dim: int = 64,
        n_layers: int = 3,
        out_dim: int = 128,
        cutoff: float = 6.0,
        max_neighbors: int = 12,
        view: str | None = None,
        memory=None,
        max_epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        validation_fraction: float = 0.1,
        patience: int = 5,
        max_grad_norm: float | None = None,
        device: str = "auto",
        accelerator: Any = None,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.architecture = architecture
        self.hidden_dim = hidden_dim
        self.n_layers = n_layers
        self.out_dim = out_dim
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.view = view
        self.memory = memory
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accelerator = accelerator
        self.random_state = random_state
        self.verbose = verbose

    def _prepare(self, frame, view, *, fit):
        from skmat._training import PreparedView
        from skmat.features.graph import CrystalGraph

        source = frame if view in ("structure", "cif") else frame.rename(columns={view: "structure"})
        present, structures = present_structures(source)
        labels = row_labels(frame)
        for row, structure in zip(np.flatnonzero(present), structures, strict=True):
            if not structure.is_ordered:
                raise InvalidInputError(
                    "structure has partially occupied (disordered) sites; a graph node needs one "
                    "element per site (order it first, e.g. with pymatgen's "
                    "OrderDisorderedStructureTransformation)",
                    row=labels[row],
                    view=view,
                )
        featurizer = CrystalGraph(
            cutoff=self.cutoff,
            max_neighbors=self.max_neighbors,
            triplets=False,
            memory=self.memory,
            verbose=self.verbose,
        )
        graphs = featurizer.fit_transform(structures) if structures else featurizer.fit([]).transform([])
        return PreparedView(graphs, present)

    def _make_module(self):
        from skmat.nn.gnn import make_structure_encoder

        depth = {"n_blocks" if str(self.architecture).lower() == "dimenetpp" else "n_layers": self.n_layers}
        return make_structure_encoder(
            self.architecture,
            hidden_dim=self.hidden_dim,
            out_dim=self.out_dim,
            cutoff=self.cutoff,
            # the model keeps the same neighbours the featurizer stored (ties included)
            max_neighbors=self.max_neighbors,
            **depth,
        )
