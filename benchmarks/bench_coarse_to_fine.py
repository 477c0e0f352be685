"""Coarse-to-fine against single scale at a large size (issue 15): the CPU time to reach, at the
final size, the objective that a single-scale run reaches after N evaluations.

Two parts, both on the shared Tübingen / Starry Night and the shared VGG16 weights, with the
engine's own loop (``engine._prepare`` and ``engine._levels``, so every level is what a user's run
does) and a schedule given per level, ``[[long edge, evaluations], ...]`` coarse to fine:

1. traces: each schedule in a child process (``--threads`` torch threads), one record per
   evaluation: its level and the objective the engine reports (the seed's ``a L_content +
   b L_style`` of the image evaluated). At the final level that is the same function of the image
   for every run (the final size's targets and automatic weights), so the runs compare on it.
   Objective against evaluations does not depend on the machine's load.
2. cost: one child with ONE torch thread runs short engine runs at every level size, interleaved
   (256, 512, 1024, 256, 512, 1024, ...), and takes the process CPU time of an evaluation (median
   after the first of each run: forward, backward and the optimiser's step) and of a level's start
   (targets, automatic weights: the first record's time minus one evaluation) at each size.

The time of a schedule is then ``sum over levels (start + evaluations x cost)``; a loaded machine
slows the interleaved measurements alike, and the load average is written into the result. The
traces' own process CPU times are kept too (meaningful with ``--threads 1`` only).

    nice python benchmarks/bench_coarse_to_fine.py --size 1024 --steps 300 --threads 2 \\
        --variants '[[[512, 150], [1024, 60]], [[256, 150], [512, 100], [1024, 60]]]'

Writes docs/coarse_to_fine.json (per-evaluation traces: docs/coarse_to_fine_trace.json) and
prints the Markdown table docs/coarse_to_fine.md quotes; the final images go to --images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = str(SHARED / "weights" / "vgg16-hed-features.pth")


def _engine_run(spec: dict[str, Any], schedule: list[list[int]]) -> Any:
    """The engine's context for ``schedule`` (network built, weights read) and its level shapes."""
    import torch

    from napari_nst.core.api import prepare
    from napari_nst.core.image.files import read_image
    from napari_nst.core.optim import engine
    from napari_nst.core.options import level_shapes

    content = read_image(SHARED / "images" / spec["content"])
    style = read_image(SHARED / "images" / spec["style"])
    size = schedule[-1][0]
    kw = dict(size=size, steps=sum(n for _, n in schedule), scales=len(schedule), weights=WEIGHTS, device="cpu")
    c, s, opts = prepare(content, style, **kw, seed=0, precision=spec["precision"], preview_every=10**6)
    opts = opts.for_device(gpu=False)
    shapes = level_shapes(c.shape[:2], size, len(schedule))
    assert [max(sh) for sh in shapes] == [e for e, _ in schedule], (shapes, schedule)
    device = torch.device("cpu")
    dtype = engine.autocast_dtype(opts.precision, device)
    return engine._prepare(c, s, opts, device, dtype, shapes, [n for _, n in schedule])


def child(spec: dict[str, Any], trace_path: str) -> None:
    """One schedule (in its own process): one line of JSON per evaluation into ``trace_path``."""
    import resource

    import torch

    from napari_nst.core.image.files import write_image
    from napari_nst.core.optim import engine

    torch.set_num_threads(spec["threads"])
    t0 = time.process_time()
    ctx = _engine_run(spec, spec["schedule"])
    with open(trace_path, "w") as fh:
        for rec in engine._levels(ctx):
            row = {"step": rec.step, "level": rec.level, "shape": list(rec.shape), "cpu": time.process_time() - t0}
            fh.write(json.dumps({**row, "objective": rec.losses["total"]}) + "\n")
            fh.flush()
            if rec.image is not None and rec.level == rec.levels and rec.step == rec.total:
                write_image(spec["image"], rec.image)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        fh.write(json.dumps({"peak_rss": peak}) + "\n")


def cost_child(spec: dict[str, Any], out_path: str) -> None:
    """CPU seconds of one evaluation and of a level's start at each size, one thread, interleaved."""
    import statistics

    import torch

    from napari_nst.core.optim import engine

    torch.set_num_threads(1)
    evals: dict[int, list[float]] = {e: [] for e in spec["sizes"]}
    starts: dict[int, list[float]] = {e: [] for e in spec["sizes"]}
    ctxs = {e: _engine_run(spec, [[e, spec["evals"]]]) for e in spec["sizes"]}
    for _ in range(spec["repeats"]):
        for e, ctx in ctxs.items():
            ctx.step = 0
            t0 = time.process_time()
            times = [time.process_time() - t0 for _ in engine._levels(ctx)]
            per = [b - a for a, b in zip(times, times[1:], strict=False)]
            evals[e].extend(per)
            starts[e].append(times[0] - statistics.median(per))
    res = {str(e): {"eval_s": statistics.median(evals[e]), "start_s": statistics.median(starts[e])} for e in evals}
    res["samples"] = {str(e): evals[e] for e in evals}
    Path(out_path).write_text(json.dumps(res) + "\n")


def read_trace(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    rows, peak = [], None
    for line in path.read_text().splitlines():
        d = json.loads(line)
        if "peak_rss" in d:
            peak = d["peak_rss"]
        else:
            rows.append(d)
    return rows, peak


def reach(rows: list[dict[str, Any]], target: float, final_level: int) -> dict[str, Any] | None:
    """The first evaluation at the final level whose objective is <= ``target``."""
    for r in rows:
        if r["level"] == final_level and r["objective"] <= target:
            return r
    return None


def trace_cost(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The cost model from the traces themselves (one thread each): medians over all traces of the
    CPU time between evaluations at each size, and of a level's start (--harvest before the cost
    part finished)."""
    import statistics

    evals: dict[int, list[float]] = {}
    starts: dict[int, list[float]] = {}
    for run in runs.values():
        prev = 0.0
        for i, r in enumerate(run["rows"]):
            edge = max(r["shape"])
            new_level = i == 0 or run["rows"][i - 1]["level"] != r["level"]
            (starts if new_level else evals).setdefault(edge, []).append(r["cpu"] - prev)
            prev = r["cpu"]
    out: dict[str, Any] = {}
    for edge, per in evals.items():
        c = statistics.median(per)
        out[str(edge)] = {"eval_s": c, "start_s": max(0.0, statistics.median(starts.get(edge, [c])) - c)}
    out["from_traces"] = True
    return out


def modelled_cpu(schedule: list[list[int]], done: int, cost: dict[str, Any]) -> float:
    """CPU seconds of the first ``done`` evaluations of ``schedule`` by the interleaved cost model."""
    total, left = 0.0, done
    for edge, n in schedule:
        if left <= 0:
            break
        k = min(n, left)
        total += cost[str(edge)]["start_s"] + k * cost[str(edge)]["eval_s"]
        left -= k
    return total


def summarise(runs: dict[str, dict[str, Any]], baseline: str, steps: int, cost: dict[str, Any]) -> dict[str, Any]:
    base_rows = runs[baseline]["rows"]
    target = base_rows[steps - 1]["objective"]
    base_cpu = modelled_cpu(runs[baseline]["schedule"], steps, cost)
    out = {"target_objective": target, "baseline_cpu_s": base_cpu, "cost": cost, "variants": {}}
    for name, run in runs.items():
        rows, sched = run["rows"], run["schedule"]
        final = len(sched)
        hit = reach(rows, target, final)
        full = [r for r in rows if r["level"] == final]
        to_reach = None if hit is None else modelled_cpu(sched, hit["step"], cost)
        out["variants"][name] = {
            "schedule": sched,
            "evaluations_done": len(rows),
            "complete": len(rows) == sum(n for _, n in sched),
            "reached_at_step": None if hit is None else hit["step"],
            "final_level_evals_to_reach": None if hit is None else hit["step"] - (full[0]["step"] - 1),
            "cpu_to_reach_s": to_reach,
            "ratio_to_baseline": None if to_reach is None else to_reach / base_cpu,
            "last_objective": rows[-1]["objective"] if rows else None,
            "cpu_of_schedule_s": modelled_cpu(sched, len(rows), cost),
            "trace_process_cpu_s": rows[-1]["cpu"] if rows else None,
            "peak_rss": run["peak_rss"],
        }
    return out


def markdown(res: dict[str, Any]) -> str:
    cost = ", ".join(
        f"{e} px {c['eval_s']:.2f} s (start {c['start_s']:.2f} s)" for e, c in res["cost"].items() if e.isdigit()
    )
    lines = [
        f"target: the single-scale objective after {res['steps']} evaluations at {res['size']} px, "
        f"{res['target_objective']:.5f} (precision {res['precision']}); CPU seconds per evaluation, one thread: "
        f"{cost}; single scale {res['baseline_cpu_s']:.0f} s; load average {res['load_start']} at the start, "
        f"{res['load_end']} at the end",
        "",
        "| schedule (long edge: evaluations) | final-size evaluations to reach | CPU s to reach | ratio | "
        "objective at the end | CPU s of the schedule | peak RSS GiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in res["variants"].values():
        ratio = "not reached" if v["ratio_to_baseline"] is None else f"**{v['ratio_to_baseline']:.2f}x**"
        cpu = "-" if v["cpu_to_reach_s"] is None else f"{v['cpu_to_reach_s']:.0f}"
        n = "-" if v["final_level_evals_to_reach"] is None else str(v["final_level_evals_to_reach"])
        peak = "-" if v["peak_rss"] is None else f"{v['peak_rss'] / 2**30:.2f}"
        sched = " → ".join(f"{e}: {k}" for e, k in v["schedule"]) + ("" if v["complete"] else " (cut short)")
        row = [sched, n, cpu, ratio, f"{v['last_objective']:.5f}", f"{v['cpu_of_schedule_s']:.0f}", peak]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _spawn(args: argparse.Namespace, mode: str, spec: dict[str, Any], out: Path) -> subprocess.Popen[bytes]:
    base = {"content": args.content, "style": args.style, "precision": args.precision}
    return subprocess.Popen([sys.executable, __file__, mode, json.dumps({**base, **spec}), "--trace", str(out)])


def _run_all(args: argparse.Namespace, schedules: dict[str, list[list[int]]], work: Path) -> None:
    procs = []
    for i, sched in enumerate(schedules.values()):
        image = str(Path(args.images) / f"c2f_{args.size}_{args.precision}_{i}.png")
        spec = {"schedule": sched, "threads": args.threads, "image": image}
        procs.append(_spawn(args, "--child", spec, work / f"trace_{i}.jsonl"))
    sizes = sorted({e for sched in schedules.values() for e, _ in sched})
    cost_spec = {"sizes": sizes, "evals": 4, "repeats": args.repeats}
    procs.append(_spawn(args, "--cost-child", cost_spec, work / "cost.json"))
    for pr in procs:
        pr.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=300, help="the single-scale run's evaluations")
    p.add_argument("--variants", default="[[[512, 150], [1024, 60]], [[256, 150], [512, 100], [1024, 60]]]")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each trace (the cost: always 1)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the cost part")
    p.add_argument("--content", default="tubingen.jpg")
    p.add_argument("--style", default="starry_night.jpg")
    p.add_argument("--work", default="/tmp/c2f_bench")
    p.add_argument("--images", default="/tmp/c2f_bench")
    p.add_argument("--out", default=str(ROOT / "docs" / "coarse_to_fine"))
    p.add_argument(
        "--harvest",
        action="store_true",
        help="only summarise the traces in --work as they are (runs still going or cut short: the target is "
        "the single scale's objective after as many evaluations as it made, up to --steps)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--cost-child", help=argparse.SUPPRESS)
    p.add_argument("--trace", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child or args.cost_child:
        spec = json.loads(args.child or args.cost_child)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(spec.get("threads", 1))
        sys.path.insert(0, str(ROOT / "src"))
        (child if args.child else cost_child)(spec, args.trace)
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    Path(args.images).mkdir(parents=True, exist_ok=True)
    schedules = {"single scale": [[args.size, args.steps]]}
    for sched in json.loads(args.variants):
        schedules[" → ".join(f"{e}: {n}" for e, n in sched)] = sched
    load_start = os.getloadavg()[0]
    if not args.harvest:
        _run_all(args, schedules, work)
    runs = {}
    for i, (name, sched) in enumerate(schedules.items()):
        rows, peak = read_trace(work / f"trace_{i}.jsonl")
        runs[name] = {"schedule": sched, "rows": rows, "peak_rss": peak}
    cost_file = work / "cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.exists() else trace_cost(runs)
    steps = min(args.steps, len(runs["single scale"]["rows"]))  # --harvest: as far as the single scale got
    res = summarise(runs, "single scale", steps, cost)
    res.update(size=args.size, steps=steps, precision=args.precision, load_start=round(load_start, 2))
    res.update(load_end=round(os.getloadavg()[0], 2), cpu=platform.processor() or platform.machine())
    res.update(trace_threads=args.threads, cost_threads=1)
    Path(args.out + ".json").write_text(json.dumps(res, indent=1) + "\n")
    traces = {
        n: [[r["step"], r["level"], round(r["cpu"], 2), r["objective"]] for r in run["rows"]] for n, run in runs.items()
    }
    Path(args.out + "_trace.json").write_text(json.dumps(traces) + "\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
