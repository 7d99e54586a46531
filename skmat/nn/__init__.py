"""Pure-torch building blocks of skmat (no scikit-learn or skorch here).

* :mod:`skmat.nn.graph` — batching periodic crystal graphs, triplets for angles.
* :mod:`skmat.nn.gnn` — CGCNN, SchNet and DimeNet++ over periodic graphs.
* :mod:`skmat.nn.views` — encoders for XRD, composition, DOS, charge density and text.
* :mod:`skmat.nn.losses` — clip, all_pairs, anchored, tensor and barlow objectives.
* :mod:`skmat.nn.fusion` — concatenation and mean fusion.
* :mod:`skmat.nn.multiview` — encoders + projections + loss, as one module.
* :mod:`skmat.nn.distributed` — gathering embeddings across ``torch.distributed`` processes.
"""
