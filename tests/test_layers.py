"""The layers import one way (DESIGN.md, "Layers"): ``skmat.nn`` is pure torch, and
``skmat.distributed`` builds on ``skmat._training``, never the reverse.

Lazy imports inside functions count too: a layer that reaches upwards only when a function runs
is still a circle, so the static checks read every import statement, at any depth.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SKMAT = Path(__file__).resolve().parents[1] / "skmat"


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in *path* names (absolute)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import; skmat imports absolutely"
            names.add(node.module)
    return names


def test_importing_skmat_nn_and_running_a_loss_does_not_import_skorch_or_sklearn(tmp_path):
    # a fresh process: the test session itself has imported everything long ago. A one-process
    # gloo group makes ContrastiveLoss.forward take its torch.distributed branch, whose gather
    # is imported lazily; that branch once reached skorch through skmat.distributed
    code = f"""
import pkgutil, importlib, sys
import torch, torch.distributed as dist
import skmat.nn
for info in pkgutil.iter_modules(skmat.nn.__path__):
    importlib.import_module("skmat.nn." + info.name)
dist.init_process_group("gloo", init_method={(tmp_path / "rendezvous").as_uri()!r}, rank=0, world_size=1)
try:
    from skmat.nn.losses import ContrastiveLoss
    z = {{"a": torch.randn(4, 3), "b": torch.randn(4, 3)}}
    loss = ContrastiveLoss("all_pairs", temperature=0.1)(z)
    assert torch.isfinite(loss), loss
    assert "skmat.nn.distributed" in sys.modules, "the distributed branch of the loss did not run"
finally:
    dist.destroy_process_group()
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"skorch", "sklearn", "accelerate"}}))
print(sorted(m for m in sys.modules if m.startswith("skmat.") and not m.startswith("skmat.nn")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    heavy, skmat_outside_nn = result.stdout.strip().splitlines()
    assert heavy == "[]", f"skmat.nn pulled in {heavy}"
    # torch layers may raise skmat's exceptions, nothing else from the layers above
    assert skmat_outside_nn == "['skmat._version', 'skmat.exceptions']"


@pytest.mark.parametrize("path", sorted((SKMAT / "nn").glob("*.py")), ids=lambda p: p.name)
def test_nn_modules_import_nothing_from_the_layers_above(path):
    allowed_skmat = {"skmat.nn", "skmat.exceptions"}
    for name in imported_modules(path):
        top = name.split(".")[0]
        assert top not in {"skorch", "sklearn", "accelerate", "pandas", "pymatgen"}, f"{path.name} imports {name}"
        if top == "skmat":
            assert any(name == a or name.startswith(a + ".") for a in allowed_skmat), f"{path.name} imports {name}"


def test_training_never_imports_distributed():
    # distributed imports _training; the reverse (even lazily, inside build_net) is the circle
    assert "skmat._training" in imported_modules(SKMAT / "distributed.py")
    assert not {m for m in imported_modules(SKMAT / "_training.py") if m.startswith("skmat.distributed")}
