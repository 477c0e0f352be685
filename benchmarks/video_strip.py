"""The picture of docs/stacks.md's video section: a video in, a video out, and per-frame regions.

Makes a small H.264 video of crops of the shared Tübingen photo (each 3 px right and 1 px down from
the one before), stylises it with the command line (``napari-nst stylize-stack IN.mp4 STYLE -o
OUT.mp4``) in the style of The Starry Night, and again with two styles and a multi-page TIFF of
labels (a disc that moves across the frames: The Scream inside, The Starry Night outside), then
reads both output videos back and writes a strip: rows content / one style / regions, one column
per frame. Needs the ``video`` extra (PyAV) and the shared VGG16 weights.

    nice python benchmarks/video_strip.py --out docs/images/video-strip.png
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"


def crops(frames: int, h: int, w: int) -> np.ndarray:
    img = np.asarray(Image.open(SHARED / "images" / "tubingen.jpg").convert("RGB").reduce(4))  # 192x256
    return np.stack([img[30 + t : 30 + t + h, 40 + 3 * t : 40 + 3 * t + w] for t in range(frames)])


def moving_disc(frames: int, h: int, w: int) -> np.ndarray:
    """Label 1 on a disc of radius h/3 that crosses the frame from left to right; 0 elsewhere."""
    y, x = np.mgrid[0:h, 0:w]
    r = h / 3
    out = np.zeros((frames, h, w), np.uint8)
    for t in range(frames):
        cx = r + (w - 2 * r) * t / max(frames - 1, 1)
        out[t] = ((x - cx) ** 2 + (y - h / 2) ** 2 <= r * r).astype(np.uint8)
    return out


def outline(mask: np.ndarray) -> np.ndarray:
    """The mask's border pixels (where a 4-neighbour differs)."""
    m = mask.astype(bool)
    edge = np.zeros_like(m)
    edge[1:] |= m[1:] != m[:-1]
    edge[:, 1:] |= m[:, 1:] != m[:, :-1]
    return edge


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--frame-steps", type=int, default=20)
    ap.add_argument("--out", default="docs/images/video-strip.png")
    ap.add_argument("--work", help="folder for the videos (default: a temporary one)")
    args = ap.parse_args()

    import tifffile

    from napari_nst.cli import main as cli
    from napari_nst.core.image.stacks import read_stack, stack_writer

    h, w = args.size * 3 // 4, args.size
    work = Path(args.work or tempfile.mkdtemp(prefix="nst-video-"))
    work.mkdir(parents=True, exist_ok=True)
    content = crops(args.frames, h, w)
    src = work / "tubingen.mp4"
    writer = stack_writer(src, fps=8)
    for t, frame in enumerate(content):
        writer.write(t, frame / 255.0)
    writer.frames = args.frames
    writer.close()
    labels = moving_disc(args.frames, h, w)
    tifffile.imwrite(work / "labels.tif", labels)
    images, weights = SHARED / "images", SHARED / "weights" / "vgg16-hed-features.pth"
    common = ["--size", str(args.size), "--steps", str(args.steps), "--frame-steps", str(args.frame_steps)]
    common += ["--weights", str(weights), "--model", "vgg16", "--device", "cpu", "--seed", "0", "--quiet"]
    runs = {
        "starry.mp4": [str(images / "starry_night.jpg")],
        "regions.mp4": [str(images / "starry_night.jpg"), str(images / "the_scream.jpg"), "--regions"]
        + [str(work / "labels.tif"), "--region-styles", "0:0,1:1"],
    }
    for name, extra in runs.items():
        t0, c0 = time.perf_counter(), time.process_time()
        assert cli(["stylize-stack", str(src), *extra, "-o", str(work / name), *common]) == 0
        print(f"{name}: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU", flush=True)

    rows = [read_stack(src), read_stack(work / "starry.mp4"), read_stack(work / "regions.mp4")]
    assert all(len(r) == args.frames for r in rows)
    hh, ww = rows[1][0].shape[:2]
    strip = np.full((3 * hh + 8, args.frames * ww + 2 * (args.frames - 1), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for t in range(args.frames):
            tile = np.asarray(Image.fromarray(row[t]).resize((ww, hh), Image.LANCZOS)) if i == 0 else row[t]
            if i == 2:  # the region's border, as the labels say
                edge = outline(np.asarray(Image.fromarray(labels[t] * 255).resize((ww, hh), Image.NEAREST)))
                tile = tile.copy()
                tile[edge] = (255, 255, 255)
            y, x = i * (hh + 4), t * (ww + 2)
            strip[y : y + hh, x : x + ww] = tile
    out = Path(args.out)
    Image.fromarray(strip).quantize(256).save(out, optimize=True)
    print(f"{out}: {strip.shape[1]}x{strip.shape[0]}, {os.path.getsize(out) // 1024} KB; videos in {work}")


if __name__ == "__main__":
    main()
