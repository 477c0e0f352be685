"""Stop latency: the time from "Stop" to the run being over, against one objective evaluation.

Two ways a run is stopped:

* in-process (``iter_stylize``, what the Python API offers): the consumer closes the generator. A
  generator can only be closed between two records, so a Stop requested while an evaluation runs
  waits for that evaluation to finish: the latency is the rest of the current evaluation.
* in a child process (``EngineProcess``, what the napari widget uses): ``cancel()`` kills the
  child at once (SIGKILL) and the parent reaps it; the latency does not depend on the evaluation.

For each working size, Stop is requested at a random moment inside an evaluation (after a few
warm-up steps), from another thread, and timed until the consumer's loop has ended (in-process:
``close()`` returned; child: the iteration ended and the child is reaped). The evaluation time is
the median interval between records of the same run (child), or the duration of the very
evaluation that was under way when Stop was asked (in-process).

    python benchmarks/stop_latency.py                       # sizes 64 128 256, 3 repeats
    python benchmarks/stop_latency.py --sizes 128 512 --repeats 5 --device cuda

Results: docs/stop_latency.md (the table is rewritten; the command and machine load are noted).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_nst.core.api import iter_stylize  # noqa: E402
from napari_nst.core.image.files import read_image  # noqa: E402
from napari_nst.core.process.client import EngineProcess  # noqa: E402

SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))
WEIGHTS = os.environ.get("NAPARI_NST_WEIGHTS", str(SHARED / "weights" / "vgg16-hed-features.pth"))


def _stop_once(make_records, stop, warmup: int = 3):
    """Consume records in a thread; after ``warmup`` records, ask to Stop at a random point of an evaluation.

    Returns (time Stop was asked, median evaluation s, the consumer thread, its ``done`` dict, record times).
    """
    times: list[float] = []
    stop_asked, warm = threading.Event(), threading.Event()
    done = {}

    def consume() -> None:
        try:
            records = make_records()
            for _ in records:
                times.append(time.perf_counter())
                if len(times) >= warmup:
                    warm.set()
                if stop_asked.is_set():
                    break
            stop(records)  # in-process: close the generator; child: no-op (cancel already killed it)
        finally:
            done["t"] = time.perf_counter()
            warm.set()

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    warm.wait()  # no polling: this thread must not compete with the run for the GIL
    if len(times) < warmup:
        raise RuntimeError("the run ended before the warm-up")
    evals = [b - a for a, b in zip(times[1:], times[2:], strict=False)] or [times[-1] - times[0]]
    t_eval = statistics.median(evals)
    # a random moment inside the next evaluation
    time.sleep(random.uniform(0.0, t_eval))
    t0 = time.perf_counter()
    stop_asked.set()
    return t0, t_eval, worker, done, times


def in_process(content, style, opts: dict) -> tuple[float, float]:
    gen_holder = {}

    def make():
        gen_holder["g"] = iter_stylize(content, style, **opts)
        return gen_holder["g"]

    t0, t_eval, worker, done, times = _stop_once(make, lambda g: g.close())
    worker.join(600)
    # compare with the evaluation that was under way when Stop was asked (they vary a lot on a busy machine)
    before = max(t for t in times if t <= t0)
    after = min(t for t in times if t > t0)
    return done["t"] - t0, after - before


def in_child(content, style, opts: dict) -> tuple[float, float]:
    proc = EngineProcess(content, style, **opts)
    t0, t_eval, worker, done, times = _stop_once(lambda: proc, lambda p: None)
    proc.cancel()  # what the widget's Stop does, from the GUI thread
    worker.join(600)
    assert proc.returncode is not None
    return done["t"] - t0, t_eval


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights", default=WEIGHTS)
    ap.add_argument("--out", default=str(ROOT / "docs" / "stop_latency.md"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    random.seed(args.seed)
    content = read_image(SHARED / "images" / "tubingen.jpg")
    style = read_image(SHARED / "images" / "starry_night.jpg")
    rows = []
    for size in args.sizes:
        opts = dict(size=size, steps=1_000_000, model="vgg16", weights=args.weights, device=args.device)
        for kind, fn in (("in-process (generator close)", in_process), ("child process (cancel)", in_child)):
            lat, ev = [], []
            for _ in range(args.repeats):
                latency, t_eval = fn(content, style, opts)
                lat.append(latency)
                ev.append(t_eval)
                print(
                    f"size {size:4d} {kind:30s} eval {t_eval * 1e3:8.1f} ms  stop {latency * 1e3:8.1f} ms", flush=True
                )
            rows.append(
                (
                    size,
                    kind,
                    statistics.median(ev),
                    statistics.median(lat),
                    max(lat),
                    max(lt / e for lt, e in zip(lat, ev, strict=True)),
                )
            )
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [
        "# Stop latency",
        "",
        "Time from Stop (requested at a random moment inside an objective evaluation, from another thread)",
        "to the run being over, against the time of one evaluation. Written by `benchmarks/stop_latency.py`.",
        "",
        f"Command: `python benchmarks/stop_latency.py --sizes {' '.join(map(str, args.sizes))} "
        f"--repeats {args.repeats} --device {args.device}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.1f} when it finished "
        "(shared with other jobs: the absolute times are noisy, the ratio is the point); vgg16, real weights.",
        "",
        "| size | how | evaluation (median) | Stop latency (median) | Stop latency (max) | max latency / evaluation |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size, kind, ev, lat, lat_max, ratio in rows:
        lines.append(
            f"| {size} | {kind} | {ev * 1e3:.0f} ms | {lat * 1e3:.0f} ms | {lat_max * 1e3:.0f} ms | {ratio:.2f} |"
        )
    lines += [
        "",
        "In-process, the latency is the rest of the evaluation under way (a generator is closed between two",
        "records), so it stays below one evaluation (ratio < 1, plus scheduling noise). In the child process,",
        "`cancel()` kills the child at once: the latency is the kill and reap, independent of the size.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
