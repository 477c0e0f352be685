"""Profile napari-nst on a GPU: kernel launches, host synchronisations, CPU vs GPU time per evaluation.

One call on a GPU machine (weights and pictures as for gpu.py, via NAPARI_NST_SHARED)::

    NAPARI_NST_SHARED=path/to/shared python benchmarks/gpu_profile.py

Run on an H200 on 2026-11-30 (docs/performance.md, GPU): 20 evaluations at 512 px took 350 ms of CPU
against 67 ms of GPU time, ~500 kernel launches and ~8.6 synchronisations per evaluation, before
the CUDA graph.
"""

import sys
import time
from collections import deque

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "benchmarks")
sys.path.insert(0, "src")
import baseline as B
from napari_nst.core.optim import engine
from napari_nst.core.options import Options

prob = B.setup(512, "cuda")


def run(steps, **kw):
    kw.setdefault("preview_every", 10**6)
    o = Options(size=512, steps=steps, model="vgg16", weights=B.WEIGHTS, device="cuda", **kw)
    o.validate()
    r = deque(engine.run(prob.content, prob.style, o), maxlen=1)[0]
    torch.cuda.synchronize()
    return r


print("autocast", engine.autocast_dtype("auto", torch.device("cuda")), torch.cuda.get_device_capability())
run(5)
for pe in (10**6, 1, 10**6):
    t = time.perf_counter()
    r = run(100, preview_every=pe)
    dt = time.perf_counter() - t
    print(f"preview_every={pe}: 100 evals {dt:.3f}s total={r.losses['total']:.4g}")

with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
    run(20)
ka = p.key_averages()
print(ka.table(sort_by="cuda_time_total", row_limit=15))
print(ka.table(sort_by="count", row_limit=15))
for k in ka:
    if "Synchronize" in k.key or k.key in (
        "aten::item",
        "aten::_local_scalar_dense",
        "cudaMemcpyAsync",
        "cudaLaunchKernel",
    ):
        print("COUNT", k.key, k.count)
