"""What the widget sends to the engine process for a large layer, before and after shrinking first.

Before: the worker read the full-resolution slice (level 0 of a multiscale layer), converted it
to a float32 RGB copy of full size (``_layers.layer_to_rgb``) and the engine process pickled that
to the child. After: ``_run.inputs.read_input`` reads the smallest level that still has the
working size, shrinks the slice to the working shape and converts it once.

Measured per case, in this process (no torch, no child: the request is built and pickled as
``EngineProcess`` does): the bytes of the pickled request and the time from layer to pickled
request (best of ``--repeat``). Ratios after/before, in the same run. Writes docs/widget_input.md
and .json.

    python3 benchmarks/widget_input.py            # about a minute on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari.layers import Image  # noqa: E402  (napari's models only, no Qt)

from napari_nst._run.inputs import read_input, snapshot  # noqa: E402
from napari_nst._run.layer_view import layer_to_rgb  # noqa: E402
from napari_nst.core.process.client import EngineProcess  # noqa: E402

H, W = 3000, 4000


def layers() -> dict[str, Image]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    gray = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    pyramid = [rgb[:: 2**k, :: 2**k] for k in range(4)]
    return {
        "uint8 RGB": Image(rgb, rgb=True, name="rgb"),
        "uint16 gray": Image(gray, name="gray", contrast_limits=(1000, 60000)),
        "uint8 RGB, 4-level multiscale": Image(pyramid, rgb=True, multiscale=True, name="pyramid"),
    }


def _request_bytes(content: np.ndarray, style: np.ndarray, size: int) -> int:
    proc = EngineProcess(content, style, size=size, steps=10, model="vgg16", nice=0)
    return len(pickle.dumps(proc._request, protocol=pickle.HIGHEST_PROTOCOL))


def before(layer: Image, style: np.ndarray, size: int) -> int:
    content, _ = layer_to_rgb(layer, name="content")
    return _request_bytes(content, style, size)


def after(layer: Image, style: np.ndarray, size: int) -> int:
    content, _ = read_input(snapshot(layer), (0, 1), size, "content")
    return _request_bytes(content, style, size)


def best(fn, repeat: int, *args) -> tuple[float, int]:
    times, out = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--out", default=str(ROOT / "docs" / "widget_input"))
    args = ap.parse_args()
    style = np.random.default_rng(1).random((300, 400, 3)).astype(np.float32)  # small: the content is measured
    rows = []
    for name, layer in layers().items():
        for size in args.sizes:
            t_b, n_b = best(before, args.repeat, layer, style, size)
            t_a, n_a = best(after, args.repeat, layer, style, size)
            rows.append(
                dict(
                    layer=name,
                    size=size,
                    bytes_before=n_b,
                    bytes_after=n_a,
                    bytes_ratio=n_a / n_b,
                    s_before=t_b,
                    s_after=t_a,
                    time_ratio=t_a / t_b,
                )
            )
            print(
                f"{name:32s} size {size:4d}: {n_b / 2**20:7.1f} -> {n_a / 2**20:6.2f} MiB "
                f"({n_a / n_b:.4f}x), {t_b:6.3f} -> {t_a:6.3f} s ({t_a / t_b:.3f}x)",
                flush=True,
            )
    write(rows, args)
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(rows: list[dict], args: argparse.Namespace) -> None:
    cpu = _cpu()
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "layer": f"{W}x{H}",
        "repeat": args.repeat,
    }
    Path(args.out + ".json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    lines = [
        "# What the widget sends to the engine process for a 4000x3000 layer",
        "",
        "`python3 benchmarks/widget_input.py` (numbers below from that run; " + json.dumps(info) + ").",
        "Before: the full-resolution slice as a float32 RGB copy, pickled to the child. After: the",
        "smallest fitting level, shrunk to the working shape (area average) and converted once.",
        "Bytes: the pickled request (content + a 400x300 style + options). Time: layer to pickled",
        "request, best of the repeats; a ratio < 1 is a saving.",
        "",
        "| layer | size | MiB before | MiB after | bytes ratio | s before | s after | time ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['size']} | {r['bytes_before'] / 2**20:.1f} | {r['bytes_after'] / 2**20:.2f} "
            f"| {r['bytes_ratio']:.4f}x | {r['s_before']:.3f} | {r['s_after']:.3f} | {r['time_ratio']:.3f}x |"
        )
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
