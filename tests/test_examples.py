"""Every example script runs (in its small setting) and prints what it promises."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script, data_home):
    env = {**os.environ, "SKMAT_EXAMPLE_SMALL": "1", "SKMAT_DATA": str(data_home)}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "an example should print its result"
    assert "nan" not in result.stdout.lower()


def test_there_are_examples():
    assert len(EXAMPLES) >= 2
