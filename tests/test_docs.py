"""The documentation site builds with warnings as errors, and its key pages have their content.

One Sphinx build (API reference from the numpydoc docstrings, the Markdown guide, the example
gallery run in its small setting) into a temporary folder; the gallery and autosummary pages
it generates inside docs/ are git-ignored.
"""

import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def site(data_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    env = {**os.environ, "SKMAT_DATA": str(data_home), "SKMAT_EXAMPLE_SMALL": "1"}
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-j", "1", "-q", "-b", "html", str(REPO / "docs"), str(out)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, f"sphinx failed after {seconds:.0f} s:\n{result.stderr[-6000:]}"
    print(f"docs built in {seconds:.1f} s")
    return out


def test_api_page_lists_every_aligner_parameter(site):
    from skmat.align import MultiModalAligner

    page = (site / "generated" / "skmat.align.MultiModalAligner.html").read_text()
    # numpydoc renders each entry of a Parameters section as <strong>name</strong> + its type
    documented = set(re.findall(r'<dt><strong>(\w+)</strong><span class="classifier">', page))
    missing = set(inspect.signature(MultiModalAligner).parameters) - documented
    assert not missing, f"parameters missing from the API page: {sorted(missing)}"
    assert "Examples using" in page, "the aligner's page should link the gallery examples that use it"


def test_every_public_module_has_api_pages(site):
    for module in ["datasets", "features", "features.augment", "features.measured", "features.indexing",
                   "features.matching", "encoders", "align", "retrieval", "plotting", "inverse_design", "persist",
                   "distributed", "exceptions", "nn.losses", "nn.gnn", "nn.distributed"]:
        assert list((site / "generated").glob(f"skmat.{module}.*.html")), f"no API page for skmat.{module}"


def test_every_example_is_rendered_and_the_plotting_one_has_its_figure(site):
    for script in EXAMPLES:
        page = site / "auto_examples" / f"{script.stem}.html"
        assert page.is_file(), f"no gallery page for {script.name}"
        assert "sphx-glr-script-out" in page.read_text(), f"{script.name}: its printed output is not on the page"
    plotting = [s for s in EXAMPLES if "plt." in s.read_text() or "skmat.plotting" in s.read_text()]
    assert plotting, "at least one example should draw a figure"
    for script in plotting:
        page = (site / "auto_examples" / f"{script.stem}.html").read_text()
        images = re.findall(r'<img[^>]+src="([^"]*sphx_glr_[^"]+\.png)"', page)
        assert images, f"{script.name} draws but its page shows no figure"
        for src in images:
            image = (site / "auto_examples" / src).resolve()
            assert image.is_file() and image.stat().st_size > 1000, f"{script.name}: figure {src} is missing or empty"


def test_user_guide_and_markdown_pages_are_in_the_site(site):
    for name in ["user_guide", "scaling", "results", "api", "index"]:
        assert (site / f"{name}.html").is_file(), name
    guide = (site / "user_guide.html").read_text()
    for section in ["Missing views", "Fusion", "Choosing an encoder", "Scaling out"]:
        assert section in guide
    # results.md shows the benchmark figures
    assert list((site / "_images").glob("*.png"))
