"""Stacks: temporal consistency, stylisation and cost of stack runs against independent frames.

Parts (``--parts``, comma-separated): ``consistency`` (the default; below) and ``edge`` (the band of
content entering at the frame's edge; further below).

The sequence: crops of the content picture (resized so that the crop is exactly the working size:
no resizing, so the true motion in output pixels is known), each ``--shift`` (dx, dy) px further
than the one before. Compared on the same frames, same options, one process:

* ``independent`` (the baseline): every frame its own ``stylize`` run, ``--steps`` evaluations;
* ``warm``: a stack run with ``temporal_weight=0`` (frames start from the carried pastiche only);
* ``stack w=...``: stack runs with the temporal term (one row per --weights x --frame-steps).

Frame 0 of every stack run is the same single-image run as ``independent``'s frame 0, so it is made
once and the stack runs continue from it. Per method, over frames 1..N-1:

* flicker: mean |out[t] - out[t-1] moved by the true motion| over the overlap (lower = steadier);
* stylised: mean |out[t] - content[t]| (how far each frame went from its photo);
* CPU seconds per frame (process time, frame 0 excluded) against one independent frame's; and
  what the optical flow costs per frame.

    python -m benchmarks stack --size 128 --frames 5 --steps 100 --threads 1

``edge``: a faster pan (``--edge-shift``, 8 px right and 2 down a frame), so that each later frame
has a band of content the flow brings from outside the frame before. The band of frame t: its pixels
that were not in view in frame 0 (``dx * t`` columns, ``dy * t`` rows at the edges the pan moves
towards); its interior: the pixels at least ``MARGIN`` px from the band and ``INSET`` px from the
frame's edges. Compared on the same frames: frames 0 and N-1 each stylised on their own, and stack
runs continued from frame 0 with Ruder et al.'s start (every pixel from the warped pastiche: the
``repaint_unreliable`` lever off) and with napari-nst's (the default). Per frame and method:

* fine detail: the mean of (luminance minus its 3x3 box blur)^2 over the band, over the interior's
  (a smeared band has little; a band that looks like the rest about 1);
* stylised: mean |out - content| over the band, over the interior's;
* and for the last frame, the band's fine detail and stylisation over the independent frame's at
  the same pixels; flicker as above (the temporal consistency elsewhere).

    python -m benchmarks stack --parts edge --size 128 --frames 5 --steps 100 --pictures docs/images
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _harness as H

PARTS = ("consistency", "edge")
#: the edge part's interior: at least this many px from the band and from the frame's edges
MARGIN, INSET = 8, 2


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--shift", type=int, nargs=2, default=(3, 1), metavar=("DX", "DY"))
    ap.add_argument("--weights-temporal", type=float, nargs="*", default=[200.0], help="temporal_weight values")
    ap.add_argument("--frame-steps", type=int, nargs="*", default=[0], help="0 = the default (a third of steps)")
    ap.add_argument("--parts", default="consistency", help=f"comma-separated, of {','.join(PARTS)}")
    ap.add_argument("--edge-shift", type=int, nargs=2, default=(8, 2), metavar=("DX", "DY"), help="the edge part's pan")
    ap.add_argument("--pictures", default=None, help="folder for the edge part's stack-edge.jpg (default: none)")


def sequence(photo: np.ndarray, size: int, frames: int, shift: tuple[int, int]) -> np.ndarray:
    """(N, h, w, 3) uint8 crops of ``photo``, frame t offset by t * shift (dx, dy) from frame 0."""
    from PIL import Image

    img = Image.fromarray(photo).convert("RGB")
    h, w = round(size * 3 / 4), size
    scale = (w + abs(shift[0]) * frames + 8) / img.width * 1.6
    big = np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS))
    y0, x0 = (big.shape[0] - h) // 2 - shift[1] * frames // 2, (big.shape[1] - w) // 2 - shift[0] * frames // 2
    return np.stack(
        [
            big[y0 + t * shift[1] : y0 + t * shift[1] + h, x0 + t * shift[0] : x0 + t * shift[0] + w]
            for t in range(frames)
        ]
    )


def flicker(out: np.ndarray, shift: tuple[int, int]) -> float:
    """Mean |out[t](p) - out[t-1](p + shift)| over the overlap, frames 1..N-1."""
    dx, dy = shift
    h, w = out.shape[1:3]
    ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
    ys1, xs1 = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    return float(np.mean([np.abs(out[t][ys, xs] - out[t - 1][ys1, xs1]).mean() for t in range(1, len(out))]))


def stylised(out: np.ndarray, frames: np.ndarray) -> float:
    return float(np.mean([np.abs(out[t] - frames[t] / 255.0).mean() for t in range(1, len(out))]))


def run_independent(frames: np.ndarray, style: np.ndarray, opts: dict[str, Any]) -> tuple[np.ndarray, list[float]]:
    import napari_nst

    outs, secs = [], []
    for f in frames:
        t = time.process_time()
        outs.append(napari_nst.stylize(f, style, progress=False, **opts))
        secs.append(time.process_time() - t)
    return np.stack(outs), secs


def run_stack(
    frames: np.ndarray, style: np.ndarray, first: np.ndarray, opts: dict[str, Any]
) -> tuple[np.ndarray, list[float]]:
    """Frames 1..N-1 continued from ``first`` (frame 0's pastiche); CPU seconds per frame."""
    import napari_nst

    out = np.zeros((len(frames), *first.shape), np.float32)
    out[0] = first
    secs, t = [], time.process_time()
    for rec in napari_nst.iter_stylize_stack(frames, style, start=1, previous=first, **opts):
        if rec.step == rec.total:
            out[rec.frame] = rec.image
            secs.append(time.process_time() - t)
            t = time.process_time()
    return out, secs


def flow_seconds(frames: np.ndarray) -> float:
    from napari_nst.core.stack import flow

    f = frames / np.float32(255)
    t = time.process_time()
    for i in range(1, len(f)):
        flow.carry(f[i - 1], f[i - 1], f[i])
    return (time.process_time() - t) / (len(f) - 1)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        size=args.size,
        steps=args.steps,
        model=H.MODEL,
        weights=H.weights_file(args.weights),
        device="cpu",
        preview_every=10**6,
    )


def consistency(args: argparse.Namespace) -> dict[str, Any]:
    """The consistency part (its figures carry no part name, as the runs recorded before parts)."""
    shift = (args.shift[0], args.shift[1])
    frames = sequence(H.load_image(args.content), args.size, args.frames, shift)
    style = H.load_image(args.style)
    opts = _options(args)
    ind, ind_secs = run_independent(frames, style, opts)
    single = float(np.mean(ind_secs))
    result: dict[str, Any] = {"shape": list(frames.shape), "single_run_s": single, "rows": []}
    result["flow_s_per_frame"] = flow_seconds(frames)

    def row(name: str, out: np.ndarray, secs: list[float], **extra: Any) -> None:
        later = float(np.mean(secs[1:] if name == "independent" else secs))
        result["rows"].append(
            dict(
                method=name,
                flicker=flicker(out, shift),
                stylised=stylised(out, frames),
                s_per_frame=later,
                cost_ratio=later / single,
                **extra,
            )
        )
        H.say(f"  {result['rows'][-1]}")

    row("independent", ind, ind_secs)
    variants = [("warm", 0.0, 0)] + [
        (f"stack w={w:g}" + (f" fs={fs}" if fs else ""), w, fs)
        for w in args.weights_temporal
        for fs in args.frame_steps
    ]
    for name, w, fs in variants:
        o = dict(opts, temporal_weight=w, **({"frame_steps": fs} if fs else {}))
        out, secs = run_stack(frames, style, ind[0], o)
        row(name, out, secs, temporal_weight=w, frame_steps=fs or None)
    base = result["rows"][0]
    h, w = frames.shape[1:3]
    what = f"{args.frames} frames of {w}x{h} px, {args.steps} evaluations"
    figures = []
    for r in result["rows"]:
        r["flicker_ratio"] = r["flicker"] / base["flicker"]
        r["stylised_ratio"] = r["stylised"] / base["stylised"]
        if r is base:
            continue
        figures += [
            H.figure(f"{what}, {r['method']}: flicker", r["flicker_ratio"], "independent frames", r["flicker"], ""),
            H.figure(f"{what}, {r['method']}: stylised", r["stylised_ratio"], "independent frames", r["stylised"], ""),
            H.figure(
                f"{what}, {r['method']}: CPU time per frame",
                r["cost_ratio"],
                "one independent frame",
                r["s_per_frame"],
                "s",
            ),
        ]
    figures.append(
        H.figure(
            f"{what}: optical flow per frame",
            result["flow_s_per_frame"] / single,
            "one independent frame",
            result["flow_s_per_frame"],
            "s",
        )
    )
    return {"figures": figures, **result}


# --------------------------------------------------------------------------- edge


def fine_detail(image: np.ndarray) -> np.ndarray:
    """Per pixel: (luminance minus its 3x3 box blur)^2, the edges repeated."""
    y = np.asarray(image, np.float64) @ np.array([0.299, 0.587, 0.114])
    p = np.pad(y, 1, mode="edge")
    blur = sum(p[i : i + y.shape[0], j : j + y.shape[1]] for i in range(3) for j in range(3)) / 9.0
    out: np.ndarray = (y - blur) ** 2
    return out


def into_band(shape: tuple[int, int], t: int, shift: tuple[int, int]) -> np.ndarray:
    """(h, w): how far each pixel of frame t is into the band of pixels not in view in frame 0 of a
    pan by ``shift`` a frame (> 0 in the band), along the axes the pan moves."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    dx, dy = shift[0] * t, shift[1] * t
    into = np.full((h, w), -np.inf)
    if dx:
        into = np.maximum(into, xs - (w - 1 - dx) if dx > 0 else -dx - xs)
    if dy:
        into = np.maximum(into, ys - (h - 1 - dy) if dy > 0 else -dy - ys)
    return into


def band_and_interior(shape: tuple[int, int], t: int, shift: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """bool (h, w) masks of frame t: the band (:func:`into_band`) and the interior (``MARGIN`` px
    from the band), both ``INSET`` px from the frame's edges."""
    h, w = shape
    into = into_band(shape, t, shift)
    inset = np.pad(np.ones((h - 2 * INSET, w - 2 * INSET), bool), INSET)
    return (into > 0) & inset, (into <= -MARGIN) & inset


def band_ratios(out: np.ndarray, content: np.ndarray, t: int, shift: tuple[int, int]) -> tuple[float, float]:
    """(fine detail, stylised) of frame t's band over its interior's."""
    band, inner = band_and_interior(out.shape[:2], t, shift)
    e, d = fine_detail(out), np.abs(out - content).mean(-1)
    return float(e[band].mean() / e[inner].mean()), float(d[band].mean() / d[inner].mean())


def save_edge_picture(rows: list[np.ndarray], shift: tuple[int, int], path: Path) -> None:
    """``rows`` of (N, h, w, 3) frames side by side, 4 px apart, as JPEG (quality 95, full-resolution
    colour); in every row but the first the band's inner boundary dotted in white."""
    from PIL import Image

    n, h, w = rows[0].shape[:3]
    sheet = np.ones((len(rows) * (h + 4) - 4, n * (w + 4) - 4, 3), np.float32)
    for r, frames in enumerate(rows):
        for t in range(n):
            tile = np.array(frames[t], np.float32)
            if r and t:
                band = into_band((h, w), t, shift) > 0
                p = np.pad(band, 1, mode="edge")
                inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
                ys, xs = np.nonzero(band & ~inner)  # band pixels beside the rest of the frame
                keep = (ys + xs) % 4 < 2
                tile[ys[keep], xs[keep]] = 1.0
            sheet[r * (h + 4) : r * (h + 4) + h, t * (w + 4) : t * (w + 4) + w] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    pic = Image.fromarray((np.clip(sheet, 0, 1) * 255).round().astype(np.uint8))
    pic.save(path, quality=95, subsampling=0)


#: the edge part's stack runs: name -> the levers they run under
EDGE_METHODS = {"Ruder et al.'s start": {"repaint_unreliable": False}, "napari-nst": {}}


def edge(args: argparse.Namespace) -> dict[str, Any]:
    import napari_nst

    shift = (args.edge_shift[0], args.edge_shift[1])
    if shift == (0, 0):
        raise H.BenchmarkError("--edge-shift 0 0: a pan that brings no content in at the edge")
    frames = sequence(H.load_image(args.content), args.size, args.frames, shift)
    content = frames / np.float32(255)
    style = H.load_image(args.style)
    opts = _options(args)
    first = napari_nst.stylize(frames[0], style, progress=False, **opts)
    alone = napari_nst.stylize(frames[-1], style, progress=False, **opts)  # the last frame on its own
    n, h, w = frames.shape[:3]
    band, _ = band_and_interior((h, w), n - 1, shift)
    e_alone, d_alone = fine_detail(alone)[band].mean(), np.abs(alone - content[-1]).mean(-1)[band].mean()
    what = f"{n} frames of {w}x{h} px panning ({shift[0]}, {shift[1]}) px a frame, {args.steps} evaluations"
    result: dict[str, Any] = {
        "shape": list(frames.shape),
        "shift": list(shift),
        "independent_last": dict(
            zip(("fine_detail", "stylised"), band_ratios(alone, content[-1], n - 1, shift), strict=True)
        ),
        "methods": {},
    }
    figures, outs = [], {}
    for name, lv in EDGE_METHODS.items():
        with H.levers(**lv):
            out, _ = run_stack(frames, style, first, opts)
        outs[name] = out
        per = [band_ratios(out[t], content[t], t, shift) for t in range(1, n)]
        e_band, d_band = fine_detail(out[-1])[band].mean(), np.abs(out[-1] - content[-1]).mean(-1)[band].mean()
        m = {
            "fine_detail": [p[0] for p in per],  # frames 1..N-1, band over interior
            "stylised": [p[1] for p in per],
            "fine_detail_vs_independent": float(e_band / e_alone),
            "stylised_vs_independent": float(d_band / d_alone),
            "flicker": flicker(out, shift),
        }
        result["methods"][name] = m
        H.say(f"  {name}: {m}")
        figures += [
            H.figure(
                f"{what}, {name}: fine detail of the edge band, last frame",
                m["fine_detail_vs_independent"],
                "the frame stylised on its own",
                per[-1][0],
                "x the interior's",
            ),
            H.figure(
                f"{what}, {name}: stylisation of the edge band, last frame",
                m["stylised_vs_independent"],
                "the frame stylised on its own",
                per[-1][1],
                "x the interior's",
            ),
        ]
    ruder, ours = (result["methods"][k]["flicker"] for k in EDGE_METHODS)
    figures.append(H.figure(f"{what}, napari-nst: flicker", H.ratio(ours, ruder), "Ruder et al.'s start", ours))
    if args.pictures and not args.dry_run:
        path = Path(args.pictures) / "stack-edge.jpg"
        save_edge_picture([content, *outs.values()], shift, path)
        result["picture"] = str(path)
    return {"figures": figures, **result}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.size, args.frames, args.steps = 64, 3, 3
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise H.BenchmarkError(f"unknown part(s) {sorted(unknown)}; the parts are {','.join(PARTS)}")
    result: dict[str, Any] = {"figures": []}
    for part in parts:
        H.say(f"stack: {part}")
        if part == "consistency":  # its results and figures as recorded before there were parts
            out = consistency(args)
            result["figures"] += out.pop("figures")
            result.update(out)
        else:
            out = edge(args)
            result["figures"] += [f | {"part": part} for f in out.pop("figures")]
            result[part] = out
        if hasattr(args, "_checkpoint"):
            args._checkpoint(result)
    return result
