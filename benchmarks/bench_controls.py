"""Cost of the artistic controls per objective evaluation (issue 13): the engine's objective of
a plain run against two styles blended, two regions with two styles, three regions (two styles
and one without), and luminance mode, at 256 px, on the shared Tübingen / Starry Night / The
Scream and the shared VGG16 weights. Each configuration's objective is built by the engine
(``_prepare``, ``_terms``, ``_objective``); then single evaluations (forward + backward) are
interleaved A B C ... A B C ..., so that a busy machine slows all alike; medians of wall and
process CPU time after --skip warm-up rounds; ratios against the plain objective of this process.

    nice python benchmarks/bench_controls.py --size 256 --steps 12 [--precision float32] [--threads 1]

One torch thread by default (``--threads``), so that process CPU time is the work of one core and
does not depend on what else runs; the load average before and after is written with the result,
and the ratio of each round (a configuration's evaluation over the plain one of the same round)
is reported besides the ratio of medians.

Writes docs/controls.json and prints a Markdown table (docs/controls.md quotes it).

    nice python benchmarks/bench_controls.py --pictures [--size 256 --steps 100]

makes README's pictures instead (docs/images/controls-*.png; settings in docs/controls.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_nst.core.image.files import read_image  # noqa: E402

SHARED = ROOT.parent / "shared"
WEIGHTS = str(SHARED / "weights" / "vgg16-hed-features.pth")


def configs(content: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> dict[str, tuple]:
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


def objective(content, style, extra, args):
    """The engine's objective of the finest level for one configuration, and its start image."""
    import torch

    from napari_nst.core.api import prepare
    from napari_nst.core.optim import engine
    from napari_nst.core.options import split_steps

    c, s, opts = prepare(
        content,
        style,
        size=args.size,
        steps=10,
        weights=WEIGHTS,
        device="cpu",
        seed=0,
        precision=args.precision,
        **extra,
    )
    device = torch.device("cpu")
    opts = opts.for_device(gpu=False)
    dtype = engine.autocast_dtype(opts.precision, device)
    shapes = opts.level_shapes(c.shape[:2])
    ctx = engine._prepare(c, s, opts, device, dtype, shapes, split_steps(opts.steps, len(shapes)))
    terms, _ = engine._terms(ctx, shapes[-1])
    x = engine.resize(engine._first_image(ctx), shapes[-1])
    return engine._objective(ctx, terms), x


def evaluate_once(obj, x) -> tuple[float, float]:
    """Wall and process CPU seconds of one evaluation (forward + backward of the objective)."""
    import time

    g = x.clone().requires_grad_(True)
    t, p = time.perf_counter(), time.process_time()
    obj(g)
    return time.perf_counter() - t, time.process_time() - p


def pictures(args: argparse.Namespace) -> None:
    """README's strips: colours kept, two styles blended, two regions with two styles."""
    from napari_nst import stylize
    from napari_nst.core.image.files import write_image

    c, s1, s2 = [read_image(SHARED / "images" / n) for n in ("tubingen.jpg", "starry_night.jpg", "the_scream.jpg")]
    kw = dict(size=args.size, steps=args.steps, weights=WEIGHTS, device="cpu", seed=0, progress=False)
    labels = np.zeros(c.shape[:2], np.int32)
    labels[:, c.shape[1] // 2 :] = 1
    runs = {
        "plain": stylize(c, s1, **kw),
        "luminance": stylize(c, s1, preserve_color="luminance", **kw),
        "histogram": stylize(c, s1, preserve_color="histogram", **kw),
        "scream": stylize(c, s2, **kw),
        "blend": stylize(c, [s1, s2], style_blend=(0.5, 0.5), **kw),
        "regions": stylize(c, [s1, s2], regions=labels, region_styles={0: 0, 1: 1}, **kw),
    }
    h, w = runs["plain"].shape[:2]
    small = {k: _fit(v, (h, w)) for k, v in (("content", c), ("s1", s1), ("s2", s2))}
    gap = np.ones((h, 4, 3), np.float32)
    strips = {
        "colours": ["content", "plain", "luminance", "histogram"],
        "blend": ["plain", "blend", "scream"],
        "regions": ["content", "regions"],
    }
    for name, keys in strips.items():
        tiles = [small.get(k, runs.get(k)) for k in keys]
        strip = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
        path = ROOT / "docs" / "images" / f"controls-{name}.png"
        write_image(path, strip)
        _palette(path)


def _palette(path: Path) -> None:
    """A 256-colour PNG (dithered): a third of the bytes, for README."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    im.save(path, optimize=True)


def _fit(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An image resized to ``shape`` (centre-cropped to its aspect ratio first), float32 RGB."""
    from PIL import Image

    from napari_nst.core.image.arrays import to_rgb_float

    f = to_rgb_float(img)
    H, W = f.shape[:2]
    scale = max(shape[0] / H, shape[1] / W)
    ch, cw = int(round(shape[0] / scale)), int(round(shape[1] / scale))
    y0, x0 = (H - ch) // 2, (W - cw) // 2
    crop = (f[y0 : y0 + ch, x0 : x0 + cw] * 255).round().astype(np.uint8)
    return np.asarray(Image.fromarray(crop).resize((shape[1], shape[0]), Image.LANCZOS), np.float32) / 255


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pictures", action="store_true")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument(
        "--steps",
        type=int,
        default=12,
        help="evaluations measured per configuration (--pictures: evaluations per picture)",
    )
    ap.add_argument("--skip", type=int, default=3, help="warm-up evaluations per configuration, not measured")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time = one core's work)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "controls.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.pictures:
        pictures(args)
        return 0
    load_before = os.getloadavg()
    imgs = [read_image(SHARED / "images" / n) for n in ("tubingen.jpg", "starry_night.jpg", "the_scream.jpg")]
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
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    # per round: this configuration's CPU time over the plain objective's in the same round
    paired = {k: statistics.median(a / b for a, b in zip(cpu[k], cpu["plain"], strict=True)) for k in cfg}
    load_after = os.getloadavg()
    rows = [
        "| objective | wall s / eval (median) | ratio | CPU s / eval (median) | ratio | CPU ratio per round (median) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows += [
        f"| {k} | {med[k]:.3f} | {med[k] / med['plain']:.3f} | {med_cpu[k]:.3f} | {med_cpu[k] / med_cpu['plain']:.3f} "
        f"| {paired[k]:.3f} |"
        for k in cfg
    ]
    print("\n".join(rows))
    print(f"load average before {load_before}, after {load_after}; torch threads {args.threads}")
    result = {
        "size": args.size,
        "evaluations": args.steps,
        "skip": args.skip,
        "precision": args.precision,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "wall": wall,
        "process_cpu": cpu,
        "median_wall": med,
        "median_cpu": med_cpu,
        "ratio_wall": {k: med[k] / med["plain"] for k in cfg},
        "ratio_cpu": {k: med_cpu[k] / med_cpu["plain"] for k in cfg},
        "ratio_cpu_per_round": paired,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
