"""What the CUDA graph buys: 512 px x 500 evaluations with ``extra={"cuda_graph": False}`` and with
the graph (the default), alternating in one process, and the objective each reaches.

    NAPARI_NST_SHARED=path/to/shared python benchmarks/gpu_graph.py

Run on an H200 on 2026-11-30: 5.55 and 6.12 s without, 2.81 and 3.10 s with (docs/performance.md).
"""

import json
import sys
import time
from collections import deque

import torch

sys.path.insert(0, "benchmarks")
sys.path.insert(0, "src")
import baseline as B
from napari_nst.core.optim import engine
from napari_nst.core.options import Options

prob = B.setup(512, "cuda")


def run(steps, graph, size=512):
    o = Options(
        size=size,
        steps=steps,
        model="vgg16",
        weights=B.WEIGHTS,
        device="cuda",
        preview_every=10**6,
        extra={"cuda_graph": graph},
    )
    o.validate()
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = deque(engine.run(prob.content, prob.style, o), maxlen=1)[0]
    torch.cuda.synchronize()
    return time.perf_counter() - t, r


res = {}
for graph in (False, True):
    run(5, graph)
for _ in range(2):
    for graph in (False, True):
        dt, r = run(500, graph)
        res.setdefault(str(graph), []).append(
            {"seconds": dt, "total": r.losses["total"], "objective": B.objective(prob, r.image)}
        )
        print("graph", graph, f"500 evals {dt:.3f}s", r.losses, flush=True)
print(json.dumps(res, indent=1))
