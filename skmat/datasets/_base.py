"""Data home, verified downloads and the Bunch every loader returns.

Conventions follow ``sklearn.datasets._base``: a data home resolved from an argument, an
environment variable or a default folder; remote files pinned by content hash and written
atomically (temporary file in the target folder, then :func:`os.replace`), so an interrupted
or corrupted download never leaves a file that a later call would trust.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from skmat.datasets._targets import resolve_target
from skmat.exceptions import ChecksumError, DataNotFoundError

DATA_HOME_ENV = "SKMAT_DATA"
DEFAULT_DATA_HOME = Path("~") / "skmat_data"


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """Folder that holds skmat's datasets.

    Resolved in this order: the *data_home* argument, the ``SKMAT_DATA`` environment
    variable, ``~/skmat_data``. ``~`` is expanded. Unlike scikit-learn, the folder is not
    created here: a data home may be a read-only shared folder, and it is only created when a
    download writes into it.

    Parameters
    ----------
    data_home : str or path-like, optional
        Explicit folder; wins over the environment variable.

    Returns
    -------
    Path

    Examples
    --------
    >>> get_data_home("/tmp/my_data").as_posix()
    '/tmp/my_data'
    """
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_ENV) or DEFAULT_DATA_HOME
    return Path(data_home).expanduser()


class RemoteFile(NamedTuple):
    """A downloadable file: where it goes (relative to the data home), its URL and git blob id."""

    relative_path: str
    url: str
    blob_sha1: str


def git_blob_sha1(data: bytes) -> str:
    """Git's object id of *data* (SHA-1 of ``b"blob <size>\\0" + data``).

    GitHub serves raw files byte for byte, so this is the id a commit pins them with.

    Examples
    --------
    >>> git_blob_sha1(b"")
    'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'
    """
    digest = hashlib.sha1(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest()


def download(remote: RemoteFile, data_home: Path, *, timeout: float = 60.0) -> Path:
    """Download *remote* into *data_home*, check its blob id, and move it in place atomically.

    Raises :class:`~skmat.exceptions.DataNotFoundError` when the server cannot deliver the
    file (HTTP error, no network) or the data home is not writable, and
    :class:`~skmat.exceptions.ChecksumError` when the bytes differ from the pinned id. In
    every failure the temporary file is removed, so nothing half-written stays behind.
    """
    destination = data_home / remote.relative_path
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        # unique name in the destination folder: same filesystem, so os.replace is atomic,
        # and two processes downloading at once do not write into each other's file
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    except OSError as exc:
        raise DataNotFoundError(
            f"{destination} is missing and cannot be downloaded into the data home ({exc}). "
            f"Download {remote.url} yourself, or pass data_home= (or set {DATA_HOME_ENV}) to a "
            "writable folder."
        ) from exc
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(remote.url, timeout=timeout) as response:
                    data = response.read()
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else str(exc)
                raise DataNotFoundError(
                    f"could not download {remote.url} ({reason}); {destination} was not written. "
                    f"Put the file there by hand or set {DATA_HOME_ENV} to a folder holding it."
                ) from exc
            found = git_blob_sha1(data)
            if found != remote.blob_sha1:
                raise ChecksumError(
                    f"{remote.url} has git blob id {found}, expected {remote.blob_sha1}: the "
                    "download is corrupted or the file changed upstream; nothing was written."
                )
            out.write(data)
        os.replace(temporary, destination)
    except BaseException:
        # also on KeyboardInterrupt: a .part file must never survive a failed download
        Path(temporary).unlink(missing_ok=True)
        raise
    return destination


def find_local(data_home: Path, relative_paths: Sequence[str]) -> Path | None:
    """First of *relative_paths* that exists under *data_home*, else ``None``."""
    for relative in relative_paths:
        candidate = data_home / relative
        if candidate.is_file():
            return candidate
    return None


def missing_file_error(data_home: Path, relative_paths: Sequence[str], source: str) -> DataNotFoundError:
    """The error raised when a dataset file is absent and will not be downloaded."""
    looked = ", ".join(str(data_home / p) for p in relative_paths)
    return DataNotFoundError(
        f"{relative_paths[0]} not found in the data home {data_home} (looked for {looked}). "
        f"{source} Put the file at {data_home / relative_paths[0]}, or pass data_home= / set "
        f"{DATA_HOME_ENV} to a folder that holds it."
    )


def dataset_bunch(
    frame: pd.DataFrame,
    *,
    id_column: str,
    feature_names: list[str],
    target: str | Sequence[str],
    descr: str,
    return_X_y: bool,
):
    """``(X, y)`` or a :class:`~sklearn.utils.Bunch`, indexed by *id_column* like sklearn's loaders.

    X holds the view columns, y the resolved target; both are indexed by the material id, so
    errors raised further down a pipeline name the material. The Bunch's ``frame`` keeps a
    plain range index with the id as a column.
    """
    from sklearn.utils import Bunch

    target_columns = resolve_target(target, list(frame.columns))
    index = pd.Index(frame[id_column], name=id_column)
    X = frame[feature_names].set_axis(index, axis=0)
    y = frame[target_columns].set_axis(index, axis=0)
    if return_X_y:
        return X, y
    target_names = [target_columns] if isinstance(target_columns, str) else list(target_columns)
    return Bunch(
        frame=frame,
        data=X,
        target=y,
        feature_names=list(feature_names),
        target_names=target_names,
        DESCR=descr,
    )
