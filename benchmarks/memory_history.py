"""What storing L-BFGS's curvature pairs in a smaller dtype saves, and what it costs (issue 11).

Each run in its own process (``bench_cpu.child``), float32 (``precision="float32"``, what ``auto``
runs on a CPU without fast bf16), one torch thread, scales 1:

* ``memory``: peak resident memory (VmHWM) at --mem-size (512) px after --mem-steps (102)
  evaluations, the textbook baseline against napari-nst with each history dtype, and each run's
  CPU time per evaluation (the process's CPU time: little moved by other jobs on the machine);
* ``quality``: the objective after --steps (300) evaluations at --size (256) px with each history
  dtype (baseline.py's float32 objective; load-independent), and the CPU time per evaluation.

``--isa avx2`` runs it under ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (an AVX2 CPU
without fast bf16, emulated on an AVX-512 one)::

    python benchmarks/memory_history.py --isa avx2 --parts memory,quality --out docs/perf_avx2_history

No part asserts anything; results go to --out (.json and .md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_cpu as C  # noqa: E402

MiB = 2**20


def _variants(names: str) -> dict[str, dict[str, Any]]:
    return {n: ({} if n == "default" else {"history_dtype": n}) for n in names.split(",")}


def part_memory(args: argparse.Namespace) -> dict[str, Any]:
    """The runs in parallel (peak memory does not depend on the load; CPU time barely does)."""
    steps = args.nst_mem_steps or args.mem_steps
    with ThreadPoolExecutor() as pool:
        runs = {
            name: pool.submit(C.child, "napari-nst", args.mem_size, steps, "float32", 1, extra)
            for name, extra in _variants(args.variants).items()
        }
        if args.baseline_mib:  # measured by an earlier run of this script (its command in the notes)
            base = {"peak_rss": args.baseline_mib * MiB, "steps": args.mem_steps, "reused": True}
        else:
            base = C.child("baseline", args.mem_size, args.mem_steps, "float32", 1)
        print(f"  baseline: {base['peak_rss'] / MiB:.0f} MiB", flush=True)
        results = {name: f.result() for name, f in runs.items()}
    rows = []
    for name, n in results.items():
        rows.append({"history": name, **n, "ratio": n["peak_rss"] / base["peak_rss"]})
        mib, ratio, cpu = n["peak_rss"] / MiB, rows[-1]["ratio"], n["cpu_s_per_eval"]
        print(f"  {name}: {mib:.0f} MiB ({ratio:.3f}x), {cpu:.3f} s CPU/eval", flush=True)
    return {"size": args.mem_size, "steps": args.mem_steps, "nst_steps": steps, "baseline": base, "rows": rows}


def part_quality(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for name, extra in _variants(args.variants).items():
        n = C.child("napari-nst", args.size, args.steps, "float32", 1, extra)
        rows.append({"history": name, **n})
        print(f"  {name}: objective {n['objective']:.5g}, {n['cpu_s_per_eval']:.3f} s CPU/eval", flush=True)
    return {"size": args.size, "steps": args.steps, "rows": rows}


def markdown(res: dict[str, Any]) -> str:
    L = [f"Machine: {res['machine']}", f"Command: `{res['command']}`", ""]
    if "memory" in res:
        m = res["memory"]
        L += [
            f"### Peak resident memory at {m['size']} px, float32 (own process each)",
            "",
            f"baseline (textbook), {m['steps']} evaluations: {m['baseline']['peak_rss'] / MiB:.0f} MiB"
            + (" (from an earlier run: --baseline-mib)" if m["baseline"].get("reused") else "")
            + f"; napari-nst: {m.get('nst_steps', m['steps'])} evaluations",
            "",
            "| L-BFGS history | peak MiB | x baseline | CPU s / eval |",
            "|---|---|---|---|",
        ]
        L += [
            f"| {r['history']} | {r['peak_rss'] / MiB:.0f} | {r['ratio']:.3f} | {r['cpu_s_per_eval']:.3f} |"
            for r in m["rows"]
        ]
        L.append("")
    if "quality" in res:
        q = res["quality"]
        L += [
            f"### Objective after {q['steps']} evaluations at {q['size']} px, float32",
            "",
            "| L-BFGS history | objective | CPU s / eval |",
            "|---|---|---|",
        ]
        L += [f"| {r['history']} | {r['objective']:.5g} | {r['cpu_s_per_eval']:.3f} |" for r in q["rows"]]
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="memory,quality")
    ap.add_argument("--variants", default="float32,bfloat16", help="history dtypes; 'default': the engine's choice")
    ap.add_argument("--mem-size", type=int, default=512)
    ap.add_argument("--mem-steps", type=int, default=102, help="> the baseline's L-BFGS history (100)")
    ap.add_argument(
        "--nst-mem-steps",
        type=int,
        default=0,
        help="napari-nst's evaluations in part memory (0: --mem-steps; its 20 pairs are full after 21)",
    )
    ap.add_argument("--baseline-mib", type=float, default=0, help="the baseline's peak from an earlier run")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--isa", choices=("native", "avx2"), default="native")
    ap.add_argument("--out", default=str(HERE.parent / "docs" / "perf_avx2_history"))
    args = ap.parse_args(argv)
    if args.isa == "avx2" and any(os.environ.get(k) != v for k, v in C.AVX2_ENV.items()):
        env = dict(os.environ, **C.AVX2_ENV)  # before torch loads, in every child too
        return subprocess.run([sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)], env=env).returncode
    import torch

    isa = torch.backends.cpu.get_cpu_capability()
    res: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, ATen {isa}, "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(native)')}, 1 torch thread per run, "
        f"load average at start {os.getloadavg()[0]:.1f}",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
    }
    out = Path(args.out)
    t0 = time.time()
    for part in args.parts.split(","):
        print(f"[{part}]", flush=True)
        res[part] = {"memory": part_memory, "quality": part_quality}[part](args)
        res["seconds"], res["load_average_end"] = time.time() - t0, os.getloadavg()[0]
        out.with_suffix(".json").write_text(json.dumps(res, indent=1))
        out.with_suffix(".md").write_text(markdown(res) + "\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
