"""Does a strong-Wolfe line search help L-BFGS here? (issue 4, target 2)

Runs napari-nst's engine at 256 px with torch's L-BFGS and line_search_fn="strong_wolfe" (one
iteration per engine step, so one step costs several evaluations) and prints the objective that the
shared float32 function of baseline.py gives, with the number of objective evaluations spent.

    python benchmarks/lbfgs_line_search.py 60 120     (iterations per run)
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import baseline as B
from bench_cpu import nst_options
from napari_nst.core.optim import engine

count = [0]
orig_eval = engine.evaluate


def counting(*a, **k):
    count[0] += 1
    return orig_eval(*a, **k)


engine.evaluate = counting


def mk(opts, x):
    return torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=1,
        max_eval=30,
        history_size=20,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )


engine._make_optimizer = mk
prob = B.setup(256)
for steps in [int(s) for s in sys.argv[1:]]:
    count[0] = 0
    t = time.perf_counter()
    last = None
    for r in engine.run(prob.content, prob.style, nst_options(256, steps)):
        last = r
    print(
        steps,
        "iterations",
        count[0],
        "evaluations",
        round(time.perf_counter() - t, 1),
        "s objective",
        B.objective(prob, last.image),
        flush=True,
    )
