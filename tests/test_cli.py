"""The ``skmat`` command line: help, info, embed (real CIFs, a saved model), benchmark, exit codes.

Most tests call :func:`skmat.cli.main` in-process (fast); one runs the installed module as a
subprocess to check the real entry point and exit status.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from _helpers import tiny_aligner
from skmat.cli import main

COMMANDS = ["demo", "info", "embed", "benchmark"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny structure + composition aligner trained one epoch on pymatgen's prototypes, saved."""
    from skmat.datasets import load_prototypes
    from skmat.persist import save

    frame = load_prototypes().frame
    frame = frame[frame["num_atoms"] <= 8].iloc[:32]
    aligner = tiny_aligner(("structure", "composition"), latent_dim=6).fit(frame[["structure"]])
    return save(aligner, tmp_path_factory.mktemp("model") / "aligner")


@pytest.fixture(scope="module")
def cif_folder(bundled_structures, tmp_path_factory):
    """pymatgen's bundled (ordered) structures written as CIF files, one per material."""
    from pymatgen.io.cif import CifWriter

    folder = tmp_path_factory.mktemp("cifs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CifWriter notes non-unique site labels
        for i, structure in enumerate(s for s in bundled_structures if s.is_ordered):
            CifWriter(structure).write_file(folder / f"{structure.composition.reduced_formula}_{i}.cif")
    return folder


def expected_embedding(model_folder, cif_paths) -> np.ndarray:
    from pymatgen.core import Structure

    from skmat.persist import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_file(p) for p in cif_paths]
    return load(model_folder).transform(pd.DataFrame({"structure": structures}))


# -- help and info ------------------------------------------------------------------------------
def test_top_level_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"usage: skmat {command}" in capsys.readouterr().out


def test_info_reports_versions_and_data_home(capsys):
    from skmat import __version__

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"skmat {__version__}" in out and "torch" in out and "data home:" in out


@pytest.mark.parametrize("argv", [[], ["bogus"], ["embed"], ["embed", "model"], ["demo", "--epochs", "many"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


# -- embed --------------------------------------------------------------------------------------
def test_embed_a_folder_of_cifs_to_csv(saved_model, cif_folder, tmp_path, capsys):
    out = tmp_path / "embeddings.csv"
    assert main(["embed", str(saved_model), str(cif_folder), "-o", str(out)]) == 0
    files = sorted(cif_folder.glob("*.cif"))
    table = pd.read_csv(out)
    assert list(table["material_id"]) == [p.stem for p in files]
    assert list(table.columns[1:]) == [f"latent{i}" for i in range(6)]
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), expected_embedding(saved_model, files), atol=1e-5)
    assert f"{len(files)} materials" in capsys.readouterr().err


def test_embed_one_cif_file_quietly(saved_model, cif_folder, tmp_path, capsys):
    one = sorted(cif_folder.glob("*.cif"))[0]
    out = tmp_path / "one.csv"
    assert main(["embed", str(saved_model), str(one), "-o", str(out), "--quiet"]) == 0
    table = pd.read_csv(out)
    assert list(table["material_id"]) == [one.stem]
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), expected_embedding(saved_model, [one]), atol=1e-5)
    assert capsys.readouterr().err == ""


def test_embed_a_csv_of_mp20_cifs_in_small_batches(saved_model, mp20_val_rows, tmp_path):
    rows = mp20_val_rows.iloc[:12][["material_id", "cif"]]
    rows.to_csv(tmp_path / "mp20.csv", index=False)
    out = tmp_path / "nested" / "mp20_embeddings.csv"
    assert main(["embed", str(saved_model), str(tmp_path / "mp20.csv"), "-o", str(out), "-q", "--batch-size", "5"]) == 0
    table = pd.read_csv(out)
    assert list(table["material_id"]) == list(rows["material_id"])
    from skmat.persist import load

    expected = load(saved_model).transform(mp20_val_rows.iloc[:12][["structure"]])
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), expected, atol=1e-5)


def test_embed_to_parquet_needs_pyarrow(saved_model, cif_folder, tmp_path, capsys):
    out = tmp_path / "embeddings.parquet"
    code = main(["embed", str(saved_model), str(cif_folder), "-o", str(out), "-q"])
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert code == 1 and not out.exists()
        assert "pyarrow" in capsys.readouterr().err
    else:
        assert code == 0
        assert len(pd.read_parquet(out)) == len(list(cif_folder.glob("*.cif")))


def test_embed_bad_paths_are_usage_errors(saved_model, cif_folder, tmp_path, capsys):
    out = str(tmp_path / "out.csv")
    assert main(["embed", str(saved_model), str(tmp_path / "absent.cif"), "-o", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["embed", str(saved_model), str(tmp_path / "empty"), "-o", out]) == 2
    assert "no .cif files" in capsys.readouterr().err
    pd.DataFrame({"structure": ["x"]}).to_csv(tmp_path / "nocif.csv", index=False)
    assert main(["embed", str(saved_model), str(tmp_path / "nocif.csv"), "-o", out]) == 2
    assert "no 'cif' column" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "no-model"), str(cif_folder), "-o", out]) == 2
    assert "MODEL" in capsys.readouterr().err
    assert main(["embed", str(saved_model), str(cif_folder), "-o", out, "--batch-size", "0"]) == 2


def test_embed_a_malformed_cif_fails_naming_the_file(saved_model, cif_folder, tmp_path, capsys, monkeypatch):
    import shutil

    folder = tmp_path / "cifs"
    shutil.copytree(cif_folder, folder)
    good = sorted(folder.glob("*.cif"))[0]
    (folder / "broken.cif").write_text(good.read_text()[:200])  # truncated mid-file
    out = tmp_path / "out.csv"
    assert main(["embed", str(saved_model), str(folder), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "broken" in err and "Traceback" not in err
    assert not out.exists()
    monkeypatch.setenv("SKMAT_DEBUG", "1")
    assert main(["embed", str(saved_model), str(folder), "-o", str(out), "-q"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_embed_refuses_a_model_folder_that_is_not_a_model(cif_folder, tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"format": "skmat-model"}')
    assert main(["embed", str(tmp_path / "model"), str(cif_folder), "-o", str(tmp_path / "o.csv")]) == 1
    assert "ModelFileError" in capsys.readouterr().err


# -- benchmark ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["no_such_benchmark", "../skmat/cli"])
def test_unknown_benchmark_is_a_usage_error(name, capsys):
    assert main(["benchmark", name]) == 2
    err = capsys.readouterr().err
    assert "no benchmark named" in err and "featurize" in err  # lists what exists


def test_benchmark_runs_the_script_with_its_arguments(capfd):
    assert main(["benchmark", "featurize", "--help"]) == 0
    assert "usage: featurize.py" in capfd.readouterr().out


# -- the real entry point -------------------------------------------------------------------------
def test_module_entry_point_exit_codes():
    ok = subprocess.run([sys.executable, "-m", "skmat.cli", "info"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "skmat" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "skmat.cli", "embed"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "usage:" in bad.stderr
