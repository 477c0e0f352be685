"""Temporal consistency, stylisation and cost of stack runs on a sequence with known motion.

The sequence: crops of the shared Tübingen photo (resized so that the crop is exactly the working
size: no resizing, so the true motion in output pixels is known), each ``--shift`` (dx, dy) px
further than the one before. Compared on the same frames, same options, one process:

* ``independent``: every frame its own ``stylize`` run from its content, ``--steps`` evaluations;
* ``warm``: a stack run with ``temporal_weight=0`` (frames start from the carried pastiche only);
* ``stack w=...``: stack runs with the temporal term (one row per ``--weights``/``--frame-steps``).

Frame 0 of every stack run is the same single-image run as ``independent``'s frame 0, so it is made
once and the stack runs continue from it (``start=1, previous=...``).

Measures, per method, over frames 1..N-1:
* ``flicker``: mean |out[t] - out[t-1] moved by the true motion| over the overlap (lower = steadier);
* ``stylised``: mean |out[t] - content[t]| (how far each frame went from its photo);
* ``s/frame``: process CPU seconds per frame (frame 0 excluded), and its ratio to one
  single-image run (``independent``'s mean); ``flow s``: what the optical flow costs per frame.

    nice python benchmarks/bench_stack.py --size 128 --frames 5 --steps 100 --out docs/stacks
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def sequence(size: int, frames: int, shift: tuple[int, int]) -> np.ndarray:
    """(N, h, w, 3) uint8 crops of the photo, frame t offset by t * shift (dx, dy) from frame 0."""
    from PIL import Image

    photo = Image.open(SHARED / "images" / "tubingen.jpg").convert("RGB")
    h, w = round(size * 3 / 4), size
    scale = (w + abs(shift[0]) * frames + 8) / photo.width * 1.6
    big = np.asarray(photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS))
    y0, x0 = (big.shape[0] - h) // 2 - shift[1] * frames // 2, (big.shape[1] - w) // 2 - shift[0] * frames // 2
    return np.stack(
        [
            big[y0 + t * shift[1] : y0 + t * shift[1] + h, x0 + t * shift[0] : x0 + t * shift[0] + w]
            for t in range(frames)
        ]
    )


def flicker(out: np.ndarray, shift: tuple[int, int]) -> float:
    """Mean |out[t](p) - out[t-1](p + shift)| over the overlap, frames 1..N-1."""
    dx, dy = shift
    h, w = out.shape[1:3]
    ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
    ys1, xs1 = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    return float(np.mean([np.abs(out[t][ys, xs] - out[t - 1][ys1, xs1]).mean() for t in range(1, len(out))]))


def stylised(out: np.ndarray, frames: np.ndarray) -> float:
    return float(np.mean([np.abs(out[t] - frames[t] / 255.0).mean() for t in range(1, len(out))]))


def run_independent(frames: np.ndarray, style: np.ndarray, opts: dict[str, Any]) -> tuple[np.ndarray, list[float]]:
    import napari_nst

    outs, secs = [], []
    for f in frames:
        t = time.process_time()
        outs.append(napari_nst.stylize(f, style, progress=False, **opts))
        secs.append(time.process_time() - t)
    return np.stack(outs), secs


def run_stack(
    frames: np.ndarray, style: np.ndarray, first: np.ndarray, opts: dict[str, Any]
) -> tuple[np.ndarray, list[float]]:
    """Frames 1..N-1 continued from ``first`` (frame 0's pastiche); CPU seconds per frame."""
    import napari_nst

    out = np.zeros((len(frames), *first.shape), np.float32)
    out[0] = first
    secs, t = [], time.process_time()
    for rec in napari_nst.iter_stylize_stack(frames, style, start=1, previous=first, **opts):
        if rec.step == rec.total:
            out[rec.frame] = rec.image
            secs.append(time.process_time() - t)
            t = time.process_time()
    return out, secs


def flow_seconds(frames: np.ndarray) -> float:
    from napari_nst.core.stack.engine import flow

    f = frames / np.float32(255)
    t = time.process_time()
    for i in range(1, len(f)):
        flow.carry(f[i - 1], f[i - 1], f[i])
    return (time.process_time() - t) / (len(f) - 1)


def strip(rows: dict[str, np.ndarray], frames: np.ndarray, path: Path) -> None:
    """One row per method (content first), frames left to right, 2 px gaps."""
    from PIL import Image, ImageDraw

    names = ["content", *rows]
    imgs = {"content": frames / 255.0, **rows}
    n, (h, w) = len(frames), frames.shape[1:3]
    label = 110
    canvas = np.ones((len(names) * (h + 2), label + n * (w + 2), 3), np.float32)
    for r, name in enumerate(names):
        for t in range(n):
            canvas[r * (h + 2) : r * (h + 2) + h, label + t * (w + 2) : label + t * (w + 2) + w] = imgs[name][t]
    im = Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for r, name in enumerate(names):
        draw.text((4, r * (h + 2) + h // 2 - 6), name, fill=(0, 0, 0))
    im.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--shift", type=int, nargs=2, default=(3, 1), metavar=("DX", "DY"))
    ap.add_argument("--weights", type=float, nargs="*", default=[200.0], help="temporal_weight values (stack rows)")
    ap.add_argument("--frame-steps", type=int, nargs="*", default=[0], help="0 = the default (a third of steps)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="docs/stacks")
    ap.add_argument(
        "--independent",
        default="",
        help="an .npz of the independent frames (written when missing, read when there): for sweeps; "
        "quality ratios are deterministic on the CPU, but cost ratios then compare two runs",
    )
    ap.add_argument("--strip", default="docs/images/stack-strip.png", help="the strip of frames ('' = none)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_nst.core.image.files import read_image

    shift = (args.shift[0], args.shift[1])
    frames = sequence(args.size, args.frames, shift)
    style = read_image(SHARED / "images" / "starry_night.jpg")
    opts = dict(
        size=args.size,
        steps=args.steps,
        weights=str(SHARED / "weights" / "vgg16-hed-features.pth"),
        device="cpu",
        preview_every=10**6,
    )
    result: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "args": vars(args),
        "shape": list(frames.shape),
        "rows": [],
    }
    if args.independent and Path(args.independent).exists():
        saved = np.load(args.independent)
        ind, ind_secs = saved["out"], list(saved["secs"])
    else:
        ind, ind_secs = run_independent(frames, style, opts)
        if args.independent:
            np.savez(args.independent, out=ind, secs=np.array(ind_secs))
    single = float(np.mean(ind_secs))
    result["single_run_s"], result["flow_s_per_frame"] = single, flow_seconds(frames)
    outs = {"independent": ind}

    def row(name: str, out: np.ndarray, secs: list[float], **extra: Any) -> None:
        later = float(np.mean(secs[1:] if name == "independent" else secs))
        result["rows"].append(
            dict(
                method=name,
                flicker=flicker(out, shift),
                stylised=stylised(out, frames),
                s_per_frame=later,
                cost_ratio=later / single,
                **extra,
            )
        )
        print(json.dumps(result["rows"][-1]), flush=True)

    row("independent", ind, ind_secs)
    variants = [("warm", 0.0, 0)] + [
        (f"stack w={w:g}" + (f" fs={fs}" if fs else ""), w, fs) for w in args.weights for fs in args.frame_steps
    ]
    for name, w, fs in variants:
        o = dict(opts, temporal_weight=w, **({"frame_steps": fs} if fs else {}))
        out, secs = run_stack(frames, style, ind[0], o)
        outs[name] = out
        row(name, out, secs, temporal_weight=w, frame_steps=fs or None)
    base = result["rows"][0]
    for r in result["rows"]:
        r["flicker_ratio"] = r["flicker"] / base["flicker"]
        r["stylised_ratio"] = r["stylised"] / base["stylised"]
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    if args.strip:
        keep = ["independent", "warm", *[n for n, _, _ in variants[1:2]]]
        strip({k: outs[k] for k in keep}, frames, ROOT / args.strip)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
