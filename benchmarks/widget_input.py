"""Widget input: what the widget sends to the engine process for a large layer, against a full-resolution copy.

The baseline is what the widget sent before it shrank first: the full-resolution slice (level 0 of a
multiscale layer) converted to a float32 RGB copy (``read_slice`` + ``display_rgb`` at level 0), pickled to the child.
Now ``_run.inputs.read_input`` reads the smallest level that still has the working size, shrinks the
slice to the working shape and converts it once. Per layer kind and working size, in this process
(napari's layer models, no Qt, no torch; the request built and pickled as ``EngineProcess`` does):
the bytes of the pickled request and the time from layer to pickled request (best of --repeat).

    python -m benchmarks widget_input
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _harness as H

USES_TORCH = False  # napari's process: torch stays out of it


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--layer", default="4000x3000", help="the layers' width x height (px)")


def layers(h: int, w: int) -> dict[str, Any]:
    from napari.layers import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gray = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    pyramid = [rgb[:: 2**k, :: 2**k] for k in range(4)]
    return {
        "uint8 RGB": Image(rgb, rgb=True, name="rgb"),
        "uint16 gray": Image(gray, name="gray", contrast_limits=(1000, 60000)),
        "uint8 RGB, 4-level multiscale": Image(pyramid, rgb=True, multiscale=True, name="pyramid"),
    }


def _request_bytes(content: np.ndarray, style: np.ndarray, size: int) -> int:
    from napari_nst.core.process.client import EngineProcess

    proc = EngineProcess(content, style, size=size, steps=10, model="vgg16", nice=0)
    return len(pickle.dumps(proc._request, protocol=pickle.HIGHEST_PROTOCOL))


def full_copy(layer: Any, style: np.ndarray, size: int) -> int:
    """The baseline: level 0's slice, at full resolution, converted as shown."""
    from napari_nst._run.layer_view import display_rgb, read_slice

    arr, _ = read_slice(layer, (0, 1), None, 0, "content")
    content, _ = display_rgb(arr, layer, "content", "content")
    return _request_bytes(content, style, size)


def shrunk(layer: Any, style: np.ndarray, size: int) -> int:
    from napari_nst._run.inputs import read_input, snapshot

    content, _ = read_input(snapshot(layer), (0, 1), size, "content")
    return _request_bytes(content, style, size)


def best(fn: Callable[..., int], repeat: int, *args: Any) -> tuple[float, int]:
    times, out = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.repeat, args.sizes, args.layer = 1, [64], "400x300"
    w, h = (int(v) for v in args.layer.lower().split("x"))
    style = np.random.default_rng(1).random((300, 400, 3)).astype(np.float32)  # small: the content is measured
    rows, figures = [], []
    for name, layer in layers(h, w).items():
        for size in args.sizes:
            t_b, n_b = best(full_copy, args.repeat, layer, style, size)
            t_a, n_a = best(shrunk, args.repeat, layer, style, size)
            rows.append(dict(layer=name, size=size, bytes_before=n_b, bytes_after=n_a, s_before=t_b, s_after=t_a))
            what = f"{w}x{h} {name} layer at {size} px"
            against = "a full-resolution float32 copy"
            figures += [
                H.figure(f"{what}: bytes sent to the engine process", n_a / n_b, against, n_a / H.MiB, "MiB"),
                H.figure(f"{what}: time from layer to request", t_a / t_b, against, t_a, "s"),
            ]
            H.say(f"  {what}: {n_b / H.MiB:.1f} -> {n_a / H.MiB:.2f} MiB, {t_b:.3f} -> {t_a:.3f} s")
    return {"figures": figures, "rows": rows}
