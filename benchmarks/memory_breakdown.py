"""What napari-nst's peak resident memory is made of, measured variant by variant.

Each variant runs in a fresh subprocess: it loads the benchmark problem exactly as
``bench_cpu.py --parts memory`` does (``baseline.setup``: torch, the network, the images), builds
a second network as ``engine.run`` does, and runs an engine-like loop (clamp in place, bf16
autocast, channels_last, napari-nst's objective terms, ``torch.optim.LBFGS`` with one evaluation
per step and history 20) for ``--evals`` evaluations. It reports the process's peak resident
memory (VmHWM), and, from the first evaluation, the bytes autograd saved for backward (unique
storages seen by ``torch.autograd.graph.saved_tensors_hooks``) and the largest number of bytes
malloc had handed out (``mallinfo2``: arena + mmapped in use) sampled after the forward pass and
at every feature map's gradient during backward. VmHWM minus that is allocator slack.

One knob changes per variant, so the differences are the breakdown::

    python benchmarks/memory_breakdown.py                      # all variants, 512 px, 25 evaluations
    python benchmarks/memory_breakdown.py --variants default,plain-gram --evals 3
    python benchmarks/memory_breakdown.py --list

The L-BFGS history reaches its 20 pairs after 21 evaluations: ``--evals 25`` shows all of it;
``--evals 3`` shows the network alone. ``engine`` runs ``engine.run`` itself, as bench_cpu.py's
napari-nst side does, to check that the loop here is a faithful stand-in.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 2**20

#: the knobs of the default variant: what engine.run does (bench_cpu's napari-nst side)
DEFAULT: dict[str, Any] = {
    "mode": "loop",  # "loop" (below), "engine" (engine.run), "baseline" (baseline.run_baseline), "setup"
    "precision": "bf16",  # or "fp32"
    "channels_last": True,
    "gram": "default",  # losses.gram as it is now; "plain": f.float() @ f.float().T (the seed's)
    "pool": "default",  # vgg's pooling as it is now; "torch": nn.MaxPool2d (int64 indices)
    "autocast_cache": True,  # autocast keeps bf16 copies of the weights
    "checkpoint": 0,  # recompute the first N layers of the network in backward (0: none)
    "history": 20,
    "backward": True,  # False: forward only, under no_grad
    "second_net": True,  # engine.run builds its own network beside baseline.setup's
    "share_weights": True,  # False: each network holds its own copy of the weights (before vgg.py shared them)
    "env": {},  # environment of the child (malloc tunables)
    "mallopt": {},  # mallopt(param, value) in-process before the run (M_MMAP_THRESHOLD = -3, ...)
    "trace": False,  # keep every sample of the first evaluation (--trace prints them)
}

VARIANTS: dict[str, dict[str, Any]] = {
    "setup": {"mode": "setup"},
    "engine": {"mode": "engine"},
    "default": {},
    "forward-only": {"backward": False},
    "plain-gram": {"gram": "plain"},
    "torch-maxpool": {"pool": "torch"},
    "seed-losses+torch-maxpool": {"gram": "plain", "pool": "torch"},
    "no-autocast-cache": {"autocast_cache": False},
    "contiguous": {"channels_last": False},
    "fp32": {"precision": "fp32", "channels_last": False},
    "one-net": {"second_net": False},
    "unshared-weights": {"share_weights": False},
    "history-1": {"history": 1},
    "checkpoint-block1": {"checkpoint": 4},
    "arena-max-1": {"env": {"MALLOC_ARENA_MAX": "1"}},
    "mmap-threshold-1MiB": {"env": {"MALLOC_MMAP_THRESHOLD_": str(MiB)}},
    "mmap-threshold-4MiB": {"env": {"MALLOC_MMAP_THRESHOLD_": str(4 * MiB)}},
    "mmap-threshold-16MiB": {"env": {"MALLOC_MMAP_THRESHOLD_": str(16 * MiB)}},
    "mallopt-mmap-1MiB": {"mallopt": {"-3": MiB}},
    "trim-threshold-0": {"env": {"MALLOC_TRIM_THRESHOLD_": "0"}},
    "baseline": {"mode": "baseline"},
}


# --------------------------------------------------------------------------- child


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):
        return None


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _plain_gram(features):  # the seed's gram: a float32 copy of the features, kept by autograd
    f = features.reshape(features.shape[-3], -1).float()
    return f @ f.T


def child(knobs: dict[str, Any], size: int, evals: int) -> dict[str, Any]:
    libc = _libc()
    for param, value in knobs["mallopt"].items():
        assert libc is not None and libc.mallopt(int(param), int(value)) == 1
    import torch

    sys.path.insert(0, str(HERE))
    import baseline as B  # noqa: E402

    from napari_nst.core import engine, losses, vgg  # noqa: E402

    def heap() -> int:
        return int(libc.mallinfo2().uordblks + libc.mallinfo2().hblkhd) if libc is not None else 0

    res: dict[str, Any] = {"rss_import": _status("VmRSS"), "heap_import": heap()}
    if not knobs["share_weights"]:
        _fit = vgg._fit

        def fit_copy(net, *a, **k):  # what vgg._fit did before: the network's own copy
            _fit(net, *a, **k)
            for p in net.parameters():
                p.data = p.data.clone()

        vgg._fit = fit_copy
    prob = B.setup(size)
    res["rss_setup"], res["heap_setup"], res["hwm_setup"] = _status("VmRSS"), heap(), _status("VmHWM")
    mode = knobs["mode"]
    if mode == "baseline":
        B.run_baseline(prob, evals)
    elif mode == "engine":
        sys.path.insert(0, str(HERE))
        import bench_cpu as C

        o = C.nst_options(size, evals, scales=1, preview_every=10**6)
        for _ in engine.run(prob.content, prob.style, o):
            pass
    elif mode == "loop":
        res.update(_loop(knobs, prob, evals, torch, engine, losses, vgg, libc))
    res["hwm"] = _status("VmHWM")
    res["rss_end"] = _status("VmRSS")
    return res


def _loop(knobs, prob, evals, torch, engine, losses, vgg, libc) -> dict[str, Any]:
    from napari_nst.core.losses import ContentTerm, StyleTarget, StyleTerm, evaluate

    if knobs["gram"] == "plain":
        losses.gram = _plain_gram  # style_loss looks gram up at call time
    net = prob.net
    if knobs["second_net"]:
        import baseline as B

        net = vgg.build_vgg(B.MODEL, B.LAYERS, weights=B.WEIGHTS, pooling="max")
    if knobs["pool"] == "torch":
        for i, m in enumerate(net.layers):
            if isinstance(m, torch.nn.MaxPool2d) or type(m).__name__.endswith("MaxPool2d"):
                net.layers[i] = torch.nn.MaxPool2d(2, 2)
    dtype = torch.bfloat16 if knobs["precision"] == "bf16" else None
    style_layers = list(prob.nm)
    layer_w = {n: 1.0 / len(style_layers) for n in style_layers}
    terms = [ContentTerm(prob.p, prob.a), StyleTerm([StyleTarget(prob.grams)], layer_w, prob.b)]
    x = prob.content_t.clone().contiguous().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, max_eval=1, history_size=knobs["history"],
                            tolerance_grad=0.0, tolerance_change=0.0)
    k = knobs["checkpoint"]

    def forward(g):
        if not k:
            return net(g)
        from torch.utils.checkpoint import checkpoint

        head = torch.nn.Sequential(*net.layers[:k])
        wanted = {i: n for i, n in net.wanted.items()}
        g = (g - net.mean.to(g.dtype)) / net.std.to(g.dtype)
        out = {}

        def run_head(t):
            kept = []
            for i, layer in enumerate(head):
                t = layer(t)
                if i in wanted:
                    kept.append(t)
            return (t, *kept)

        res = checkpoint(run_head, g, use_reentrant=False)
        t, kept = res[0], list(res[1:])
        for i in range(k):
            if i in wanted:
                out[wanted[i]] = kept.pop(0)
        for i, layer in enumerate(net.layers[k:], start=k):
            t = layer(t)
            if i in wanted:
                out[wanted[i]] = t
        return out

    def heap() -> int:
        if libc is None:
            return 0
        mi = libc.mallinfo2()
        return int(mi.uordblks + mi.hblkhd)

    stats: dict[str, Any] = {"saved": 0, "saved_by_kind": {}, "heap_fwd": 0, "heap_peak": 0, "heap_peak_at": "",
                             "heap_before": 0, "rss_fwd": 0, "rss_peak": 0, "rss_peak_at": ""}
    first = [True]

    def sample(where: str) -> None:
        h = heap()
        if knobs.get("trace"):
            stats.setdefault("trace", []).append((where, h, _status("VmRSS")))
        if h > stats["heap_peak"]:
            stats["heap_peak"], stats["heap_peak_at"] = h, where
        r = _status("VmRSS")
        if r > stats["rss_peak"]:
            stats["rss_peak"], stats["rss_peak_at"] = r, where

    if knobs["backward"]:
        for i, layer in enumerate(net.layers):
            def after_layer(m, a, o, i=i) -> None:
                if first[0]:
                    sample(f"forward {i} {type(m).__name__}")

            layer.register_forward_hook(after_layer)

    def hook_graph(root) -> None:  # sample the heap before and after every backward node
        seen, stack = set(), [root]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            name = node.name()
            node.register_prehook(lambda g, name=name: sample("backward before " + name))
            node.register_hook(lambda gi, go, name=name: sample("backward after " + name))
            stack.extend(n for n, _ in node.next_functions)

    def kind(t) -> str:
        if t.dtype == torch.int64:
            return "int64 pool indices"
        if t.dim() == 4 and t.shape[-1] == 3 and t.shape[-2] == 3:
            return "conv weights"
        if t.dim() == 2 and t.dtype == torch.float32:
            return "float32 (N, M) feature copies (Gram)"
        if t.dim() == 4 and t.shape[0] == 1:
            return f"{str(t.dtype)[6:]} activations"
        return "other"

    def closure():
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        g = x.contiguous(memory_format=torch.channels_last) if knobs["channels_last"] else x
        seen: dict[int, tuple[int, str]] = {}

        def pack(t):
            if first[0]:
                st = t.untyped_storage()
                seen[st.data_ptr()] = (st.nbytes(), kind(t))
            return t

        ac = (torch.autocast("cpu", dtype=dtype, cache_enabled=knobs["autocast_cache"]) if dtype is not None
              else nullcontext())
        if first[0]:
            stats["heap_before"] = heap()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ac:
            feats = forward(g)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            total, _ = evaluate(terms, feats, g)
        if first[0]:
            stats["saved"] = sum(b for b, _ in seen.values())
            by: dict[str, int] = {}
            for b, k_ in seen.values():
                by[k_] = by.get(k_, 0) + b
            stats["saved_by_kind"] = by
            stats["heap_fwd"] = heap()
            stats["rss_fwd"] = _status("VmRSS")
            sample("after forward")
            hook_graph(total.grad_fn)
        total.backward()
        if first[0]:
            stats["heap_after_bwd"] = heap()
        first[0] = False
        return total

    def closure_nograd():
        with torch.no_grad(), (torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext()):
            feats = net(x.contiguous(memory_format=torch.channels_last) if knobs["channels_last"] else x)
            evaluate(terms, feats, x)
        stats["heap_fwd"] = max(stats["heap_fwd"], heap())

    import resource

    for _ in range(evals):
        if knobs["backward"]:
            opt.step(closure)
        else:
            closure_nograd()
        if _ == 0:
            flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
    stats["minflt_per_eval"] = flt / max(1, evals - 1)
    stats["heap_end"] = heap()
    return stats


# --------------------------------------------------------------------------- parent


def run_variant(name: str, size: int, evals: int, trace: bool = False) -> dict[str, Any]:
    knobs = {**DEFAULT, **VARIANTS[name], "trace": trace}
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **knobs["env"])
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import memory_breakdown as M; "
            f"print('RESULT ' + json.dumps(M.child({knobs!r}, {size}, {evals})))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"{name}: {p.stderr[-3000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--evals", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=1, help="processes per variant (VmHWM varies run to run)")
    ap.add_argument("--variants", default="all", help="comma-separated names (see --list) or all")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--trace", action="store_true", help="print the heap and VmRSS after every layer and node")
    ap.add_argument("--out", help="also write the table and details (markdown) here")
    args = ap.parse_args(argv)
    if args.list:
        for n, k in VARIANTS.items():
            print(f"{n:28s} {k}")
        return 0
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    head = [f"Peak resident memory (VmHWM) at {args.size} px, {args.evals} evaluations, one process per run, "
            f"{args.repeats} run(s) per variant (min-max); live heap = bytes malloc has handed out (mallinfo2), "
            "sampled after every layer and every backward node of the first evaluation.", "",
            "| variant | VmHWM MiB | saved for backward MiB | live heap at its peak MiB | peak at | "
            "heap before the evaluation MiB | largest VmRSS sampled MiB | at | minor faults / eval |",
            "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(head), flush=True)
    rows, details = list(head), []
    for name in names:
        rs = [run_variant(name, args.size, args.evals, args.trace) for _ in range(args.repeats)]
        for where, h, rss in rs[0].get("trace", []):
            print(f"    {h / MiB:7.1f} {rss / MiB:7.1f}  {where}")
        hw = sorted(r["hwm"] / MiB for r in rs)
        r = rs[0]
        hwm = f"{hw[0]:.0f}" if len(hw) == 1 else f"{hw[0]:.0f}-{hw[-1]:.0f}"
        row = (f"| {name} | {hwm} | {r.get('saved', 0) / MiB:.0f} | {r.get('heap_peak', 0) / MiB:.0f} | "
               f"{r.get('heap_peak_at', '')} | {r.get('heap_before', 0) / MiB:.0f} | "
               f"{r.get('rss_peak', 0) / MiB:.0f} | {r.get('rss_peak_at', '')} | "
               f"{r.get('minflt_per_eval', 0):.0f} |")
        rows.append(row)
        print(row, flush=True)
        d = (f"- {name}: VmRSS after import torch {r['rss_import'] / MiB:.0f}, after setup {r['rss_setup'] / MiB:.0f} "
             f"(VmHWM {r['hwm_setup'] / MiB:.0f}), at the end {r['rss_end'] / MiB:.0f}; heap after import "
             f"{r['heap_import'] / MiB:.0f}, after setup {r['heap_setup'] / MiB:.0f}")
        if r.get("saved_by_kind"):
            d += "; saved: " + ", ".join(f"{k} {v / MiB:.1f}" for k, v in
                                        sorted(r["saved_by_kind"].items(), key=lambda kv: -kv[1]))
        details.append(d)
        print("  " + d, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(rows + [""] + details) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
