"""Does the optimisation reach the paper's objective sooner from the instant preview (``init="preview"``)
than from the content (``init="content"``)? Counted in evaluations, not seconds.

For each pair (content x style) and size: a content-initialised run of ``--steps`` evaluations
records its objective after each checkpoint (100 and 300 evaluations); a run from the preview
then counts the evaluations it needs to reach each of those values (it stops once it has reached
the last, or after ``--steps``). Both runs' pictures at each checkpoint are saved side by side
(``--out``), with the preview itself, to be looked at.

    python benchmarks/preview_start.py                       # 256 and 512 px, two pairs, 300 evaluations
    python benchmarks/preview_start.py --sizes 256 --steps 100 --pairs starry_night

Needs ``napari-nst[preview]`` and ../shared (images, VGG16 weights). Results: docs/preview.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))
WEIGHTS = str(SHARED / "weights" / "vgg16-hed-features.pth")


def trace(content: str, style: str, size: int, init: str, steps: int, keep: list[int], targets: list[float]) -> dict:
    """Objective per evaluation of one run, and its images at the evaluations ``keep`` and where it
    first reaches each of ``targets``; stops once it has reached them all (no targets: runs on)."""
    import napari_nst

    totals: list[float] = []
    images: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    records = napari_nst.iter_stylize(
        content, style, size=size, steps=steps, init=init, weights=WEIGHTS, device="cpu", preview_every=1, seed=0
    )
    for rec in records:
        totals.append(float(rec.losses["total"]))
        reached = [v for v in targets if v >= totals[-1] and all(t > v for t in totals[:-1])]
        if rec.step in keep or reached:
            images[rec.step] = rec.image
        if targets and totals[-1] <= min(targets):
            records.close()
            break
    return {"totals": totals, "images": images, "wall_s": time.perf_counter() - t0}


def first_reaching(totals: list[float], value: float) -> int | None:
    """1-based evaluation at which ``totals`` first is at or below ``value`` (None: never)."""
    return next((i + 1 for i, t in enumerate(totals) if t <= value), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--pairs", default="starry_night,the_scream", help="style images (content: tubingen)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--checkpoints", default="100,300")
    ap.add_argument("--out", default=str(ROOT / "docs" / "preview_start"), help="folder for the pictures")
    ap.add_argument("--json", default=str(ROOT / "docs" / "preview_start.json"))
    args = ap.parse_args()
    from napari_nst.core.image.files import write_image
    from napari_nst.core.preview import preview

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = [int(c) for c in args.checkpoints.split(",") if int(c) <= args.steps]
    content = str(SHARED / "images" / "tubingen.jpg")
    results = {"cpu": platform.processor() or platform.machine(), "steps": args.steps, "runs": []}
    for size in (int(s) for s in args.sizes.split(",")):
        for name in args.pairs.split(","):
            style = str(SHARED / "images" / f"{name}.jpg")
            base = trace(content, style, size, "content", args.steps, checkpoints, [])
            targets = {c: base["totals"][c - 1] for c in checkpoints}
            fast = trace(content, style, size, "preview", args.steps, checkpoints, list(targets.values()))
            reaches = {c: first_reaching(fast["totals"], v) for c, v in targets.items()}
            row = {
                "size": size,
                "style": name,
                "content_start": base["totals"][0],
                "preview_start": fast["totals"][0],
                "targets": targets,
                "preview_reaches": reaches,
                "preview_after": {c: fast["totals"][c - 1] for c in checkpoints if c <= len(fast["totals"])},
                "content_trace": base["totals"],
                "preview_trace": fast["totals"],
                "wall_s": {"content": base["wall_s"], "preview": fast["wall_s"]},
            }
            results["runs"].append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("trace")}), flush=True)
            write_image(out / f"{name}_{size}_preview.png", preview(content, style, size=size))
            for c in checkpoints:  # the same evaluations, and where the preview run got as low
                for label, k in (("same", c), ("reached", reaches[c])):
                    pics = [base["images"].get(c), fast["images"].get(k) if k else None]
                    if all(p is not None for p in pics):
                        name_k = f"{name}_{size}_content{c}_vs_preview{k}_{label}.png"
                        write_image(out / name_k, np.concatenate(pics, axis=1))
            Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
