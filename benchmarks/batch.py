"""Batch: throughput of ``napari-nst batch`` against a loop of ``napari-nst stylize``, and a dask task's overhead.

--images small content pictures (crops of the content picture), one style, the same options
everywhere. End to end, each way a fresh process, wall clock from start to exit (every way pays its
own start-up), and CPU seconds of the process and its children (workers, nannies):

* ``loop`` (the baseline): ``napari-nst stylize`` once per image (what a shell loop does);
* ``sequential``: ``napari-nst batch --workers 0`` (one process, one network);
* ``WxT`` (1x1, 1x2, 2x1): ``napari-nst batch --workers W --threads-per-worker T`` (a LocalCluster).

Then the overhead of an image as a dask task, in this process, on a LocalCluster of one worker with
one thread: cluster start; first network load on a worker (weights read by the worker plugin, the
network built for the first task); and per task, the batch's wall time less the sum of the items'
own times on the worker, against one 256 px run of 100 evaluations (the CPU default; its time per
evaluation measured here on 10).

    python -m benchmarks batch                          # 8 images, 128 px, 30 steps
    python -m benchmarks batch --size 96 --steps 12     # shorter, on a busy machine
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _harness as H

#: --ways: name -> (workers, threads per worker); None: the baseline, a ``napari-nst stylize`` per image
WAYS: dict[str, tuple[int, int] | None] = {
    "loop": None,
    "sequential": (0, 1),
    "1x1": (1, 1),
    "1x2": (1, 2),
    "2x1": (2, 1),
}


def label(way: str) -> str:
    w = WAYS[way]
    if w is None:
        return "stylize loop (a process per image)"
    return "batch, sequential" if w[0] == 0 else f"batch, {w[0]} worker(s) x {w[1]} thread(s)"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of: {','.join(WAYS)} (loop first)")
    ap.add_argument("--ref-size", type=int, default=256, help="the reference run the task overhead is set against")
    ap.add_argument("--no-overhead", dest="overhead", action="store_false", help="skip the LocalCluster overhead part")


def make_images(photo_spec: str, folder: Path, n: int, size: int) -> list[Path]:
    """``n`` different crops of the content picture, each ``size`` px on the long edge."""
    from PIL import Image

    photo = Image.fromarray(H.load_image(photo_spec)).convert("RGB")
    w, h = photo.size
    out = []
    for k in range(n):
        x0 = (k * (w // 3)) // max(1, n - 1)
        crop = photo.crop((x0, 0, x0 + 2 * w // 3, h)).resize((size, round(size * h / (2 * w / 3))))
        out.append(folder / f"t{k}.png")
        crop.save(out[-1])
    return out


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli(*args: str, threads: int = 0) -> tuple[float, float]:
    """Wall seconds of one CLI process and its CPU seconds (with its own children: workers, nannies);
    ``threads``: torch threads of the process (OMP_NUM_THREADS; 0: torch's default)."""
    env = H.child_env({"OMP_NUM_THREADS": str(threads)} if threads else None)
    t0, c0 = time.perf_counter(), _children_cpu()
    p = subprocess.run([sys.executable, "-m", "napari_nst.cli", *args], env=env, capture_output=True, text=True)
    if p.returncode:
        raise H.BenchmarkError(f"napari-nst {args[0]} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0, _children_cpu() - c0


def end_to_end(a: argparse.Namespace, images: list[Path], style: Path, tmp: Path) -> list[dict[str, Any]]:
    options = ["--size", str(a.size), "--steps", str(a.steps), "--weights", a.weights_path, "--device", "cpu"]
    options.append("--quiet")
    rows = []
    for name in a.ways.split(","):
        if name not in WAYS:
            raise H.BenchmarkError(f"no way {name!r}: the ways are {', '.join(WAYS)}")
        row: dict[str, Any] = {"way": name, "label": label(name)}
        if WAYS[name] is None:
            secs = [
                cli("stylize", str(p), str(style), "-o", str(tmp / f"loop-{p.name}"), *options, threads=a.threads)
                for p in images
            ]
            row.update(seconds=sum(s for s, _ in secs), cpu_seconds=sum(c for _, c in secs))
        else:
            workers, threads = WAYS[name]  # type: ignore[misc]
            out = tmp / f"batch-{name}"
            args = ["--workers", str(workers), "--threads-per-worker", str(threads)]
            row["seconds"], row["cpu_seconds"] = cli(
                "batch", *map(str, images), "--style", str(style), "-o", str(out), *args, *options, threads=a.threads
            )
            items = json.loads((out / "batch.json").read_text())["items"]
            if not all(e["status"] == "done" for e in items):
                raise H.BenchmarkError(f"{name}: not every item is done: {items}")
            row["item_seconds"] = sum(e["seconds"] for e in items)
        row["images_per_min"] = 60 * len(images) / row["seconds"]
        rows.append(row)
        H.say(f"  {json.dumps(row)}")
    return rows


def _worker_stats() -> dict[str, Any]:
    from napari_nst.core.distributed.cluster import stats

    return stats()


def _cold_load_seconds(weights: str) -> tuple[float, float]:
    """On a worker, with its caches emptied: seconds to read the weights file (what the plugin does
    once per worker) and to build the network from it (what the first task does)."""
    from napari_nst.core.encoder import vgg
    from napari_nst.core.options import Options

    vgg._NETS.clear()
    vgg._cached_features.cache_clear()
    t0 = time.perf_counter()
    vgg.resolve_model(None, weights)
    t1 = time.perf_counter()
    vgg.build_vgg(None, Options().layers, weights=weights)
    return t1 - t0, time.perf_counter() - t1


def overhead(a: argparse.Namespace, images: list[Path], style: Path, tmp: Path) -> dict[str, Any]:
    import distributed

    from napari_nst.core.distributed.batch import batch

    t0 = time.perf_counter()
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        start = time.perf_counter() - t0
        kw = dict(client=client, size=a.size, steps=a.steps, weights=a.weights_path, device="cpu")
        t1 = time.perf_counter()
        first = batch(images[:1], style, tmp / "warm-up", **kw)  # torch imported, network built on the worker
        first_wall = time.perf_counter() - t1
        t1 = time.perf_counter()
        res = batch(images, style, tmp / "overhead", **kw)
        wall = time.perf_counter() - t1
        stats = next(iter(client.run(_worker_stats).values()))  # both batches: one network each, reused
        read, build = next(iter(client.run(_cold_load_seconds, a.weights_path).values()))
    return {
        "cluster_start_s": start,
        "first_batch_wall_s": first_wall,
        "first_item_s": first[0].seconds,
        "batch_wall_s": wall,
        "items_s": sum(r.seconds for r in res),
        "per_task_overhead_s": (wall - sum(r.seconds for r in res)) / len(res),
        "weights_read_s": read,
        "network_build_s": build,
        "builds": stats["builds"],
        "hits": stats["hits"],
    }


def reference_run(a: argparse.Namespace, style: Path) -> float:
    """Seconds of a --ref-size px run of 100 evaluations, from the time per evaluation over evaluations 3-12."""
    import torch

    from napari_nst.core.api import iter_stylize

    # torch imported after a LocalCluster started reads the OMP_NUM_THREADS=1 dask set for its nannies
    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    steps = 4 if a.dry_run else 12
    content = H.load_image(a.content)
    kw = dict(size=a.ref_size, steps=steps, model=H.MODEL, weights=a.weights_path, device="cpu", preview_every=1000)
    times = [rec.elapsed for rec in iter_stylize(content, str(style), **kw)]
    return (times[-1] - times[1]) / (len(times) - 2) * 100


def figures(a: argparse.Namespace, rows: list[dict[str, Any]], over: dict[str, Any] | None, ref: float) -> list:
    what = f"{a.images} images of {a.size} px, {a.steps} evaluations"
    base = rows[0] if rows and rows[0]["way"] == "loop" else None
    out = []
    for r in rows:
        if r is base:
            continue
        for key, what_time in (("seconds", "wall time"), ("cpu_seconds", "CPU time")):
            out.append(
                H.figure(
                    f"{what}, {r['label']}: {what_time}",
                    None if base is None else r[key] / base[key],
                    label("loop"),
                    r[key],
                    "s",
                )
            )
    if over is not None:
        ref_name = f"a {a.ref_size} px run of 100 evaluations"
        out += [
            H.figure(
                "dask task overhead per image, warm cluster",
                over["per_task_overhead_s"] / ref,
                ref_name,
                over["per_task_overhead_s"],
                "s",
            ),
            H.figure(
                "first network load on a worker (weights read + network built)",
                (over["weights_read_s"] + over["network_build_s"]) / ref,
                ref_name,
                over["weights_read_s"] + over["network_build_s"],
                "s",
            ),
        ]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.images, args.size, args.steps, args.ref_size = 1, 32, 2, 48
        if args.ways == ",".join(WAYS):
            args.ways = "loop,sequential"
    args.weights_path = H.weights_file(args.weights)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "in").mkdir()
        images = make_images(args.content, tmp / "in", args.images, args.size)
        style = H.image_file(args.style, tmp)
        rows = end_to_end(args, images, style, tmp)
        over = overhead(args, images, style, tmp) if args.overhead else None
        H.say(f"  overhead {json.dumps(over)}")
        ref = reference_run(args, style)
    return {"figures": figures(args, rows, over, ref), "rows": rows, "overhead": over, "reference_run_s": ref}
