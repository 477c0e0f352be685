"""Controls: cost per evaluation of two styles blended, style regions and luminance mode against a plain run.

Each configuration's objective is built by the engine (``_prepare``, ``_terms``, ``_objective``)
at --size on the content picture, --style and --style2; then single evaluations (forward +
backward) are interleaved A B C ... A B C ..., so that a busy machine slows all alike; medians of
wall and process CPU time after --skip warm-up rounds, and the median over rounds of each
configuration's CPU time over the plain objective's in the same round (the figure).

    python -m benchmarks controls --size 256 --steps 12 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from . import _harness as H


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12, help="evaluations measured per configuration")
    ap.add_argument("--skip", type=int, default=3, help="warm-up evaluations per configuration, not measured")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--style2", default=None, help="the second style (default the shared the_scream.jpg)")


def configs(content: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> dict[str, tuple[Any, dict[str, Any]]]:
    labels = np.zeros(content.shape[:2], np.int32)
    labels[:, content.shape[1] // 2 :] = 1
    third = labels.copy()
    third[: content.shape[0] // 3] = 2
    return {
        "plain": (s1, {}),
        "two styles blended": ([s1, s2], {"style_blend": (0.7, 0.3)}),
        "two regions, two styles": ([s1, s2], {"regions": labels, "region_styles": {0: 0, 1: 1}}),
        "three regions (2 styles + none)": ([s1, s2], {"regions": third, "region_styles": {0: 0, 1: 1, 2: None}}),
        "luminance": (s1, {"preserve_color": "luminance"}),
    }


def objective(content: np.ndarray, style: Any, extra: dict[str, Any], args: argparse.Namespace) -> tuple[Any, Any]:
    """The engine's objective of the finest level for one configuration, and its start image."""
    import torch

    from napari_nst.core.api import prepare
    from napari_nst.core.optim import engine

    c, s, opts = prepare(
        content,
        style,
        size=args.size,
        steps=10,
        model=H.MODEL,
        weights=H.weights_file(args.weights),
        device="cpu",
        seed=0,
        precision=args.precision,
        **extra,
    )
    device = torch.device("cpu")
    opts = opts.for_device(gpu=False)
    dtype = engine.autocast_dtype(opts.precision, device)
    shapes = opts.level_shapes(c.shape[:2])
    ctx = engine._prepare(c, s, opts, device, dtype, shapes, engine.split_steps(opts.steps, len(shapes)))
    terms, _ = engine._terms(ctx, shapes[-1])
    x = engine.resize(engine._first_image(ctx), shapes[-1])
    return engine._objective(ctx, terms), x


def evaluate_once(obj: Any, x: Any) -> tuple[float, float]:
    """Wall and process CPU seconds of one evaluation (forward + backward of the objective)."""
    g = x.clone().requires_grad_(True)
    t, p = time.perf_counter(), time.process_time()
    obj(g)
    return time.perf_counter() - t, time.process_time() - p


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.size, args.steps, args.skip = 48, 2, 1
    args.style2 = args.style2 or ("generated:style2" if args.dry_run else "the_scream")
    imgs = [H.load_image(s) for s in (args.content, args.style, args.style2)]
    cfg = configs(*imgs)
    built = {name: objective(imgs[0], style, extra, args) for name, (style, extra) in cfg.items()}
    wall: dict[str, list[float]] = {k: [] for k in cfg}
    cpu: dict[str, list[float]] = {k: [] for k in cfg}
    for i in range(args.skip + args.steps):  # evaluations interleaved: A B C ... A B C ...
        for name, (obj, x) in built.items():
            w, p = evaluate_once(obj, x)
            if i >= args.skip:
                wall[name].append(w)
                cpu[name].append(p)
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    # per round: this configuration's CPU time over the plain objective's in the same round
    paired = {k: statistics.median(a / b for a, b in zip(cpu[k], cpu["plain"], strict=True)) for k in cfg}
    h, w = built["plain"][1].shape[-2:]
    figures = [
        H.figure(f"{w}x{h} px, {name}: CPU time per evaluation", paired[name], "plain run", med_cpu[name], "s")
        for name in cfg
        if name != "plain"
    ]
    return {
        "figures": figures,
        "shape": [int(h), int(w)],
        "wall": wall,
        "process_cpu": cpu,
        "median_wall": med_wall,
        "median_cpu": med_cpu,
        "ratio_cpu_per_round": paired,
    }
