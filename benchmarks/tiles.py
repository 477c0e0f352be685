"""Tiles: memory, CPU time, quality and seams of tiled runs against the whole image; peak memory by size.

Each run in its own child process, side by side (peak resident memory = the child's VmHWM, CPU
time = the child's process time), one torch thread per child unless --threads. Parts:

``quality``  the whole image against ``tile_size=--tile`` (and, with --history, a whole-image run
             with that L-BFGS history), same steps: peak memory, the run's own memory (peak less
             what the process held before the first evaluation), CPU time, the seed's content and
             style terms of each result on the whole image (float32), and the seam check: column
             and row profiles of the mean magnitude of the whole-image objective's gradient at each
             result over the whole-image run's, the largest ratio on the tile borders against the
             median elsewhere (1 = no seam);
``rss``      peak memory of tiled runs at each of --sizes (tiles of --rss-tile px, --rss-steps
             evaluations each), beside the memory model's estimate.

    python -m benchmarks tiles --parts quality --size 512 --tile 192 --steps 40
    python -m benchmarks tiles --parts rss --sizes 512 1024 2048 --rss-steps 7 7 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _harness as H

PARTS = ("quality", "rss")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--parts", default="quality", help="comma-separated: quality,rss")
    ap.add_argument("--size", type=int, default=512, help="quality: long edge")
    ap.add_argument("--tile", type=int, default=192, help="quality: tile_size")
    ap.add_argument("--steps", type=int, default=40, help="quality: evaluations of each run")
    ap.add_argument("--history", type=int, default=0, help="quality: also a whole-image run with this L-BFGS history")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096], help="rss: long edges")
    ap.add_argument("--rss-tile", type=int, default=256, help="rss: tile_size")
    ap.add_argument("--rss-steps", type=int, nargs="+", default=[7, 7, 2, 1], help="rss: evaluations per size")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in this (child) process: the result image to ``spec['out']``, its numbers returned."""
    H.set_threads(spec.pop("threads"))
    from napari_nst.core.api import _run, prepare
    from napari_nst.core.encoder import vgg

    levers = spec.pop("levers", {})
    out = spec.pop("out", None)
    content, style = H.load_image(spec.pop("content")), H.load_image(spec.pop("style"))
    t0, c0 = time.perf_counter(), time.process_time()
    c, s, opts = prepare(content, style, seed=0, preview_every=10**6, **spec)
    vgg.build_vgg(opts.model, opts.layers, weights=opts.weights, pooling=opts.pooling)  # the run reuses it
    rss_ready = H.vm_hwm()  # torch, the images and the network: what every run pays before its first evaluation
    last = None
    with H.levers(**levers):
        for rec in _run(c, s, opts):
            last = rec
    assert last is not None and last.image is not None
    if out:
        np.save(out, last.image)
    return dict(
        rss=H.vm_hwm(),
        rss_ready=rss_ready,
        cpu_s=time.process_time() - c0,
        wall_s=time.perf_counter() - t0,
        losses=last.losses,
        tile_size=last.tile_size,
        note=last.note,
        shape=list(last.shape),
    )


def _spec(args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    return dict(
        content=args.content,
        style=args.style,
        weights=H.weights_file(args.weights),
        model=H.MODEL,
        device="cpu",
        threads=args.threads or 1,
        **kw,
    )


def whole_evaluation(args: argparse.Namespace) -> Any:
    """A function: image (H, W, 3) -> (content term, style term, |gradient| (H, W)) of the
    whole-image seed objective in float32, with the automatic weights of the whole-image run."""
    import torch

    from napari_nst.core.api import prepare
    from napari_nst.core.optim import engine

    c, s, opts = prepare(
        H.load_image(args.content),
        H.load_image(args.style),
        size=args.size,
        model=H.MODEL,
        weights=H.weights_file(args.weights),
        precision="float32",
        seed=0,
        pyramid=0,
    )
    opts = opts.for_device(gpu=False)
    cpu = torch.device("cpu")
    shapes = opts.level_shapes(c.shape[:2])
    ctx = engine._prepare(c, s, opts, cpu, None, shapes, [1])
    terms, weights = engine._terms(ctx, shapes[-1])
    objective = engine._objective(ctx, terms)

    def evaluate(image: np.ndarray) -> tuple[float, float, np.ndarray]:
        total, parts, grad = objective(engine.to_tensor(image, cpu))
        mag = grad[0].abs().sum(0).numpy()
        return float(parts["content"]), float(parts["style"]), mag

    return evaluate


def profile_ratio(mag: np.ndarray, ref: np.ndarray, axis: int) -> np.ndarray:
    """Mean gradient magnitude per column (axis=0) or row (axis=1), relative to the reference's."""
    return mag.mean(axis) / np.maximum(ref.mean(axis), 1e-30)  # type: ignore[no-any-return]


def seam_score(ratio: np.ndarray, borders: list[int], width: int = 2) -> dict[str, float]:
    """The largest profile ratio within ``width`` px of a border, against the median elsewhere."""
    if not borders:
        return dict(border_max=1.0, elsewhere_median=1.0, elsewhere_max=1.0, border_vs_elsewhere=1.0)
    near = np.zeros(ratio.shape, bool)
    for b in borders:
        near[max(0, b - width) : b + width] = True
    elsewhere = float(np.median(ratio[~near]))
    return dict(
        border_max=float(ratio[near].max()),
        elsewhere_median=elsewhere,
        elsewhere_max=float(ratio[~near].max()),
        border_vs_elsewhere=float(ratio[near].max() / elsewhere),
    )


def part_quality(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from napari_nst.core.compute import memory

    tiled = f"tiles of {args.tile} px"
    runs = {
        "whole image": _spec(args, size=args.size, steps=args.steps),
        tiled: _spec(args, size=args.size, steps=args.steps, tile_size=args.tile),
    }
    if args.history:
        runs[f"whole image, L-BFGS history {args.history}"] = _spec(
            args, size=args.size, steps=args.steps, levers={"history_size": args.history}
        )
    procs = {}
    for i, (name, spec) in enumerate(runs.items()):  # side by side: CPU time and VmHWM are per process
        spec["out"] = str(tmp / f"tiles-{i}.npy")
        procs[name] = H.start_child("benchmarks.tiles:child", spec)
    res = {name: {**H.child_result(p), "image": runs[name]["out"]} for name, p in procs.items()}
    evaluate = whole_evaluation(args)
    whole = res["whole image"]
    ref_c, ref_s, ref_mag = evaluate(np.load(whole["image"]))
    core = args.tile - 2 * memory.tile_halo(H.MODEL, ["relu5_1"])
    figures = []
    for name, r in res.items():
        img = np.load(r.pop("image"))
        c, s, mag = evaluate(img)
        own, own_whole = r["rss"] - r["rss_ready"], whole["rss"] - whole["rss_ready"]
        r.update(
            content=c,
            style=s,
            content_ratio=c / ref_c,
            style_ratio=s / ref_s,
            rss_ratio=H.ratio(r["rss"], whole["rss"]),
            own_rss_ratio=H.ratio(own, own_whole),
            cpu_ratio=H.ratio(r["cpu_s"], whole["cpu_s"]),
            seams_columns=seam_score(profile_ratio(mag, ref_mag, 0), list(range(core, img.shape[1], core))),
            seams_rows=seam_score(profile_ratio(mag, ref_mag, 1), list(range(core, img.shape[0], core))),
        )
        if name == "whole image":
            continue
        px = f"{r['shape'][1]}x{r['shape'][0]} px, {args.steps} evaluations, {name}"
        figures += [
            H.figure(f"{px}: peak memory", r["rss_ratio"], "whole image", r["rss"] / H.MiB, "MiB"),
            H.figure(
                f"{px}: the run's own memory (peak less the process before the first evaluation)",
                r["own_rss_ratio"],
                "whole image",
                own / H.MiB,
                "MiB",
            ),
            H.figure(f"{px}: CPU time", r["cpu_ratio"], "whole image", r["cpu_s"], "s"),
            H.figure(f"{px}: content term (on the whole image)", r["content_ratio"], "whole image", c, ""),
            H.figure(f"{px}: style term (on the whole image)", r["style_ratio"], "whole image", s, ""),
        ]
        if name == tiled:
            figures += [
                H.figure(
                    f"{px}: seams, {axis}: gradient at a tile border",
                    r[f"seams_{axis}"]["border_vs_elsewhere"],
                    "the median elsewhere",
                )
                for axis in ("columns", "rows")
            ]
        H.say(f"  {name}: {r['rss_ratio'] or 0:.2f}x memory, {r['cpu_ratio'] or 0:.2f}x CPU time")
    return {"figures": figures, "size": args.size, "tile": args.tile, "steps": args.steps, "runs": res}


def part_rss(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of tiled runs, one child per size, side by side."""
    from napari_nst.core.compute import memory
    from napari_nst.core.options import Options

    if len(args.rss_steps) != len(args.sizes):
        raise H.BenchmarkError("give one --rss-steps value per --sizes value")
    steps = dict(zip(args.sizes, args.rss_steps, strict=True))
    procs = {
        size: H.start_child(
            "benchmarks.tiles:child", _spec(args, size=size, steps=steps[size], tile_size=args.rss_tile)
        )
        for size in args.sizes
    }
    out, figures = {}, []
    for size, proc in procs.items():
        try:
            r = H.child_result(proc)
        except H.BenchmarkError as exc:  # e.g. the engine refused: not enough free memory on this machine now
            out[str(size)] = {"error": str(exc).strip().splitlines()[-1], "steps": steps[size]}
            H.say(f"  {size} px: {out[str(size)]['error']}")
            continue
        opts = Options.from_kwargs(size=size, model=H.MODEL, tile_size=args.rss_tile, precision="bfloat16")
        r["estimate"] = memory.plan((r["shape"][0], r["shape"][1]), opts, None).bytes
        r["steps"] = steps[size]
        out[str(size)] = r
        figures.append(
            H.figure(
                f"{r['shape'][1]}x{r['shape'][0]} px in tiles of {args.rss_tile} px, {steps[size]} evaluations: "
                "peak memory",
                r["rss"] / r["estimate"],
                "the memory model's estimate",
                r["rss"] / H.MiB,
                "MiB",
            )
        )
        H.say(f"  {size} px: {r['rss'] / H.MiB:.0f} MiB")
    return {"figures": figures, "tile": args.rss_tile, "runs": out}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.size, args.tile, args.steps = 128, 96, 2
        args.sizes, args.rss_tile, args.rss_steps = [128], 96, [2]
    parts = args.parts.split(",")
    for p in parts:
        if p not in PARTS:
            raise H.BenchmarkError(f"no part {p!r}: the parts are {', '.join(PARTS)}")
    out: dict[str, Any] = {"figures": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        for part in parts:
            H.say(f"[{part}]")
            res = part_quality(args, Path(tmp)) if part == "quality" else part_rss(args)
            out["figures"] += [{**f, "part": part} for f in res.pop("figures")]
            out[part] = res
            args._checkpoint(out)
    return out
