"""Micro-benchmark of the per-evaluation levers: one VGG16 forward + backward up to relu5_1 with
Gram matrices of the style layers (float32), for float32 / bf16 autocast x contiguous /
channels_last, interleaved, median of --repeats. Wall and process CPU time; ratios to float32.

    python benchmarks/levers_micro.py --size 256 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline as B  # noqa: E402
from napari_nst.core.encoder.vgg import build_vgg  # noqa: E402
from napari_nst.core.objective.losses import gram  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    net = build_vgg(B.MODEL, B.LAYERS, weights=B.WEIGHTS)
    x0 = torch.rand(1, 3, args.size * 3 // 4, args.size, generator=torch.Generator().manual_seed(0))

    def step(dtype, cl):
        x = x0.clone().requires_grad_(True)
        xi = x.contiguous(memory_format=torch.channels_last) if cl else x
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            f = net(xi)
        loss = sum(gram(v).sum() * 1e-9 for v in f.values())
        loss.backward()

    cfgs = {
        "float32": (None, False),
        "float32 + channels_last": (None, True),
        "bf16 autocast": (torch.bfloat16, False),
        "bf16 autocast + channels_last": (torch.bfloat16, True),
    }
    wall = {k: [] for k in cfgs}
    cpu = {k: [] for k in cfgs}
    for d, c in cfgs.values():
        step(d, c)
        step(d, c)
    for _ in range(args.repeats):
        for k, (d, c) in cfgs.items():
            t, p = time.perf_counter(), time.process_time()
            step(d, c)
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - p)
    print(f"{args.size} px ({x0.shape[2]}x{x0.shape[3]}), {args.repeats} repeats, torch {torch.__version__}")
    print("| variant | wall ms | x float32 | CPU ms | x float32 |\n|---|---|---|---|---|")
    w0, c0 = statistics.median(wall["float32"]), statistics.median(cpu["float32"])
    for k in cfgs:
        w, c = statistics.median(wall[k]), statistics.median(cpu[k])
        print(f"| {k} | {1000 * w:.0f} | {w / w0:.2f} | {1000 * c:.0f} | {c / c0:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
