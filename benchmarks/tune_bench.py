"""Per-evaluation time of napari-nst's plans against the textbook, as users run it (default threads).

Per evaluation = (T(40) - T(10)) / 30 of a run (T(k): seconds from the run's start to the end of
evaluation k), each variant in its own child process per repeat (so that each starts as a user's
run does: a fresh process, the plan cache of ``$NAPARI_NST_CONFIG_DIR``), the variants interleaved
within each repeat and the ratio to the textbook of the same repeat kept; the median over repeats
is reported. ``auto`` measures its plan in the first repeat (not in the window timed) and reads
it back after. Variants:

* ``textbook``: benchmarks/baseline.py (float32, oneDNN, torch.optim.LBFGS);
* ``auto``, ``float32``, ``bfloat16``: napari-nst with that ``precision`` and the plan measured on
  this machine (core/compute/tune.py);
* ``static``: napari-nst ``auto`` with measuring off (the rules of core/compute/device.py);
* ``plan:<precision>,<channels_last>,<lean_pool>,<winograd>`` (0/1): one plan forced through
  the engine's knobs, e.g. ``plan:float32,0,0,0`` (oneDNN direct, contiguous, torch's pool).

    python benchmarks/tune_bench.py --size 256 --repeats 3 --ab 1,100 \\
        --variants textbook,auto,float32,static,plan:float32,0,0,1 --out /tmp/per_eval.json

``--isa avx2`` runs every child under ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``. Also
prints the tuner's table (``napari-nst tune --show``) for the cache used. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

_CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import baseline as B, bench_cpu as C
from napari_nst.core.optim import engine
variant, size, evals, ab = {variant!r}, {size}, {evals}, {ab!r}
prob = B.setup(size)
if ab:
    prob.a, prob.b = ab
if variant == "textbook":
    tr = []
    B.run_baseline(prob, evals, tr)
    ts = [t for _, t, _ in tr]
    precision, plan, note = "float32", "textbook", ""
else:
    kw, extra = {{}}, {{}}
    if variant.startswith("plan:"):
        p, cl, lean, wino = variant[5:].split(",")
        kw["precision"] = p
        extra = {{"channels_last": cl == "1", "lean_pool": lean == "1", "winograd": wino == "1"}}
    elif variant != "static":
        kw["precision"] = variant
    if ab:
        kw.update(content_weight=ab[0], style_weight=ab[1])
    o = C.nst_options(size, evals, extra, scales=1, preview_every=1, **kw)
    ts, note, recs = [], "", 0
    t0 = time.perf_counter()
    for r in engine.run(prob.content, prob.style, o):
        ts.append(time.perf_counter() - t0)
        note = note or r.note
        precision = r.precision
    plan = ""
print(json.dumps({{"variant": variant, "ts": ts, "precision": precision, "note": note}}))
"""


def child(variant: str, size: int, evals: int, ab: list[float] | None, env: dict[str, str]) -> dict[str, Any]:
    """One run of ``variant`` in a fresh process: the seconds after each evaluation."""
    code = _CHILD.format(bench=str(ROOT / "benchmarks"), variant=variant, size=size, evals=evals, ab=ab)
    if variant == "static":
        env = dict(env, NAPARI_NST_TUNE="0")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def per_eval(ts: list[float], first: int = 10, last: int = 40) -> float:
    """(T(last) - T(first)) / (last - first), T(k) = seconds at the end of evaluation k."""
    return (ts[last - 1] - ts[first - 1]) / (last - first)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="textbook,auto,float32,static")
    ap.add_argument("--ab", default="1,100", help="the weights 'a,b' ('auto': napari-nst's automatic ones)")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native")
    ap.add_argument("--config", default=None, help="plan cache folder (default: a new temporary one)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    ab = None if args.ab == "auto" else [float(x) for x in args.ab.split(",")]
    variants = []
    for part in args.variants.split(","):  # "plan:float32,0,0,1" holds commas itself
        if variants and variants[-1].startswith("plan:") and variants[-1].count(",") < 3:
            variants[-1] += "," + part
        else:
            variants.append(part)
    config = args.config or tempfile.mkdtemp(prefix="nst-plans-")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), NAPARI_NST_CONFIG_DIR=config)
    env.pop("NAPARI_NST_TUNE", None)
    if args.isa == "avx2":
        env.update(AVX2_ENV)
    res: dict[str, Any] = {
        "size": args.size,
        "ab": ab,
        "isa": args.isa,
        "config": config,
        "load_start": os.getloadavg(),
        "runs": {v: [] for v in variants},
    }
    for rep in range(args.repeats):
        for v in variants:
            r = child(v, args.size, 40, ab, env)
            r["per_eval"] = per_eval(r["ts"])
            r["load"] = os.getloadavg()[0]
            res["runs"][v].append(r)
            print(
                f"repeat {rep + 1} {v}: {1000 * r['per_eval']:.0f} ms/eval ({r['precision']}) load {r['load']:.1f}"
                + (f"; note: {r['note']}" if r["note"] else ""),
                flush=True,
            )
    base = [r["per_eval"] for r in res["runs"].get("textbook", [])]
    res["rows"] = []
    for v, runs in res["runs"].items():
        pe = [r["per_eval"] for r in runs]
        row = {"variant": v, "ms_per_eval": 1000 * statistics.median(pe), "precision": runs[-1]["precision"]}
        if base:
            row["ratio"] = statistics.median([t / b for t, b in zip(pe, base, strict=True)])
        res["rows"].append(row)
        print(f"{v:28s} {row['ms_per_eval']:7.0f} ms/eval  x textbook {row.get('ratio', float('nan')):.2f}")
    res["load_end"] = os.getloadavg()
    res["when"] = time.strftime("%Y-%m-%d %H:%M")
    show = subprocess.run(
        [sys.executable, "-m", "napari_nst.cli", "tune", "--show"], capture_output=True, text=True, env=env
    )
    res["table"] = show.stdout
    print(show.stdout)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
