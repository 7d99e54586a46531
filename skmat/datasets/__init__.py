"""Real materials datasets as scikit-learn style loaders.

Each ``fetch_*`` reads ``<data_home>/<dataset>/...`` (data home: ``data_home=``, else
``$SKMAT_DATA``, else ``~/skmat_data``) and returns a :class:`~sklearn.utils.Bunch` with
``frame``, ``data``, ``target``, ``feature_names``, ``target_names`` and ``DESCR``, or
``(X, y)`` with ``return_X_y=True``. X is a DataFrame with one column per view, indexed by the
material id. Only the CDVAE CSVs are downloadable (pinned commit, git blob id checked);
:func:`load_prototypes` needs no files at all.

Heavy libraries (pymatgen, scikit-learn, joblib) are imported when a loader runs.
"""

from skmat.datasets._amcsd import fetch_amcsd
from skmat.datasets._base import get_data_home
from skmat.datasets._cdvae import fetch_carbon24, fetch_mp20, fetch_perov5
from skmat.datasets._multimat import fetch_multimat_sample
from skmat.datasets._prototypes import load_prototypes
from skmat.datasets._rruff import fetch_rruff_xrd
from skmat.datasets._targets import TARGET_SHORTCUTS, crystal_system_from_spacegroup

__all__ = [
    "TARGET_SHORTCUTS",
    "crystal_system_from_spacegroup",
    "fetch_amcsd",
    "fetch_carbon24",
    "fetch_mp20",
    "fetch_multimat_sample",
    "fetch_perov5",
    "fetch_rruff_xrd",
    "get_data_home",
    "load_prototypes",
]
