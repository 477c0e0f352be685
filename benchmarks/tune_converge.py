"""Objective against evaluations (and seconds) of the textbook and of napari-nst variants.

The float32 objective of each evaluated image (``baseline.objective``) does not depend on how busy
the machine is, so the convergence of the engine can be studied while the CPU is shared; the
seconds beside it do depend on the load.

    python benchmarks/tune_converge.py --size 256 --steps 300 --threads 1 \\
        --variants '["textbook", {}, {"precision": "float32"}]' --out /tmp/trace.jsonl

A variant is ``"textbook"`` (benchmarks/baseline.py) or a dict of napari-nst options (``extra``:
engine knobs used only to measure). Each variant prints one JSON line: ``trace`` is a list of
``[evaluation, seconds, objective]``, every ``--every``-th evaluation and every one of the last 10.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline as B  # noqa: E402
import bench_cpu as C  # noqa: E402

from napari_nst.core.optim import engine  # noqa: E402


def trace_textbook(prob: B.Problem, steps: int) -> list[list[float]]:
    """The textbook's closure values: the float32 objective of each evaluated (clamped) image."""
    tr: list[Any] = []
    B.run_baseline(prob, steps, tr)
    return [[float(s), float(t), float(f)] for s, t, f in tr]


def trace_nst(
    prob: B.Problem, size: int, steps: int, variant: dict[str, Any], every: int, ab: tuple[float, float] | None = None
) -> list[list[float]]:
    """napari-nst's run; the images kept every ``every`` evaluations (and the last 10) are scored
    with the benchmark's float32 objective after the run (scoring is not timed). ``ab``: the
    weights a, b (None: napari-nst's automatic ones, as ``prob`` has)."""
    v = dict(variant)
    extra = v.pop("extra", {})
    if ab is not None:
        v.setdefault("content_weight", ab[0])
        v.setdefault("style_weight", ab[1])
    opts = C.nst_options(size, steps, extra=extra, preview_every=1, **v)
    kept = []
    for r in engine.run(prob.content, prob.style, opts):
        if r.image is not None and (r.step % every == 0 or r.step > steps - 10 or r.step == 1):
            kept.append((r.step, r.elapsed, r.image))
    return [[float(s), float(t), B.objective(prob, img)] for s, t, img in kept]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--variants", default='["textbook", {}]')
    ap.add_argument("--out", default=None, help="append the JSON lines here too")
    ap.add_argument("--ab", default=None, help="the weights 'a,b' on both sides (default: napari-nst's automatic ones)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prob = B.setup(args.size)
    ab = None
    if args.ab:
        ab = tuple(float(x) for x in args.ab.split(","))
        prob.a, prob.b = ab
    for v in json.loads(args.variants):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        tr = (
            trace_textbook(prob, args.steps)
            if v == "textbook"
            else trace_nst(prob, args.size, args.steps, v, args.every, ab)
        )
        line = json.dumps(
            {
                "size": args.size,
                "steps": args.steps,
                "threads": torch.get_num_threads(),
                "isa": torch.backends.cpu.get_cpu_capability(),
                "onednn_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
                "variant": v,
                "ab": [prob.a, prob.b],
                "load_start": load,
                "seconds": time.perf_counter() - t0,
                "final": tr[-1][2],
                "trace": tr,
            }
        )
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
