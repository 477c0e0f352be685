"""Which layout and which max pooling pay, per CPU instruction set and dtype.

One forward + backward of napari-nst's network (VGG16 up to relu5_1, the shared HED weights, the
default content and style layers, Gram matrices of the style layers) at 192x256 and 256x341 px,
for each of {channels-last input, contiguous} x {index-free max pooling, torch's max_pool2d}, in:

* ``bf16``        bfloat16 autocast on this CPU's own instruction set (AVX-512 with avx512_bf16);
* ``fp32-avx512`` float32 on the same instruction set;
* ``fp32-avx2``   float32 with ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (oneDNN and
  ATen dispatch their AVX2 kernels: what a CPU without AVX-512 runs; the variables must be set
  before torch loads, so each mode runs in its own process).

Repeats are interleaved over the four combinations (so that a load change on this shared machine
hits all of them alike); minimum and median of ``--repeats`` are reported, and each combination's
ratio to "contiguous + torch pool" (median of per-repeat ratios). Results go to
docs/perf_levers_isa.json and .md::

    nice python benchmarks/levers_isa.py --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: ``fp32-avx2``: oneDNN (convolutions) and ATen (everything else, e.g. the pool's eq/where) both
#: limited to AVX2, as on a CPU without AVX-512
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
MODES = {"bf16": {}, "fp32-avx512": {}, "fp32-avx2": AVX2_ENV}
COMBOS = [
    ("contiguous", "torch pool"),
    ("contiguous", "index-free pool"),
    ("channels-last", "torch pool"),
    ("channels-last", "index-free pool"),
]
SHAPES = [(192, 256), (256, 341)]


def measure(mode: str, repeats: int, threads: int = 0) -> dict[str, Any]:
    """In this process: time each combination at each shape (torch imported here, after the env)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import baseline as B
    from napari_nst.core.objective.losses import gram

    if threads:
        torch.set_num_threads(threads)
    dtype = torch.bfloat16 if mode == "bf16" else None
    net = B.build_vgg(B.MODEL, B.LAYERS, weights=B.WEIGHTS)
    out: dict[str, Any] = {
        "mode": mode,
        "isa_env": os.environ.get("ONEDNN_MAX_CPU_ISA", "(native)"),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "rows": [],
    }
    for shape in SHAPES:
        x0 = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(0))

        def once(layout: str, pool: str, x0: torch.Tensor = x0) -> tuple[float, float]:
            net.set_lean_pool(pool == "index-free pool")
            x = x0.clone().requires_grad_(True)
            t, c = time.perf_counter(), time.process_time()
            xi = x.contiguous(memory_format=torch.channels_last) if layout == "channels-last" else x
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                f = net(xi)
            loss = sum(gram(f[n]).sum() * 1e-9 for n in B.STYLE_LAYERS) + f["relu4_2"].float().pow(2).sum() * 1e-6
            loss.backward()
            return time.perf_counter() - t, time.process_time() - c

        times: dict[tuple[str, str], list[tuple[float, float]]] = {c: [] for c in COMBOS}
        for c in COMBOS:  # warm-up (oneDNN primitive creation)
            once(*c)
        for _ in range(repeats):
            for c in COMBOS:
                times[c].append(once(*c))
        base = times[COMBOS[0]]
        for c in COMBOS:
            wall, cpu = [t[0] for t in times[c]], [t[1] for t in times[c]]
            out["rows"].append(
                {
                    "shape": list(shape),
                    "layout": c[0],
                    "pool": c[1],
                    "min_ms": 1000 * min(wall),
                    "median_ms": 1000 * statistics.median(wall),
                    "ratio": statistics.median(t[0] / b[0] for t, b in zip(times[c], base, strict=True)),
                    "cpu_median_ms": 1000 * statistics.median(cpu),
                    "cpu_ratio": statistics.median(t[1] / b[1] for t, b in zip(times[c], base, strict=True)),
                }
            )
        print(
            f"  {mode} {shape}: "
            + ", ".join(f"{r['layout']}/{r['pool']} {r['median_ms']:.0f} ms" for r in out["rows"][-4:]),
            file=sys.stderr,
            flush=True,
        )
    return out


def markdown(res: dict[str, Any]) -> str:
    L = [
        f"Machine: {res['machine']}",
        f"Command: `{res['command']}`",
        f"Load average: {res['load_start']:.1f} at start, {res['load_end']:.1f} at the end (2 cores, shared)",
        "",
        "One forward + backward of VGG16 to relu5_1 with the style Gram matrices; "
        f"{res['repeats']} interleaved repeats, {res['modes'][0]['threads']} torch thread(s); "
        "x = median of per-repeat ratios to contiguous + torch pool, of wall "
        "time and of the process's CPU time (all threads; less sensitive to other jobs on the cores).",
        "",
        "| mode | shape | layout | pool | min ms | median ms | x (wall) | CPU ms | x (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in res["modes"]:
        for r in m["rows"]:
            L.append(
                f"| {m['mode']} | {r['shape'][0]}x{r['shape'][1]} | {r['layout']} | {r['pool']} | "
                f"{r['min_ms']:.0f} | {r['median_ms']:.0f} | {r['ratio']:.2f} | {r['cpu_median_ms']:.0f} | "
                f"{r['cpu_ratio']:.2f} |"
            )
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default); 1 is the least disturbed by other jobs on a shared machine",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf_levers_isa"))
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.repeats, args.threads)))
        return 0
    res: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "command": "python benchmarks/levers_isa.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeats": args.repeats,
        "load_start": os.getloadavg()[0],
        "modes": [],
    }
    for mode in args.modes.split(","):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **MODES[mode])
        p = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--repeats", str(args.repeats), "--threads", str(args.threads)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            check=True,
        )
        res["modes"].append(json.loads(p.stdout.strip().splitlines()[-1]))
    import torch  # only for the record

    res["machine"] += f", torch {torch.__version__}"
    res["load_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res) + "\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
