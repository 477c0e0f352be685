"""What the engine's preview throttle saves: images made per run with ``preview_every=1`` (every
evaluation, what the widget asked for before) vs ``preview_interval=0.1`` (what it asks for now).

    python benchmarks/preview_cost.py [--size 128] [--steps 60] [--device cpu]

Counts the records that carry an image and the bytes of those images (each one is a clone, a
clamp and a copy to the host, and on CUDA a synchronisation), and the run's wall time, both ways,
alternating, in one process. Results to docs/preview_cost.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))


def run(args: argparse.Namespace, **preview: float) -> dict[str, float]:
    from napari_nst.core.image.files import read_image
    from napari_nst.core.optim import engine
    from napari_nst.core.options import Options

    c = read_image(SHARED / "images" / "tubingen.jpg").astype("float32") / 255
    s = read_image(SHARED / "images" / "starry_night.jpg").astype("float32") / 255
    opts = Options.from_kwargs(
        size=args.size,
        steps=args.steps,
        model="vgg16",
        device=args.device,
        weights=str(SHARED / "weights" / "vgg16-hed-features.pth"),
        **preview,
    )
    images = nbytes = 0
    t0 = time.perf_counter()
    for rec in engine.run(c, s, opts):
        if rec.image is not None:
            images += 1
            nbytes += rec.image.nbytes
    return {"seconds": time.perf_counter() - t0, "images": images, "bytes": nbytes, "records": rec.step}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "preview_cost.md"))
    args = ap.parse_args()
    rows = []
    for _ in range(args.repeats):
        rows.append(("every evaluation (preview_every=1)", run(args, preview_every=1)))
        rows.append(("throttled (preview_interval=0.1)", run(args, preview_interval=0.1)))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    lines = [
        f"Command: `python benchmarks/preview_cost.py {' '.join(sys.argv[1:])}` ({args.size} px, "
        f"{args.steps} evaluations, {args.device}, shared VGG16); load average {load}",
        "",
        "| preview | records | images made | MiB copied to the host | wall s |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['records']} | {r['images']} | {r['bytes'] / 2**20:.1f} | {r['seconds']:.1f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
