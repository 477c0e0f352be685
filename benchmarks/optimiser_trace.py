"""Objective against evaluations for engine variants (what an optimiser buys, independent of load).

Every ``--every`` evaluations the image the engine yields is scored with the benchmark's one
float32 objective (``baseline.objective``), so the numbers do not depend on how busy the machine
is: a variant that reaches the baseline's value in fewer evaluations is faster by that factor
times its per-evaluation cost (``bench_cpu.py --parts per-eval``).

    python benchmarks/optimiser_trace.py --size 256 --steps 250 \\
        --variants '[{}, {"pyramid": 0}, {"pyramid": 0, "extra": {"lbfgs": "torch"}}]'

``extra`` holds engine knobs used only to measure: ``lbfgs: "torch"`` (torch's L-BFGS),
``max_change`` (trust region), ``pyramid_gamma``, ``history_size``, ``clamp``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline as B  # noqa: E402
import bench_cpu as C  # noqa: E402
from napari_nst.core.optim import engine  # noqa: E402


def trace(prob: B.Problem, size: int, steps: int, variant: dict[str, Any], every: int) -> list[tuple[int, float]]:
    v = dict(variant)
    extra = v.pop("extra", {})
    opts = C.nst_options(size, steps, extra=extra, preview_every=every, **v)
    return [
        (r.step, B.objective(prob, r.image)) for r in engine.run(prob.content, prob.style, opts) if r.image is not None
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--variants", default='[{}, {"pyramid": 0}, {"pyramid": 0, "extra": {"lbfgs": "torch"}}]')
    ap.add_argument("--out", default=None, help="write the results as JSON lines here")
    args = ap.parse_args(argv)
    prob = B.setup(args.size)
    lines = []
    for v in json.loads(args.variants):
        tr = trace(prob, args.size, args.steps, v, args.every)
        line = json.dumps({"size": args.size, "variant": v, "trace": tr})
        print(line, flush=True)
        lines.append(line)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
