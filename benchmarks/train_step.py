"""Time one training step of skmat's periodic crystal-graph encoders on real MP-20 crystals.

A step = collate a batch of precomputed graphs + forward + MSE loss of a linear head on
``formation_energy_per_atom`` + backward + AdamW update. Reported: median (and fastest)
seconds per step after warm-up, seconds per epoch extrapolated to ``--epoch-size``
structures (graph featurisation, done once and cached in practice, is listed separately),
and the peak resident memory of the process that ran the model (each configuration runs in
its own fresh process, so peaks do not leak between rows).

Usage::

    python benchmarks/train_step.py                      # all encoders, torch threads = 2
    python benchmarks/train_step.py --models cgcnn --steps 50 --flush-denormal both

"Plain PyG" references: ``pyg-cgconv`` is a CGCNN made of PyG's ``CGConv`` layers, and
``pyg-schnet`` is PyG's own ``SchNet.forward`` fed the periodic edges through its
``interaction_graph`` hook (its stock radius graph needs ``pyg-lib``/``torch-cluster``,
which cannot be installed here). PyG's stock ``DimeNetPlusPlus.forward`` cannot run at all
here (radius graph + ``torch-sparse`` triplets), so it has no reference row.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# name -> (graph settings, encoder factory name or reference, encoder kwargs)
CONFIGS = {
    "cgcnn": (dict(cutoff=6.0, max_neighbors=None), "cgcnn", {}),
    "cgcnn-all6A": (dict(cutoff=6.0, max_neighbors=None), "cgcnn", {"max_neighbors": None}),
    "pyg-cgconv": (dict(cutoff=6.0, max_neighbors=None), "pyg-cgconv", {}),
    "schnet": (dict(cutoff=6.0, max_neighbors=None), "schnet", {}),
    "pyg-schnet": (dict(cutoff=6.0, max_neighbors=None), "pyg-schnet", {}),
    "dimenetpp": (dict(cutoff=5.0, max_neighbors=None), "dimenetpp", {}),
    "dimenetpp-all5A": (dict(cutoff=5.0, max_neighbors=None), "dimenetpp", {"max_neighbors": None}),
}
DEFAULT_MODELS = ["cgcnn", "pyg-cgconv", "cgcnn-all6A", "schnet", "pyg-schnet", "dimenetpp"]


def _default_data_home() -> Path:
    env = os.environ.get("SKMAT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _load_rows(data_home: Path, n_rows: int):
    import pandas as pd
    from pymatgen.core import Structure

    frame = pd.read_csv(Path(data_home) / "mp_20" / "val.csv.gz", nrows=n_rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding notices
        structures = [Structure.from_str(cif, fmt="cif") for cif in frame["cif"]]
    return structures, frame["formation_energy_per_atom"].to_numpy(np.float32)


def _pyg_cgconv_encoder(out_dim: int = 128, hidden_dim: int = 64, n_layers: int = 3,
                        cutoff: float = 6.0, n_gaussians: int = 40, max_neighbors: int = 12):
    """CGCNN from PyG's CGConv layers (no batch norm), on the same edges as skmat's CGCNN."""
    import torch
    from torch import nn
    from torch_geometric.nn import CGConv
    from torch_geometric.utils import scatter

    from skmat.nn.gnn import GaussianExpansion
    from skmat.nn.graph import nearest_edges

    class PygCGCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.out_dim = out_dim
            self.embedding = nn.Embedding(101, hidden_dim)
            self.expansion = GaussianExpansion(0.0, cutoff, n_gaussians)
            self.convs = nn.ModuleList(
                CGConv(hidden_dim, dim=n_gaussians, aggr="add", batch_norm=False)
                for _ in range(n_layers)
            )
            self.head = nn.Linear(hidden_dim, out_dim)

        def forward(self, batch):
            distance = batch.edge_vectors().norm(dim=-1)
            keep = nearest_edges(batch, distance, cutoff, max_neighbors)
            edge_attr = self.expansion(distance[keep])
            h = self.embedding(batch.atomic_numbers)
            for conv in self.convs:
                h = torch.nn.functional.softplus(conv(h, batch.edge_index[:, keep], edge_attr))
            pooled = scatter(h, batch.batch, 0, dim_size=batch.num_graphs, reduce="mean")
            return self.head(pooled)

    return PygCGCNN()


def _pyg_schnet_encoder(out_dim: int = 128, cutoff: float = 6.0):
    """PyG's SchNet, unmodified forward, periodic edges given through interaction_graph."""
    import torch
    from torch_geometric.nn.models import SchNet

    class PeriodicEdges:
        # SchNet.forward calls interaction_graph(pos, batch); the current GraphBatch is set
        # before each call so the hook can return its periodic edges and lengths.
        graph = None

        def __call__(self, pos, batch):
            distance = self.graph.edge_vectors().norm(dim=-1)
            keep = distance <= cutoff
            return self.graph.edge_index[:, keep], distance[keep]

    class PygSchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out_dim = out_dim
            self.edges = PeriodicEdges()
            self.schnet = SchNet(hidden_channels=64, num_filters=64, num_interactions=3,
                                 num_gaussians=50, cutoff=cutoff, readout="mean",
                                 interaction_graph=self.edges)
            self.schnet.lin2 = torch.nn.Linear(32, out_dim)

        def forward(self, batch):
            self.edges.graph = batch
            return self.schnet(batch.atomic_numbers, batch.pos, batch.batch)

    return PygSchNet()


def _make_encoder(kind: str, kwargs: dict):
    if kind == "pyg-cgconv":
        return _pyg_cgconv_encoder(**kwargs)
    if kind == "pyg-schnet":
        return _pyg_schnet_encoder(**kwargs)
    from skmat.nn.gnn import make_structure_encoder

    return make_structure_encoder(kind, **kwargs)


def run_one(name: str, args: argparse.Namespace, flush: bool) -> dict:
    """Benchmark one configuration (meant to run in a fresh process)."""
    import torch

    from skmat.features.graph import CrystalGraph
    from skmat.nn.gnn import flush_denormal
    from skmat.nn.graph import collate_graphs

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    graph_kwargs, kind, encoder_kwargs = CONFIGS[name]
    structures, target = _load_rows(args.data_home, args.n_structures)

    started = time.perf_counter()
    graphs = CrystalGraph(**graph_kwargs).fit_transform(structures)
    featurise_seconds = (time.perf_counter() - started) / len(structures)

    encoder = _make_encoder(kind, encoder_kwargs)
    head = torch.nn.Linear(encoder.out_dim, 1)
    parameters = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    n_batches = len(structures) // args.batch_size
    batches = [np.arange(b * args.batch_size, (b + 1) * args.batch_size) for b in range(n_batches)]
    targets = torch.from_numpy(target)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def step(rows: np.ndarray) -> float:
        tic = time.perf_counter()
        batch = collate_graphs(graphs[rows])
        optimizer.zero_grad(set_to_none=True)
        prediction = head(encoder(batch)).squeeze(1)
        loss = torch.nn.functional.mse_loss(prediction, targets[rows])
        loss.backward()
        optimizer.step()
        return time.perf_counter() - tic

    seconds = []
    edges, atoms = [], []
    with flush_denormal(flush):
        for i in range(args.warmup + args.steps):
            rows = batches[i % n_batches]
            elapsed = step(rows)
            if i >= args.warmup:
                seconds.append(elapsed)
                sub = graphs[rows]
                edges.append(int(sub.num_edges.sum()))
                atoms.append(int(sub.num_atoms.sum()))
    median = float(np.median(seconds))
    return {
        "name": name,
        "flush": flush,
        "median": median,
        "fastest": float(np.min(seconds)),
        "epoch": median * args.epoch_size / args.batch_size,
        "featurise_epoch": featurise_seconds * args.epoch_size,
        "atoms": float(np.mean(atoms)),
        "edges": float(np.mean(edges)),
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n_params": sum(p.numel() for p in encoder.parameters()),
    }


def _worker(name, args, flush, queue):
    queue.put(run_one(name, args, flush))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-home", type=Path, default=_default_data_home(),
                        help="holds mp_20/val.csv.gz (default: $SKMAT_DATA or ../shared/data)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, from {sorted(CONFIGS)}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--n-structures", type=int, default=640,
                        help="MP-20 rows loaded; batches cycle through them")
    parser.add_argument("--epoch-size", type=int, default=9047,
                        help="structures per epoch for the extrapolation (MP-20 val: 9,047)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flush-denormal", choices=["off", "on", "both"], default="off",
                        help="run the steps inside skmat.nn.gnn.flush_denormal()")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(CONFIGS)}")
    flushes = {"off": [False], "on": [True], "both": [False, True]}[args.flush_denormal]

    print(f"MP-20 val, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} "
          f"warm-up, torch threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    header = (f"{'model':<16} {'flush':>5} {'atoms':>6} {'edges':>7} {'params':>8} "
              f"{'s/step':>7} {'fastest':>7} {'s/epoch':>8} {'graphs s/epoch':>14} {'base MB':>8} "
              f"{'peak MB':>8}")
    print(header)
    print("-" * len(header))
    context = multiprocessing.get_context("spawn")
    for name in names:
        for flush in flushes:
            queue = context.Queue()
            process = context.Process(target=_worker, args=(name, args, flush, queue))
            process.start()
            result = queue.get()
            process.join()
            print(f"{result['name']:<16} {'on' if flush else 'off':>5} {result['atoms']:>6.0f} "
                  f"{result['edges']:>7.0f} {result['n_params']:>8d} {result['median']:>7.3f} "
                  f"{result['fastest']:>7.3f} {result['epoch']:>8.1f} "
                  f"{result['featurise_epoch']:>14.1f} {result['rss_before_mb']:>8.0f} "
                  f"{result['peak_rss_mb']:>8.0f}",
                  flush=True)
    print("plain PyG DimeNetPlusPlus.forward / SchNet default radius graph: cannot run here "
          "(radius_graph needs pyg-lib or torch-cluster; DimeNet triplets need torch-sparse).")


if __name__ == "__main__":
    main()
