"""Quality: each style loss's pastiche measured with every statistic, a contact sheet per pair, and its cost.

For each photo/painting pair (``--pairs``) and each ``style_loss`` (``--losses``), one run of
``--steps`` evaluations at ``--size`` px (seed 0, automatic weights, style strength 1). Each
pastiche is then measured at every style layer with every statistic, so that no loss is judged
only by the statistic it optimises: the Gram distance ``|G - A|^2 / |A|^2``, the Gaussian W2
``W2^2 / (|mu_s|^2 + tr S_s)`` (exact square roots, float64) and the sliced distance over
``K = N`` directions of a seed no run uses, divided by its value at zero features; plus the
content distance ``|F - P|^2 / |P|^2`` at relu4_2. The figures are each loss's mean over the
layers against the Gram pastiche's. A contact sheet per pair (photo, painting, one pastiche per
loss) goes to ``--sheets`` (a dry run: the results folder or a temporary one).

Cost: each loss's objective at ``--timing-size`` px built by the engine, single evaluations
interleaved gram, wasserstein, sliced, gram, ... (process CPU time), the median over rounds of
each one's time over gram's in the same round.

    python -m benchmarks quality --size 256 --steps 100 --timing-size 512 --timing-steps 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _harness as H

LOSSES = ("gram", "wasserstein", "sliced")
STATS = ("gram", "w2", "sliced")
#: the measuring directions' seed (no run draws its directions from it)
MEASURE_SEED = 987_654


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--size", type=int, default=256, help="the runs' long edge (px)")
    ap.add_argument("--steps", type=int, default=100, help="evaluations per run")
    ap.add_argument("--pairs", default="tubingen:starry_night,tubingen:the_scream", help="content:style,...")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--strength", type=float, default=1.0, help="style_strength of every run")
    ap.add_argument("--timing-size", type=int, default=512)
    ap.add_argument("--timing-steps", type=int, default=6, help="evaluations timed per loss")
    ap.add_argument("--skip", type=int, default=2, help="warm-up evaluations per loss, not timed")
    ap.add_argument("--sheets", default="docs/images", help="folder of the contact sheets")
    ap.add_argument("--parts", default="quality,timing")


# --------------------------------------------------------------------------- measuring


def _features(net: Any, image: np.ndarray, shape: tuple[int, int]) -> dict[str, Any]:
    import torch

    from napari_nst.core.image.tensors import resize, to_tensor

    with torch.no_grad():
        return {k: v.double() for k, v in net(resize(to_tensor(image, torch.device("cpu")), shape)).items()}


def _w2_exact(f: Any, s: Any) -> float:
    """``W2^2`` of the Gaussians of ``(N, M)`` features, exact square roots, over its value at zero."""
    import torch

    def gauss(x: Any) -> tuple[Any, Any]:
        mu = x.mean(1)
        return mu, x @ x.T / x.shape[1] - torch.outer(mu, mu)

    def root(c: Any) -> Any:
        vals, vecs = torch.linalg.eigh((c + c.T) / 2)
        return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T

    (mu, c), (mu_s, c_s) = gauss(f), gauss(s)
    r = root(c_s)
    cross = torch.linalg.eigvalsh(r @ c @ r).clamp(min=0).sqrt().sum()
    w2 = (mu - mu_s).pow(2).sum() + torch.trace(c) + torch.trace(c_s) - 2 * cross
    return float(w2 / (mu_s.pow(2).sum() + torch.trace(c_s)))


def _sliced(f: Any, s: Any, proj: Any) -> float:
    from napari_nst.core.objective.statistics import quantiles

    p = (proj.T @ f).sort(1).values
    t = quantiles((proj.T @ s).sort(1).values.float(), p.shape[1]).double()
    return float((p - t).pow(2).mean() / t.pow(2).mean())


def measure(
    net: Any, pastiche: np.ndarray, content: np.ndarray, style: np.ndarray, shape: Any, style_shape: Any
) -> dict:
    """Every statistic at every style layer (and the content distance) of ``pastiche`` at ``shape``."""
    import torch

    from napari_nst.core.objective.statistics import projections
    from napari_nst.core.options import CONTENT_LAYERS, STYLE_LAYERS

    fx, fc, fs = _features(net, pastiche, shape), _features(net, content, shape), _features(net, style, style_shape)
    gen = torch.Generator().manual_seed(MEASURE_SEED)
    out: dict[str, Any] = {s: {} for s in STATS}
    for n in STYLE_LAYERS:
        f, s = fx[n][0].reshape(fx[n].shape[1], -1), fs[n][0].reshape(fs[n].shape[1], -1)
        g, a = f @ f.T / f.shape[1], s @ s.T / s.shape[1]
        out["gram"][n] = float((g - a).pow(2).sum() / a.pow(2).sum())
        out["w2"][n] = _w2_exact(f, s)
        out["sliced"][n] = _sliced(f, s, projections(f.shape[0], gen).double())
    out["content"] = float(sum((fx[n] - fc[n]).pow(2).sum() / fc[n].pow(2).sum() for n in CONTENT_LAYERS))
    return out


# --------------------------------------------------------------------------- parts


def _pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.dry_run:
        return [("generated:content", "generated:style")]
    return [tuple(p.split(":", 1)) for p in args.pairs.split(",")]  # type: ignore[misc]


def pictures(run: dict[str, Any]) -> list[str]:
    """The contact sheets a recorded run of the quality part wrote (paths from the repository root),
    for the Benchmarks page (benchmarks/report.py)."""
    args = run.get("args") or {}
    if "quality" not in str(args.get("parts", "")).split(",") or args.get("dry_run"):
        return []
    pairs = [p.split(":", 1) for p in str(args.get("pairs", "")).split(",") if ":" in p]
    return [f"{args.get('sheets', 'docs/images')}/losses-{c}-{s}.png" for c, s in pairs]


def _sheet(path: Path, tiles: list[tuple[str, np.ndarray]], height: int) -> None:
    """Photo, painting and pastiches side by side, each ``height`` px high, labelled below."""
    from PIL import Image, ImageDraw

    ims = []
    for _, img in tiles:
        im = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        ims.append(im.resize((max(1, round(im.width * height / im.height)), height), Image.LANCZOS))
    gap, band = 6, 22
    sheet = Image.new("RGB", (sum(i.width for i in ims) + gap * (len(ims) + 1), height + band + gap), "white")
    draw, x = ImageDraw.Draw(sheet), gap
    for (label, _), im in zip(tiles, ims, strict=True):
        sheet.paste(im, (x, gap))
        draw.text((x + 4, height + gap + 5), label, fill="black")
        x += im.width + gap
    sheet.save(path)


def quality(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import napari_nst
    from napari_nst.core.encoder.vgg import build_vgg
    from napari_nst.core.image.arrays import resized_shape, to_rgb_float
    from napari_nst.core.options import CONTENT_LAYERS, STYLE_LAYERS

    weights = H.weights_file(args.weights)
    net = build_vgg(H.MODEL, list(dict.fromkeys([*CONTENT_LAYERS, *STYLE_LAYERS])), weights=weights)
    losses = args.losses.split(",")
    sheets = Path(args.sheets) if not args.dry_run else Path(args.results_dir or tempfile.mkdtemp())
    figures, results = [], {}
    for c_name, s_name in _pairs(args):
        c = to_rgb_float(H.load_image(c_name), name="content")
        s = to_rgb_float(H.load_image(s_name), name="style")
        key = f"{c_name.split(':')[-1]}-{s_name.split(':')[-1]}"
        row: dict[str, Any] = {}
        shown = [("photo", c), ("painting", s)]
        for loss in losses:
            t = time.perf_counter()
            out = napari_nst.stylize(
                c, s, size=args.size, steps=args.steps, model=H.MODEL, weights=weights, device="cpu", seed=0,
                style_loss=loss, style_strength=args.strength,
            )  # fmt: skip
            seconds = time.perf_counter() - t
            shape, style_shape = out.shape[:2], resized_shape(s.shape[:2], max(out.shape[:2]))
            row[loss] = {"seconds": seconds, **measure(net, out, c, s, shape, style_shape)}
            shown.append((loss, out))
            H.say(f"  {key} {loss}: {seconds:.0f} s, content {row[loss]['content']:.3f}")
        row["content image"] = measure(net, c, c, s, shape, style_shape)  # where every run starts
        sheets.mkdir(parents=True, exist_ok=True)
        _sheet(sheets / f"losses-{key}.png", shown, 192 if not args.dry_run else 48)
        results[key] = row
        for loss in losses:
            if loss == "gram" or "gram" not in row:
                continue
            for stat in (*STATS, "content"):
                mean = _layer_mean(row[loss][stat])
                base = _layer_mean(row["gram"][stat])
                what = f"{stat} distance (mean over the style layers)" if stat != "content" else "content distance"
                figures.append(
                    H.figure(
                        f"{key}, {args.size} px, {args.steps} evaluations: {loss}'s pastiche, "
                        + what,
                        H.ratio(mean, base), "the gram pastiche", mean, "", part="quality",
                    )
                )  # fmt: skip
    return figures, results


def _layer_mean(v: Any) -> float:
    return float(np.mean(list(v.values()))) if isinstance(v, dict) else float(v)


def timing(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from benchmarks.controls import evaluate_once, objective

    c = H.load_image(args.content)
    s = H.load_image(args.style)
    ns = argparse.Namespace(size=args.timing_size, weights=args.weights, precision="auto")
    losses = args.losses.split(",")
    built = {loss: objective(c, s, {"style_loss": loss}, ns) for loss in losses}
    cpu: dict[str, list[float]] = {k: [] for k in losses}
    for i in range(args.skip + args.timing_steps):  # interleaved: gram wasserstein sliced gram ...
        for loss, (obj, x) in built.items():
            _, p = evaluate_once(obj, x)
            if i >= args.skip:
                cpu[loss].append(p)
    h, w = built[losses[0]][1].shape[-2:]
    paired = {k: statistics.median(a / b for a, b in zip(cpu[k], cpu["gram"], strict=True)) for k in losses}
    figures = [
        H.figure(
            f"{w}x{h} px: {loss}'s CPU time per evaluation",
            paired[loss],
            "gram",
            statistics.median(cpu[loss]),
            "s",
            part="timing",
        )
        for loss in losses
        if loss != "gram"
    ]
    return figures, {"shape": [int(h), int(w)], "process_cpu": cpu, "ratio_cpu_per_round": paired}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.size, args.steps, args.timing_size, args.timing_steps, args.skip = 48, 2, 48, 2, 1
    parts = args.parts.split(",")
    figures: list[dict[str, Any]] = []
    out: dict[str, Any] = {"sizes": {"size": args.size, "steps": args.steps, "timing_size": args.timing_size}}
    if "quality" in parts:
        f, out["quality"] = quality(args)
        figures += f
    if "timing" in parts:
        f, out["timing"] = timing(args)
        figures += f
    out["figures"] = figures
    return out
