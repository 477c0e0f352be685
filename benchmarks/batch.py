"""Batch throughput on a LocalCluster against the sequential CLI, and the overhead of a dask task.

Eight small content images (crops of the shared Tübingen photo), one style (The Starry Night), the
shared VGG16 weights, the same options everywhere. In one run, end to end (each a fresh process,
wall clock from start to exit, so that every way pays its own start-up):

* ``stylize loop``: ``napari-nst stylize`` once per image (what a shell loop does today);
* ``batch, sequential``: ``napari-nst batch --workers 0`` (one process, one network);
* ``batch, W x T``: ``napari-nst batch --workers W --threads-per-worker T`` (a LocalCluster of W
  worker processes with T threads each, torch's threads splitting the cores among the tasks).

Then the overhead of running an image as a dask task, measured in this process on a LocalCluster
of one worker with one thread: cluster start; first network load on a worker (the weights file
read by the worker plugin, plus building the network for the first task); and per task, the
batch's wall time less the sum of the items' own times on the worker (scheduling, sending the
path and the style, the pastiche back, writing it), as a fraction of a 256 px run of the
default CPU length (100 evaluations; its time per evaluation measured here on 10).

    python benchmarks/batch.py                          # 8 images, 128 px, 30 steps
    python benchmarks/batch.py --size 96 --steps 12     # shorter, on a busy machine

Results: docs/batch_results.md (rewritten; with the command, CPU and load average) and .json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_nst.core.image.files import read_image  # noqa: E402

SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))
WEIGHTS = str(SHARED / "weights" / "vgg16-hed-features.pth")
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` different crops of the Tübingen photo, each ``size`` px on the long edge."""
    from PIL import Image

    photo = Image.fromarray(read_image(SHARED / "images" / "tubingen.jpg"))
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


CPU: dict[str, float] = {}


def cli(*args: str) -> float:
    """Wall seconds of one CLI process; its CPU seconds (with its own children: workers, nannies)
    are added to ``CPU["last"]``."""
    t0, c0 = time.perf_counter(), _children_cpu()
    subprocess.run(
        [sys.executable, "-m", "napari_nst.cli", *args],
        check=True,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    CPU["last"] = CPU.get("last", 0.0) + _children_cpu() - c0
    return time.perf_counter() - t0


def options(a: argparse.Namespace) -> list[str]:
    return ["--size", str(a.size), "--steps", str(a.steps), "--weights", WEIGHTS, "--device", "cpu", "--quiet"]


def end_to_end(a: argparse.Namespace, images: list[Path], style: Path, tmp: Path) -> list[dict]:
    rows = []
    CPU["last"] = 0.0
    load0 = os.getloadavg()[0]
    t = sum(cli("stylize", str(p), str(style), "-o", str(tmp / f"loop-{p.name}"), *options(a)) for p in images)
    rows.append(
        {"way": "stylize loop", "seconds": t, "cpu_seconds": CPU["last"], "load_1min": [load0, os.getloadavg()[0]]}
    )
    print(json.dumps(rows[-1]), flush=True)  # each way as it finishes: a run cut short keeps its numbers
    for name, workers, threads in [
        ("batch, sequential", 0, 1),
        ("batch, 1 x 1", 1, 1),
        ("batch, 1 x 2", 1, 2),
        ("batch, 2 x 1", 2, 1),
    ]:
        out = tmp / name.replace(", ", "-").replace(" ", "")
        CPU["last"] = 0.0
        load0 = os.getloadavg()[0]
        t = cli(
            "batch",
            *map(str, images),
            "--style",
            str(style),
            "-o",
            str(out),
            "--workers",
            str(workers),
            "--threads-per-worker",
            str(threads),
            *options(a),
        )
        items = json.loads((out / "batch.json").read_text())["items"]
        assert all(e["status"] == "done" for e in items), items
        rows.append(
            {
                "way": name,
                "seconds": t,
                "item_seconds": sum(e["seconds"] for e in items),
                "cpu_seconds": CPU["last"],
                "load_1min": [load0, os.getloadavg()[0]],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["seconds"]
    for r in rows:
        r["images_per_min"] = 60 * len(images) / r["seconds"]
        r["vs_loop"] = r["seconds"] / base
    return rows


def _worker_stats() -> dict:
    from napari_nst.core.distributed.cluster import stats

    return stats()


def _cold_load_seconds() -> tuple[float, float]:
    """On a worker, with its caches emptied: seconds to read the weights file (what the plugin does
    once per worker) and to build the network from it (what the first task does): what the caches
    save every later task."""
    from napari_nst.core.encoder import vgg
    from napari_nst.core.options import Options

    vgg._NETS.clear()
    vgg._cached_features.cache_clear()
    t0 = time.perf_counter()
    vgg.resolve_model(None, WEIGHTS)
    t1 = time.perf_counter()
    vgg.build_vgg(None, Options().layers, weights=WEIGHTS)
    return t1 - t0, time.perf_counter() - t1


def overhead(a: argparse.Namespace, images: list[Path], style: Path, tmp: Path) -> dict:
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
        kw = dict(client=client, size=a.size, steps=a.steps, weights=WEIGHTS, device="cpu")
        t1 = time.perf_counter()
        first = batch(images[:1], style, tmp / "warm-up", **kw)  # torch imported, network built on the worker
        first_wall = time.perf_counter() - t1
        t1 = time.perf_counter()
        res = batch(images, style, tmp / "overhead", **kw)
        wall = time.perf_counter() - t1
        stats = next(iter(client.run(_worker_stats).values()))  # both batches: one network each, reused
        read, build = next(iter(client.run(_cold_load_seconds).values()))
    per_task = (wall - sum(r.seconds for r in res)) / len(res)
    return {
        "cluster_start_s": start,
        "first_batch_wall_s": first_wall,
        "first_item_s": first[0].seconds,
        "batch_wall_s": wall,
        "items_s": sum(r.seconds for r in res),
        "per_task_overhead_s": per_task,
        "weights_read_s": read,
        "network_build_s": build,
        "builds": stats["builds"],
        "hits": stats["hits"],
    }


def run_256(a: argparse.Namespace, style: Path) -> float:
    """Seconds of a 256 px run of 100 evaluations, from the time per evaluation over evaluations 3-12."""
    import torch

    from napari_nst.core.api import iter_stylize

    # torch imported after a LocalCluster started reads the OMP_NUM_THREADS=1 dask set for its nannies
    torch.set_num_threads(os.cpu_count() or 1)

    content = read_image(SHARED / "images" / "tubingen.jpg")
    times = [
        rec.elapsed
        for rec in iter_stylize(
            content, str(style), size=256, steps=12, weights=WEIGHTS, device="cpu", preview_every=1000
        )
    ]
    return (times[-1] - times[1]) / (len(times) - 2) * 100


def write(a: argparse.Namespace, rows: list[dict], over: dict, s256: float) -> None:
    load = os.getloadavg()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    doc = ROOT / "docs"
    json.dump(
        {"args": vars(a), "rows": rows, "overhead": over, "run_256_s": s256, "load": load},
        open(doc / "batch_results.json", "w"),
        indent=1,
    )
    lines = [
        "# Batch throughput and task overhead",
        "",
        f"`python benchmarks/batch.py {' '.join(sys.argv[1:])}`: {a.images} images of {a.size} px, {a.steps} "
        f"evaluations each, style The Starry Night, weights `vgg16-hed-features.pth`, device cpu. "
        f"Machine: {os.cpu_count()} cores, {cpu} (AVX-512 with avx512_bf16), {platform.python_version()}; "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end: the machine is "
        "shared, so the ratios carry that noise.",
        "",
        "## End to end (each a fresh process: start-up, cluster, network load included)",
        "",
        "Wall seconds from start to exit; CPU seconds of the process and its children (workers, nannies: "
        "user + system, from `getrusage(RUSAGE_CHILDREN)`), which the machine's other jobs do not change; "
        "load average (1 min) before and after each way.",
        "",
        "| way | seconds | images/min | time vs stylize loop | sum of item times | CPU seconds | CPU vs loop | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    cpu0 = rows[0]["cpu_seconds"]
    for r in rows:
        items = f"{r['item_seconds']:.1f}" if "item_seconds" in r else ""
        lines.append(
            f"| {r['way']} | {r['seconds']:.1f} | {r['images_per_min']:.2f} | {r['vs_loop']:.2f}x | {items} | "
            f"{r['cpu_seconds']:.1f} | {r['cpu_seconds'] / cpu0:.2f}x | {r['load_1min'][0]:.1f} / "
            f"{r['load_1min'][1]:.1f} |"
        )
    o = over
    lines += [
        "",
        "## Overhead of a task (LocalCluster, 1 worker x 1 thread)",
        "",
        f"- cluster start (one scheduler, one worker process): {o['cluster_start_s']:.2f} s, once per batch",
        f"- first network load on a worker: weights file read by the plugin {o['weights_read_s']:.2f} s + "
        f"network built for the first task {o['network_build_s']:.2f} s, once per worker "
        f"and batch (over the two batches here, {o['builds']:.0f} networks built and {o['hits']:.0f} tasks that "
        "reused one)",
        f"- the first batch on a fresh cluster (one image): {o['first_batch_wall_s']:.1f} s wall, of which the "
        f"item itself {o['first_item_s']:.1f} s (its worker imports torch and builds the network)",
        f"- per task, on a warm cluster (scheduling, path and style to the worker, pastiche back, PNG and "
        f"batch.json written, and the batch's fixed costs: plugin, style broadcast, spread over {a.images} "
        f"tasks): {o['per_task_overhead_s']:.3f} s = ({o['batch_wall_s']:.1f} s batch wall - "
        f"{o['items_s']:.1f} s of item time on the worker) / {a.images}",
        f"- a 256 px run of 100 evaluations (the CPU default) takes {s256:.1f} s here, so the per-task overhead is "
        f"{100 * o['per_task_overhead_s'] / s256:.2f} % of it, and the one-off network load "
        f"{100 * (o['weights_read_s'] + o['network_build_s']) / s256:.1f} %",
        "",
    ]
    (doc / "batch_results.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "in").mkdir()
        images = make_images(tmp / "in", a.images, a.size)
        style = SHARED / "images" / "starry_night.jpg"
        rows = end_to_end(a, images, style, tmp)
        print(json.dumps(rows, indent=1), flush=True)
        over = overhead(a, images, style, tmp)
        print(json.dumps(over, indent=1), flush=True)
        s256 = run_256(a, style)
    write(a, rows, over, s256)
    print((ROOT / "docs" / "batch_results.md").read_text())


if __name__ == "__main__":
    main()
