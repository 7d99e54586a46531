"""Error types raised by skmat.

Every error about what the user passed is an :class:`InvalidInputError`, a subclass of
``ValueError`` so that ``except ValueError`` (and scikit-learn's own error handling) catches it.
"""

from __future__ import annotations

from typing import Any


class SkmatError(Exception):
    """Base class of every error skmat raises on purpose."""


class InvalidInputError(SkmatError, ValueError):
    """Input that skmat cannot use, with the row and view that caused it.

    Parameters
    ----------
    message : str
        What is wrong.
    row : object, optional
        Label of the offending row (DataFrame index value or ``material_id``).
    view : str, optional
        Name of the view (column) the bad value is in.

    Examples
    --------
    >>> err = InvalidInputError("unknown element 'Xx'", row="mp-1", view="composition")
    >>> str(err)
    "row 'mp-1', view 'composition': unknown element 'Xx'"
    >>> isinstance(err, ValueError)
    True
    """

    def __init__(self, message: str, *, row: Any = None, view: str | None = None):
        self.row = row
        self.view = view
        self.reason = message
        where = []
        if row is not None:
            where.append(f"row {row!r}")
        if view is not None:
            where.append(f"view {view!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def __reduce__(self):
        # keep the keyword-only fields when the error crosses a joblib process boundary
        return (_rebuild_invalid_input, (self.reason, self.row, self.view))


def _rebuild_invalid_input(reason, row, view):
    return InvalidInputError(reason, row=row, view=view)


class DataNotFoundError(SkmatError, FileNotFoundError):
    """A dataset file is not in the data home and could not (or may not) be downloaded."""


class ChecksumError(SkmatError, OSError):
    """A downloaded file does not have the content hash pinned in skmat."""


class NonFiniteLossError(SkmatError, FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the epoch, the batch and
    the loss term (lower ``lr`` or set ``max_grad_norm``)."""
