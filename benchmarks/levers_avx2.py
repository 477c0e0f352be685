"""Per-evaluation levers for float32 on a CPU without fast bf16 (issue 11), each alone.

One torch thread, the process's CPU time, interleaved repeats (minimum and median), at the
shapes of one evaluation at --size (256: 192x256 px) of VGG16 to relu5_1:

* ``conv``: every 3x3 convolution's forward and input gradient, oneDNN's direct convolution (what
  ``F.conv2d`` runs) against NNPACK's Winograd transform (``vgg.Conv3x3``), and the largest
  relative difference between the two;
* ``gram``: the five style Gram matrices' forward + backward, autograd's ``f @ f.T`` (two matrix
  products in backward) against ``losses.gram`` (one);
* ``lbfgs``: the L-BFGS direction (two-loop recursion, 20 pairs of 4/3 the image: the pyramid's
  layers), pairs stored in float32 against bfloat16.

Run it for both instruction sets (the environment must be set before torch loads; ``--isa avx2``
re-runs this script with it)::

    python benchmarks/levers_avx2.py --isa avx2 --out docs/perf_avx2_levers
    python benchmarks/levers_avx2.py --out docs/perf_avx2_levers_native
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def _timed(fns: dict[str, Any], repeats: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved
        for k, fn in fns.items():
            c = time.process_time()
            fn()
            times[k].append(time.process_time() - c)
    return {k: {"min_ms": 1e3 * min(v), "median_ms": 1e3 * statistics.median(v)} for k, v in times.items()}


def part_conv(size: int, repeats: int) -> list[dict[str, Any]]:
    import torch

    from napari_nst.core.encoder import vgg

    assert vgg.nnpack_available()
    h, w = (size * 3) // 4, size
    cfg = [(3, 64), (64, 64), "M", (64, 128), (128, 128), "M", (128, 256), (256, 256), (256, 256), "M"]
    cfg += [(256, 512), (512, 512), (512, 512), "M", (512, 512)]
    rows, g = [], torch.Generator().manual_seed(0)
    for c in cfg:
        if c == "M":
            h, w = h // 2, w // 2
            continue
        ci, co = c
        x, gy = torch.rand(1, ci, h, w, generator=g), torch.randn(1, co, h, w, generator=g)
        conv = vgg.Conv3x3(ci, co).requires_grad_(False)
        out: dict[str, Any] = {}

        def run(on: bool, conv: Any = conv, x: Any = x, gy: Any = gy, out: dict = out) -> None:
            conv.winograd = on
            xi = x.clone().requires_grad_(True)
            y = conv(xi)
            y.backward(gy)
            out[on] = (y.detach(), xi.grad)

        t = _timed({"direct": lambda run=run: run(False), "winograd": lambda run=run: run(True)}, repeats)
        err = max(float((out[True][i] - out[False][i]).abs().max() / out[False][i].abs().max()) for i in (0, 1))
        rows.append({"layer": f"{ci}->{co} @ {h}x{w}", **{k: v["min_ms"] for k, v in t.items()}, "rel_diff": err})
        print(f"  conv {rows[-1]}", flush=True)
    return rows


def part_gram(size: int, repeats: int) -> dict[str, Any]:
    import torch

    from napari_nst.core.objective.losses import gram

    h, w = (size * 3) // 4, size
    shapes = [(64, h * w), (128, h * w // 4), (256, h * w // 16), (512, h * w // 64), (512, h * w // 256)]
    g = torch.Generator().manual_seed(0)
    fs = [torch.rand(*s, 1, generator=g).requires_grad_(True) for s in shapes]  # (N, M, 1) for gram
    ws = [torch.rand(s[0], s[0], generator=g) for s in shapes]

    def autograd_gram(f: Any) -> Any:
        f = f.reshape(f.shape[0], -1)
        return f @ f.T

    def run(fn: Any) -> None:
        for f, wt in zip(fs, ws, strict=True):
            (fn(f) * wt).sum().backward()

    return _timed({"autograd (2 products)": lambda: run(autograd_gram), "losses.gram (1)": lambda: run(gram)}, repeats)


def part_lbfgs(size: int, repeats: int) -> dict[str, Any]:
    import torch

    from napari_nst.core.optim.lbfgs import LBFGS

    n = int(4 / 3 * size * (size * 3 // 4) * 3)
    g = torch.Generator().manual_seed(0)
    pairs = [torch.randn(n, generator=g) for _ in range(40)]
    grad = torch.randn(n, generator=g)
    opts = {}
    for name, dtype in (("float32 pairs", None), ("bfloat16 pairs", torch.bfloat16)):
        o = LBFGS([torch.zeros(n, requires_grad=True)], 20, history_dtype=dtype)
        for s, y in zip(pairs[::2], pairs[1::2], strict=True):
            y = s + 0.1 * y
            o._store(s, y, y @ s)
        opts[name] = o
    return _timed({k: (lambda o=o: o._direction(grad)) for k, o in opts.items()}, repeats)


def markdown(res: dict[str, Any]) -> str:
    L = [f"Machine: {res['machine']}", f"Command: `{res['command']}`", ""]
    if "conv" in res:
        L += [
            "### Convolutions: forward + input gradient, ms CPU (min of the repeats)",
            "",
            "| layer | oneDNN direct | NNPACK Winograd | x | largest relative difference |",
            "|---|---|---|---|---|",
        ]
        for r in res["conv"]:
            L.append(
                f"| {r['layer']} | {r['direct']:.1f} | {r['winograd']:.1f} | {r['winograd'] / r['direct']:.2f} | "
                f"{r['rel_diff']:.1e} |"
            )
        d, wg = sum(r["direct"] for r in res["conv"]), sum(r["winograd"] for r in res["conv"])
        L += [f"| all | {d:.0f} | {wg:.0f} | {wg / d:.2f} | |", ""]
    for part, title in (("gram", "Style Gram matrices, forward + backward"), ("lbfgs", "L-BFGS direction")):
        if part in res:
            L += [f"### {title}, ms CPU", "", "| variant | min | median |", "|---|---|---|"]
            L += [f"| {k} | {v['min_ms']:.1f} | {v['median_ms']:.1f} |" for k, v in res[part].items()]
            L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="conv,gram,lbfgs")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--isa", choices=("native", "avx2"), default="native")
    ap.add_argument("--out", default=str(HERE.parent / "docs" / "perf_avx2_levers"))
    args = ap.parse_args(argv)
    if args.isa == "avx2" and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        env = dict(os.environ, **AVX2_ENV)
        return subprocess.run([sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)], env=env).returncode
    import torch

    torch.set_num_threads(1)
    isa = torch.backends.cpu.get_cpu_capability()
    res: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, ATen {isa}, "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(native)')}, 1 torch thread, "
        f"{args.repeats} interleaved repeats, load average at start {os.getloadavg()[0]:.1f}",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
    }
    for part in args.parts.split(","):
        res[part] = {"conv": part_conv, "gram": part_gram, "lbfgs": part_lbfgs}[part](args.size, args.repeats)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res) + "\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
