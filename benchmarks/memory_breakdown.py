"""What napari-nst's peak resident memory is made of, measured variant by variant.

Each variant runs in a fresh subprocess. It loads the benchmark problem exactly as
``bench_cpu.py --parts memory`` does (``baseline.setup``: torch, the network, the images), then
either runs ``engine.run`` itself (``engine*``), the textbook baseline (``baseline*``), or an
engine-like loop (all other variants): a second network as ``engine.run`` builds, the image
clamped in place, bf16 autocast, channels_last input, napari-nst's objective terms, and
``torch.optim.LBFGS`` with one evaluation per step and history 20 (the optimiser the engine had
when this was written; it stands in for any optimiser that keeps 20 pairs). For ``--evals``
evaluations it reports the process's peak resident memory (VmHWM) and, from the first evaluation
of the loop, the bytes autograd saved for backward (unique storages seen by
``torch.autograd.graph.saved_tensors_hooks``), the largest number of bytes malloc had handed out
(``mallinfo2``: arena + mmapped in use), sampled after every layer of the forward pass and before
and after every node of the backward pass, and the largest VmRSS at those samples. The rest of
VmHWM is allocator slack (freed memory glibc keeps) and the shared libraries' pages.

One knob changes per variant (``--list``), so the differences are the breakdown::

    python benchmarks/memory_breakdown.py --evals 3 --repeats 2            # the network, every variant
    python benchmarks/memory_breakdown.py --variants default,seed-network --evals 3
    python benchmarks/memory_breakdown.py --variants engine,engine-seed-network --evals 110
    python benchmarks/memory_breakdown.py --variants default --evals 40 --trace   # heap per layer/node/eval

The L-BFGS history reaches its 20 pairs after 21 evaluations: ``--evals 3`` shows the network,
``--evals 110`` what bench_cpu.py measures. VmHWM varies by a few tens of MiB from run to run
(where glibc places blocks): ``--repeats`` gives the range.
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
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 2**20

#: the knobs of the default variant: what engine.run does with losses.py and vgg.py as they are
DEFAULT: dict[str, Any] = {
    "mode": "loop",  # "loop" (below), "engine" (engine.run), "baseline" (baseline.run_baseline), "setup"
    "precision": "bf16",  # or "fp32"
    "channels_last": True,
    "gram": "default",  # losses.gram as it is; "plain": autograd through f.float() @ f.float().T (the seed's)
    "pool": "default",  # vgg's pooling as it is; "torch": nn.MaxPool2d (keeps int64 indices)
    "share_weights": True,  # False: each network its own copy of the weights (vgg.py before it shared them)
    "autocast_cache": True,  # autocast's cache of bf16 weight copies (only for weights that require grad)
    "checkpoint": 0,  # recompute the network's first N layers in backward (torch.utils.checkpoint)
    "backward": True,  # False: forward only, under no_grad
    "second_net": True,  # engine.run builds its own network beside baseline.setup's
    "history": 20,  # L-BFGS pairs
    "history_ring": False,  # copy each new L-BFGS pair into one block allocated up front
    "relu_grad_in_place": False,  # ReLU backward masks the incoming gradient in place (a prototype)
    "trim_each_eval": False,  # malloc_trim(0) after each evaluation (glibc)
    "env": {},  # environment of the child (glibc malloc tunables)
    "mallopt": {},  # mallopt(param, value) in-process before the run (M_MMAP_THRESHOLD = -3, ...)
    "trace": False,  # keep every sample (--trace prints them)
}

VARIANTS: dict[str, dict[str, Any]] = {
    "setup": {"mode": "setup"},  # torch + network + images + targets, no evaluation
    "engine": {"mode": "engine"},
    # engine.run with the network and losses as they were before (commit 959efd9)
    "engine-seed-network": {"mode": "engine", "gram": "plain", "pool": "torch", "share_weights": False},
    "engine-fp32": {"mode": "engine", "precision": "fp32"},
    "default": {},
    "seed-network": {"gram": "plain", "pool": "torch", "share_weights": False},
    "plain-gram": {"gram": "plain"},
    "torch-maxpool": {"pool": "torch"},
    "unshared-weights": {"share_weights": False},
    "one-net": {"second_net": False},
    "forward-only": {"backward": False},
    "no-autocast-cache": {"autocast_cache": False},
    "contiguous": {"channels_last": False},
    "fp32": {"precision": "fp32", "channels_last": False},
    "checkpoint-block1": {"checkpoint": 5},  # conv1_1 .. pool1
    "relu-grad-in-place": {"relu_grad_in_place": True},
    "history-1": {"history": 1},
    "history-ring": {"history_ring": True},
    "malloc-trim-each-eval": {"trim_each_eval": True},
    "arena-max-1": {"env": {"MALLOC_ARENA_MAX": "1"}},
    "trim-threshold-0": {"env": {"MALLOC_TRIM_THRESHOLD_": "0"}},
    "mmap-threshold-1MiB": {"env": {"MALLOC_MMAP_THRESHOLD_": str(MiB)}},
    "mallopt-mmap-1MiB": {"mallopt": {"-3": MiB}},  # the same, set in-process
    "mmap-threshold-4MiB": {"env": {"MALLOC_MMAP_THRESHOLD_": str(4 * MiB)}},
    "mmap-threshold-16MiB": {"env": {"MALLOC_MMAP_THRESHOLD_": str(16 * MiB)}},
    "mmap-threshold-20MiB": {"env": {"MALLOC_MMAP_THRESHOLD_": str(20 * MiB)}},
    "mmap-20MiB+trim-64MiB": {
        "env": {"MALLOC_MMAP_THRESHOLD_": str(20 * MiB), "MALLOC_TRIM_THRESHOLD_": str(64 * MiB)}
    },
    "baseline": {"mode": "baseline"},
    # baseline.py builds its network with vgg.build_vgg, so it gets vgg.py's savings too; this is
    # it with torch's max pooling and its own copy of the weights (the textbook network)
    "baseline-textbook": {"mode": "baseline", "pool": "torch", "share_weights": False},
}


# --------------------------------------------------------------------------- child


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
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
    from napari_nst.core.encoder import vgg  # noqa: E402
    from napari_nst.core.objective import losses
    from napari_nst.core.optim import engine

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
    if knobs["gram"] == "plain":
        losses.gram = _plain_gram  # style_loss looks gram up at call time
    if knobs["pool"] == "torch":
        vgg.MaxPool2x2 = lambda: torch.nn.MaxPool2d(2, 2)  # VGGFeatures looks it up at build time
    prob = B.setup(size)
    res["rss_setup"], res["heap_setup"], res["hwm_setup"] = _status("VmRSS"), heap(), _status("VmHWM")
    mode = knobs["mode"]
    import resource

    flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    if mode == "baseline":
        B.run_baseline(prob, evals)
    elif mode == "engine":
        sys.path.insert(0, str(HERE))
        import bench_cpu as C

        o = C.nst_options(
            size, evals, scales=1, preview_every=10**6, precision="float32" if knobs["precision"] == "fp32" else "auto"
        )
        for _ in engine.run(prob.content, prob.style, o):
            pass
    elif mode == "loop":
        res.update(_loop(knobs, prob, evals, torch, engine, losses, vgg, libc))
    res["minflt_run_per_eval"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0) / max(1, evals)
    res["hwm"] = _status("VmHWM")
    res["rss_end"] = _status("VmRSS")
    return res


def _loop(knobs, prob, evals, torch, engine, losses, vgg, libc) -> dict[str, Any]:
    from napari_nst.core.objective.losses import ContentTerm, StyleTarget, StyleTerm, evaluate

    net = prob.net
    if knobs["second_net"]:
        import baseline as B

        net = vgg.build_vgg(B.MODEL, B.LAYERS, weights=B.WEIGHTS, pooling="max")
    if knobs["relu_grad_in_place"]:

        class _ReluFn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, t):
                t.relu_()
                ctx.mark_dirty(t)
                ctx.save_for_backward(t)
                return t

            @staticmethod
            def backward(ctx, g):
                (out,) = ctx.saved_tensors
                return g.masked_fill_(~(out > 0), 0)

        class _Relu(torch.nn.Module):
            def forward(self, t):
                return _ReluFn.apply(t)

        for i, m in enumerate(net.layers):
            if isinstance(m, torch.nn.ReLU) and m.inplace:
                net.layers[i] = _Relu()
    dtype = torch.bfloat16 if knobs["precision"] == "bf16" else None
    style_layers = list(prob.nm)
    layer_w = {n: 1.0 / len(style_layers) for n in style_layers}
    terms = [ContentTerm(prob.p, prob.a), StyleTerm([StyleTarget(prob.grams)], layer_w, prob.b)]
    x = prob.content_t.clone().contiguous().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=1, max_eval=1, history_size=knobs["history"], tolerance_grad=0.0, tolerance_change=0.0
    )
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

    stats: dict[str, Any] = {
        "saved": 0,
        "saved_by_kind": {},
        "heap_fwd": 0,
        "heap_peak": 0,
        "heap_peak_at": "",
        "heap_before": 0,
        "rss_fwd": 0,
        "rss_peak": 0,
        "rss_peak_at": "",
    }
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
            return f"{str(t.dtype)[6:]} conv weights"
        if t.dim() == 2 and t.shape[0] != t.shape[1]:
            return f"{str(t.dtype)[6:]} (N, M) features for a Gram"
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
                st = t.untyped_storage()  # a storage counts once, under the name it was first saved as
                seen.setdefault(st.data_ptr(), (st.nbytes(), kind(t)))
            return t

        ac = (
            torch.autocast("cpu", dtype=dtype, cache_enabled=knobs["autocast_cache"])
            if dtype is not None
            else nullcontext()
        )
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
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext():
            feats = net(x.contiguous(memory_format=torch.channels_last) if knobs["channels_last"] else x)
            evaluate(terms, feats, x)
        stats["heap_fwd"] = max(stats["heap_fwd"], heap())

    import resource

    ring = None
    if knobs["history_ring"]:
        ring = torch.empty(2 * knobs["history"] + 2, x.numel(), dtype=x.dtype)

    def into_ring() -> None:  # what the engine would do after each optimizer.step()
        st = opt.state[x]
        lists = [st.get("old_dirs") or [], st.get("old_stps") or []]
        used = {t.data_ptr() for lst in lists for t in lst}
        free = (row for row in ring if row.data_ptr() not in used)
        for lst in lists:
            if lst and not (ring.data_ptr() <= lst[-1].data_ptr() < ring.data_ptr() + ring.nbytes):
                slot = next(free)
                slot.copy_(lst[-1])
                lst[-1] = slot

    for _ in range(evals):
        if knobs["backward"]:
            opt.step(closure)
            if ring is not None:
                into_ring()
            if knobs["trim_each_eval"]:
                libc.malloc_trim(0)
        else:
            closure_nograd()
        if _ == 0:
            flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        if knobs.get("trace") and libc is not None:
            mi = libc.mallinfo2()
            stats.setdefault("per_eval", []).append(
                (_ + 1, _status("VmRSS"), _status("VmHWM"), mi.arena, mi.fordblks, mi.hblkhd, heap())
            )
    flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
    stats["minflt_per_eval"] = flt / max(1, evals - 1)
    stats["heap_end"] = heap()
    return stats


# --------------------------------------------------------------------------- parent


def run_variant(name: str, size: int, evals: int, trace: bool = False) -> dict[str, Any]:
    knobs = {**DEFAULT, **VARIANTS[name], "trace": trace}
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **knobs["env"])
    code = (
        f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import memory_breakdown as M; "
        f"print('RESULT ' + json.dumps(M.child({knobs!r}, {size}, {evals})))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"{name}: {p.stderr[-3000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def flops(size: int) -> dict[str, float]:
    """Multiply-adds x 2 of one evaluation on the benchmark problem (vgg16 to relu5_1, frozen
    weights: the backward pass computes only the gradient of each convolution's input)."""
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(HERE))
    import baseline as B
    from napari_nst.core.encoder.layer_names import _CFGS, layer_names
    from napari_nst.core.image.arrays import resized_shape
    from napari_nst.core.image.files import read_image

    h, w = resized_shape(read_image(B.CONTENT).shape[:2], size)
    names = layer_names(B.MODEL)
    last = max(names.index(n) for n in B.LAYERS)
    conv, gram, cin, i = [], 0.0, 3, 0
    for v in _CFGS[B.MODEL]:
        if i > last:
            break
        if v == "M":
            h, w, i = h // 2, w // 2, i + 1
            continue
        conv.append(2.0 * cin * v * 9 * h * w)
        if names[i + 1] in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"):
            gram += 2.0 * v * v * h * w
        cin, i = v, i + 2
    fwd = sum(conv) + gram
    return {"forward": fwd, "backward": sum(conv) + 2 * gram, "block1": conv[0] + conv[1]}


def main(argv: list[str] | None = None) -> int:
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
    head = [
        f"Peak resident memory (VmHWM) at {args.size} px, {args.evals} evaluations, one process per run, "
        f"{args.repeats} run(s) per variant (min-max); live heap = bytes malloc has handed out (mallinfo2), "
        "sampled after every layer and every backward node of the first evaluation.",
        "",
        "| variant | VmHWM MiB | saved for backward MiB | live heap at its peak MiB | peak at | "
        "heap before the evaluation MiB | largest VmRSS sampled MiB | at | minor faults / eval |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(head), flush=True)
    rows, details = list(head), []
    for name in names:
        rs = [run_variant(name, args.size, args.evals, args.trace) for _ in range(args.repeats)]
        for where, h, rss in rs[0].get("trace", []):
            print(f"    {h / MiB:7.1f} {rss / MiB:7.1f}  {where}")
        if rs[0].get("per_eval"):
            print("    after evaluation: VmRSS, VmHWM, malloc arena, free in arena, mmapped, in use (MiB)")
        for row in rs[0].get("per_eval", []):
            print("    " + " ".join(f"{v / MiB:7.0f}" if i else f"{v:4d}" for i, v in enumerate(row)))
        hw = sorted(r["hwm"] / MiB for r in rs)
        r = rs[0]
        hwm = f"{hw[0]:.0f}" if len(hw) == 1 else f"{hw[0]:.0f}-{hw[-1]:.0f}"
        row = (
            f"| {name} | {hwm} | {r.get('saved', 0) / MiB:.0f} | {r.get('heap_peak', 0) / MiB:.0f} | "
            f"{r.get('heap_peak_at', '')} | {r.get('heap_before', 0) / MiB:.0f} | "
            f"{r.get('rss_peak', 0) / MiB:.0f} | {r.get('rss_peak_at', '')} | "
            f"{r.get('minflt_per_eval', r.get('minflt_run_per_eval', 0)):.0f} |"
        )
        rows.append(row)
        print(row, flush=True)
        d = (
            f"- {name}: VmRSS after import torch {r['rss_import'] / MiB:.0f}, after setup {r['rss_setup'] / MiB:.0f} "
            f"(VmHWM {r['hwm_setup'] / MiB:.0f}), at the end {r['rss_end'] / MiB:.0f}; heap after import "
            f"{r['heap_import'] / MiB:.0f}, after setup {r['heap_setup'] / MiB:.0f}"
        )
        if r.get("saved_by_kind"):
            d += "; saved: " + ", ".join(
                f"{k} {v / MiB:.1f}" for k, v in sorted(r["saved_by_kind"].items(), key=lambda kv: -kv[1])
            )
        details.append(d)
        print("  " + d, flush=True)
    fl = flops(args.size)
    total = fl["forward"] + fl["backward"]
    note = (
        f"One evaluation: {total / 1e9:.0f} GFLOP (forward {fl['forward'] / 1e9:.0f}, backward "
        f"{fl['backward'] / 1e9:.0f}); recomputing conv1_1 and conv1_2 in backward (checkpoint-block1) "
        f"adds {fl['block1'] / 1e9:.1f} GFLOP, +{100 * fl['block1'] / total:.1f}%."
    )
    print(note)
    details.append(note)
    if args.out:
        Path(args.out).write_text("\n".join(rows + [""] + details) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
