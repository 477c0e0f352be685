"""GPU benchmark: napari-nst's defaults beside the textbook recipe (baseline.py), 512/1024/2048 px.

One prepared call on a GPU machine that has only the repository (the weights and pictures copied
into an ignored folder of it, paths given as arguments or in the environment)::

    python benchmarks/gpu.py --weights W.pth --content C.jpg --style S.jpg --out "$OUT"
    # or: NAPARI_NST_WEIGHTS=W.pth NST_CONTENT=C.jpg NST_STYLE=S.jpg OUT=... python benchmarks/gpu.py

writes ``gpu_results.json`` / ``gpu_results.md`` to the output folder (after every size, so a
later failure keeps the earlier rows) and prints them. What it does against bias:

* ``torch.backends.cudnn.benchmark`` on from the start, for both sides (the engine keeps it on);
  each size is warmed up on both sides first (autotuning, bf16 kernels), then timed;
* ``--repeats`` interleaved repeats (baseline, napari-nst, baseline, ...), min and median;
* TF32 as torch has it by default (or ``--tf32 on|off``), recorded; peak memory
  (``max_memory_allocated``) of each side's timed run; CUDA and MPS synchronised before a clock read;
* every result scored with baseline.py's one float32 objective; the time to reach the textbook's
  ``--steps``-evaluation objective as a ratio: the evaluation at which napari-nst first reaches it
  (from a separate run with an image every ``--trace-every`` evaluations) times its timed
  per-evaluation cost, over the baseline's timed run;
* a ``--time-budget`` (default 240 s of timed work): a repeat whose predicted cost would pass it is skipped and
  the row says so, so the whole call stays under five minutes on an H200.

Tiles (issue 15): for each of ``--tile-sizes`` (2048 and 4096 px), ``--tile-steps`` evaluations of
the whole image and of tiles of ``--tile`` px (and the tile size the engine picks itself under
``--tile-max-memory``), each timed and its peak memory recorded, within ``--tile-budget`` seconds
(a run whose predicted cost would pass it is skipped and the row says so).

The issue's target: 512 px x 500 evaluations in under 3 s on an H200. ``--dry-run`` runs the same
code on the CPU at a toy size (a check of the script, no numbers worth keeping).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline as B  # noqa: E402
from napari_nst.core.optim import engine  # noqa: E402
from napari_nst.core.options import Options  # noqa: E402


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def reset_peak(dev: torch.device) -> None:
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    elif dev.type == "mps":
        torch.mps.empty_cache()


def peak_bytes(dev: torch.device) -> int | None:
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    if dev.type == "mps":  # no peak counter on MPS: what the driver holds after the run
        return int(torch.mps.driver_allocated_memory())
    return None


def nst_options(size: int, steps: int, device: str, weights: str, preview_every: int) -> Options:
    o = Options(size=size, steps=steps, model=B.MODEL, weights=weights, device=device, preview_every=preview_every)
    o.validate()
    return o


def run_nst(prob: B.Problem, opts: Options) -> tuple[float, Any, list]:
    """One timed napari-nst run: seconds (synchronised), the last record, the records with images."""
    dev = prob.device
    sync(dev)
    t0 = time.perf_counter()
    last, shown = None, []
    for last in engine.run(prob.content, prob.style, opts):
        if last.image is not None:
            shown.append(last)
    sync(dev)
    assert last is not None and last.image is not None
    return time.perf_counter() - t0, last, shown


def run_baseline(prob: B.Problem, steps: int) -> tuple[float, torch.Tensor]:
    """baseline.py's loop, timed here with a synchronisation on either side (CUDA and MPS)."""
    sync(prob.device)
    t0 = time.perf_counter()
    x, _ = B.run_baseline(prob, steps)
    sync(prob.device)
    return time.perf_counter() - t0, x


def timed(fn: Callable[[], tuple[float, Any]], dev: torch.device) -> dict[str, Any]:
    reset_peak(dev)
    sec, result = fn()
    return {"seconds": sec, "peak_bytes": peak_bytes(dev), "result": result}


def reach(prob: B.Problem, size: int, steps: int, device: str, weights: str, every: int, target: float) -> int | None:
    """The first evaluation (to ``every``) at which napari-nst's image scores <= ``target``."""
    _, _, shown = run_nst(prob, nst_options(size, steps, device, weights, every))
    for rec in shown:
        if rec.level == rec.levels and B.objective(prob, rec.image) <= target:
            return int(rec.step)
    return None


def bench_size(
    size: int, steps: int, device: str, weights: str, repeats: int, trace_every: int, deadline: float
) -> dict[str, Any]:
    dev = torch.device(device)
    prob = B.setup(size, device, content=ARGS_PATHS["content"], style=ARGS_PATHS["style"], weights=weights)
    row: dict[str, Any] = {"size": size, "shape": list(prob.shape), "steps": steps, "skipped_repeats": 0}
    # warm-up of both sides (cuDNN autotuning for these shapes, bf16 kernels, the weights cache)
    B.run_baseline(prob, 3)
    run_nst(prob, nst_options(size, 4, device, weights, 10**6))
    base: list[dict[str, Any]] = []
    nst: list[dict[str, Any]] = []
    for rep in range(repeats):
        if rep and time.perf_counter() + (base[-1]["seconds"] + nst[-1]["seconds"]) > deadline:
            row["skipped_repeats"] = repeats - rep
            break
        base.append(timed(lambda: run_baseline(prob, steps), dev))
        nst.append(timed(lambda: run_nst(prob, nst_options(size, steps, device, weights, steps))[:2], dev))
    x_base, last = base[0]["result"], nst[-1]["result"]
    row["baseline"] = _summary(base, B.objective(prob, x_base))
    row["napari-nst"] = _summary(nst, B.objective(prob, last.image))
    row["napari-nst"].update(precision=last.precision, device=last.device, levels=last.levels)
    row["time_ratio"] = row["napari-nst"]["median_s"] / row["baseline"]["median_s"]
    # the textbook's objective after ``steps`` evaluations: its final image, scored as every image is
    target = row["baseline"]["objective"]
    row["reach"] = {"target": target, "step": None, "ratio": None}
    if time.perf_counter() + row["napari-nst"]["median_s"] * 1.5 < deadline:
        step = reach(prob, size, steps, device, weights, trace_every, target)
        if step is not None:
            per_eval = row["napari-nst"]["median_s"] / steps
            row["reach"].update(step=step, ratio=step * per_eval / row["baseline"]["median_s"])
    else:
        row["reach"]["skipped"] = "time budget"
    return row


def tile_run(
    size: int, steps: int, device: str, weights: str, tile: int | None, max_memory: str | None
) -> dict[str, Any]:
    """One run of ``steps`` evaluations at ``size`` (tiles of ``tile`` px, or the engine's choice):
    seconds, seconds per evaluation, peak memory, the tile size used, the final objective."""
    dev = torch.device(device)
    prob = B.setup(size, device, content=ARGS_PATHS["content"], style=ARGS_PATHS["style"], weights=weights)
    opts = Options(
        size=size,
        steps=steps,
        model=B.MODEL,
        weights=weights,
        device=device,
        preview_every=steps,
        tile_size=tile,
        max_memory=max_memory,
    )
    opts.validate()
    run = timed(lambda: run_nst(prob, opts)[:2], dev)
    last = run["result"]
    return {
        "size": size,
        "shape": list(prob.shape),
        "steps": steps,
        "tile_asked": tile,
        "max_memory": max_memory,
        "tile_size": last.tile_size,
        "note": last.note,
        "seconds": run["seconds"],
        "s_per_eval": run["seconds"] / steps,
        "peak_bytes": run["peak_bytes"],
        "total": last.losses["total"],
    }


def bench_tiles(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    """Whole image vs tiles at each of ``--tile-sizes``, within ``--tile-budget`` seconds."""
    rows: list[dict[str, Any]] = []
    deadline = time.perf_counter() + args.tile_budget
    for size in [int(v) for v in args.tile_sizes.split(",") if v]:
        for tile, cap in ((None, None), (args.tile, None), (None, args.tile_max_memory)):
            if tile is None and cap is None and size > args.tile_whole_max:
                continue
            last = rows[-1] if rows else None
            if last is not None and "seconds" in last:  # predict from the last run: cost grows with the pixels
                cost = last["seconds"] * (size / last["size"]) ** 2 * 1.3
                if time.perf_counter() + cost > deadline:
                    rows.append({"size": size, "tile_asked": tile, "max_memory": cap, "skipped": "time budget"})
                    continue
            try:
                rows.append(tile_run(size, args.tile_steps, device, args.weights, tile, cap))
            except (MemoryError, ValueError) as exc:  # DeviceMemoryError, OptionError: recorded, not fatal
                rows.append({"size": size, "tile_asked": tile, "max_memory": cap, "error": str(exc)})
            print(json.dumps(rows[-1], default=float), flush=True)
    return rows


def tiles_markdown(rows: list[dict[str, Any]]) -> str:
    L = [
        "| size | tiles asked | max memory | tile used | s / eval | peak MiB | objective |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['size']} | {r.get('tile_asked') or 'whole'} | {r.get('max_memory') or '-'} |"
        if "seconds" not in r:
            L.append(f"{head} {r.get('skipped') or r.get('error')} | | | |")
            continue
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        L.append(f"{head} {r['tile_size'] or 'whole'} | {r['s_per_eval']:.3f} | {peak} | {r['total']:.4g} |")
    return "\n".join(L)


def _summary(runs: list[dict[str, Any]], objective: float) -> dict[str, Any]:
    secs = [r["seconds"] for r in runs]
    peaks = [r["peak_bytes"] for r in runs if r["peak_bytes"] is not None]
    return {
        "min_s": min(secs),
        "median_s": statistics.median(secs),
        "all_s": secs,
        "peak_bytes": max(peaks) if peaks else None,
        "objective": objective,
    }


ARGS_PATHS: dict[str, str] = {}


def machine(dev: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "device": str(dev),
        "python": platform.python_version(),
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    if dev.type == "cuda":
        info.update(
            name=torch.cuda.get_device_name(dev),
            capability=list(torch.cuda.get_device_capability(dev)),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            memory_gib=round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1),
        )
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def markdown(res: dict[str, Any]) -> str:
    def mib(b: int | None) -> str:
        return "-" if b is None else f"{b / 2**20:.0f}"

    m = res["machine"]
    L = [
        f"Machine: {m.get('name')} ({m['device']}, compute capability {m.get('capability', '-')}), torch "
        f"{m['torch']}, CUDA {m.get('cuda', '-')}, cuDNN {m.get('cudnn', '-')}; cudnn.benchmark "
        f"{m['cudnn.benchmark']}, TF32 matmul {m['tf32_matmul']}, TF32 cuDNN {m['tf32_cudnn']}",
        f"Command: `{res['command']}`",
        f"Wall time of the whole call: {res.get('seconds', 0):.0f} s",
        "",
        "| size | shape | evals | baseline s (min / median) | napari-nst s (min / median) | x | precision | "
        "baseline peak MiB | napari-nst peak MiB | baseline objective | napari-nst objective | reach step | "
        "reach x |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        b, n, q = r["baseline"], r["napari-nst"], r["reach"]
        L.append(
            f"| {r['size']} | {r['shape'][1]}x{r['shape'][0]} | {r['steps']} | {b['min_s']:.2f} / "
            f"{b['median_s']:.2f} | {n['min_s']:.2f} / {n['median_s']:.2f} | {r['time_ratio']:.2f} | "
            f"{n['precision']} | {mib(b['peak_bytes'])} | {mib(n['peak_bytes'])} | {b['objective']:.4g} | "
            f"{n['objective']:.4g} | {q['step'] or q.get('skipped', 'not reached')} | "
            f"{'-' if q['ratio'] is None else format(q['ratio'], '.2f')} |"
        )
    if res.get("skipped_sizes"):
        L += ["", f"Skipped by the time budget: {res['skipped_sizes']} px"]
    L += [
        "",
        "x: napari-nst's median over the baseline's; reach x: napari-nst's cost to reach the baseline's "
        "final objective (first evaluation at or below it, times napari-nst's per-evaluation time) over the "
        "baseline's whole run.",
    ]
    return "\n".join(L)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024,2048")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", default="3,2,1", help="repeats per size (one number for all, or one per size)")
    ap.add_argument("--trace-every", type=int, default=10, help="image every n evaluations in the reach run")
    ap.add_argument("--device", default=None, help="default: cuda if available, else mps, else cpu")
    ap.add_argument("--weights", default=os.environ.get("NAPARI_NST_WEIGHTS", B.WEIGHTS))
    ap.add_argument("--content", default=os.environ.get("NST_CONTENT", B.CONTENT))
    ap.add_argument("--style", default=os.environ.get("NST_STYLE", B.STYLE))
    ap.add_argument("--tf32", choices=("default", "on", "off"), default="default")
    ap.add_argument(
        "--time-budget",
        type=float,
        default=240.0,
        help="seconds for the timed work (torch import and CUDA start come on top)",
    )
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="output folder (default $OUT or .)")
    ap.add_argument("--tile-sizes", default="2048,4096", help="sizes of the tiles section ('' = none)")
    ap.add_argument("--tile", type=int, default=1024, help="tile_size of the tiled runs")
    ap.add_argument("--tile-steps", type=int, default=20, help="evaluations of each tiles-section run")
    ap.add_argument("--tile-max-memory", default="8GB", help="max_memory of the run whose tiles the engine picks")
    ap.add_argument("--tile-whole-max", type=int, default=4096, help="largest size also run as a whole image")
    ap.add_argument("--tile-budget", type=float, default=150.0, help="seconds for the tiles section")
    ap.add_argument("--dry-run", action="store_true", help="CPU, 64 px, 4 evaluations: checks the script")
    args = ap.parse_args(argv)
    if args.dry_run:
        args.sizes, args.steps, args.repeats, args.trace_every = "64", 4, "2", 2
        args.tile_sizes, args.tile, args.tile_steps, args.tile_max_memory = "128", 96, 2, "370MB"
        args.tile_budget = 3600.0  # every tiles-section run, however loaded the machine (a test runs this)
        args.device = args.device or "cpu"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t_start = time.perf_counter()
    torch.backends.cudnn.benchmark = True  # both sides, from the start
    if args.tf32 != "default":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    ARGS_PATHS.update(content=args.content, style=args.style)
    device = args.device or str(engine.pick_device("auto"))
    sizes = [int(s) for s in args.sizes.split(",")]
    reps = [int(r) for r in args.repeats.split(",")]
    reps = (reps + [reps[-1]] * len(sizes))[: len(sizes)]
    res: dict[str, Any] = {
        "machine": machine(torch.device(device)),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "rows": [],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = t_start + args.time_budget
    for size, rep in zip(sizes, reps, strict=True):
        if res["rows"]:  # predict this size from the last one (cost grows with the pixels) and the warm-ups
            prev = res["rows"][-1]
            cost = (prev["baseline"]["median_s"] + prev["napari-nst"]["median_s"]) * (size / prev["size"]) ** 2 * 1.3
            if time.perf_counter() + cost > deadline:
                res.setdefault("skipped_sizes", []).append(size)
                print(f"size {size} skipped: about {cost:.0f} s would pass the time budget", flush=True)
                continue
        res["rows"].append(bench_size(size, args.steps, device, args.weights, rep, args.trace_every, deadline))
        res["seconds"] = time.perf_counter() - t_start
        print(json.dumps(res["rows"][-1], default=float), flush=True)
        (out / "gpu_results.json").write_text(json.dumps(res, indent=1, default=float))
        (out / "gpu_results.md").write_text(markdown(res) + "\n")
    res["tiles"] = bench_tiles(args, device)
    res["seconds"] = time.perf_counter() - t_start
    (out / "gpu_results.json").write_text(json.dumps(res, indent=1, default=float))
    (out / "gpu_results.md").write_text(markdown(res) + "\n\n## Tiles\n\n" + tiles_markdown(res["tiles"]) + "\n")
    print(markdown(res))
    print(tiles_markdown(res["tiles"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
