"""The text view: :class:`TextEncoder`, an MLP over precomputed text embeddings or over raw
strings embedded with sentence-transformers."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from skmat._inputs import check_texts, row_labels
from skmat.encoders._base import _NeuralViewEncoder, _with_training_doc
from skmat.exceptions import InvalidInputError


@functools.lru_cache(maxsize=2)
def _sentence_embedder(model_name: str):
    """One loaded sentence-transformers model per name and process: loading takes ~1 s, and
    fit, transform and predict each embed their strings."""
    from skmat.nn.views import SentenceEmbedder

    return SentenceEmbedder(model_name)


@_with_training_doc(max_epochs=30)
class TextEncoder(_NeuralViewEncoder):
    """MLP over text embeddings (precomputed vectors, e.g. MatBERT, or raw text embedded with
    sentence-transformers when it is installed).

    Parameters
    ----------
    hidden_dims : tuple of int, default=(256,)
        Hidden layer widths.
    out_dim : int, default=128
        Size of the embedding.
    sentence_model : str, default="all-MiniLM-L6-v2"
        sentence-transformers model used for cells holding raw strings.
    view : str or None, default=None
        Column of embeddings or strings; ``None`` means ``"text"``.
%(training)s

    Examples
    --------
    Raw strings are embedded with the sentence model (384-d for MiniLM), then encoded:

    >>> import pandas as pd
    >>> X = pd.DataFrame({"text": ["NaCl adopts the cubic rock-salt structure.",
    ...                            "Silicon crystallizes in the diamond structure.",
    ...                            "ZnO is a wide-gap semiconductor with the wurtzite structure.",
    ...                            "Copper is a face-centred cubic metal."]})
    >>> band_gap = [8.5, 1.12, 3.37, 0.0]  # eV
    >>> enc = TextEncoder(out_dim=16, max_epochs=2, validation_fraction=0, random_state=0).fit(X, band_gap)
    >>> enc.embedding_dim_, enc.transform(X).shape
    (384, (4, 16))
    """

    _default_view = "text"

    def __init__(
        self,
        hidden_dims: tuple[int, ...] = (256,),
        out_dim: int = 128,
        sentence_model: str = "all-MiniLM-L6-v2",
        view: str | None = None,
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
        self.hidden_dims = hidden_dims
        self.out_dim = out_dim
        self.sentence_model = sentence_model
        self.view = view
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

        if view in frame.columns and any(isinstance(v, str) for v in frame[view]):
            strings = [v if isinstance(v, str) else None for v in frame[view]]
            # a sentence model embeds "" as readily as a description: refuse it, naming the row
            check_texts(strings, row_labels(frame), view=view)
            rows = [i for i, s in enumerate(strings) if s is not None]
            embedded = _sentence_embedder(self.sentence_model).encode([strings[i] for i in rows])
            cells = list(frame[view])
            for i, e in zip(rows, embedded, strict=True):
                cells[i] = e
            frame = frame.assign(**{view: cells})
        dim = None if fit else self.embedding_dim_
        present, arrays = self._array_cells(frame, view, lambda a: None if dim is None else (dim,))
        for label, array in zip([row_labels(frame)[i] for i in np.flatnonzero(present)], arrays, strict=True):
            if array.ndim != 1:
                raise InvalidInputError(
                    f"a text cell must be a string or a 1-D embedding, got shape {array.shape}", row=label, view=view
                )
        if fit:
            if not arrays:
                raise InvalidInputError("no row has a text embedding", view=view)
            self.embedding_dim_ = arrays[0].shape[0]
            present, arrays = self._array_cells(frame, view, lambda a: (self.embedding_dim_,))
        values = np.stack(arrays) if arrays else np.zeros((0, self.embedding_dim_), dtype=np.float32)
        return PreparedView(values.astype(np.float32), present)

    def _make_module(self):
        from skmat.nn.views import MLPEncoder

        return MLPEncoder(self.embedding_dim_, out_dim=self.out_dim, hidden_dims=tuple(self.hidden_dims))
