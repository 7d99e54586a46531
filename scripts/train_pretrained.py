"""Train one of skmat's pretrained models and write it, with its model card, into the package.

Every model shipped in ``skmat/pretrained/models/NAME/`` is reproduced by one command::

    python scripts/train_pretrained.py xrd-composition            # the crystal-system classifier
    python scripts/train_pretrained.py structure-xrd-composition  # the aligner + reference index
    python scripts/train_pretrained.py all                        # both shipped models, index, RRUFF score
    python scripts/train_pretrained.py all --quick                # small subsets, 1 epoch: a placeholder

The recipe (data, networks, augmentation, training) is the dict :data:`RECIPE` below; change it
there, not in the code. ``--quick`` applies :data:`QUICK` on top and marks the card as a
placeholder. Training data: MP-20 ``val`` (80 %: the first 20 % of
``default_rng(seed).permutation`` is held out, as in ``benchmarks/unimat.py``) and the AMCSD
minerals that ``larixite`` ships (``skmat.datasets.fetch_amcsd``; a seeded share of the mineral
*phases* is held out for the card unless ``amcsd_holdout`` is 0), plus, for the classifier,
``triclinic_variants`` triclinic variants of monoclinic/orthorhombic training rows
(:mod:`skmat.features.distortion`). No test split of any dataset
is read, and no RRUFF data is written (the measured RRUFF patterns of the data home are only
*scored*, with ``--measured``).

Model folders are :func:`skmat.persist.save` folders plus ``card.json`` and ``CARD.md``.
The aligner's folder also holds the reference index (``index/``: ids, formulas, space groups,
float16 embeddings and peak lists of MP-20 val, the AMCSD minerals and pymatgen's prototypes).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("SPGLIB_WARNING", "OFF")  # C-level notices for near-symmetric cells

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's skmat, whatever is installed

MODELS_DIR = REPO / "skmat" / "pretrained" / "models"

#: The whole recipe. ``xrd``/``composition``/``structure`` are encoder parameters, ``augment``
#: the XRDAugmenter parameters of the training draws, ``classifier``/``aligner`` the training.
RECIPE: dict = {
    "seed": 0,
    "threads": 1,
    "data": {
        "mp20": True,  # MP-20 val, 80 % (20 % held out for the card)
        "amcsd": True,  # AMCSD minerals (larixite)
        "amcsd_holdout": 0.1,  # share of mineral phases held out for the card (0: train on all)
        "n_mp20": None,  # subsample the training rows (None: all)
        "n_amcsd": None,
        "n_eval": None,  # subsample the held-out rows scored on the card
        # triclinic variants of this many monoclinic/orthorhombic training structures
        # (skmat.features.distortion: the minerals hold few triclinic crystals, measured sets many)
        "triclinic_variants": 500,
    },
    # √I: better transfer to measured patterns (benchmarks/measured_xrd.py, docs/results.md);
    # augment_fraction: share of each batch augmented, unless the model's own entry says otherwise
    "xrd": {"n_bins": 1701, "channels": (16, 32, 64, 64, 128, 128), "out_dim": 128, "intensity_scale": "sqrt",
            "augment_fraction": 1.0},
    "composition": {"hidden_dims": (256, 256), "out_dim": 128},
    "structure": {"architecture": "cgcnn", "hidden_dim": 64, "n_layers": 3, "out_dim": 128},
    # XRDAugmenter parameters ({} = its defaults: noise, background, zero shift, broadening, ...)
    "augment": {},
    "classifier": {
        "latent_dim": 128,
        "contrastive_weight": 0.1,
        "hidden_dim": 256,
        # XRD + composition model: a view is dropped from a training row with this probability,
        # so the one model also predicts from the XRD pattern alone (identify without a formula);
        # 0.3 rather than 0.5 leaves more rows that learn from both views together
        "view_dropout": 0.3,
        # half of each batch clean, half augmented, for 30 epochs. All augmented for 20 epochs
        # gave 75.0 % on clean held-out MP-20 and 72.8 % identify on the measured RRUFF
        # patterns; this, 84.9 % and 70.8 % (docs/results.md, "Pretrained models")
        "augment_fraction": 0.5,
        "max_epochs": 30,
        "batch_size": 64,
        "lr": 1e-3,
        "patience": 0,  # XRD classifiers stop too early on validation loss (DESIGN.md)
    },
    "aligner": {
        "latent_dim": 128,
        "temperature": 0.07,
        "view_dropout": 0.0,
        "max_epochs": 20,
        "batch_size": 64,
        "lr": 1e-3,
        "patience": 0,
    },
    # the reference index: strongest simulated peaks stored per reference; retrieval scored on
    # augmented patterns of this many index members (written to the aligner's card)
    "index": {"n_peaks": 40, "n_queries": 500},
}

#: ``--quick``: a development placeholder (minutes on 2 cores), never a model to trust
QUICK: dict = {
    "data": {"n_mp20": 600, "n_amcsd": 400, "n_eval": 300, "triclinic_variants": 30},
    "classifier": {"max_epochs": 2},
    "aligner": {"max_epochs": 2},
    "index": {"n_queries": 300},
}

MODELS = {
    "xrd-composition": "Crystal system (7 classes) from a powder XRD pattern and, when known, the "
    "composition; lattice lengths as an auxiliary output. Trained with view dropout, so the XRD "
    "pattern alone also predicts.",
    "xrd-only": "Crystal system (7 classes) and lattice from a powder XRD pattern alone (a "
    "comparison model, not shipped: identify uses xrd-composition with the composition view "
    "missing; train it with --out elsewhere to compare).",
    "structure-xrd-composition": "Structure + XRD + composition aligner (all-pairs CLIP): one "
    "embedding space for search; holds the reference index that identify searches.",
}

LATTICE_TARGETS = ["a_scaled", "b_scaled", "c_scaled", "a", "b", "c", "alpha", "beta", "gamma"]


# -- recipe ------------------------------------------------------------------------------------
def merged(recipe: dict, overrides: dict) -> dict:
    out = copy.deepcopy(recipe)
    for key, value in overrides.items():
        if isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def _commit() -> dict:
    def git(*command):
        try:
            done = subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True, timeout=30)
            return done.stdout.strip() if done.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"head": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


# -- data ----------------------------------------------------------------------------------------
def lattice_targets(structures) -> np.ndarray:
    """MP-20's lattice numbers of any structure: (a, b, c)/N^(1/3), (a, b, c), angles of the
    Niggli-reduced primitive cell (MP-20's cell as given is exactly that cell, DESIGN.md), so
    mineral rows (conventional CIF cells) carry the same target as MP-20 rows."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    rows = []
    for structure in structures:
        try:
            primitive = SpacegroupAnalyzer(structure, symprec=0.1).find_primitive() or structure
        except Exception:  # spglib gives up on a few disordered cells: keep the cell as given
            primitive = structure
        lattice = primitive.lattice.get_niggli_reduced_lattice()
        a, b, c = lattice.abc
        n = len(primitive)
        rows.append([a / n ** (1 / 3), b / n ** (1 / 3), c / n ** (1 / 3), a, b, c, *lattice.angles])
    return np.asarray(rows, dtype=float)


def load_frames(recipe: dict, data_home: Path, log) -> dict:
    """Training and held-out frames (one row per material, the views' raw cells + targets)."""
    import pandas as pd

    from skmat.datasets import fetch_amcsd, fetch_mp20

    data, seed = recipe["data"], recipe["seed"]
    rng = np.random.default_rng(seed)
    parts, held = [], {}
    sources = {}
    if data["mp20"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mp = fetch_mp20(split="val", data_home=data_home).frame
        order = np.random.default_rng(seed).permutation(len(mp))  # benchmarks/unimat.py's split
        n_test = int(round(0.2 * len(mp)))
        train, test = mp.iloc[order[n_test:]], mp.iloc[order[:n_test]]
        if data["n_mp20"] is not None and data["n_mp20"] < len(train):
            train = train.iloc[np.sort(rng.choice(len(train), data["n_mp20"], replace=False))]
        frame = pd.DataFrame(
            {
                "material_id": train["material_id"].astype(str).to_numpy(),
                "structure": train["structure"].to_numpy(),
                "composition": train["composition"].to_numpy(),
                "crystal_system": train["crystal_system"].astype(str).to_numpy(),
                "source": "mp20",
            }
        )
        frame[LATTICE_TARGETS] = train[LATTICE_TARGETS].to_numpy(dtype=float)
        parts.append(frame)
        held["mp20"] = test
        sources["mp20"] = {"rows": len(train), "of": len(mp), "split": "MP-20 val, 80 % (seeded permutation)"}
        log(f"MP-20 val: {len(train)} training rows, {len(test)} held out")
    if data["amcsd"]:
        minerals = fetch_amcsd(data_home=data_home).frame
        phases = minerals["phase"].fillna(minerals["mineral"]).astype(str).to_numpy()
        unique = np.unique(phases)
        n_out = int(round(data["amcsd_holdout"] * len(unique)))
        out = set(np.random.default_rng(seed + 1).permutation(unique)[:n_out].tolist())
        test_mask = np.array([p in out for p in phases])
        train, test = minerals[~test_mask], minerals[test_mask]
        if data["n_amcsd"] is not None and data["n_amcsd"] < len(train):
            train = train.iloc[np.sort(rng.choice(len(train), data["n_amcsd"], replace=False))]
        frame = pd.DataFrame(
            {
                "material_id": ("amcsd-" + train["amcsd_id"].astype(str)).to_numpy(),
                "structure": train["structure"].to_numpy(),
                "composition": [s.composition for s in train["structure"]],
                "crystal_system": train["crystal_system"].astype(str).to_numpy(),
                "source": "amcsd",
            }
        )
        start = time.perf_counter()
        frame[LATTICE_TARGETS] = lattice_targets(train["structure"])
        log(f"AMCSD: {len(train)} training rows ({len(unique) - n_out} phases), {len(test)} held out "
            f"({n_out} phases); lattice targets in {time.perf_counter() - start:.0f} s")
        parts.append(frame)
        if len(test):
            held["amcsd"] = test
        sources["amcsd"] = {
            "rows": len(train),
            "of": len(minerals),
            "split": f"AMCSD (larixite), {100 * (1 - data['amcsd_holdout']):.0f} % of mineral phases",
        }
    if not parts:
        raise SystemExit("the recipe trains on no data (data.mp20 and data.amcsd are both off)")
    train = pd.concat(parts, ignore_index=True)
    if data.get("triclinic_variants"):
        train = pd.concat([train, triclinic_rows(train, data["triclinic_variants"], seed, log)], ignore_index=True)
        sources["triclinic_variants"] = {
            "rows": int((train["source"] == "triclinic_variants").sum()),
            "of": int(data["triclinic_variants"]),
            "split": "triclinic variants of monoclinic/orthorhombic training rows (skmat.features.distortion)",
        }
    return {"train": train, "held_out": held, "sources": sources}


def triclinic_rows(train, n: int, seed: int, log):
    """Training rows of triclinic variants of *n* monoclinic/orthorhombic training structures."""
    import pandas as pd

    from skmat.features.distortion import triclinic_distortion

    start = time.perf_counter()
    parents = np.flatnonzero(train["crystal_system"].isin(["monoclinic", "orthorhombic"]).to_numpy())
    rng = np.random.default_rng(seed + 7)
    chosen = np.sort(rng.choice(parents, min(n, len(parents)), replace=False))
    made = [(i, triclinic_distortion(train["structure"].iloc[i], rng)) for i in chosen]
    made = [(i, s) for i, s in made if s is not None]
    frame = pd.DataFrame(
        {
            "material_id": [f"{train['material_id'].iloc[i]}-triclinic" for i, _ in made],
            "structure": [s for _, s in made],
            "composition": [s.composition for _, s in made],
            "crystal_system": "triclinic",
            "source": "triclinic_variants",
        }
    )
    frame[LATTICE_TARGETS] = lattice_targets(frame["structure"])
    log(f"triclinic variants: {len(frame)} of {len(chosen)} drawn in {time.perf_counter() - start:.0f} s")
    return frame


def held_out_frame(frame, source: str, n_eval, seed: int):
    """A held-out frame in the training frame's layout (subsampled to *n_eval*)."""
    import pandas as pd

    if n_eval is not None and n_eval < len(frame):
        frame = frame.iloc[np.sort(np.random.default_rng(seed + 2).choice(len(frame), n_eval, replace=False))]
    if source == "mp20":
        out = pd.DataFrame(
            {
                "material_id": frame["material_id"].astype(str).to_numpy(),
                "structure": frame["structure"].to_numpy(),
                "composition": frame["composition"].to_numpy(),
                "crystal_system": frame["crystal_system"].astype(str).to_numpy(),
            }
        )
        out[LATTICE_TARGETS] = frame[LATTICE_TARGETS].to_numpy(dtype=float)
    else:
        out = pd.DataFrame(
            {
                "material_id": ("amcsd-" + frame["amcsd_id"].astype(str)).to_numpy(),
                "structure": frame["structure"].to_numpy(),
                "composition": [s.composition for s in frame["structure"]],
                "crystal_system": frame["crystal_system"].astype(str).to_numpy(),
            }
        )
        out[LATTICE_TARGETS] = lattice_targets(frame["structure"])
    return out


# -- models -------------------------------------------------------------------------------------
def make_encoders(views, recipe: dict, training: dict):
    from skmat.encoders import CompositionEncoder, StructureEncoder, XRDEncoder
    from skmat.features.augment import XRDAugmenter

    common = {k: training[k] for k in ("max_epochs", "batch_size", "lr", "patience")}
    common.update(random_state=recipe["seed"], validation_fraction=0.1 if training["patience"] else 0.0)
    made = []
    for view in views:
        if view == "xrd":
            settings = {**recipe["xrd"], "channels": tuple(recipe["xrd"]["channels"]),
                        "augment_fraction": training.get("augment_fraction", recipe["xrd"]["augment_fraction"])}
            encoder = XRDEncoder(augment=XRDAugmenter(**recipe["augment"]), **settings, **common)
        elif view == "composition":
            settings = {**recipe["composition"], "hidden_dims": tuple(recipe["composition"]["hidden_dims"])}
            encoder = CompositionEncoder(**settings, **common)
        else:
            encoder = StructureEncoder(**recipe["structure"], **common)
        made.append((view, encoder))
    return made


def make_model(name: str, recipe: dict, verbose: int):
    from skmat.align import MultiModalAligner
    from skmat.supervised import MultiModalClassifier

    seed = recipe["seed"]
    if name in ("xrd-composition", "xrd-only"):
        training = recipe["classifier"]
        views = ("xrd", "composition") if name == "xrd-composition" else ("xrd",)
        aligner = MultiModalAligner(
            encoders=make_encoders(views, recipe, training),
            loss="clip",
            latent_dim=training["latent_dim"],
            fusion="concat",
            view_dropout=training["view_dropout"] if len(views) > 1 else 0.0,
            random_state=seed,
        )
        return MultiModalClassifier(
            aligner,
            contrastive_weight=training["contrastive_weight"] if len(views) > 1 else 0.0,
            hidden_dim=training["hidden_dim"],
            max_epochs=training["max_epochs"],
            batch_size=training["batch_size"],
            lr=training["lr"],
            patience=training["patience"],
            validation_fraction=0.1 if training["patience"] else 0.0,
            device="cpu",
            random_state=seed,
            verbose=verbose,
        )
    training = recipe["aligner"]
    return MultiModalAligner(
        encoders=make_encoders(("structure", "xrd", "composition"), recipe, training),
        loss="all_pairs",
        latent_dim=training["latent_dim"],
        temperature=training["temperature"],
        view_dropout=training["view_dropout"],
        max_epochs=training["max_epochs"],
        batch_size=training["batch_size"],
        lr=training["lr"],
        patience=training["patience"],
        validation_fraction=0.1 if training["patience"] else 0.0,
        device="cpu",
        random_state=seed,
        verbose=verbose,
    )


def ordered_rows(frame):
    """Rows whose structure has one element per site (the crystal graph needs that)."""
    keep = np.array([s.is_ordered for s in frame["structure"]])
    return frame[keep].reset_index(drop=True)


# -- held-out metrics ------------------------------------------------------------------------------
def augmented_views(frame, recipe: dict, seed: int):
    """The held-out rows with one measurement-like pattern each (XRDAugmenter, seeded)."""
    from skmat.features.augment import XRDAugmenter

    grid = {"n_bins": recipe["xrd"]["n_bins"]}
    patterns = XRDAugmenter(**recipe["augment"], **grid, random_state=seed).fit_transform(list(frame["structure"]))
    out = frame.drop(columns=["structure"]).copy()
    out["xrd"] = list(patterns.astype(np.float32))
    return out


def classifier_metrics(model, frame, recipe: dict, views_present) -> dict:
    y = frame["crystal_system"].to_numpy().astype(str)
    truth = frame[LATTICE_TARGETS].to_numpy(dtype=float)
    out = {}
    clean = frame  # the XRD view is simulated from the structure, as for training rows
    augmented = augmented_views(frame, recipe, recipe["seed"] + 3)
    for patterns, X in (("clean", clean), ("augmented", augmented)):
        for views in views_present:
            model.set_params(aligner__transform_views=tuple(views))
            data = X if "composition" in views else X.drop(columns=["composition"])
            predicted = model.predict(data)
            lattice = model.predict_auxiliary(data)
            key = f"{'+'.join(views)}, {patterns} patterns"
            out[key] = {
                "crystal_system_accuracy": round(float(np.mean(predicted == y)), 4),
                "scaled_lattice_mae": round(float(np.abs(lattice[:, :3] - truth[:, :3]).mean()), 4),
                "raw_lattice_mae": round(float(np.abs(lattice[:, 3:6] - truth[:, 3:6]).mean()), 4),
                "rows": len(frame),
            }
    model.set_params(aligner__transform_views=None)
    return out


def aligner_metrics(model, frame, recipe: dict) -> dict:
    from skmat.retrieval import recall_at_k

    frame = ordered_rows(frame)
    z_structure = model.embed(frame, view="structure")
    augmented = augmented_views(frame, recipe, recipe["seed"] + 3)
    z_xrd = model.embed(augmented, view="xrd")
    z_clean = model.embed(frame, view="xrd")
    return {
        "augmented xrd -> structure": {f"recall@{k}": round(recall_at_k(z_xrd, z_structure, k), 4) for k in (1, 5)},
        "augmented xrd -> clean xrd": {f"recall@{k}": round(recall_at_k(z_xrd, z_clean, k), 4) for k in (1, 5)},
        "rows": len(frame),
    }


def fingerprint(model, n: int = 8) -> dict:
    """Outputs of the fitted model on the first *n* ordered pymatgen prototypes: a loaded copy
    must give them again (tests/test_pretrained.py checks it in a fresh process)."""
    from skmat.datasets import load_prototypes

    frame = load_prototypes().frame
    frame = frame[[s.is_ordered for s in frame["structure"]]].iloc[:n]
    X = frame[["structure", "composition"]]
    if hasattr(model, "predict_proba"):
        values, what = model.predict_proba(X), "predict_proba"
    else:
        values, what = model.transform(X), "transform"
    return {"prototypes": frame["material_id"].astype(str).tolist(), "method": what,
            "values": np.round(values.astype(float), 6).tolist()}


# -- outputs ------------------------------------------------------------------------------------
def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_card(folder: Path, card: dict) -> None:
    (folder / "card.json").write_text(json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8")
    lines = [f"# {card['name']}", ""]
    if card["placeholder"]:
        lines += [
            "**PLACEHOLDER**: trained with `--quick` (small subsets, few epochs) to develop the plumbing. "
            "Its numbers are not skmat's; retrain with the full recipe before trusting it.",
            "",
        ]
    lines += [card["description"], "", "## Training", ""]
    lines += [f"- command: `{card['command']}`", f"- commit: `{card['commit']['head']}`"
              f"{' (uncommitted changes)' if card['commit']['dirty'] else ''}",
              f"- seed: {card['seed']}", f"- skmat {card['skmat_version']}, trained {card['trained_at']} "
              f"in {card['training_seconds']:.0f} s"]
    for source, info in card["training_data"].items():
        lines.append(f"- {source}: {info['rows']} rows ({info['split']}, of {info['of']})")
    lines.append(f"- total: {card['training_rows']} rows")
    lines += ["", "## Held-out metrics", ""]
    for split, metrics in card["held_out"].items():
        lines.append(f"### {split}")
        lines.append("")
        lines.append("```")
        lines.append(json.dumps(metrics, indent=1))
        lines.append("```")
        lines.append("")
    if "index" in card:
        lines += ["## Reference index", "", "```", json.dumps(card["index"], indent=1), "```", ""]
    if "held_out_refined" in card:
        lines += ["## Lattice refined against the pattern (`skmat.pretrained.load_refiner`)", "", "```",
                  json.dumps(card["held_out_refined"], indent=1), "```", ""]
    if "measured_rruff_dev" in card:
        lines += ["## `skmat identify` on measured RRUFF development patterns", "", "```",
                  json.dumps(card["measured_rruff_dev"], indent=1), "```", ""]
    lines += ["## Recipe", "", "```", json.dumps(card["recipe"], indent=1, default=str), "```", ""]
    (folder / "CARD.md").write_text("\n".join(lines), encoding="utf-8")


def train(name: str, recipe: dict, frames: dict, args, log) -> dict:
    import shutil

    import torch

    from skmat import persist
    from skmat._version import __version__

    torch.manual_seed(recipe["seed"])
    train_frame = frames["train"]
    if name == "structure-xrd-composition":
        # the aligner embeds real structures only: the triclinic variants teach the classifier
        train_frame = ordered_rows(train_frame[train_frame["source"] != "triclinic_variants"])
    log(f"{name}: training on {len(train_frame)} rows")
    model = make_model(name, recipe, args.verbose)
    start = time.perf_counter()
    if name == "structure-xrd-composition":
        model.fit(train_frame[["material_id", "structure", "composition"]])
    else:
        model.fit(
            train_frame[["material_id", "structure", "composition"]],
            train_frame["crystal_system"].to_numpy().astype(str),
            auxiliary_targets=train_frame[LATTICE_TARGETS].to_numpy(dtype=float),
        )
    seconds = time.perf_counter() - start
    log(f"{name}: trained in {seconds:.0f} s; scoring held-out rows")
    held = {}
    for source, frame in frames["held_out"].items():
        heldout = held_out_frame(frame, source, recipe["data"]["n_eval"], recipe["seed"])
        if name == "structure-xrd-composition":
            held[source] = aligner_metrics(model, heldout, recipe)
        else:
            views = [("xrd", "composition"), ("xrd",)] if name == "xrd-composition" else [("xrd",)]
            held[source] = classifier_metrics(model, heldout, recipe, views)
        log(f"{name} held out {source}: {json.dumps(held[source])}")
    check = fingerprint(model)
    folder = Path(args.out) / name
    if folder.exists():
        shutil.rmtree(folder)
    persist.save(model, folder)
    if name != "structure-xrd-composition":
        write_element_volumes(folder, train_frame, log)
    card = {
        "name": name,
        "placeholder": bool(args.quick),
        "description": MODELS[name],
        "estimator": type(model).__name__,
        "views": list(model.views_),
        "classes": [str(c) for c in getattr(model, "classes_", [])],
        "auxiliary_outputs": LATTICE_TARGETS if name != "structure-xrd-composition" else [],
        "training_data": {
            source: {**info, "rows": int((train_frame["source"] == source).sum())}
            for source, info in frames["sources"].items()
        },
        "training_rows": len(train_frame),
        "held_out": held,
        "command": "python scripts/train_pretrained.py " + " ".join(args.argv),
        "commit": _commit(),
        "seed": recipe["seed"],
        "recipe": recipe,
        "skmat_version": __version__,
        "trained_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "training_seconds": round(seconds, 1),
        "never_trained_on": "any test split; RRUFF patterns (scored only)",
        "check": check,
    }
    write_card(folder, card)
    log(f"{name}: wrote {folder} ({folder_size(folder) / 1e6:.2f} MB)")
    return {"model": model, "card": card, "folder": folder}


def write_element_volumes(folder: Path, train_frame, log) -> None:
    """The per-element volumes skmat.pretrained.load_refiner counts atoms with, fitted to the
    classifier's MP-20 training structures; an element they lack takes its volume fitted to
    all the real training structures (variants are distorted copies).

    Why not all of them: the mineral cells are measured at room temperature and many of their
    CIFs omit the hydrogen sites, so a joint fit moves the volumes away from what a full
    composition needs (Mg 21.9 -> 15.1 Å³). Measured with the shipped classifier on held-out
    rows (seed 0): 300 MP-20 rows, crystal systems 82.7 -> 84.7 %, lattice 0.210 -> 0.201 Å;
    120 AMCSD minerals, crystal systems 82.5 % both ways, lattice 0.200 -> 0.196 Å."""
    from skmat.features.indexing import fit_element_volumes
    from skmat.pretrained._registry import ELEMENT_VOLUMES_FILE

    real = train_frame[train_frame["source"] != "triclinic_variants"]
    volumes = fit_element_volumes(list(real["structure"]))
    mp20 = real[real["source"] == "mp20"]
    if len(mp20):
        volumes.update(fit_element_volumes(list(mp20["structure"])))
    (folder / ELEMENT_VOLUMES_FILE).write_text(json.dumps({k: round(float(v), 4) for k, v in sorted(volumes.items())},
                                                          indent=0) + "\n", encoding="utf-8")
    log(f"element volumes of {len(volumes)} elements from {len(mp20)} MP-20 training structures "
        f"(the others from all {len(real)})")


def refined_metrics(folder: Path, recipe: dict, frames: dict, n_rows: int, log, n_jobs: int = 2) -> None:
    """Held-out scaled-lattice MAE of the classifier alone and inside load_refiner's
    LatticeRefiner (clean and augmented patterns of *n_rows* held-out MP-20 rows, None: all),
    on the card."""
    from skmat.pretrained._registry import ELEMENT_VOLUMES_FILE, _refiner_of

    if not (folder / ELEMENT_VOLUMES_FILE).is_file():
        write_element_volumes(folder, frames["train"], log)
    refiner = _refiner_of(folder, n_jobs=n_jobs)  # load_refiner's refiner, from this folder
    heldout = held_out_frame(frames["held_out"]["mp20"], "mp20", n_rows, recipe["seed"])
    truth = heldout[LATTICE_TARGETS[:3]].to_numpy(dtype=float)
    systems = heldout["crystal_system"].to_numpy().astype(str)
    out = {}
    for patterns, X in (("clean", heldout), ("augmented", augmented_views(heldout, recipe, recipe["seed"] + 3))):
        X = X[[c for c in ("structure", "xrd", "composition") if c in X]]
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the rows kept are counted below
            refined = refiner.predict(X)
        seconds = time.perf_counter() - start
        network = refiner.predictor_.predict_auxiliary(X)[:, :3]
        right = refiner.predict_crystal_system(X) == systems
        out[f"xrd+composition, {patterns} patterns"] = {
            "scaled_lattice_mae_network": round(float(np.abs(network - truth).mean()), 4),
            "scaled_lattice_mae_refined": round(float(np.abs(refined - truth).mean()), 4),
            "rows_refined": int(refiner.n_refined_),
            "rows_right_system": int(right.sum()),
            "rows_right_system_refiner": int(np.sum(refiner.crystal_systems_ == systems)),
            "seconds_per_row": round(seconds / len(X), 2),
            "rows": len(X),
        }
        log(f"{folder.name} refined, {patterns}: {json.dumps(out[f'xrd+composition, {patterns} patterns'])}")
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    card["held_out_refined"] = {
        "mp20": out,
        "note": f"skmat.pretrained.load_refiner('{folder.name}') on {len(heldout)} held-out MP-20 rows "
                f"({'all' if n_rows is None else 'a seeded subsample of'} the card's held-out rows): the "
                "classifier's lattice refined against each pattern (skmat.supervised.LatticeRefiner: the "
                "classifier's 3 most probable crystal "
                "systems weighed against their refinements; rows_right_system is the classifier's, "
                f"rows_right_system_refiner the refiner's crystal_systems_; seconds_per_row is wall time with {n_jobs} "
                f"process{'es' if n_jobs != 1 else ''})",
    }
    write_card(folder, card)


def same_structure_hits(frame, rows, found) -> np.ndarray:
    """``hits[i, j]``: reference ``found[i, j]`` is query ``rows[i]`` itself or the same crystal
    (same reduced formula and pymatgen's ``StructureMatcher`` with its default tolerances)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher()
    structures = frame["structure"].to_numpy()
    formulas = [s.composition.reduced_formula for s in structures]
    hits = np.zeros(found.shape, dtype=bool)
    for i, (query, candidates) in enumerate(zip(rows, found, strict=True)):
        for j, candidate in enumerate(candidates):
            if candidate == query:
                hits[i, j] = True
            elif formulas[candidate] == formulas[query]:
                try:
                    hits[i, j] = matcher.fit(structures[query], structures[candidate])
                except Exception:  # disordered cells the matcher cannot compare: not counted
                    hits[i, j] = False
    return hits


def retrieval_metrics(index, aligner, frame, recipe: dict, log) -> dict:
    """Top-1/top-5 retrieval of augmented simulated patterns of index members (seeded draw)."""
    import pandas as pd

    from skmat.features.augment import XRDAugmenter
    from skmat.pretrained._identify import search_references
    from skmat.pretrained._index import ReferenceIndex

    seed, n = recipe["seed"], recipe["index"]["n_queries"]
    rows = np.sort(np.random.default_rng(seed + 4).choice(len(index), min(n, len(index)), replace=False))
    structures = [frame["structure"].iloc[r] for r in rows]
    augmenter = XRDAugmenter(**recipe["augment"], n_bins=recipe["xrd"]["n_bins"], random_state=seed + 5)
    patterns = augmenter.fit_transform(structures)
    grid = augmenter.two_theta_grid()
    embedded = aligner.embed(pd.DataFrame({"xrd": list(patterns)}), view="xrd")
    as_float32 = ReferenceIndex(index.ids, index.formulas, index.crystal_systems, index.sources, index.space_groups,
                                index.xrd_embeddings, index.peak_two_theta, index.peak_intensity)
    as_float32.xrd_embeddings = index.xrd_embeddings.astype(np.float32)  # the unrounded comparison
    out = {"queries": len(rows), "references": len(index), "augmentation": recipe["augment"] or "XRDAugmenter defaults"}
    # what identify --composition knows: the elements of the query's own formula
    elements = [frozenset(e.symbol for e in frame["structure"].iloc[r].composition.elements) for r in rows]
    for label, searched, options in (
        ("embedding, float16", index, {"shortlist": 0}),
        ("embedding, float32", as_float32, {"shortlist": 0}),
        ("embedding shortlist + pattern re-rank, similarity alone", index, {"embedding_weight": 0.0}),
        ("embedding shortlist + pattern re-rank (identify)", index, {}),
        ("the same, with the composition (identify --composition)", index, {"elements": elements}),
    ):
        start = time.perf_counter()
        found, _ = search_references(searched, embedded, patterns, grid, k=5, **options)
        seconds = time.perf_counter() - start
        same = same_structure_hits(frame, rows, found)
        out[label] = {
            "top1": round(float(np.mean(found[:, 0] == rows)), 4),
            "top5": round(float(np.mean([r in f for r, f in zip(rows, found, strict=True)])), 4),
            # the index holds several entries of one crystal (AMCSD refinements of one mineral,
            # MP-20 and AMCSD copies): any entry of the query's structure counts here
            "top1_same_structure": round(float(np.mean(same[:, 0])), 4),
            "top5_same_structure": round(float(np.mean(same.any(axis=1))), 4),
            "ms_per_query": round(1000 * seconds / len(rows), 1),
        }
        log(f"retrieval, {label}: {out[label]}")
    return out


def rescore_retrieval(aligner_folder: Path, recipe: dict, data_home: Path, log) -> None:
    """Re-measure the card's retrieval figures on the shipped index, without rebuilding it."""
    from skmat import persist
    from skmat.pretrained._index import ReferenceIndex, reference_frame

    aligner = persist.load(aligner_folder, device="cpu")
    index = ReferenceIndex.load(aligner_folder / "index")
    frame = reference_frame(data_home, amcsd=recipe["data"]["amcsd"], mp20=recipe["data"]["mp20"])
    if len(frame) != len(index) or list(frame["material_id"].astype(str)[:50]) != [str(i) for i in index.ids[:50]]:
        raise SystemExit("the index was not built from this data home's reference frame: rebuild it with 'index'")
    card_path = aligner_folder / "card.json"
    card = json.loads(card_path.read_text())
    card["index"]["retrieval"] = retrieval_metrics(index, aligner, frame, recipe, log)
    write_card(aligner_folder, card)


def write_index(aligner_folder: Path, recipe: dict, data_home: Path, args, log) -> None:
    """The reference index of the aligner: MP-20 val + AMCSD + prototypes (all rows)."""
    from skmat import persist
    from skmat.pretrained._index import build_index, reference_frame

    aligner = persist.load(aligner_folder, device="cpu")
    frame = reference_frame(data_home, amcsd=recipe["data"]["amcsd"], mp20=recipe["data"]["mp20"])
    if args.quick and args.index_rows:
        keep = (frame["source"] == "prototype").to_numpy()
        others = np.flatnonzero(~keep)
        chosen = np.random.default_rng(recipe["seed"]).choice(others, min(args.index_rows, len(others)), replace=False)
        keep[chosen] = True
        frame = frame[keep].reset_index(drop=True)
    log(f"index: embedding {len(frame)} references")
    start = time.perf_counter()
    index = build_index(aligner, frame, n_peaks=recipe["index"]["n_peaks"], verbose=args.verbose)
    index.save(aligner_folder / "index")
    seconds = time.perf_counter() - start
    card_path = aligner_folder / "card.json"
    card = json.loads(card_path.read_text())
    card["index"] = {
        "rows": len(index),
        "sources": {s: int(n) for s, n in zip(*np.unique(index.sources, return_counts=True), strict=True)},
        "seconds": round(seconds, 1),
        "megabytes": round(folder_size(aligner_folder / "index") / 1e6, 2),
        "retrieval": retrieval_metrics(index, aligner, frame, recipe, log),
    }
    write_card(aligner_folder, card)
    log(f"index: {len(index)} references in {seconds:.0f} s, {card['index']['megabytes']} MB")


def measured_metrics(models_dir: Path, data_home: Path, log) -> None:
    """Crystal-system accuracy of ``identify`` on the measured RRUFF development patterns of the
    data home (scored only, never trained on, never written out), into the classifier's card.

    Two numbers: the classifier's top-1, and the crystal system of the best reference match.
    The index holds every AMCSD mineral, as a user's reference database would, so the match
    figure includes looking up the same mineral; the leak-controlled figure is the benchmark's
    (``benchmarks/measured_xrd.py``).
    """
    import os as _os

    from skmat.datasets import fetch_rruff_xrd
    from skmat.pretrained import identify
    from skmat.pretrained._identify import MATCH_WEIGHT, VOTE_MATCHES, VOTE_POWER, blend_match_votes

    _os.environ["SKMAT_PRETRAINED_DIR"] = str(models_dir)
    frame = fetch_rruff_xrd(data_home=data_home).frame
    truth = frame["crystal_system"].astype(str).to_numpy()
    start = time.perf_counter()
    answers = identify(
        [(x, y) for x, y in zip(frame["two_theta"], frame["intensity"], strict=True)],
        wavelength=list(frame["wavelength"].astype(float)),
        top=5,
        match_weight=0.0,
    )
    classes = list(answers[0].probabilities)
    probabilities = np.array([[a.probabilities[c] for c in classes] for a in answers])
    systems = np.array([[m["crystal_system"] for m in a.matches] for a in answers])
    similarity = np.array([[m["similarity"] for m in a.matches] for a in answers])
    predicted = np.array(classes)[probabilities.argmax(axis=1)]
    matched = systems[:, 0]

    def blended_accuracy(weight, power, n_matches=VOTE_MATCHES):
        # identify's rule, for other settings
        scores = blend_match_votes(probabilities, systems, similarity, classes, weight=weight, power=power,
                                   n_matches=n_matches)
        return round(float(np.mean(np.array(classes)[scores.argmax(axis=1)] == truth)), 4)

    result = {
        "patterns": len(frame),
        "identify": blended_accuracy(MATCH_WEIGHT, VOTE_POWER),
        "rule": f"classifier probabilities + {MATCH_WEIGHT} x vote of the {VOTE_MATCHES} best matches "
        f"(similarity ** {VOTE_POWER})",
        "classifier_top1": round(float(np.mean(predicted == truth)), 4),
        "best_match_crystal_system": round(float(np.mean(matched == truth)), 4),
        "identify_by_setting": {
            f"weight {w}, power {p}, matches {k}": blended_accuracy(w, p, k)
            for k in (1, 3, 5) for p in (4, 8) for w in (0.5, 1.0, 2.0)
        },
        "seconds": round(time.perf_counter() - start, 1),
        "note": "RRUFF development patterns of the data home, composition not given; the index holds every "
        "AMCSD mineral (a user's reference database), so best_match includes same-mineral lookups; "
        "the rule's settings were chosen on these patterns (identify_by_setting)",
    }
    folder = models_dir / "xrd-composition"
    card = json.loads((folder / "card.json").read_text())
    card["measured_rruff_dev"] = result
    write_card(folder, card)
    log(f"measured RRUFF development patterns: {result}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "name", choices=[*MODELS, "index", "retrieval", "measured", "refined", "all"],
        help="model to train; 'index' rebuilds the reference index, 'retrieval' re-scores the shipped index's "
        "retrieval, 'measured' scores identify on the data home's RRUFF patterns, 'refined' scores the "
        "classifier's lattice refined against held-out patterns (load_refiner); 'all' does everything",
    )
    parser.add_argument("--quick", action="store_true", help="small subsets, few epochs: a labelled placeholder")
    parser.add_argument("--data-home", type=Path, default=None, help="data home (default: SKMAT_DATA)")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="models folder (default: the package's)")
    parser.add_argument("--index-rows", type=int, default=None, help="with --quick: index only this many "
                        "MP-20/AMCSD rows (plus every prototype)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override one recipe entry, e.g. --set classifier.max_epochs=5 --set data.n_mp20=2000 (JSON values)",
    )
    parser.add_argument("--refined-rows", type=int, default=None,
                        help="held-out MP-20 rows the 'refined' step scores (default: all; ~0.2 s a row, 2 processes)")
    parser.add_argument("--n-jobs", type=int, default=2,
                        help="processes of the 'refined' step (the card's seconds_per_row is wall time with them)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    import torch

    recipe = merged(RECIPE, QUICK) if args.quick else copy.deepcopy(RECIPE)
    for item in args.set:
        key, _, text = item.partition("=")
        *path, last = key.split(".")
        node = recipe
        for part in path:
            node = node[part]
        if last not in node:
            raise SystemExit(f"--set {key}: no such recipe entry")
        try:
            node[last] = json.loads(text)
        except json.JSONDecodeError:
            node[last] = text
    torch.set_num_threads(recipe["threads"])
    from skmat.datasets import get_data_home

    data_home = get_data_home(args.data_home)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.0f} s] {message}", flush=True)

    shipped = ["xrd-composition", "structure-xrd-composition"]
    names = shipped if args.name == "all" else [] if args.name in ("index", "retrieval", "measured", "refined") else [args.name]
    frames = None
    if names or args.name == "refined":
        frames = load_frames(recipe, data_home, log)
    for name in names:
        train(name, recipe, frames, args, log)
    if args.name in ("all", "refined", "xrd-composition"):
        refined_metrics(Path(args.out) / "xrd-composition", recipe, frames, 20 if args.quick else args.refined_rows, log,
                        n_jobs=args.n_jobs)
    if args.name in ("all", "index", "structure-xrd-composition"):
        write_index(Path(args.out) / "structure-xrd-composition", recipe, data_home, args, log)
    if args.name == "retrieval":
        rescore_retrieval(Path(args.out) / "structure-xrd-composition", recipe, data_home, log)
    if args.name in ("all", "measured") and (data_home / "rruff_xrd").is_dir():
        measured_metrics(Path(args.out), data_home, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
