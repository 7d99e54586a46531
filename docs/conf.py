"""Sphinx configuration of the skmat documentation.

Build (warnings are errors, as in CI through tests/test_docs.py)::

    python -m sphinx -W --keep-going -j 1 -b html docs /tmp/skmat-docs

The example gallery runs every script in ``examples/`` in its small setting
(``SKMAT_EXAMPLE_SMALL=1``), reading data from ``SKMAT_DATA`` (default: ``../shared/data``
beside the repository, as the test suite does).
"""

from __future__ import annotations

import os
from pathlib import Path

import skmat

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent

# The examples run inside this process (sphinx-gallery), so their settings are set here.
os.environ["SKMAT_EXAMPLE_SMALL"] = "1"
os.environ.setdefault("SKMAT_DATA", str((REPO.parent / "shared" / "data").resolve()))
os.environ.setdefault("MPLBACKEND", "Agg")

# The examples train tiny models, where a second intra-op thread costs more than it gives
# (the test suite does the same; measured 10-50x slower steps on 2 shared cores).
import torch  # noqa: E402  (the API pages import it anyway)

torch.set_num_threads(1)

project = "skmat"
author = "the skmat developers"
copyright = "the skmat developers"
version = release = skmat.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5"]

# -- API reference -----------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
# Examples import estimators from the top level (``from skmat import MultiModalAligner``), and the
# gallery records them under that name: each API page lists its examples under both names.
autosummary_context = {"top_level": dict(skmat._LAZY)}
# no "Bases:" line: the bases are private classes or scikit-learn/torch ones
autodoc_default_options = {"members": True}
autodoc_typehints = "none"  # numpydoc's Parameters sections already give the types in words
autodoc_member_order = "groupwise"
# scikit-learn convention: the class page lists its methods from the docstring sections
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()  # numpydoc's style checks are for a linter, not the build

# -- Markdown (the existing guide, scaling notes and results) ---------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# -- example gallery ---------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(REPO / "examples"),
    "gallery_dirs": "auto_examples",
    # run every script, not only plot_*.py: their printed results are part of the page
    "filename_pattern": r".*\.py",
    "download_all_examples": False,
    # "Examples using X" on every API page
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("skmat",),
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "abort_on_example_error": True,
    "plot_gallery": "True",
    "show_memory": False,
    "write_computation_times": False,
}

# -- cross references --------------------------------------------------------------------------
# Every cross-reference must resolve (a typo in :class:`...` fails the build), except those into
# libraries whose inventories CI cannot download (no intersphinx: the build is offline) and into
# skmat's private modules.
nitpicky = True
_THIRD_PARTY = r"(torch|torch_geometric|sklearn|skorch|numpy|np|scipy|pandas|pd|pymatgen|joblib|accelerate|matplotlib|safetensors|dask|sentence_transformers)"
nitpick_ignore_regex = [
    (r"py:.*", _THIRD_PARTY + r"(\..+)?"),
    (r"py:class", r"Module|Tensor|Structure|Composition|DataFrame|Series|Axes|ndarray"),
    (r"py:.*", r"skmat(\.\w+)*\._\w+(\..+)?"),  # private helpers and base classes
    (r"py:func", r"_\w+"),  # private helpers named in docstrings (skmat/nn/views.py: _wrap_pad)
    (r"py:obj", r"\[.*\]"),  # tensor shapes in the forward() docstrings inherited from PyG's SchNet, DimeNet++
]

# -- HTML --------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skmat {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []
html_show_sourcelink = False


def _skip_generated_sklearn_members(app, what, name, obj, skip, options):
    """Leave out the ``set_{method}_request`` methods scikit-learn generates on every estimator.

    Their docstrings link into scikit-learn's own glossary and user guide, which do not exist
    in this site; scikit-learn documents them (metadata routing).
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_generated_sklearn_members)
