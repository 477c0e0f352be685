"""Stacks: temporal consistency, stylisation and cost of stack runs against independent frames.

The sequence: crops of the content picture (resized so that the crop is exactly the working size:
no resizing, so the true motion in output pixels is known), each ``--shift`` (dx, dy) px further
than the one before. Compared on the same frames, same options, one process:

* ``independent`` (the baseline): every frame its own ``stylize`` run, ``--steps`` evaluations;
* ``warm``: a stack run with ``temporal_weight=0`` (frames start from the carried pastiche only);
* ``stack w=...``: stack runs with the temporal term (one row per --weights x --frame-steps).

Frame 0 of every stack run is the same single-image run as ``independent``'s frame 0, so it is made
once and the stack runs continue from it. Per method, over frames 1..N-1:

* flicker: mean |out[t] - out[t-1] moved by the true motion| over the overlap (lower = steadier);
* stylised: mean |out[t] - content[t]| (how far each frame went from its photo);
* CPU seconds per frame (process time, frame 0 excluded) against one independent frame's; and
  what the optical flow costs per frame.

    python -m benchmarks stack --size 128 --frames 5 --steps 100 --threads 1
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from . import _harness as H


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--shift", type=int, nargs=2, default=(3, 1), metavar=("DX", "DY"))
    ap.add_argument("--weights-temporal", type=float, nargs="*", default=[200.0], help="temporal_weight values")
    ap.add_argument("--frame-steps", type=int, nargs="*", default=[0], help="0 = the default (a third of steps)")


def sequence(photo: np.ndarray, size: int, frames: int, shift: tuple[int, int]) -> np.ndarray:
    """(N, h, w, 3) uint8 crops of ``photo``, frame t offset by t * shift (dx, dy) from frame 0."""
    from PIL import Image

    img = Image.fromarray(photo).convert("RGB")
    h, w = round(size * 3 / 4), size
    scale = (w + abs(shift[0]) * frames + 8) / img.width * 1.6
    big = np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS))
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
    from napari_nst.core.stack import flow

    f = frames / np.float32(255)
    t = time.process_time()
    for i in range(1, len(f)):
        flow.carry(f[i - 1], f[i - 1], f[i])
    return (time.process_time() - t) / (len(f) - 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.size, args.frames, args.steps = 64, 3, 3
    shift = (args.shift[0], args.shift[1])
    frames = sequence(H.load_image(args.content), args.size, args.frames, shift)
    style = H.load_image(args.style)
    opts = dict(
        size=args.size,
        steps=args.steps,
        model=H.MODEL,
        weights=H.weights_file(args.weights),
        device="cpu",
        preview_every=10**6,
    )
    ind, ind_secs = run_independent(frames, style, opts)
    single = float(np.mean(ind_secs))
    result: dict[str, Any] = {"shape": list(frames.shape), "single_run_s": single, "rows": []}
    result["flow_s_per_frame"] = flow_seconds(frames)

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
        H.say(f"  {result['rows'][-1]}")

    row("independent", ind, ind_secs)
    variants = [("warm", 0.0, 0)] + [
        (f"stack w={w:g}" + (f" fs={fs}" if fs else ""), w, fs)
        for w in args.weights_temporal
        for fs in args.frame_steps
    ]
    for name, w, fs in variants:
        o = dict(opts, temporal_weight=w, **({"frame_steps": fs} if fs else {}))
        out, secs = run_stack(frames, style, ind[0], o)
        row(name, out, secs, temporal_weight=w, frame_steps=fs or None)
    base = result["rows"][0]
    h, w = frames.shape[1:3]
    what = f"{args.frames} frames of {w}x{h} px, {args.steps} evaluations"
    figures = []
    for r in result["rows"]:
        r["flicker_ratio"] = r["flicker"] / base["flicker"]
        r["stylised_ratio"] = r["stylised"] / base["stylised"]
        if r is base:
            continue
        figures += [
            H.figure(f"{what}, {r['method']}: flicker", r["flicker_ratio"], "independent frames", r["flicker"], ""),
            H.figure(f"{what}, {r['method']}: stylised", r["stylised_ratio"], "independent frames", r["stylised"], ""),
            H.figure(
                f"{what}, {r['method']}: CPU time per frame",
                r["cost_ratio"],
                "one independent frame",
                r["s_per_frame"],
                "s",
            ),
        ]
    figures.append(
        H.figure(
            f"{what}: optical flow per frame",
            result["flow_s_per_frame"] / single,
            "one independent frame",
            result["flow_s_per_frame"],
            "s",
        )
    )
    return {"figures": figures, **result}
