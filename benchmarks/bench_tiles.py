"""Tiles (issue 15): memory, quality and seams of tiled runs against the whole image, on the shared
Tübingen / Starry Night and the shared VGG16 weights, one torch thread, each run in its own child
process (peak resident memory = the child's VmHWM; CPU time = the child's process time).

    nice python benchmarks/bench_tiles.py quality --size 512 --tile 192 --steps 40
        whole image vs tile_size=192 (grid moved every evaluation) vs tile_size=192 with a fixed
        grid, same steps: peak RSS ratio, the seed's content and style terms of each result
        evaluated on the whole image (float32) as ratios to the whole-image run's, and the seam
        check: column and row profiles of the mean magnitude of the whole-image objective's
        gradient at each result, divided by the whole-image run's profile; the largest ratio on
        the fixed grid's tile borders against the median elsewhere. Writes docs/tiles.json
        ("quality") and docs/images/tiles-512.png (whole | tiled, side by side).

    nice python benchmarks/bench_tiles.py rss --sizes 512 1024 2048 4096 --tile 256 --steps 2
        peak RSS of tiled runs at each size (docs/tiles.json, "rss").

Prints Markdown tables (docs/tiles.md and docs/performance.md quote them) with the load average.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared"
WEIGHTS = str(SHARED / "weights" / "vgg16-hed-features.pth")
CONTENT = str(SHARED / "images" / "tubingen.jpg")
STYLE = str(SHARED / "images" / "starry_night.jpg")
OUT = ROOT / "docs" / "tiles.json"


def vm_hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def child(spec: dict) -> None:
    """One run (in its own process): result image to ``spec['out']``, numbers as JSON on stdout."""
    import torch

    torch.set_num_threads(int(spec.pop("threads", 1)))
    from napari_nst.core.api import prepare
    from napari_nst.core.optim.engine import run as _run

    extra = spec.pop("extra", {})
    out = spec.pop("out", None)
    t0, c0 = time.perf_counter(), time.process_time()
    c, s, opts = prepare(CONTENT, STYLE, weights=WEIGHTS, seed=0, preview_every=10**6, **spec)
    opts.extra.update(extra)  # options only benchmarks set (Options.extra)
    from napari_nst.core.encoder import vgg

    vgg.build_vgg(opts.model, opts.layers, weights=opts.weights, pooling=opts.pooling)  # the run reuses it
    rss_ready = vm_hwm()  # torch, the images and the network: what every run pays before its first evaluation
    last = None
    for rec in _run(c, s, opts):
        last = rec
    assert last is not None and last.image is not None
    if out:
        np.save(out, last.image)
    res = dict(
        rss=vm_hwm(),
        rss_ready=rss_ready,
        cpu_s=time.process_time() - c0,
        wall_s=time.perf_counter() - t0,
        losses=last.losses,
        tile_size=last.tile_size,
        note=last.note,
        shape=list(last.shape),
    )
    print("RESULT " + json.dumps(res))


def start_child(spec: dict) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "child", json.dumps(spec)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def child_result(p: subprocess.Popen) -> dict:
    out, err = p.communicate()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise RuntimeError(f"child failed: {err[-3000:]}")


def run_child(spec: dict) -> dict:
    return child_result(start_child(spec))


def whole_evaluation(size: int):
    """A function: image (H, W, 3) -> (content term, style term, |gradient| (H, W)) of the
    whole-image seed objective in float32, with the automatic weights of the whole-image run."""
    import torch

    from napari_nst.core.api import prepare
    from napari_nst.core.optim import engine

    torch.set_num_threads(1)
    c, s, opts = prepare(CONTENT, STYLE, size=size, weights=WEIGHTS, precision="float32", seed=0, pyramid=0)
    opts = opts.for_device(gpu=False)
    cpu = torch.device("cpu")
    shapes = opts.level_shapes(c.shape[:2])
    ctx = engine._prepare(c, s, opts, cpu, None, shapes, [1])
    terms, weights = engine._terms(ctx, shapes[-1])
    objective = engine._objective(ctx, terms)

    def evaluate(image: np.ndarray) -> tuple[float, float, np.ndarray]:
        total, parts, grad = objective(engine.to_tensor(image, cpu))
        mag = grad[0].abs().sum(0).numpy()
        return float(parts["content"]), float(parts["style"]), mag

    return evaluate, weights


def profile_ratio(mag: np.ndarray, ref: np.ndarray, axis: int) -> np.ndarray:
    """Mean gradient magnitude per column (axis=0) or row (axis=1), relative to the reference's."""
    return mag.mean(axis) / np.maximum(ref.mean(axis), 1e-30)


def seam_score(ratio: np.ndarray, borders: list[int], width: int = 2) -> dict:
    """The largest profile ratio within ``width`` px of a border, against the median elsewhere."""
    near = np.zeros(ratio.shape, bool)
    for b in borders:
        near[max(0, b - width) : b + width] = True
    elsewhere = float(np.median(ratio[~near]))
    return dict(
        border_max=float(ratio[near].max()),
        elsewhere_median=elsewhere,
        elsewhere_max=float(ratio[~near].max()),
        border_vs_elsewhere=float(ratio[near].max() / elsewhere),
    )


def quality(args: argparse.Namespace) -> dict:
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    runs = {
        "whole": dict(size=args.size, steps=args.steps),
        f"tiles {args.tile}": dict(size=args.size, steps=args.steps, tile_size=args.tile),  # fixed grid
    }
    if args.shift:
        runs[f"tiles {args.tile}, grid moved"] = dict(
            size=args.size, steps=args.steps, tile_size=args.tile, extra={"tile_shift": "random"}
        )
    if args.history:
        runs[f"whole, history {args.history}"] = dict(
            size=args.size, steps=args.steps, extra={"history_size": args.history}
        )
    res: dict = {}
    procs = {}
    for i, (name, spec) in enumerate(runs.items()):  # side by side: CPU time and VmHWM are per process
        spec["out"] = str(tmp / f"bench-tiles-{i}.npy")
        procs[name] = start_child(dict(spec))
    for name, spec in runs.items():
        res[name] = child_result(procs[name])
        res[name]["image"] = spec["out"]
        print(name, {k: v for k, v in res[name].items() if k != "image"}, flush=True)
    evaluate, weights = whole_evaluation(args.size)
    ref_c, ref_s, ref_mag = evaluate(np.load(res["whole"]["image"]))
    from napari_nst.core.compute import memory

    core = args.tile - 2 * memory.tile_halo("vgg16", ["relu5_1"])
    for r in res.values():
        img = np.load(r["image"])
        c, s, mag = evaluate(img)
        cols, rows = profile_ratio(mag, ref_mag, 0), profile_ratio(mag, ref_mag, 1)
        r.update(
            content=c,
            style=s,
            content_ratio=c / ref_c,
            style_ratio=s / ref_s,
            rss_ratio=r["rss"] / res["whole"]["rss"],
            cpu_ratio=r["cpu_s"] / res["whole"]["cpu_s"],
            seams_columns=seam_score(cols, list(range(core, img.shape[1], core))),
            seams_rows=seam_score(rows, list(range(core, img.shape[0], core))),
        )
    pictures(res, args)
    return dict(size=args.size, tile=args.tile, steps=args.steps, weights=weights, runs=res)


def pictures(res: dict, args: argparse.Namespace) -> None:
    from PIL import Image

    names = ["whole", f"tiles {args.tile}"]
    imgs = [np.load(res[n]["image"]) for n in names]
    gap = np.ones((imgs[0].shape[0], 8, 3), np.float32)
    strip = np.concatenate([imgs[0], gap, imgs[1]], axis=1)
    im = Image.fromarray((np.clip(strip, 0, 1) * 255 + 0.5).astype(np.uint8))
    im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
    path = ROOT / "docs" / "images" / f"tiles-{args.size}.png"
    im.quantize(256).save(path, optimize=True)
    print("wrote", path, path.stat().st_size, "bytes")


def rss(args: argparse.Namespace) -> dict:
    """Peak RSS of tiled runs, one child per size, side by side, ``--rss-steps`` evaluations each
    (one 4096 px evaluation is ~350 tiles of 256 px), ``--threads`` torch threads."""
    from napari_nst.core.compute import memory
    from napari_nst.core.options import Options

    steps = dict(zip(args.sizes, args.rss_steps, strict=True))
    procs = {
        size: start_child(dict(size=size, steps=steps[size], tile_size=args.tile, threads=args.threads))
        for size in args.sizes
    }
    out = {}
    for size, proc in procs.items():
        try:
            r = child_result(proc)
        except RuntimeError as exc:  # e.g. the engine refused: not enough free memory on this machine now
            out[str(size)] = {"error": str(exc).strip().splitlines()[-1], "steps": steps[size]}
            print(size, out[str(size)], flush=True)
            continue
        opts = Options.from_kwargs(size=size, model="vgg16", tile_size=args.tile, precision="bfloat16")
        r["estimate"] = memory.plan((768, 1024), opts, None).bytes
        # the L-BFGS pairs a run of this few evaluations has not stored yet (1 per evaluation after the first)
        missing = max(0, memory.TILED_HISTORY - max(0, steps[size] - 1))
        r["pairs_missing_bytes"] = missing * 2 * 16 * r["shape"][0] * r["shape"][1]
        r["steps"] = steps[size]
        out[str(size)] = r
        print(size, r, flush=True)
    return dict(tile=args.tile, runs=out)


def report(data: dict) -> str:
    """Markdown tables of docs/tiles.json."""
    mib = 2**20
    out = []
    q = data.get("quality")
    if q:
        out += [
            f"{q['size']} px, {q['steps']} evaluations each, tile_size={q['tile']}, load average "
            f"{q['load_before'][0]:.0f} -> {q['load_after'][0]:.0f} (2 cores), {q['cpu']}, one torch thread per run.",
            "",
            "| run | peak RSS MiB | x whole | before the first evaluation MiB | the run's own MiB | x whole | "
            "CPU s | x whole | content (whole-image) | x whole | style | x whole | "
            "seams: columns border / elsewhere | rows |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        own_whole = q["runs"]["whole"]["rss"] - q["runs"]["whole"].get("rss_ready", 0)
        for name, r in q["runs"].items():
            sc, sr = r["seams_columns"], r["seams_rows"]
            own = r["rss"] - r.get("rss_ready", 0)
            out.append(
                f"| {name} | {r['rss'] / mib:.0f} | {r['rss_ratio']:.2f} | {r.get('rss_ready', 0) / mib:.0f} | "
                f"{own / mib:.0f} | {own / own_whole:.2f} | {r['cpu_s']:.0f} | {r['cpu_ratio']:.2f} | "
                f"{r['content']:.4g} | {r['content_ratio']:.2f} | {r['style']:.4g} | {r['style_ratio']:.2f} | "
                f"{sc['border_max']:.2f} / {sc['elsewhere_median']:.2f} (max {sc['elsewhere_max']:.2f}) | "
                f"{sr['border_max']:.2f} / {sr['elsewhere_median']:.2f} (max {sr['elsewhere_max']:.2f}) |"
            )
    r = data.get("rss")
    if r:
        out += [
            "",
            f"tile_size={r['tile']}, load average {r['load_before'][0]:.0f} -> {r['load_after'][0]:.0f}.",
            "",
            "| size | shape | evaluations | peak RSS MiB | before the first evaluation MiB | model's estimate MiB | "
            "L-BFGS pairs not yet stored MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for size, x in r["runs"].items():
            if "error" in x:
                out.append(f"| {size} | | {x['steps']} | did not run: {x['error']} | | | |")
                continue
            out.append(
                f"| {size} | {x['shape'][1]}x{x['shape'][0]} | {x['steps']} | {x['rss'] / mib:.0f} | "
                f"{x.get('rss_ready', 0) / mib:.0f} | {x['estimate'] / mib:.0f} | "
                f"{x['pairs_missing_bytes'] / mib:.0f} |"
            )
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        print(report(json.loads(OUT.read_text())))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        child(json.loads(sys.argv[2]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["quality", "rss"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--tile", type=int, default=192)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rss-steps", type=int, nargs="+", default=[7, 7, 2, 1], help="rss: evaluations per size")
    p.add_argument("--threads", type=int, default=1, help="rss: torch threads per run")
    p.add_argument("--shift", action="store_true", help="quality: also a run whose grid moves every evaluation")
    p.add_argument("--history", type=int, default=0, help="also a whole-image run with this L-BFGS history")
    args = p.parse_args()
    t0, load_before = time.time(), os.getloadavg()
    res = quality(args) if args.what == "quality" else rss(args)
    res.update(load_before=load_before, cpu=platform.processor() or platform.machine(), minutes=(time.time() - t0) / 60)
    res["load_after"] = os.getloadavg()
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    if args.what == "rss" and "rss" in data and data["rss"].get("tile") == args.tile:
        # one size at a time (the machine's memory is shared): keep the other sizes' rows
        res["runs"] = {**data["rss"]["runs"], **res["runs"]}
    data[args.what] = res
    OUT.write_text(json.dumps(data, indent=1, default=str))
    print(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
