"""CPU: time per evaluation, reach of the textbook's objective and peak memory, against the textbook.

The yardstick is the textbook recipe (the PyTorch tutorial's: float32, torch.optim.LBFGS on the
pixels; ``_harness.run_baseline``) on napari-nst's own objective, network, weights and images,
measured in the same run. Parts (``--parts``, default all):

``per-eval``  time per objective evaluation at --size, each --variants entry against the baseline,
              interleaved repeats, median of the per-repeat ratios (--clock wall or process CPU time);
``quality``   the default run's objective after --quality-steps evaluations against the same run in
              float32 (on a CPU with fast bf16 the default runs bfloat16);
``reach``     the cost of reaching the objective the baseline has after --steps evaluations: the
              evaluations napari-nst needs, times each level's per-evaluation cost measured
              interleaved (cost model, robust to load), and in wall time;
``memory``    peak resident memory (VmHWM) of a whole run at --mem-size over --mem-steps
              evaluations (more than the baseline's 100 L-BFGS pairs), each side and each of
              --mem-variants in its own process, interleaved --mem-repeats times, median of the
              per-repeat ratios;
``scaling``   time per evaluation and peak memory at each of --sizes, own process each.
``kernels``   time per evaluation in float32 with napari-nst's Winograd convolutions (plus
              --kernel-levers) at each of --kernel-sizes, the transformed kernels made at every call
              against kept for the run (what ``memory.KEEP_KERNELS_BELOW`` trades), interleaved.

Every image is scored with the harness's one float32 objective. Variants are names of
``PRESETS`` joined with '+' (``float32+no Winograd``) or a JSON object {name: {options, "levers":
{...}}}; levers are the engine's internal switches (``_harness.LEVER_NAMES``). A memory variant
may also give "env": environment variables of its own process (the C allocator's, for example).

    python -m benchmarks cpu                                       # everything (hours on 2 cores)
    python -m benchmarks cpu --parts per-eval --clock cpu --threads 1
    python -m benchmarks cpu --isa avx2 --parts reach --steps 300 --clock cpu --threads 1
    python -m benchmarks cpu --parts memory --mem-variants "default,float32 L-BFGS history"
    python -m benchmarks cpu --isa avx2 --parts kernels --kernel-levers '{"winograd_min": 128}'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from . import _harness as H

PARTS = ("per-eval", "quality", "reach", "memory", "scaling", "kernels")

#: named variants of napari-nst (Options keywords, and "levers": the engine's internal switches)
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "float32": {"precision": "float32"},
    "bfloat16": {"precision": "bfloat16"},
    "contiguous": {"levers": {"channels_last": False}},
    "channels_last": {"levers": {"channels_last": True}},
    "no Winograd": {"levers": {"winograd": False}},
    "wide Winograd": {"levers": {"winograd_wide": True}},
    "no wide Winograd": {"levers": {"winograd_wide": False}},
    "Winograd from 128": {"levers": {"winograd_wide": True, "winograd_min": 128}},
    "index-free pool": {"levers": {"lean_pool": True}},
    "torch pool": {"levers": {"lean_pool": False}},
    "float32 L-BFGS history": {"levers": {"history_dtype": "float32"}},
    "torch L-BFGS": {"levers": {"lbfgs": "torch"}},
    "single scale": {"scales": 1},
}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--parts", default="all", help=f"all, or comma-separated: {','.join(PARTS)}")
    ap.add_argument("--size", type=int, default=256, help="long edge (px) of per-eval, quality and reach")
    ap.add_argument("--variants", default="default,float32", help="per-eval: napari-nst variants (see above)")
    ap.add_argument("--evals", type=int, default=10, help="per-eval: evaluations timed per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="per-eval, reach: interleaved repeats")
    ap.add_argument("--clock", choices=tuple(H.CLOCKS), default="wall", help="per-eval, reach: wall or CPU time")
    ap.add_argument(
        "--warm", type=int, default=0, help="per-eval: time evaluations after the first WARM of the same run"
    )
    ap.add_argument("--quality-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=300, help="reach: the baseline's evaluations")
    ap.add_argument(
        "--reach-variants",
        default="[{}]",
        help='reach: JSON list of napari-nst option dicts (with "levers"; "steps": its evaluations, default --steps)',
    )
    ap.add_argument(
        "--reach-target",
        type=float,
        default=None,
        help="reach: the baseline's --steps-evaluation objective from an earlier run of the same code, ISA and "
        "threads (deterministic): skips running it",
    )
    ap.add_argument("--mem-size", type=int, default=512)
    ap.add_argument("--mem-steps", type=int, default=110, help="memory: > the baseline's L-BFGS history (100)")
    ap.add_argument("--mem-variants", default="default", help="memory: napari-nst variants")
    ap.add_argument(
        "--mem-repeats", type=int, default=3, help="memory: interleaved runs of each side; the median ratio is kept"
    )
    ap.add_argument("--sizes", default="128,256,512,1024", help="scaling: long edges")
    ap.add_argument("--scaling-steps", type=int, default=6)
    ap.add_argument("--kernel-sizes", default="256,512", help="kernels: long edges")
    ap.add_argument(
        "--kernel-levers",
        default="{}",
        help='kernels: JSON levers on top of {"winograd_wide": true} (e.g. {"winograd_min": 128})',
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.size, args.evals, args.repeats, args.warm = 48, 2, 2, 0
        args.quality_steps, args.steps, args.mem_size, args.mem_steps, args.mem_repeats = 3, 3, 48, 3, 2
        args.sizes, args.scaling_steps, args.kernel_sizes = "32", 3, "48"
    parts = PARTS if args.parts == "all" else tuple(args.parts.split(","))
    for p in parts:
        if p not in PARTS:
            raise H.BenchmarkError(f"no part {p!r}: the parts are {', '.join(PARTS)}")
    if args.mem_repeats < 1:
        raise H.BenchmarkError(f"--mem-repeats {args.mem_repeats}: give 1 or more runs of each side")
    out: dict[str, Any] = {"figures": []}
    prob = H.setup(args, args.size) if {"per-eval", "quality", "reach", "kernels"} & set(parts) else None
    for part in parts:
        H.say(f"[{part}]")
        t0 = time.perf_counter()
        res = {
            "per-eval": lambda: part_per_eval(args, prob),
            "quality": lambda: part_quality(args, prob),
            "reach": lambda: part_reach(args, prob),
            "memory": lambda: part_memory(args),
            "scaling": lambda: part_scaling(args),
            "kernels": lambda: part_kernels(args, prob),
        }[part]()
        out["figures"] += [{**f, "part": part} for f in res.pop("figures")]
        out[part] = res
        args._checkpoint(out)
        H.say(f"[{part}] done in {time.perf_counter() - t0:.1f} s")
    return out


# --------------------------------------------------------------------------- variants


def variants(spec: str) -> dict[str, dict[str, Any]]:
    """``default,float32+no Winograd`` (PRESETS names, '+' combines) or a JSON object."""
    if spec.lstrip().startswith("{"):
        out = json.loads(spec)
        if not isinstance(out, dict) or not all(isinstance(v, dict) for v in out.values()):
            raise H.BenchmarkError('variants as JSON: an object {"name": {options, "levers": {...}}}')
        for name, v in out.items():
            env = v.get("env", {})
            if not isinstance(env, dict) or not all(isinstance(x, str) for x in [*env, *env.values()]):
                raise H.BenchmarkError(
                    f'variant {name!r}: "env" must map names to text, like {{"MALLOC_ARENA_MAX": "2"}}; got {env!r}'
                )
        return out
    result: dict[str, dict[str, Any]] = {}
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        merged: dict[str, Any] = {}
        for part in name.split("+"):
            if part not in PRESETS:
                raise H.BenchmarkError(f"no variant {part!r}: the presets are {', '.join(PRESETS)}, or give JSON")
            levers = {**merged.get("levers", {}), **PRESETS[part].get("levers", {})}
            merged.update({k: v for k, v in PRESETS[part].items() if k != "levers"})
            if levers:
                merged["levers"] = levers
        result[name] = merged
    return result


def _options(variant: dict[str, Any], own_process: bool = False) -> dict[str, Any]:
    """A variant's napari-nst options (without its levers and environment). Its "env" needs a
    process of its own (``own_process``: the memory part's runs); elsewhere it is refused."""
    if "env" in variant and not own_process:
        raise H.BenchmarkError('a variant with "env" runs only in the memory part (each run in its own process)')
    return {k: v for k, v in variant.items() if k not in ("levers", "env")}


def describe(v: dict[str, Any]) -> str:
    flat = {k: val for k, val in v.items() if k != "levers"} | v.get("levers", {})
    return ", ".join(f"{k}={val}" for k, val in flat.items()) or "default"


def nst_run(prob: H.Problem, variant: dict[str, Any], size: int, steps: int, **kw: Any) -> list[Any]:
    """One napari-nst run of ``variant``; its records (the images every ``preview_every``)."""
    from napari_nst.core.optim import engine

    options = _options(variant)
    opts = H.nst_options(prob, size, steps, **{**options, **kw})
    with H.levers(**variant.get("levers", {})):
        return list(engine.run(prob.content, prob.style, opts))


# --------------------------------------------------------------------------- per evaluation


def time_baseline(prob: H.Problem, evals: int, clock: str = "wall", warm: int = 0) -> float:
    """Seconds per evaluation of the baseline: of a fresh run's first ``evals`` (``warm`` 0, after
    a 2-evaluation warm-up run), or of evaluations ``warm + 1 .. warm + evals`` of one run (its
    L-BFGS history then holds min(warm, 100) pairs: the steady state of a long run)."""
    now = H.CLOCKS[clock]
    if not warm:
        H.run_baseline(prob, 2)
        c0 = now()
        H.run_baseline(prob, evals)
        return (now() - c0) / evals
    t: list[float] = []
    hook = prob.net.register_forward_pre_hook(lambda m, a: t.append(now()))  # one call per evaluation
    try:
        H.run_baseline(prob, warm + evals + 1)
    finally:
        hook.remove()
    return (t[warm + evals] - t[warm]) / evals


def time_nst(prob: H.Problem, variant: dict[str, Any], size: int, evals: int, clock: str, warm: int = 0) -> float:
    """Seconds per evaluation of napari-nst at one level (the first two evaluations warm up)."""
    from napari_nst.core.optim import engine

    now = H.CLOCKS[clock]
    warm = max(warm, 2)
    options = {"scales": 1, **_options(variant), "preview_every": 10**6}
    opts = H.nst_options(prob, size, evals + warm, **options)
    t = []
    with H.levers(**variant.get("levers", {})):
        for _ in engine.run(prob.content, prob.style, opts):
            t.append(now())
    return (t[-1] - t[warm - 1]) / evals


def part_per_eval(args: argparse.Namespace, prob: H.Problem) -> dict[str, Any]:
    vs = variants(args.variants)
    fns = {"baseline": lambda: time_baseline(prob, args.evals, args.clock, args.warm)}
    for name, v in vs.items():
        fns[name] = lambda v=v: time_nst(prob, v, args.size, args.evals, args.clock, args.warm)
    res = H.interleaved(fns, args.repeats)
    h, w = prob.shape
    after = f", after {args.warm} evaluations" if args.warm else ""
    figures = [
        H.figure(
            f"time per evaluation, {w}x{h} px ({args.clock} clock{after}): {name}",
            res[name]["ratio"],
            "textbook",
            res[name]["median"],
            "s",
            baseline_value=res["baseline"]["median"],
        )
        for name in vs
    ]
    return {"figures": figures, "shape": list(prob.shape), "variants": vs, "times": res}


def part_kernels(args: argparse.Namespace, prob: H.Problem) -> dict[str, Any]:
    """Per call against kept, float32 Winograd at each of ``--kernel-sizes`` (the ratio of each repeat
    to the kept kernels' time in the same repeat; its median is the figure)."""
    extra = json.loads(args.kernel_levers)
    if not isinstance(extra, dict):
        raise H.BenchmarkError('--kernel-levers: a JSON object of levers, e.g. {"winograd_min": 128}')
    plan = {"winograd_wide": True, **extra}
    label = ", ".join(f"{k}={v}" for k, v in plan.items())
    figures, times = [], {}
    for size in [int(v) for v in args.kernel_sizes.split(",") if v]:
        p = prob if size == prob.size else H.setup(args, size)
        side = {
            name: {"precision": "float32", "levers": {**plan, "keep_kernels": keep}}
            for name, keep in (("kept", True), ("per call", False))
        }
        fns = {
            name: lambda v=v, p=p, size=size: time_nst(p, v, size, args.evals, args.clock, args.warm)
            for name, v in side.items()
        }
        res = H.interleaved(fns, args.repeats, baseline="kept")
        h, w = p.shape
        times[f"{w}x{h}"] = res
        figures.append(
            H.figure(
                f"time per evaluation, {w}x{h} px, float32 ({label}): Winograd kernels made at every call",
                res["per call"]["ratio"],
                "kernels kept",
                res["per call"]["median"],
                "s",
                baseline_value=res["kept"]["median"],
            )
        )
    return {"figures": figures, "levers": plan, "times": times}


def part_quality(args: argparse.Namespace, prob: H.Problem) -> dict[str, Any]:
    runs = {}
    for prec in ("auto", "float32"):
        t0 = time.perf_counter()
        last = nst_run(prob, {"precision": prec}, args.size, args.quality_steps, preview_every=10**6)[-1]
        runs[prec] = {"objective": H.objective(prob, last.image), "wall": time.perf_counter() - t0}
        runs[prec]["precision_used"] = last.precision
        H.say(f"  quality {prec} ({last.precision}): objective {runs[prec]['objective']:.5g}")
    ratio = runs["auto"]["objective"] / runs["float32"]["objective"]
    fig = H.figure(
        f"objective after {args.quality_steps} evaluations, default ({runs['auto']['precision_used']})",
        ratio,
        "napari-nst in float32",
        runs["auto"]["objective"],
        "",
    )
    return {"figures": [fig], "runs": runs}


# --------------------------------------------------------------------------- reach


def part_reach(args: argparse.Namespace, prob: H.Problem) -> dict[str, Any]:
    steps = args.steps
    base_sec = float("nan")
    target = args.reach_target
    if target is None:
        trace: list[tuple[int, float, float]] = []
        _, base_sec = H.run_baseline(prob, steps, trace)
        target = trace[min(steps, len(trace)) - 1][2]
    H.say(f"  baseline: {steps} evaluations in {base_sec:.1f} s, objective {target:.5g}")
    cost: dict[str, float] = {}

    def level_ratio(shape: tuple[int, int], v: dict[str, Any]) -> float:
        """napari-nst's per-evaluation cost at ``shape`` over the baseline's, interleaved."""
        key = f"{shape[1]}x{shape[0]} {describe(v)}"
        if key not in cost:
            rs = []
            for _ in range(args.repeats):
                tb = time_baseline(prob, 6, args.clock)
                rs.append(time_nst(prob, v, max(shape), 6, args.clock) / tb)
            cost[key] = statistics.median(rs)
        return cost[key]

    rows, figures = [], []
    for v in json.loads(args.reach_variants):
        v = dict(v)
        n = int(v.pop("steps", steps))
        t0 = time.perf_counter()
        records = nst_run(prob, v, args.size, n, preview_every=5)
        wall = time.perf_counter() - t0
        levels: dict[int, dict[str, Any]] = {}
        hit = None
        for r in records:
            lv = levels.setdefault(r.level, {"shape": tuple(r.shape), "evals": 0})
            lv["evals"] += 1
            if hit is None and r.image is not None and r.level == r.levels and H.objective(prob, r.image) <= target:
                hit = (r.step, r.elapsed)
        final = H.objective(prob, records[-1].image)
        name = f"{describe(v)}, {n} evaluations"
        row: dict[str, Any] = {"variant": v, "steps": n, "final_objective": final, "wall": wall, "reached": bool(hit)}
        if hit is not None:
            step, elapsed = hit
            coarse = sum(lv["evals"] for k, lv in levels.items() if k < len(levels))
            ratio = sum(
                (lv["evals"] if k < len(levels) else step - coarse) * level_ratio(lv["shape"], v)
                for k, lv in levels.items()
            )
            row.update(step=step, cost_ratio=ratio / steps, wall_to_reach=elapsed, wall_ratio=elapsed / base_sec)
            figures.append(
                H.figure(
                    f"reach the textbook's {steps}-evaluation objective ({args.clock} cost model): {name}",
                    ratio / steps,
                    f"textbook's {steps} evaluations",
                    step,
                    "evaluations",
                )
            )
            if args.reach_target is None:
                figures.append(
                    H.figure(
                        f"reach the textbook's {steps}-evaluation objective (wall time): {name}",
                        elapsed / base_sec,
                        f"textbook's {steps} evaluations",
                        elapsed,
                        "s",
                    )
                )
        else:
            figures.append(
                H.figure(
                    f"reach the textbook's {steps}-evaluation objective: not reached by {name}; final objective",
                    final / target,
                    f"textbook's objective after {steps} evaluations",
                    final,
                    "",
                )
            )
            if args.reach_target is None:
                figures.append(
                    H.figure(
                        f"reach the textbook's {steps}-evaluation objective: not reached by {name}; its wall time",
                        wall / base_sec,
                        f"textbook's {steps} evaluations",
                        wall,
                        "s",
                    )
                )
        rows.append(row)
        H.say(f"  reach {row}")
    return {
        "figures": figures,
        "size": args.size,
        "baseline_steps": steps,
        "baseline_objective": target,
        "baseline_wall": base_sec,
        "level_cost_ratios": cost,
        "rows": rows,
    }


# --------------------------------------------------------------------------- memory, scaling


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One whole run in this (child) process: peak RSS (VmHWM), seconds per evaluation, and for
    napari-nst its CPU seconds per evaluation and final objective."""
    from napari_nst.core.optim import engine

    H.set_threads(spec["threads"])
    prob = H.setup(argparse.Namespace(**spec["inputs"]), spec["size"])
    steps = spec["steps"]
    cpu: list[float] = []
    if spec["side"] == "baseline":
        tr: list[tuple[int, float, float]] = []
        H.run_baseline(prob, steps, tr)
        ts = [t for _, t, _ in tr]
    else:
        v = spec["variant"]
        options = {**spec.get("options", {}), **_options(v, own_process=True)}
        opts = H.nst_options(prob, spec["size"], steps, preview_every=10**6, **options)
        ts = []
        with H.levers(**v.get("levers", {})):
            for r in engine.run(prob.content, prob.style, opts):
                ts.append(r.elapsed)
                cpu.append(time.process_time())
                last = r
    k = min(2, len(ts) - 1)
    out: dict[str, Any] = {
        "side": spec["side"],
        "size": spec["size"],
        "shape": list(prob.shape),
        "steps": steps,
        "s_per_eval": (ts[-1] - ts[k - 1]) / (len(ts) - k) if k else ts[-1] / len(ts),
        "peak_rss": H.vm_hwm(),
    }
    env = spec.get("variant", {}).get("env")
    if env:  # what this process had
        out["env"] = {k: os.environ.get(k) for k in env}
    if cpu:
        out["cpu_s_per_eval"] = (cpu[-1] - cpu[k - 1]) / (len(cpu) - k) if k else None
        out["objective"] = H.objective(prob, last.image)
    return out


def _spec(args: argparse.Namespace, side: str, size: int, steps: int, variant: dict | None = None, **options: Any):
    inputs = {"content": args.content, "style": args.style, "weights": H.weights_file(args.weights)}
    spec = {"side": side, "size": size, "steps": steps, "threads": args.threads, "inputs": inputs}
    return {**spec, "variant": variant or {}, "options": options}


def _children(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each spec's run in its own process, one after the other (no run shares the machine's memory
    or cores with another)."""
    return [H.run_child("benchmarks.cpu:memory_child", s, s["variant"].get("env")) for s in specs]


def part_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Each side's whole run in its own process, the baseline and the variants interleaved,
    --mem-repeats times: a process's peak moves by a few per cent between runs (where glibc's heap
    happens to place the evaluations' maps), so a figure is the median of the per-repeat ratios."""
    vs = variants(args.mem_variants)
    repeats = args.mem_repeats
    bases: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in vs}
    for i in range(repeats):
        specs = [_spec(args, "baseline", args.mem_size, args.mem_steps)]
        specs += [_spec(args, "napari-nst", args.mem_size, args.mem_steps, v) for v in vs.values()]
        base, *done = _children(specs)
        bases.append(base)
        H.say(f"  memory {args.mem_size} px, repeat {i + 1}/{repeats}: baseline {base['peak_rss'] / H.MiB:.0f} MiB")
        for name, n in zip(vs, done, strict=True):
            runs[name].append({**n, "ratio": n["peak_rss"] / base["peak_rss"]})
            H.say(f"  memory {name}: {n['peak_rss'] / H.MiB:.0f} MiB ({runs[name][-1]['ratio']:.3f}x)")
    base_mib = statistics.median(b["peak_rss"] for b in bases) / H.MiB
    rows, figures = {}, []
    for name, v in vs.items():
        ratios = [n["ratio"] for n in runs[name]]
        mib = statistics.median(n["peak_rss"] for n in runs[name]) / H.MiB
        rows[name] = {"variant": v, "ratio": statistics.median(ratios), "repeats": runs[name]}
        spread = f", median of {repeats} (ratios {min(ratios):.2f}-{max(ratios):.2f})" if repeats > 1 else ""
        figures.append(
            H.figure(
                f"peak memory of a whole run, {args.mem_size} px, {args.mem_steps} evaluations{spread}: {name}",
                rows[name]["ratio"],
                "textbook",
                mib,
                "MiB",
                baseline_value=base_mib,
                ratios=ratios,
            )
        )
    return {
        "figures": figures,
        "size": args.mem_size,
        "steps": args.mem_steps,
        "repeats": repeats,
        "baseline": bases,
        "rows": rows,
    }


def part_scaling(args: argparse.Namespace) -> dict[str, Any]:
    rows, figures = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        specs = [
            _spec(args, "baseline", size, args.scaling_steps),
            _spec(args, "napari-nst", size, args.scaling_steps, scales=1),
        ]
        b, n = _children(specs)
        row = {
            "size": size,
            "shape": b["shape"],
            "baseline": b,
            "napari-nst": n,
            "time_ratio": n["s_per_eval"] / b["s_per_eval"],
            "mem_ratio": n["peak_rss"] / b["peak_rss"],
        }
        rows.append(row)
        H.say(f"  scaling {size} px: {row['time_ratio']:.2f}x time, {row['mem_ratio']:.2f}x memory")
        shape = f"{b['shape'][1]}x{b['shape'][0]} px"
        figures += [
            H.figure(f"scaling, {shape}: time per evaluation", row["time_ratio"], "textbook", n["s_per_eval"], "s"),
            H.figure(
                f"scaling, {shape}: peak memory ({args.scaling_steps} evaluations)",
                row["mem_ratio"],
                "textbook",
                n["peak_rss"] / H.MiB,
                "MiB",
            ),
        ]
    return {"figures": figures, "steps": args.scaling_steps, "rows": rows}
