"""GPU benchmark: napari-nst's defaults beside the textbook recipe, 512 and 1024 px, 500 evaluations.

One short call on a GPU machine (well under five minutes on an H200)::

    python benchmarks/gpu.py --out "$OUT"          # or OUT=... python benchmarks/gpu.py

prints a table and writes ``gpu_results.json`` / ``gpu_results.md`` to the output folder. Time is
wall time around the whole run (targets included for napari-nst, with a synchronize at the end),
peak memory is ``torch.cuda.max_memory_allocated``; every result is scored with the float32
objective of baseline.py. ``--dry-run`` runs the same code on the CPU at toy sizes (a check that
the script works, no numbers worth keeping). The issue's goal: 512 px x 500 evaluations < 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline as B  # noqa: E402

from napari_nst.core import engine  # noqa: E402
from napari_nst.core.options import Options  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak(dev: torch.device) -> Optional[int]:
    return int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None


def bench_size(size: int, steps: int, device: str) -> dict[str, Any]:
    dev = torch.device(device)
    prob = B.setup(size, device)
    row: dict[str, Any] = {"size": size, "shape": list(prob.shape), "steps": steps}
    # warm-up both paths (cuDNN autotuning, bf16 kernels) so that neither pays it in the timing
    B.run_baseline(prob, 3)
    warm = Options(size=size, steps=4, model=B.MODEL, weights=B.WEIGHTS, device=device, preview_every=10**6)
    warm.validate()
    for _ in engine.run(prob.content, prob.style, warm):
        pass

    _reset_peak(dev)
    _sync(dev)
    x, sec = B.run_baseline(prob, steps)
    row["baseline"] = {"seconds": sec, "peak_bytes": _peak(dev), "objective": B.objective(prob, x)}
    del x

    _reset_peak(dev)
    opts = Options(size=size, steps=steps, model=B.MODEL, weights=B.WEIGHTS, device=device,
                   preview_every=steps)  # the image only at the end, as the CLI asks for it
    opts.validate()
    _sync(dev)
    t0 = time.perf_counter()
    last = None
    for last in engine.run(prob.content, prob.style, opts):
        pass
    _sync(dev)
    sec = time.perf_counter() - t0
    assert last is not None and last.image is not None
    row["napari-nst"] = {"seconds": sec, "peak_bytes": _peak(dev), "objective": B.objective(prob, last.image),
                         "levels": last.levels}
    row["time_ratio"] = row["napari-nst"]["seconds"] / row["baseline"]["seconds"]
    return row


def markdown(res: dict[str, Any]) -> str:
    def mib(b: Optional[int]) -> str:
        return "-" if b is None else f"{b / 2**20:.0f}"

    L = [f"Machine: {res['machine']}", f"Command: `{res['command']}`", "",
         "| size | shape | evals | baseline s | napari-nst s | x | baseline peak MiB | napari-nst peak MiB | "
         "baseline objective | napari-nst objective |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        b, n = r["baseline"], r["napari-nst"]
        L.append(f"| {r['size']} | {r['shape'][1]}x{r['shape'][0]} | {r['steps']} | {b['seconds']:.2f} | "
                 f"{n['seconds']:.2f} | {r['time_ratio']:.2f} | {mib(b['peak_bytes'])} | {mib(n['peak_bytes'])} | "
                 f"{b['objective']:.4g} | {n['objective']:.4g} |")
    return "\n".join(L)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--device", default=None, help="default: cuda if available, else mps, else cpu")
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="output folder (default $OUT or .)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, 64 px, 4 evaluations: checks the script")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.sizes, args.steps, args.device = "64", 4, args.device or "cpu"
    device = args.device or str(engine.pick_device("auto"))
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
    res: dict[str, Any] = {
        "machine": f"{name}, torch {torch.__version__}, device {device}",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "rows": [],
    }
    for size in [int(s) for s in args.sizes.split(",")]:
        res["rows"].append(bench_size(size, args.steps, device))
        print(json.dumps(res["rows"][-1], default=float), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_results.json").write_text(json.dumps(res, indent=1, default=float))
    md = markdown(res)
    (out / "gpu_results.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
