"""Chunk borders of a stack made on a dask cluster: the jump there, with and without cross-fading.

A stack on a cluster is split into contiguous chunks on different workers; a chunk's first frame
starts from its content, so the stack may jump at a chunk border (core/distributed/stack.py). This
script makes the same moving sequence (bench_stack.py's: crops of the Tübingen photo, each 3 px
right and 1 px down from the one before, at exactly the working size so that the true motion is
known) three ways: on one machine (one chunk), and on a LocalCluster of two workers (two chunks)
with ``overlap=0`` and with the default ``overlap=2`` (two frames cross-faded). For each pair of
frames it measures the flicker, mean |out[t](p) - out[t-1](p + motion)|, and reports the largest
at the border against the mean inside the chunks; plus the evaluations each way costs. Quality
numbers are deterministic up to rounding (no timing here: the machine is shared).

    python benchmarks/stack_borders.py          # 10 frames of 96 px, 30 steps, frame_steps 10

Results: docs/stack_borders.md and docs/images/stack_borders.png (a strip of the frames around
the border).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_stack import SHARED, sequence, strip  # noqa: E402

WEIGHTS = str(SHARED / "weights" / "vgg16-hed-features.pth")
SHIFT = (3, 1)


def pair_flicker(out: np.ndarray, t: int) -> float:
    """Mean |out[t](p) - out[t-1](p + motion)| over the overlap of the two frames."""
    dx, dy = SHIFT
    h, w = out.shape[1:3]
    ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
    ys1, xs1 = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    return float(np.abs(out[t][ys, xs] - out[t - 1][ys1, xs1]).mean())


def run(frames: np.ndarray, style: np.ndarray, opts: dict, **where: object) -> tuple[np.ndarray, int]:
    import napari_nst

    out, evals = None, 0
    for rec in napari_nst.iter_stylize_stack(frames, style, **where, **opts):
        if rec.step == rec.total and rec.image is not None:
            if out is None:
                out = np.zeros((rec.frames, *rec.image.shape), np.float32)
            out[rec.frame] = rec.image
            evals = max(evals, rec.stack_total)
    assert out is not None
    return out, evals


def main() -> None:
    import distributed
    import torch

    from napari_nst.core.distributed.stack import plan_chunks
    from napari_nst.core.image.files import read_image

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--frame-steps", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)  # as each worker runs (one thread each on this 2-core machine)
    frames = sequence(a.size, a.frames, SHIFT)
    style = read_image(SHARED / "images" / "starry_night.jpg")
    opts = dict(size=a.size, steps=a.steps, frame_steps=a.frame_steps, weights=WEIGHTS, device="cpu")
    outs, evals = {}, {}
    outs["one machine"], evals["one machine"] = run(frames, style, opts)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        for ov in (0, 2):
            name = f"2 workers, overlap {ov}"
            outs[name], evals[name] = run(frames, style, opts, client=client, overlap=ov)
    border = plan_chunks(0, a.frames, 2)[0].hi  # the second chunk's first frame
    write(a, frames, outs, evals, border)


def write(a: argparse.Namespace, frames: np.ndarray, outs: dict, evals: dict, border: int) -> None:
    near = range(border, min(a.frames, border + 3))  # pairs (t-1, t) touched by the border and its cross-fade
    inside = [t for t in range(1, a.frames) if t not in near]
    load = os.getloadavg()
    lines = [
        "# Chunk borders of a stack on a dask cluster",
        "",
        f"`python benchmarks/stack_borders.py {' '.join(sys.argv[1:])}`: {a.frames} frames of {a.size} px "
        f"(crops of the Tübingen photo moving {SHIFT[0]} px right and {SHIFT[1]} px down a frame), "
        f"The Starry Night, the shared VGG16, steps {a.steps} (a chunk's first frame), frame_steps "
        f"{a.frame_steps}, one torch thread per run, CPU. Two workers split the frames into chunks "
        f"0-{border - 1} and {border}-{a.frames - 1}. Load average {load[0]:.1f} (1 min; it does not change these "
        "numbers, which are deterministic up to rounding).",
        "",
        "Flicker of a pair of frames: mean |out[t](p) - out[t-1](p + motion)| (lower = steadier).",
        "",
        "| way | flicker inside the chunks (mean) | largest at the border | border / inside | evaluations |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, out in outs.items():
        f_in = float(np.mean([pair_flicker(out, t) for t in inside]))
        f_b = max(pair_flicker(out, t) for t in near)
        lines.append(f"| {name} | {f_in:.4f} | {f_b:.4f} | {f_b / f_in:.2f}x | {evals[name]} |")
    lines += [
        "",
        f"Pairs counted at the border: ({near.start - 1}, {near.start}) to ({near.stop - 2}, {near.stop - 1}).",
        "",
    ]
    lo, hi = max(0, border - 3), min(a.frames, border + 4)
    (ROOT / "docs" / "images").mkdir(exist_ok=True)
    png = ROOT / "docs" / "images" / "stack_borders.png"
    strip({k: v[lo:hi] for k, v in outs.items()}, frames[lo:hi], png)
    from PIL import Image

    Image.open(png).quantize(256).save(png, optimize=True)  # 256 colours: small enough for the docs
    lines += [
        f"![frames {lo}-{hi - 1}: content, one machine, two workers without and with cross-fading]"
        "(images/stack_borders.png)",
        "",
        f"Frames {lo} to {hi - 1}, left to right; frame {border} starts the second chunk.",
        "",
    ]
    (ROOT / "docs" / "stack_borders.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
