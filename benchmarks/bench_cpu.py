"""CPU benchmark of napari-nst against the textbook recipe (benchmarks/baseline.py).

Targets of issue 4, each as a ratio to the baseline measured in the same run:

1. ``per-eval``  time per objective evaluation at --size (default 256), every lever one at a time,
   interleaved A/B, median of --repeats; plus the final objective of the default (bfloat16) run
   against the same run in float32 (``quality``).
2. ``reach``     cost to reach the objective the baseline reaches after --steps (300) evaluations,
   for scales 1, 2, 3 (and the L-BFGS history). Because other jobs share the CPU, the cost is
   counted in evaluations of each level times that level's per-evaluation time (measured
   interleaved in part 1) and divided by the baseline's --steps evaluations; raw wall times are
   reported beside it.
3. ``memory``    peak resident memory (VmHWM) of a whole process, each side in its own
   subprocess, at 512 px (--mem-size) over --mem-steps evaluations.
4. ``scaling``   time per evaluation and peak memory at 128, 256, 512 and 1024 px.

Every result is scored with the one float32 objective of baseline.py. Results are written as JSON
and markdown to --out (default docs/perf_results.*). Run all of it::

    python benchmarks/bench_cpu.py --parts all

or a part: ``--parts per-eval,quality``. No part asserts a timing.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline as B  # noqa: E402
from napari_nst.core.optim import engine  # noqa: E402
from napari_nst.core.options import Options  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def nst_options(size: int, steps: int, extra: dict | None = None, **kw: Any) -> Options:
    """napari-nst's defaults (what the widget and CLI use) on the benchmark's network/weights."""
    o = Options(size=size, steps=steps, model=B.MODEL, weights=B.WEIGHTS, device="cpu", **kw)
    o.validate()
    o.extra.update(extra or {})
    return o


def run_nst(prob: B.Problem, opts: Options, keep_every: int = 0) -> dict[str, Any]:
    """One napari-nst run; per-level evaluation counts and times, images of the finest level."""
    if keep_every:
        opts.preview_every = keep_every
    levels: dict[int, dict[str, Any]] = {}
    images = []
    t0 = time.perf_counter()
    last = None
    for r in engine.run(prob.content, prob.style, opts):
        lv = levels.setdefault(r.level, {"shape": list(r.shape), "evals": 0, "t_first": r.elapsed, "t_last": 0.0})
        lv["evals"] += 1
        lv["t_last"] = r.elapsed
        if r.image is not None and r.level == r.levels:
            images.append((r.step, r.elapsed, r.image))
        last = r
    wall = time.perf_counter() - t0
    assert last is not None and last.image is not None
    return {"wall": wall, "levels": levels, "images": images, "final": last.image}


# --------------------------------------------------------------------------- 1. per evaluation


#: "wall" or "cpu": per-evaluation times as wall time or as the process's CPU time. CPU time
#: (time.process_time, all threads) is what the work costs and barely moves when other jobs
#: share the cores; wall time is what a user waits on an idle machine. Both are reported.
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def _time_baseline(prob: B.Problem, evals: int, clock: str = "wall", warm: int = 0) -> float:
    """Time per evaluation of the baseline: of a fresh run's first ``evals`` (``warm`` 0, after a
    2-evaluation warm-up run), or of evaluations ``warm + 1 .. warm + evals`` of one run (its
    L-BFGS history then holds min(warm, 100) pairs: the steady state of a long run)."""
    if not warm:
        B.run_baseline(prob, 2)  # warm up
        c0 = CLOCK[clock]()
        B.run_baseline(prob, evals)
        return (CLOCK[clock]() - c0) / evals
    t: list[float] = []
    hook = prob.net.register_forward_pre_hook(lambda m, a: t.append(CLOCK[clock]()))  # one call per evaluation
    try:
        B.run_baseline(prob, warm + evals + 1)
    finally:
        hook.remove()
    return (t[warm + evals] - t[warm]) / evals


def _time_nst(prob: B.Problem, opts: Options, evals: int, clock: str = "wall", warm: int = 0) -> float:
    warm = max(warm, 2)  # the first two evaluations are warm-up
    opts.steps, opts.scales, opts.preview_every = evals + warm, 1, 10**6
    t = []
    for _ in engine.run(prob.content, prob.style, opts):
        t.append(CLOCK[clock]())
    return (t[-1] - t[warm - 1]) / evals


LEVERS = {
    # name: (precision, extra) -- one lever changed at a time from float32
    "napari-nst float32, contiguous": ("float32", {"channels_last": False, "lean_pool": True}),
    "+ channels_last (float32)": ("float32", {"channels_last": True, "lean_pool": True}),
    "+ bf16 autocast (contiguous)": ("bfloat16", {"channels_last": False, "lean_pool": True}),
    "bf16 autocast + channels_last": ("bfloat16", {"channels_last": True, "lean_pool": True}),
    "napari-nst default (auto)": ("auto", {}),
}

#: --isa avx2: a CPU without fast bf16 (bf16 there is emulated, 37x: not measured); what ``auto``
#: picks there (float32, contiguous, torch's pooling) and each of its choices flipped
LEVERS_AVX2 = {
    "napari-nst default (auto: float32, Winograd convolutions, contiguous, torch pool)": ("auto", {}),
    "- Winograd (oneDNN's direct convolutions)": ("auto", {"winograd": False}),
    "+ channels_last": ("auto", {"channels_last": True}),
    "+ index-free pool": ("auto", {"lean_pool": True}),
    "+ float32 L-BFGS history": ("auto", {"history_dtype": "float32"}),
}

#: the environment of --isa avx2: oneDNN (convolutions) and ATen (the rest) limited to AVX2
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def part_per_eval(
    size: int, evals: int, repeats: int, clock: str = "wall", levers: dict | None = None, warm: int = 0
) -> dict[str, Any]:
    levers = LEVERS if levers is None else levers
    prob = B.setup(size)
    times: dict[str, list[float]] = {"baseline": [], **{k: [] for k in levers}}
    for rep in range(repeats):  # interleave A/B so that load changes hit every variant alike
        times["baseline"].append(_time_baseline(prob, evals, clock, warm))
        for name, (prec, extra) in levers.items():
            o = nst_options(size, evals, dict(extra), precision=prec)
            times[name].append(_time_nst(prob, o, evals, clock, warm))
        print(
            f"  per-eval repeat {rep + 1}: " + ", ".join(f"{k}: {v[-1] * 1000:.0f} ms" for k, v in times.items()),
            flush=True,
        )
    # ratios per repeat (same moment), then median: robust to load drifting between repeats
    out = {
        "size": size,
        "evals": evals,
        "repeats": repeats,
        "clock": clock,
        "warm": warm,
        "shape": list(prob.shape),
        "rows": [],
    }
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, times["baseline"], strict=True)]
        out["rows"].append(
            {"variant": name, "ms_per_eval": 1000 * statistics.median(ts), "ratio": statistics.median(ratios)}
        )
    # also the coarse level's cost, for part 2's accounting
    return out


def part_quality(size: int, steps: int) -> dict[str, Any]:
    """Final objective of the default (bf16) run against the same run in float32."""
    prob = B.setup(size)
    res = {}
    for prec in ("auto", "float32"):
        r = run_nst(prob, nst_options(size, steps, precision=prec))
        res[prec] = {"objective": B.objective(prob, r["final"]), "wall": r["wall"]}
        print(f"  quality {prec}: objective {res[prec]['objective']:.5g} in {r['wall']:.1f} s", flush=True)
    rel = res["auto"]["objective"] / res["float32"]["objective"] - 1
    return {"size": size, "steps": steps, "runs": res, "relative_difference": rel}


# --------------------------------------------------------------------------- 2. reach the baseline


def part_reach(
    size: int, steps: int, variants: list[dict], repeats: int, target: float | None = None, clock: str = "wall"
) -> dict[str, Any]:
    prob = B.setup(size)
    trace: list = []
    base_sec = float("nan")
    if target is None:
        _, base_sec = B.run_baseline(prob, steps, trace)
        target = trace[min(steps, len(trace)) - 1][2]
    # else: the baseline's objective after --steps evaluations from an earlier run (deterministic
    # for the same code, ISA and thread count); the cost model still times it here, interleaved
    print(f"  baseline: {steps} evaluations in {base_sec:.1f} s, objective {target:.5g}", flush=True)
    # per-evaluation cost of each working shape relative to the baseline's, measured interleaved
    cost: dict[tuple, float] = {}

    def level_ratio(shape: tuple[int, int], opts: Options) -> float:
        key = (shape, opts.precision, json.dumps(opts.extra, sort_keys=True))  # not shape alone
        if key not in cost:
            rs = []
            for _ in range(repeats):
                tb = _time_baseline(prob, 6, clock)
                o = nst_options(max(shape), 0 + 8, dict(opts.extra), precision=opts.precision)
                rs.append(_time_nst(prob, o, 6, clock) / tb)
            cost[key] = statistics.median(rs)
        return cost[key]

    rows = []
    for v in variants:
        v = dict(v)
        extra = v.pop("extra", {})
        opts = nst_options(size, v.pop("steps", steps), extra, **v)
        r = run_nst(prob, opts, keep_every=5)
        hit = None
        for step, elapsed, img in r["images"]:
            if B.objective(prob, img) <= target:
                hit = (step, elapsed)
                break
        final = B.objective(prob, r["final"])
        row: dict[str, Any] = {
            "variant": {**v, "steps": opts.steps, **extra},
            "final_objective": final,
            "wall": r["wall"],
            "reached": hit is not None,
        }
        if hit is not None:
            step, elapsed = hit
            evals_fine = step - sum(lv["evals"] for k, lv in r["levels"].items() if k < len(r["levels"]))
            # cost model: evaluations at each level times that level's measured per-eval ratio
            ratio = 0.0
            for k, lv in r["levels"].items():
                n = lv["evals"] if k < len(r["levels"]) else evals_fine
                ratio += n * level_ratio(tuple(lv["shape"]), opts)
            row.update(
                step=step,
                fine_evals=evals_fine,
                wall_to_reach=elapsed,
                cost_ratio=ratio / steps,
                wall_ratio=elapsed / base_sec,
            )
        rows.append(row)
        print(f"  reach {row}", flush=True)
    return {
        "size": size,
        "baseline_steps": steps,
        "baseline_objective": target,
        "baseline_wall": base_sec,
        "level_cost_ratios": {f"{k[0][0]}x{k[0][1]} {k[1]} {k[2]}": v for k, v in cost.items()},
        "rows": rows,
    }


# --------------------------------------------------------------------------- 3./4. memory, scaling

_CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import baseline as B, bench_cpu as C
from napari_nst.core.optim import engine
side, size, steps = {side!r}, {size}, {steps}
import torch
if {threads}:
    torch.set_num_threads({threads})
prob = B.setup(size)
t0 = time.perf_counter()
if side == "baseline":
    tr = []
    B.run_baseline(prob, steps, tr)
    ts = [t for _, t, _ in tr]
else:
    o = C.nst_options(size, steps, {extra!r}, scales=1, preview_every=10**6, precision={precision!r})
    ts, cpu = [], []
    for r in engine.run(prob.content, prob.style, o):
        ts.append(r.elapsed)
        cpu.append(time.process_time())
        last = r
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
k = min(2, len(ts) - 1)
out = {{"side": side, "size": size, "shape": list(prob.shape), "steps": steps, "extra": {extra!r},
       "s_per_eval": (ts[-1] - ts[k - 1]) / (len(ts) - k) if k else ts[-1] / len(ts), "peak_rss": hwm}}
if side != "baseline":
    out["cpu_s_per_eval"] = (cpu[-1] - cpu[k - 1]) / (len(cpu) - k) if k else None
    out["objective"] = B.objective(prob, last.image)
print(json.dumps(out))
"""


def child(
    side: str, size: int, steps: int, precision: str = "auto", threads: int = 0, extra: dict | None = None
) -> dict[str, Any]:
    """One run in its own process: peak RSS (VmHWM), time per evaluation; napari-nst's side also its
    CPU time per evaluation and the final objective (``extra``: engine knobs, napari-nst's side)."""
    code = _CHILD.format(
        extra=dict(extra or {}),
        bench=str(Path(__file__).resolve().parent),
        side=side,
        size=size,
        steps=steps,
        precision=precision,
        threads=threads,
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def part_memory(size: int, steps: int, precision: str = "auto", threads: int = 0) -> dict[str, Any]:
    b = child("baseline", size, steps, precision, threads)
    n = child("napari-nst", size, steps, precision, threads)
    print(
        f"  memory {size}px: baseline {b['peak_rss'] / 2**20:.0f} MiB, napari-nst {n['peak_rss'] / 2**20:.0f} MiB",
        flush=True,
    )
    return {
        "size": size,
        "steps": steps,
        "precision": precision,
        "baseline": b,
        "napari-nst": n,
        "ratio": n["peak_rss"] / b["peak_rss"],
    }


def part_scaling(sizes: list[int], steps: int, precision: str = "auto", threads: int = 0) -> dict[str, Any]:
    rows = []
    for size in sizes:
        b = child("baseline", size, steps, precision, threads)
        n = child("napari-nst", size, steps, precision, threads)
        rows.append(
            {
                "size": size,
                "shape": b["shape"],
                "baseline": b,
                "napari-nst": n,
                "time_ratio": n["s_per_eval"] / b["s_per_eval"],
                "mem_ratio": n["peak_rss"] / b["peak_rss"],
            }
        )
        print(
            f"  scaling {size}px: {rows[-1]['time_ratio']:.2f}x time, {rows[-1]['mem_ratio']:.2f}x memory", flush=True
        )
    return {"steps": steps, "rows": rows}


# --------------------------------------------------------------------------- report


def markdown(res: dict[str, Any]) -> str:
    L = [f"Machine: {res['machine']}", f"Command: `{res['command']}`", ""]
    if "per-eval" in res:
        r = res["per-eval"]
        L += [
            f"### Time per evaluation, {r['shape'][1]}x{r['shape'][0]} px ({r.get('clock', 'wall')} time, median of "
            f"{r['repeats']} interleaved repeats of {r['evals']} evaluations"
            + (f" after the first {r['warm']} of the same run" if r.get("warm") else "")
            + "; ratio = median of per-repeat ratios)",
            "",
            "| variant | ms / eval | x baseline |",
            "|---|---|---|",
        ]
        L += [f"| {x['variant']} | {x['ms_per_eval']:.0f} | {x['ratio']:.2f} |" for x in r["rows"]]
        L.append("")
    if "quality" in res:
        q = res["quality"]
        L += [
            f"### bf16 against float32 ({q['steps']} evaluations, {q['size']} px, defaults otherwise)",
            "",
            f"objective bf16 {q['runs']['auto']['objective']:.5g}, float32 {q['runs']['float32']['objective']:.5g}: "
            f"{100 * q['relative_difference']:+.2f} %",
            "",
        ]
    if "reach" in res:
        r = res["reach"]
        L += [
            f"### Reaching the baseline's {r['baseline_steps']}-evaluation objective ({r['baseline_objective']:.5g}) "
            f"at {r['size']} px",
            "",
            f"baseline: {r['baseline_wall']:.1f} s wall; per-eval cost of each level vs baseline: "
            + ", ".join(f"{k}: {v:.2f}x" for k, v in r["level_cost_ratios"].items()),
            "",
            "| variant | reached at step | fine-level evals | cost x baseline | wall x baseline | final objective |",
            "|---|---|---|---|---|---|",
        ]
        for x in r["rows"]:
            if x["reached"]:
                L.append(
                    f"| {x['variant']} | {x['step']} | {x['fine_evals']} | {x['cost_ratio']:.2f} | "
                    f"{x['wall_ratio']:.2f} | {x['final_objective']:.5g} |"
                )
            else:
                L.append(
                    f"| {x['variant']} | not reached | | | {x['wall'] / r['baseline_wall']:.2f} (whole run) | "
                    f"{x['final_objective']:.5g} |"
                )
        L.append("")
    for key in ("memory",):
        if key in res:
            m = res[key]
            L += [
                f"### Peak resident memory at {m['size']} px ({m['steps']} evaluations, own process each, "
                f"napari-nst precision {m.get('precision', 'auto')})",
                "",
                f"baseline {m['baseline']['peak_rss'] / 2**20:.0f} MiB, napari-nst "
                f"{m['napari-nst']['peak_rss'] / 2**20:.0f} MiB: {m['ratio']:.2f}x",
                "",
            ]
    if "scaling" in res:
        s = res["scaling"]
        L += [
            f"### Scaling ({s['steps']} evaluations per run, own process each)",
            "",
            "| size | shape | baseline s/eval | napari-nst s/eval | x | baseline peak MiB | napari-nst peak MiB | x |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for x in s["rows"]:
            b, n = x["baseline"], x["napari-nst"]
            L.append(
                f"| {x['size']} | {x['shape'][1]}x{x['shape'][0]} | {b['s_per_eval']:.3f} | {n['s_per_eval']:.3f} | "
                f"{x['time_ratio']:.2f} | {b['peak_rss'] / 2**20:.0f} | {n['peak_rss'] / 2**20:.0f} | "
                f"{x['mem_ratio']:.2f} |"
            )
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="all", help="all or comma-separated: per-eval,quality,reach,memory,scaling")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300, help="the baseline's evaluations in part 'reach'")
    ap.add_argument("--evals", type=int, default=10, help="evaluations timed per repeat in part 'per-eval'")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clock", choices=tuple(CLOCK), default="wall", help="per-eval timing: wall or process CPU time")
    ap.add_argument("--quality-steps", type=int, default=300)
    ap.add_argument(
        "--reach-variants",
        default='[{"scales": 1}, {"scales": 2}, {"scales": 3}]',
        help="JSON list of option dicts for part 'reach' (\"extra\": engine knobs)",
    )
    ap.add_argument(
        "--reach-target",
        type=float,
        default=None,
        help="part reach: the baseline's --steps-evaluation objective from an earlier run (skips running it)",
    )
    ap.add_argument("--mem-size", type=int, default=512)
    ap.add_argument("--mem-steps", type=int, default=110, help="> the baseline's L-BFGS history (100)")
    ap.add_argument("--sizes", default="128,256,512,1024")
    ap.add_argument("--scaling-steps", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "docs" / "perf_results"), help="path without extension")
    ap.add_argument(
        "--isa",
        choices=("native", "avx2"),
        default="native",
        help="avx2: rerun under ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 (a CPU without AVX-512 "
        "and fast bf16, on an AVX-512 machine); per-eval then measures LEVERS_AVX2",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--warm",
        type=int,
        default=0,
        help="per-eval: time evaluations after the first WARM of the same run (e.g. 100: both L-BFGS histories full)",
    )
    ap.add_argument("--levers", default="", help="per-eval: only the variants whose names contain one of these")
    ap.add_argument("--memory-precision", default="auto", help="napari-nst's precision in parts memory/scaling")
    args = ap.parse_args(argv)
    if args.isa == "avx2" and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        # the variables must be there before torch loads: run this script again with them
        env = dict(os.environ, **AVX2_ENV)
        argv = sys.argv[1:] if argv is None else argv
        return subprocess.run([sys.executable, __file__, *argv], env=env).returncode
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = ["per-eval", "quality", "reach", "memory", "scaling"] if args.parts == "all" else args.parts.split(",")
    torch.manual_seed(0)
    res: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"bf16 fast: {engine._cpu_has_fast_bf16()}, ATen {torch.backends.cpu.get_cpu_capability()}, "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(native)')}, "
        f"{torch.get_num_threads()} torch threads, load average at start {os.getloadavg()[0]:.1f}",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
    }
    t0 = time.time()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for part in parts:
        print(f"[{part}]", flush=True)
        if part == "per-eval":
            levers = LEVERS_AVX2 if args.isa == "avx2" else LEVERS
            if args.levers:
                levers = {k: v for k, v in levers.items() if any(w in k for w in args.levers.split(","))}
            res[part] = part_per_eval(args.size, args.evals, args.repeats, args.clock, levers, args.warm)
        elif part == "quality":
            res[part] = part_quality(args.size, args.quality_steps)
        elif part == "reach":
            res[part] = part_reach(
                args.size, args.steps, json.loads(args.reach_variants), args.repeats, args.reach_target, args.clock
            )
        elif part == "memory":
            res[part] = part_memory(args.mem_size, args.mem_steps, args.memory_precision, args.threads)
        elif part == "scaling":
            res[part] = part_scaling(
                [int(s) for s in args.sizes.split(",")], args.scaling_steps, args.memory_precision, args.threads
            )
        else:
            raise SystemExit(f"unknown part {part!r}")
        res["seconds"] = time.time() - t0
        res["load_average_end"] = os.getloadavg()[0]
        # written after every part, so that a later part's failure keeps the earlier results
        out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=float))
        md = markdown(res)
        out.with_suffix(".md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
