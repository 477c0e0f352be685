"""GPU: the defaults against the textbook at 512-2048 px, tiles, the tuner, and the CUDA graph per path.

One prepared call on a GPU machine that has only the repository (the weights and pictures copied
into an ignored folder of it, paths given as arguments or in the environment)::

    python -m benchmarks gpu --weights W.pth --content C.jpg --style S.jpg
    # or: NAPARI_NST_WEIGHTS=W.pth NST_CONTENT=C.jpg NST_STYLE=S.jpg python -m benchmarks gpu

appends the run to benchmarks/results/gpu.json after every size (so a later failure keeps the
earlier rows); copy that file back. What it does against bias:

* ``torch.backends.cudnn.benchmark`` on from the start, for both sides (the engine keeps it on);
  each size is warmed up on both sides first (autotuning, bf16 kernels), then timed;
* ``--repeats`` interleaved repeats (baseline, napari-nst, baseline, ...), min and median;
* TF32 as torch has it by default (or ``--tf32 on|off``), recorded; peak memory
  (``max_memory_allocated``) of each side's timed run; CUDA and MPS synchronised before a clock read;
* every result scored with the harness's one float32 objective; the time to reach the textbook's
  ``--steps``-evaluation objective as a ratio: the evaluation at which napari-nst first reaches it
  (from a separate run with an image every ``--trace-every`` evaluations) times its timed
  per-evaluation cost, over the baseline's timed run;
* a ``--time-budget`` (default 240 s of timed work): a repeat whose predicted cost would pass it is
  skipped and the row says so, so the whole call stays under five minutes on an H200.

Tiles: for each of ``--tile-sizes``, ``--tile-steps`` evaluations of the whole image and of tiles of
``--tile`` px (and the tile size the engine picks itself under ``--tile-max-memory``), each timed and
its peak memory recorded, within ``--tile-budget`` seconds (a run whose predicted cost would pass it
is skipped and the row says so).

Tuner: for each of ``--tune-sizes``, what a first run on the device measures (cuDNN's benchmark
mode within each plan): the table, each precision's choice, the seconds it took, and the plan
``auto`` takes against the built-in one (nothing is kept in the tuner's cache file).

Graph: the plain objective, the artistic controls (two styles on two regions, luminance) and a
stack of three frames (the temporal term) at ``--graph-size``, and tiles of ``--tile`` px at
``--graph-tiled``, each ``--graph-steps`` evaluations with the CUDA graph and without it,
interleaved after a warm-up run, within ``--graph-budget`` seconds. Each run records how many
graphs the engine captured and any capture it gave up (so that a path which falls back to eager
evaluation shows as such, not as a graph's timing).

``--dry-run`` runs the same code on the CPU at a toy size (a check of the script).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import _harness as H

# the page's groups of figures: against the textbook, against the whole image, against the built-in
# plan (the tuner), against the same run without a CUDA graph
PARTS = ("sizes", "tiles", "tuner", "graph")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sizes", default="512,1024,2048")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", default="3,2,1", help="repeats per size (one number for all, or one per size)")
    ap.add_argument("--trace-every", type=int, default=10, help="image every n evaluations in the reach run")
    ap.add_argument("--device", default=None, help="default: cuda if available, else mps, else cpu")
    ap.add_argument("--tf32", choices=("default", "on", "off"), default="default")
    ap.add_argument(
        "--time-budget",
        type=float,
        default=240.0,
        help="seconds for the timed work (torch import and CUDA start come on top)",
    )
    ap.add_argument("--tile-sizes", default="2048,4096", help="sizes of the tiles section ('' = none)")
    ap.add_argument("--tile", type=int, default=1024, help="tile_size of the tiled runs")
    ap.add_argument("--tile-steps", type=int, default=20, help="evaluations of each tiles-section run")
    ap.add_argument("--tile-max-memory", default="8GB", help="max_memory of the run whose tiles the engine picks")
    ap.add_argument("--tile-whole-max", type=int, default=4096, help="largest size also run as a whole image")
    ap.add_argument("--tile-budget", type=float, default=150.0, help="seconds for the tiles section")
    ap.add_argument("--tune-sizes", default="512,2048", help="sizes the tuner measures the plans for ('' = none)")
    ap.add_argument("--tune-budget", type=float, default=None, help="the tuner's budget (default: its own)")
    ap.add_argument("--graph-size", type=int, default=512, help="size of the graph section's runs (tiles: --tile)")
    ap.add_argument("--graph-tiled", type=int, default=2048, help="size of the graph section's tiled run (0 = none)")
    ap.add_argument("--graph-steps", type=int, default=100, help="evaluations of each graph-section run")
    ap.add_argument("--graph-repeats", type=int, default=2)
    ap.add_argument("--graph-budget", type=float, default=120.0, help="seconds for the graph section")


def _cap_for_tiles_of_96(device: str, shape: tuple[int, int] = (96, 128)) -> int:
    """Bytes between the memory model's estimates of 96 px and 128 px tiles of a 128 px, 4:3 run
    in the precision ``auto`` picks on ``device`` (float32 counts the Winograd kernels a CPU plan
    may keep): the engine then picks tiles of 96 px."""
    import torch

    from napari_nst.core.compute import memory
    from napari_nst.core.compute.device import autocast_dtype

    dt = "float32" if autocast_dtype("auto", torch.device(device)) is None else "bfloat16"
    return (memory.estimate_tiled(shape, 96, H.MODEL, dt) + memory.estimate_tiled(shape, 128, H.MODEL, dt)) // 2


def dry_run(args: argparse.Namespace) -> None:
    """CPU, 64 px, 4 evaluations; tiles of 96 px at 128 px."""
    args.sizes, args.steps, args.repeats, args.trace_every = "64", 4, "2", 2
    args.tile_sizes, args.tile, args.tile_steps = "128", 96, 2
    args.tile_max_memory = str(_cap_for_tiles_of_96(args.device or "cpu"))
    args.tile_budget = 3600.0  # every tiles-section run, however loaded the machine (a test runs this)
    args.tune_sizes, args.tune_budget = "64", 0.2
    args.graph_size, args.graph_tiled, args.graph_steps, args.graph_repeats = 64, 128, 2, 1
    args.graph_budget = 3600.0
    args.device = args.device or "cpu"


def sizes_of(text: str, flag: str) -> list[int]:
    """``"512,2048"`` -> [512, 2048] ('' -> []); anything else fails, naming ``flag``."""
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise H.BenchmarkError(f"{flag} {text!r}: give whole numbers separated by commas, e.g. 512,2048") from None
    if any(v < 1 for v in out):
        raise H.BenchmarkError(f"{flag} {text!r}: every number must be 1 or more")
    return out


def reset_peak(dev: Any) -> None:
    import torch

    H.sync(dev)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    elif dev.type == "mps":
        torch.mps.empty_cache()


def peak_bytes(dev: Any) -> int | None:
    import torch

    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    if dev.type == "mps":  # no peak counter on MPS: what the driver holds after the run
        return int(torch.mps.driver_allocated_memory())
    return None


def run_nst(prob: H.Problem, opts: Any) -> tuple[float, Any, list]:
    """One timed napari-nst run: seconds (synchronised), the last record, the records with images."""
    from napari_nst.core.optim import engine

    H.sync(prob.device)
    t0 = time.perf_counter()
    last, shown = None, []
    for last in engine.run(prob.content, prob.style, opts):
        if last.image is not None:
            shown.append(last)
    H.sync(prob.device)
    assert last is not None and last.image is not None
    return time.perf_counter() - t0, last, shown


def run_baseline(prob: H.Problem, steps: int) -> tuple[float, Any]:
    H.sync(prob.device)
    t0 = time.perf_counter()
    x, _ = H.run_baseline(prob, steps)
    H.sync(prob.device)
    return time.perf_counter() - t0, x


def timed(fn: Callable[[], tuple[float, Any]], dev: Any) -> dict[str, Any]:
    reset_peak(dev)
    sec, result = fn()
    return {"seconds": sec, "peak_bytes": peak_bytes(dev), "result": result}


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


def bench_size(args: argparse.Namespace, size: int, device: str, repeats: int, deadline: float) -> dict[str, Any]:
    import torch

    dev = torch.device(device)
    prob = H.setup(args, size, device)
    steps = args.steps

    def opts(n: int, every: int) -> Any:
        return H.nst_options(prob, size, n, device, preview_every=every)

    row: dict[str, Any] = {"size": size, "shape": list(prob.shape), "steps": steps, "skipped_repeats": 0}
    # warm-up of both sides (cuDNN autotuning for these shapes, bf16 kernels, the weights cache)
    H.run_baseline(prob, 3)
    run_nst(prob, opts(4, 10**6))
    base: list[dict[str, Any]] = []
    nst: list[dict[str, Any]] = []
    for rep in range(repeats):
        if rep and time.perf_counter() + (base[-1]["seconds"] + nst[-1]["seconds"]) > deadline:
            row["skipped_repeats"] = repeats - rep
            break
        base.append(timed(lambda: run_baseline(prob, steps), dev))
        nst.append(timed(lambda: run_nst(prob, opts(steps, steps))[:2], dev))
    x_base, last = base[0]["result"], nst[-1]["result"]
    row["baseline"] = _summary(base, H.objective(prob, x_base))
    row["napari-nst"] = _summary(nst, H.objective(prob, last.image))
    row["napari-nst"].update(precision=last.precision, device=last.device, levels=last.levels)
    row["time_ratio"] = row["napari-nst"]["median_s"] / row["baseline"]["median_s"]
    # the textbook's objective after ``steps`` evaluations: its final image, scored as every image is
    target = row["baseline"]["objective"]
    row["reach"] = {"target": target, "step": None, "ratio": None}
    if time.perf_counter() + row["napari-nst"]["median_s"] * 1.5 < deadline:
        _, _, shown = run_nst(prob, opts(steps, args.trace_every))
        step = next((int(r.step) for r in shown if r.level == r.levels and H.objective(prob, r.image) <= target), None)
        if step is not None:
            per_eval = row["napari-nst"]["median_s"] / steps
            row["reach"].update(step=step, ratio=step * per_eval / row["baseline"]["median_s"])
    else:
        row["reach"]["skipped"] = "time budget"
    return row


def tile_run(args: argparse.Namespace, size: int, device: str, tile: int | None, cap: str | None) -> dict[str, Any]:
    """One run of ``--tile-steps`` evaluations at ``size`` (tiles of ``tile`` px, or the engine's
    choice under ``cap``): seconds per evaluation, peak memory, the tile size used, the final loss."""
    import torch

    dev = torch.device(device)
    prob = H.setup(args, size, device)
    steps = args.tile_steps
    opts = H.nst_options(prob, size, steps, device, preview_every=steps, tile_size=tile, max_memory=cap)
    run = timed(lambda: run_nst(prob, opts)[:2], dev)
    last = run["result"]
    return {
        "size": size,
        "shape": list(prob.shape),
        "steps": steps,
        "tile_asked": tile,
        "max_memory": cap,
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
    for size in sizes_of(args.tile_sizes, "--tile-sizes"):
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
                rows.append(tile_run(args, size, device, tile, cap))
            except (MemoryError, ValueError) as exc:  # DeviceMemoryError, OptionError: recorded, not fatal
                rows.append({"size": size, "tile_asked": tile, "max_memory": cap, "error": str(exc)})
            H.say(json.dumps(rows[-1], default=float))
    return rows


# --------------------------------------------------------------------------- the tuner on this device


def bench_tuner(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    """What a first run on ``device`` measures for each of ``--tune-sizes``: the compute plans'
    table, the plan each precision gets and the seconds spent (nothing is kept in the tuner's cache)."""
    from napari_nst.core.compute import tune
    from napari_nst.core.options import Options

    rows: list[dict[str, Any]] = []
    for size in sizes_of(args.tune_sizes, "--tune-sizes"):
        opts = Options(size=size, steps=1, model=H.MODEL, weights=H.weights_file(args.weights), device=device)
        t0 = time.perf_counter()
        table = tune.tune_options(opts, budget=args.tune_budget or tune.BUDGET, keep=False)
        wall = time.perf_counter() - t0
        if table is None:
            rows.append({"size": size, "error": "nothing to time on this device"})
            continue
        chosen = {p: table.choose(p) for p in ("auto", *tune.PRECISIONS)}
        auto = next(r for r in table.rows if r.candidate == chosen["auto"])
        rows.append(
            {
                "size": size,
                "shape": list(table.shape),
                "wall_s": wall,
                "table": table.as_dict(),
                "chosen": {p: c.label if c else None for p, c in chosen.items()},
                "auto_ratio": auto.ratio,
                "auto_s": auto.median,
            }
        )
        H.say(table.text(chosen))
    return rows


# --------------------------------------------------------------------------- the CUDA graph per path


class GraphSpy:
    """While entered: counts the engine's CUDA graph captures (``graphed.Objective._capture``) and
    keeps the warnings it logs about them; the engine's code runs unchanged."""

    def __init__(self) -> None:
        self.captures = 0
        self.failures: list[str] = []

    def __enter__(self) -> GraphSpy:
        from napari_nst.core.objective import graphed

        self._orig = orig = graphed.Objective._capture

        def capture(obj: Any, image: Any) -> None:
            self.captures += 1
            orig(obj, image)

        graphed.Objective._capture = capture  # type: ignore[method-assign]
        self._handler = _Keep(self.failures)
        logging.getLogger("napari_nst").addHandler(self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        from napari_nst.core.objective import graphed

        graphed.Objective._capture = self._orig  # type: ignore[method-assign]
        logging.getLogger("napari_nst").removeHandler(self._handler)


class _Keep(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        if "CUDA graph" in record.getMessage():
            self.into.append(record.getMessage())


def graph_paths(args: argparse.Namespace, prob: H.Problem) -> dict[str, Callable[[int], Any]]:
    """The runs of the graph section, each ``make(steps)`` -> an iterator of progress records: the
    plain objective, the artistic controls (two styles on two regions, luminance), a stack of three
    frames (the temporal term) and, at ``--graph-tiled`` px, tiles of ``--tile`` px. The second
    style is the style picture turned upside down (the cost does not depend on the picture)."""
    import napari_nst

    from .stack import sequence

    size = args.graph_size
    base = {"model": H.MODEL, "weights": prob.weights, "device": str(prob.device), "scales": 1, "seed": 0}
    base["preview_every"] = 10**6
    s1, s2 = prob.style, np.ascontiguousarray(prob.style[::-1, ::-1])
    labels = np.zeros(prob.content.shape[:2], np.int32)
    labels[:, prob.content.shape[1] // 2 :] = 1
    frames = sequence((prob.content * 255).round().astype(np.uint8), size, 3, (3, 1))
    paths: dict[str, Callable[[int], Any]] = {
        "plain": lambda n: napari_nst.iter_stylize(prob.content, s1, size=size, steps=n, **base),
        "two styles on two regions, luminance": lambda n: napari_nst.iter_stylize(
            prob.content,
            [s1, s2],
            size=size,
            steps=n,
            regions=labels,
            region_styles={0: 0, 1: 1},
            preserve_color="luminance",
            **base,
        ),
        "stack of 3 frames": lambda n: napari_nst.iter_stylize_stack(frames, s1, size=size, steps=n, **base),
    }
    if args.graph_tiled:
        paths[f"tiles of {args.tile} px"] = lambda n: napari_nst.iter_stylize(
            prob.content, s1, size=args.graph_tiled, steps=n, tile_size=args.tile, **base
        )
    return paths


def _timed_path(make: Callable[[int], Any], steps: int, dev: Any, graph: bool) -> dict[str, Any]:
    """One run of a path with the CUDA graph on or off: seconds, evaluations, final objective, captures."""
    with H.levers(cuda_graph=graph), GraphSpy() as spy:
        H.sync(dev)
        t0, n, last = time.perf_counter(), 0, None
        for rec in make(steps):
            n, last = n + 1, rec
        H.sync(dev)
        sec = time.perf_counter() - t0
    assert last is not None
    return {
        "seconds": sec,
        "evaluations": n,
        "total": float(last.losses["total"]),
        "shape": list(last.shape),
        "captures": spy.captures,
        "failures": spy.failures,
    }


def bench_graph(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    """Each path with and without the CUDA graph, interleaved (the order alternating), after a short
    warm-up run of each; within ``--graph-budget`` seconds (a repeat that would pass it is skipped)."""
    import torch

    dev = torch.device(device)
    prob = H.setup(args, args.graph_size, device)
    deadline = time.perf_counter() + args.graph_budget
    rows: list[dict[str, Any]] = []
    for name, make in graph_paths(args, prob).items():
        row: dict[str, Any] = {"path": name, "eager": [], "graph": [], "skipped_repeats": 0}
        if time.perf_counter() > deadline:
            rows.append({**row, "skipped": "time budget"})
            continue
        _timed_path(make, min(4, args.graph_steps), dev, graph=True)  # warm-up: cuDNN, the weights, the targets
        for rep in range(args.graph_repeats):
            cost = sum(r[-1]["seconds"] for r in (row["eager"], row["graph"]) if r)
            if rep and time.perf_counter() + cost > deadline:
                row["skipped_repeats"] = args.graph_repeats - rep
                break
            for graph in (False, True) if rep % 2 == 0 else (True, False):
                row["graph" if graph else "eager"].append(_timed_path(make, args.graph_steps, dev, graph))
        rows.append(row)
        H.say(json.dumps(row, default=float))
    return rows


def tuner_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if "table" not in r:
            continue
        h, w = r["shape"]
        out.append(
            H.figure(
                f"runs of {r['size']} px, the plan measured for auto ({r['chosen']['auto']}): one pass at {w}x{h} px",
                r["auto_ratio"],
                "the built-in plan",
                r["auto_s"],
                "s",
            )
        )
        out.append(H.figure(f"runs of {r['size']} px: measuring the plans", None, "", r["table"]["seconds"], "s"))
    for f in out:
        f["part"] = "tuner"
    return out


def graph_figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if not r.get("eager") or not r.get("graph"):
            continue
        eager = statistics.median(x["seconds"] / x["evaluations"] for x in r["eager"])
        graph = statistics.median(x["seconds"] / x["evaluations"] for x in r["graph"])
        h, w = r["graph"][0]["shape"]
        used = min(x["captures"] for x in r["graph"]) > 0 and not any(x["failures"] for x in r["graph"])
        how = "with the CUDA graph" if used else "with the CUDA graph asked for (none captured)"
        out.append(
            H.figure(f"{r['path']}, {w}x{h} px: time per evaluation {how}", graph / eager, "no graph", graph, "s")
        )
    for f in out:
        f["part"] = "graph"
    return out


def figures(rows: list[dict[str, Any]], tiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The page's rows: part "sizes" (against the textbook) and "tiles" (against the whole image)."""
    out = []
    for r in rows:
        b, n, q = r["baseline"], r["napari-nst"], r["reach"]
        px = f"{r['shape'][1]}x{r['shape'][0]} px"
        out.append(H.figure(f"{px}, {r['steps']} evaluations: time", r["time_ratio"], "textbook", n["median_s"], "s"))
        if b["peak_bytes"] and n["peak_bytes"]:
            out.append(
                H.figure(
                    f"{px}: peak GPU memory",
                    n["peak_bytes"] / b["peak_bytes"],
                    "textbook",
                    n["peak_bytes"] / H.MiB,
                    "MiB",
                )
            )
        if q.get("ratio") is not None:
            out.append(
                H.figure(
                    f"{px}: reach the textbook's {r['steps']}-evaluation objective",
                    q["ratio"],
                    f"textbook's {r['steps']} evaluations",
                    q["step"],
                    "evaluations",
                )
            )
        else:
            why = q.get("skipped") or f"not reached in {r['steps']} evaluations"
            out.append(
                H.figure(
                    f"{px}: reach the textbook's {r['steps']}-evaluation objective: {why}; final objective",
                    n["objective"] / b["objective"],
                    "textbook's final objective",
                    n["objective"],
                    "",
                )
            )
    for f in out:
        f["part"] = "sizes"
    whole = {t["size"]: t for t in tiles if "seconds" in t and not t["tile_asked"] and not t["max_memory"]}
    for t in tiles:
        if "seconds" not in t or t is whole.get(t["size"]):
            continue
        w = whole.get(t["size"])
        how = f"tiles of {t['tile_size']} px" + (
            f" (engine's choice under {t['max_memory']})" if t["max_memory"] else ""
        )
        px = f"{t['shape'][1]}x{t['shape'][0]} px"
        out.append(
            H.figure(
                f"{px}, {how}: time per evaluation",
                None if w is None else t["s_per_eval"] / w["s_per_eval"],
                "whole image",
                t["s_per_eval"],
                "s",
            )
        )
        if t["peak_bytes"]:
            out.append(
                H.figure(
                    f"{px}, {how}: peak GPU memory",
                    None if w is None or not w["peak_bytes"] else t["peak_bytes"] / w["peak_bytes"],
                    "whole image",
                    t["peak_bytes"] / H.MiB,
                    "MiB",
                )
            )
    for f in out:
        f.setdefault("part", "tiles")
    return out


# --------------------------------------------------------------------------- what travels to the GPU machine

#: the GPU call's files, in an ignored folder of the repository (``carry`` takes it along)
PACK_DIR = ".gpu-data"
#: what may travel with a call: the working tree and the carried folder together (the device tool's limit)
TRAVEL_LIMIT = 64 * 2**20


def pack(dest: Path, weights: str, pictures: tuple[str, str] = ("tubingen", "starry_night")) -> dict[str, Path]:
    """Write what the GPU call reads into ``dest``: the weights of the layers the benchmarks use
    (VGG16 up to its deepest content or style layer: conv5_2 and conv5_3 stay behind, 19 MB of the
    59 MB that would not travel beside the repository) and the two pictures. Returns their paths."""
    import shutil

    import torch

    from napari_nst.core.encoder.layer_names import layer_names
    from napari_nst.core.options import CONTENT_LAYERS, STYLE_LAYERS

    names = layer_names(H.MODEL)
    last = max(names.index(n) for n in (*CONTENT_LAYERS, *STYLE_LAYERS))
    state = torch.load(H.weights_file(weights), map_location="cpu", weights_only=True)
    kept = {k: v for k, v in state.items() if int(k.split(".")[1]) <= last}
    dest.mkdir(parents=True, exist_ok=True)
    out = {"weights": dest / f"{H.MODEL}-to-{names[last]}.pth"}
    torch.save(kept, out["weights"])
    for key, name in zip(("content", "style"), pictures, strict=True):
        src = Path(name) if Path(name).is_file() else H.SHARED / "images" / f"{name}.jpg"
        out[key] = dest / src.name
        shutil.copyfile(src, out[key])
    return out


def _ignore(dest: Path) -> None:
    """Add ``dest`` (inside the repository) to .git/info/exclude, so that it travels only as carried."""
    rel = dest.resolve().relative_to(H.ROOT.resolve()).as_posix()
    exclude = H.ROOT / ".git" / "info" / "exclude"
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    if f"/{rel}/" not in lines:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text("\n".join([*lines, f"/{rel}/"]) + "\n")


def _tree_bytes() -> int:
    """Bytes of what travels of the working tree: tracked files and untracked ones git does not ignore."""
    import subprocess

    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=H.ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return sum((H.ROOT / n).stat().st_size for n in out.decode().split("\0") if n and (H.ROOT / n).is_file())


def pack_main(argv: list[str]) -> int:
    """``python -m benchmarks gpu-pack [--weights W]``: write PACK_DIR and print the device call."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks gpu-pack", description=pack.__doc__)
    ap.add_argument("--weights", default=str(H.SHARED_WEIGHTS))
    ap.add_argument("--dest", default=PACK_DIR, help="a folder inside the repository")
    args = ap.parse_args(argv)
    dest = (H.ROOT / args.dest).resolve()
    if not dest.is_relative_to(H.ROOT.resolve()) or dest == H.ROOT.resolve():
        raise H.BenchmarkError(f"--dest {args.dest!r}: give a folder inside the repository (only it travels)")
    files = pack(dest, args.weights)
    _ignore(dest)
    size = sum(f.stat().st_size for f in files.values()) + _tree_bytes()
    rel = {k: v.relative_to(H.ROOT.resolve()).as_posix() for k, v in files.items()}
    limit = TRAVEL_LIMIT // 2**20
    print(f"wrote {args.dest}/: with the working tree {size / 2**20:.1f} MiB travel (at most {limit} MiB)")
    if size > TRAVEL_LIMIT:
        print("too much to travel: leave out what the tree need not carry (untracked files, large outputs)")
        return 1
    print(f'device run: carry ["{args.dest}"], command:')
    print(
        f"PYTHONPATH=src timeout 560 python3 -m benchmarks gpu --weights {rel['weights']} --content {rel['content']} "
        f"--style {rel['style']} --time-budget 200 --tile-budget 100 --graph-budget 100; "
        'cp benchmarks/results/gpu.json "$OUT"/'
    )
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from napari_nst.core.optim import engine

    if args.dry_run:
        dry_run(args)
    t_start = time.perf_counter()
    torch.backends.cudnn.benchmark = True  # both sides, from the start
    if args.tf32 != "default":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    device = args.device or str(engine.pick_device("auto"))
    for text, flag in ((args.tile_sizes, "--tile-sizes"), (args.tune_sizes, "--tune-sizes")):
        sizes_of(text, flag)  # a typo fails now, not after the sections before it
    sizes = sizes_of(args.sizes, "--sizes")
    reps = sizes_of(args.repeats, "--repeats")
    if not sizes or not reps:
        raise H.BenchmarkError("--sizes and --repeats need at least one number each")
    reps = (reps + [reps[-1]] * len(sizes))[: len(sizes)]
    res: dict[str, Any] = {
        "device": device,
        "settings": {
            "cudnn.benchmark": torch.backends.cudnn.benchmark,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        },
        "rows": [],
        "skipped_sizes": [],
    }
    deadline = t_start + args.time_budget
    for size, rep in zip(sizes, reps, strict=True):
        if res["rows"]:  # predict this size from the last one (cost grows with the pixels) and the warm-ups
            prev = res["rows"][-1]
            cost = (prev["baseline"]["median_s"] + prev["napari-nst"]["median_s"]) * (size / prev["size"]) ** 2 * 1.3
            if time.perf_counter() + cost > deadline:
                res["skipped_sizes"].append(size)
                H.say(f"size {size} skipped: about {cost:.0f} s would pass the time budget")
                continue
        res["rows"].append(bench_size(args, size, device, rep, deadline))
        H.say(json.dumps(res["rows"][-1], default=float))
        args._checkpoint({**res, "figures": figures(res["rows"], [])})
    res["tiles"] = bench_tiles(args, device)
    res["figures"] = figures(res["rows"], res["tiles"])
    args._checkpoint(res)
    res["tuner"] = bench_tuner(args, device)
    res["figures"] += tuner_figures(res["tuner"])
    args._checkpoint(res)
    res["graph"] = bench_graph(args, device)
    res["figures"] += graph_figures(res["graph"])
    return res
