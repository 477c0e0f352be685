"""How long the instant preview takes beside one evaluation of the optimisation, both at 512 px.

    python benchmarks/preview.py [--size 512] [--repeats 5]

The preview (:func:`napari_nst.preview`: the style vector, the transformer at 384 px, the resize
to ``--size``) of tubingen x starry_night from arrays already in memory, after one warm-up call
(the ONNX sessions loaded); and one objective evaluation of :func:`napari_nst.iter_stylize` at the
same size with the shared VGG16 weights, from the records' times: ``(T(k2) - T(k1)) / (k2 - k1)``
(the network's build and the targets are before evaluation k1). Interleaved (a preview, a run,
a preview ...), medians over ``--repeats``. Target: the preview at most half an evaluation.

``run()`` returns the numbers as a dict (for a harness); ``main`` prints them as JSON.
Needs ``napari-nst[preview]`` and ../shared (``$NAPARI_NST_SHARED``). Results: docs/preview.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "weights" / "vgg16-hed-features.pth"


def cpu_model() -> str:
    """The processor's name (lscpu's "Model name"), and the cores this process may use."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores"


def _evaluation(content: Any, style: Any, size: int, k1: int, k2: int) -> float:
    """Seconds per objective evaluation of one run, between evaluations ``k1`` and ``k2``."""
    import napari_nst

    times = {}
    records = napari_nst.iter_stylize(
        content, style, size=size, steps=k2, weights=str(WEIGHTS), device="cpu", preview_every=k2
    )
    for rec in records:
        times[rec.step] = time.perf_counter()
    return (times[k2] - times[k1]) / (k2 - k1)


def run(size: int = 512, repeats: int = 5, k1: int = 2, k2: int = 6) -> dict[str, Any]:
    """Median seconds of the preview and of one evaluation at ``size`` px, and their ratio."""
    import numpy as np

    from napari_nst.core.image.files import read_image
    from napari_nst.core.preview import preview, style_vector, transform

    content = read_image(SHARED / "images" / "tubingen.jpg").astype(np.float32) / 255
    style = read_image(SHARED / "images" / "starry_night.jpg").astype(np.float32) / 255
    shape = preview(content, style, size=size).shape[:2]  # warm-up: the ONNX sessions load here
    previews, evaluations, vectors, transforms = [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        preview(content, style, size=size)
        previews.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        v = style_vector(style)
        t1 = time.perf_counter()
        transform(content, v, shape)
        vectors.append(t1 - t0)
        transforms.append(time.perf_counter() - t1)
        evaluations.append(_evaluation(content, style, size, k1, k2))
    p, e = statistics.median(previews), statistics.median(evaluations)
    return {
        "cpu": cpu_model(),
        "size": size,
        "repeats": repeats,
        "preview_s": p,
        "style_vector_s": statistics.median(vectors),
        "transform_s": statistics.median(transforms),
        "evaluation_s": e,
        "ratio": p / e,
        "target_ratio": 0.5,
        "previews_s": previews,
        "evaluations_s": evaluations,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="the instant preview's time beside one evaluation")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(json.dumps(run(args.size, args.repeats), indent=1))


if __name__ == "__main__":
    main()
