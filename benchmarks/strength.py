"""Controls that do what they say: the style-strength strip, a 50/50 blend, the border of a region
without style, the strokes' size over output sizes, and the fine dots in flat areas; measured by
the objective's terms, with the pictures to look at.

Parts (``--parts``, comma-separated):

- ``strip``: one run per ``--strengths`` value; the content and style terms (unweighted) at the
  end. Figures: the style term at the lowest strength over the style term at the highest, and
  the largest over the smallest factor between neighbours of the strip (1 = even steps).
- ``blend``: ``--style`` alone, ``--style2`` alone, and the two blended 50/50 in each
  ``style_blend_mode``; each pastiche's style term against each painting (per position, at the
  pastiche's size), over that painting's own pastiche's. Figure: how far apart the blend's two
  ratios are (1 = halfway by the style terms), balanced against linear.
- ``border``: the content's right half is mapped to no style; the mean absolute change of the
  pixels against the content by distance from the border, with the unstyled region kept
  (the default) and without (``keep_unstyled`` lever: the guided Grams alone). Figure: the bleed's
  width (columns changed by more than ``BLEED_LEVEL``), default against the guided Grams alone.
- ``sizes``: one run per ``--sizes`` value with the default levels, and with ``scales=1`` for
  the ``--singles`` sizes (default every size); the style term of each result shrunk to the
  smallest size, against the style at that size (the strokes' size relative to the picture).
  Figure, where both ran: default over single scale.
- ``dots``: the fine pattern in flat areas (the top ``SKY`` of the content): its high-frequency
  energy (luminance minus its 3x3 box blur, squared, mean) for the default and variants that each
  change one suspect. Figure: each variant's energy over the default's.

    python -m benchmarks strength --parts strip,blend,border,dots --size 192 --steps 80 --pictures docs/images
    python -m benchmarks strength --parts sizes --sizes 256,512,1024,2048 --singles 1024 --size-steps 80 \\
        --pictures docs/images
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import _harness as H

PARTS = ("strip", "blend", "border", "sizes", "dots")
#: a column of the unstyled region counts as bled into when its mean absolute change is above this
BLEED_LEVEL = 0.005
#: the border's figure: the mean absolute change over this many columns next to it
NEAR = 16
#: the flat area the dots are measured in: this fraction of the content's height, from the top
SKY = 0.25


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--parts", default="strip,blend,border,dots", help=f"comma-separated, of {','.join(PARTS)}")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--strengths", default="0.1,0.3,1,3,10")
    ap.add_argument("--style2", default=None, help="the blend's second style (default the shared the_scream.jpg)")
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--size-steps", type=int, default=100, help="evaluations of each run of the sizes part")
    ap.add_argument("--singles", default=None, help="sizes also run at one scale only (default: every size)")
    ap.add_argument("--dot-size", type=int, default=128, help="working size of the dots part")
    ap.add_argument("--pictures", default=None, help="folder for the PNGs to look at (default: none written)")


# --------------------------------------------------------------------------- runs and measures


def stylise(content: Any, style: Any, args: argparse.Namespace, **opts: Any) -> dict[str, Any]:
    """One run of the engine: its last image (as shown), unweighted terms, weights and levels."""
    import napari_nst

    kw: dict[str, Any] = {"size": args.size, "steps": args.steps, "seed": 0, "device": "cpu", "model": H.MODEL}
    kw.update(weights=H.weights_file(args.weights), precision="float32", **opts)
    last = None
    for rec in napari_nst.iter_stylize(content, style, **kw):
        last = rec
    assert last is not None and last.image is not None
    return {"image": last.image, "losses": dict(last.losses), "weights": dict(last.weights), "levels": last.levels}


class Measure:
    """The network's unweighted style term of an image against a painting, per position: the
    painting resized to the image's long edge, its Grams scaled by ``M_image / M_style``."""

    def __init__(self, args: argparse.Namespace) -> None:
        from napari_nst.core.encoder.vgg import build_vgg
        from napari_nst.core.options import CONTENT_LAYERS, STYLE_LAYERS

        self.layers = list(STYLE_LAYERS)
        layers = list(dict.fromkeys([*CONTENT_LAYERS, *STYLE_LAYERS]))
        self.net = build_vgg(H.MODEL, layers, weights=H.weights_file(args.weights))

    def style(self, image: np.ndarray, painting: np.ndarray) -> float:
        import torch

        from napari_nst.core.image.arrays import resized_shape, to_rgb_float
        from napari_nst.core.image.tensors import resize, to_tensor
        from napari_nst.core.objective.losses import gram, gram_loss

        x = to_tensor(to_rgb_float(image), torch.device("cpu"))
        s = to_tensor(to_rgb_float(painting), torch.device("cpu"))
        s = resize(s, resized_shape(painting.shape[:2], max(image.shape[:2])))
        with torch.no_grad():
            fx, fs = self.net(x), self.net(s)
            total = 0.0
            for n in self.layers:
                mx, ms = fx[n].shape[-2] * fx[n].shape[-1], fs[n].shape[-2] * fs[n].shape[-1]
                total += float(gram_loss(gram(fx[n]), gram(fs[n]) * (mx / ms), fx[n].shape[1], mx)) / len(self.layers)
        return total


def content_at(content: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The content as the engine sees it, at ``shape`` (float32 (h, w, 3))."""
    import torch

    from napari_nst.core.image.arrays import to_rgb_float
    from napari_nst.core.image.tensors import resize, to_numpy, to_tensor

    t = to_tensor(to_rgb_float(content), torch.device("cpu"))
    out: np.ndarray = to_numpy(resize(t, (int(shape[0]), int(shape[1]))))
    return out


def save_row(images: list[np.ndarray], path: Path, height: int | None = None) -> None:
    """``images`` side by side (each scaled to ``height``, default the first's), 4 px apart, as PNG."""
    from PIL import Image

    h = height or images[0].shape[0]
    tiles = []
    for im in images:
        pic = Image.fromarray((np.clip(np.asarray(im, np.float32), 0, 1) * 255).round().astype(np.uint8))
        tiles.append(pic.resize((max(1, round(pic.width * h / pic.height)), h), Image.Resampling.LANCZOS))
    row = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), h), "white")
    x = 0
    for t in tiles:
        row.paste(t, (x, 0))
        x += t.width + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    row.save(path)


def _picture(args: argparse.Namespace, name: str, images: list[np.ndarray], height: int | None = None) -> str | None:
    if not args.pictures or args.dry_run:
        return None
    path = Path(args.pictures) / name
    save_row(images, path, height)
    return str(path)


# --------------------------------------------------------------------------- parts


def strip(imgs: dict[str, np.ndarray], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = [float(v) for v in args.strengths.split(",")]
    runs = {v: stylise(imgs["content"], imgs["style"], args, style_strength=v) for v in values}
    content = {v: r["losses"]["content"] for v, r in runs.items()}
    style = {v: r["losses"]["style"] for v, r in runs.items()}
    steps = [style[a] / style[b] for a, b in zip(values, values[1:], strict=False)]
    lo, hi = values[0], values[-1]
    figures = [
        H.figure(f"strength {lo:g} to {hi:g}: style term at {lo:g}", H.ratio(style[lo], style[hi]), f"strength {hi:g}"),
        H.figure(
            f"strength {lo:g} to {hi:g}: content term at {hi:g}", H.ratio(content[hi], content[lo]), f"strength {lo:g}"
        ),
        H.figure("strength strip: largest over smallest factor between neighbours", max(steps) / min(steps), "even"),
    ]
    pic = _picture(args, "controls-strength-strip.png", [r["image"] for r in runs.values()])
    result = {
        "strengths": values,
        "content": content,
        "style": style,
        "weights": {v: r["weights"] for v, r in runs.items()},
    }
    return {**result, "neighbour_factors": steps, "picture": pic}, figures


def blend(imgs: dict[str, np.ndarray], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    m = Measure(args)
    s1, s2 = imgs["style"], imgs["style2"]
    runs = {
        "style": stylise(imgs["content"], s1, args),
        "style2": stylise(imgs["content"], s2, args),
        "balanced": stylise(imgs["content"], [s1, s2], args, style_blend=(0.5, 0.5)),
        "linear": stylise(imgs["content"], [s1, s2], args, style_blend=(0.5, 0.5), style_blend_mode="linear"),
    }
    terms = {k: [m.style(r["image"], s1), m.style(r["image"], s2)] for k, r in runs.items()}
    own = [terms["style"][0], terms["style2"][1]]
    rel = {k: [t[0] / own[0], t[1] / own[1]] for k, t in terms.items()}
    apart = {k: max(rel[k]) / min(rel[k]) for k in ("balanced", "linear")}
    figures = [
        H.figure(
            "50/50 blend: its two style terms, each over its painting's own pastiche's, apart",
            H.ratio(apart["balanced"], apart["linear"]),
            "linear blend",
            apart["balanced"],
        )
    ]
    order = [runs["style"], runs["balanced"], runs["linear"], runs["style2"]]
    pic = _picture(args, "controls-blend-balanced.png", [r["image"] for r in order])
    return {"terms": terms, "relative_to_own": rel, "apart": apart, "picture": pic}, figures


def bleed_profile(image: np.ndarray, content: np.ndarray, border: int) -> list[float]:
    """Mean absolute change against the content of each column right of ``border`` (the
    unstyled region), nearest first."""
    diff = np.abs(np.asarray(image, np.float32) - content).mean(axis=(0, 2))
    return [float(v) for v in diff[border:]]


def border(imgs: dict[str, np.ndarray], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    content = imgs["content"]
    labels = np.zeros(content.shape[:2], np.int32)
    labels[:, content.shape[1] // 2 :] = 1
    opts = {"regions": labels, "region_styles": {0: 0, 1: None}}
    out: dict[str, Any] = {}
    pics, crops = [], []
    for name, keep in (("default", True), ("guided Grams alone", False)):
        with H.levers(keep_unstyled=keep) if not keep else contextlib.nullcontext():
            r = stylise(content, imgs["style"], args, **opts)
        c = content_at(content, r["image"].shape)
        edge = round(r["image"].shape[1] * (content.shape[1] // 2) / content.shape[1])
        prof = bleed_profile(r["image"], c, edge)
        width = next((i for i, v in enumerate(prof) if v <= BLEED_LEVEL), len(prof))
        out[name] = {"profile": prof, "bleed_px": width, "near": float(np.mean(prof[:NEAR]))}
        pics.append(r["image"])
        crops.append(r["image"][:, max(0, edge - 2 * NEAR) : edge + 3 * NEAR])
    c = content_at(content, pics[0].shape)
    out["picture"] = _picture(args, "controls-region-border.png", [c, *pics])
    out["crops"] = _picture(args, "controls-region-border-crop.png", crops, 2 * crops[0].shape[0])
    a, b = out["default"], out["guided Grams alone"]
    figures = [
        H.figure(
            f"region without style: mean change of the {NEAR} columns next to the border",
            H.ratio(a["near"], b["near"]),
            "guided Grams alone",
            a["near"],
        ),
        H.figure(f"region without style: columns changed by more than {BLEED_LEVEL}", None, "", a["bleed_px"], "px"),
        H.figure(f"guided Grams alone: columns changed by more than {BLEED_LEVEL}", None, "", b["bleed_px"], "px"),
    ]
    return out, figures


def sizes(imgs: dict[str, np.ndarray], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    m = Measure(args)
    values = [int(v) for v in args.sizes.split(",")]
    small = min(values)
    out: dict[str, Any] = {"sizes": values, "runs": {}}
    figures = []
    rows: dict[str, list[np.ndarray]] = {"single": [], "levels": []}
    singles = values if args.singles is None else [int(v) for v in args.singles.split(",")]
    for size in values:
        levels = 1 + round(math.log2(size / small))
        for name, scales in (("single", 1), ("levels", levels)):
            key = f"{size} {name}"
            if name == "single" and size not in singles and levels > 1:
                continue
            if name == "levels" and levels == 1:
                out["runs"][key] = out["runs"][f"{size} single"]
                rows[name].append(rows["single"][-1])
                continue
            ns = argparse.Namespace(**{**vars(args), "size": size, "steps": args.size_steps})
            r = stylise(imgs["content"], imgs["style"], ns, scales=scales)
            shrunk = content_at(r["image"], resized(r["image"].shape[:2], small))
            out["runs"][key] = {
                "losses": r["losses"],
                "levels": r["levels"],
                "style_at_smallest": m.style(shrunk, imgs["style"]),
                "style_at_size": m.style(r["image"], imgs["style"]),
            }
            rows[name].append(r["image"])
        if f"{size} single" not in out["runs"]:
            continue
        d, s = out["runs"][f"{size} levels"], out["runs"][f"{size} single"]
        figures.append(
            H.figure(
                f"{size} px: style term shrunk to {small} px, {d['levels']} levels from {small} px",
                H.ratio(d["style_at_smallest"], s["style_at_smallest"]),
                "single scale",
                d["style_at_smallest"],
            )
        )
    h = max(small, 256)
    out["pictures"] = {k: _picture(args, f"controls-sizes-{k}.png", v, h) for k, v in rows.items()}
    return out, figures


def resized(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    from napari_nst.core.image.arrays import resized_shape

    return resized_shape((int(shape[0]), int(shape[1])), size)


def hf_energy(image: np.ndarray) -> float:
    """Luminance minus its 3x3 box blur, squared, mean over the top ``SKY`` of the image."""
    y = np.asarray(image, np.float32)[: max(3, round(image.shape[0] * SKY))] @ np.float32([0.299, 0.587, 0.114])
    pad = np.pad(y, 1, mode="edge")
    blur = sum(pad[i : i + y.shape[0], j : j + y.shape[1]] for i in range(3) for j in range(3)) / 9.0
    return float(((y - blur) ** 2).mean())


@contextlib.contextmanager
def _padding(mode: str, weights: str) -> Iterator[None]:
    """The network's convolutions padded by ``mode`` (zeros: as built) inside the block."""
    from napari_nst.core.encoder.vgg import build_vgg
    from napari_nst.core.options import CONTENT_LAYERS, STYLE_LAYERS

    net = build_vgg(H.MODEL, list(dict.fromkeys([*CONTENT_LAYERS, *STYLE_LAYERS])), weights=weights)
    convs = [mod for mod in net.modules() if hasattr(mod, "padding_mode")]
    for c in convs:
        c.padding_mode = mode
    try:
        yield
    finally:
        for c in convs:
            c.padding_mode = "zeros"


DOT_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "avg pooling": {"pooling": "avg"},
    "no relu1_1 Gram": {"style_layers": ("relu2_1", "relu3_1", "relu4_1", "relu5_1")},
    "pixels (pyramid=0)": {"pyramid": 0},
    "tv_weight 1": {"tv_weight": 1.0},
    "tv_weight 10": {"tv_weight": 10.0},
    "reflect padding": {"_padding": "reflect"},
    "The Scream as style (--style2)": {"_style": "style2"},
    "seeded random weights": {"_weights": "random"},
}


def dots(imgs: dict[str, np.ndarray], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ns = argparse.Namespace(**{**vars(args), "size": args.dot_size})
    energy: dict[str, float] = {
        "content": hf_energy(content_at(imgs["content"], resized(imgs["content"].shape, ns.size)))
    }
    crops = []
    for name, extra in DOT_VARIANTS.items():
        opts = dict(extra)
        pad = opts.pop("_padding", None)
        style = imgs[opts.pop("_style", "style")]
        nv = argparse.Namespace(**{**vars(ns), "weights": opts.pop("_weights", ns.weights)})
        ctx = _padding(pad, H.weights_file(nv.weights)) if pad else contextlib.nullcontext()
        with ctx, H.levers(winograd=False) if pad else contextlib.nullcontext():
            r = stylise(imgs["content"], style, nv, **opts)
        energy[name] = hf_energy(r["image"])
        crops.append(r["image"][: max(3, round(r["image"].shape[0] * SKY))])
    figures = [
        H.figure(f"dots in the sky at {ns.size} px: {name}", H.ratio(e, energy["default"]), "default", e)
        for name, e in energy.items()
        if name != "default"
    ]
    pic = _picture(args, "controls-dots.png", crops, 3 * crops[0].shape[0] if crops else None)
    return {"energy": energy, "variants": list(DOT_VARIANTS), "picture": pic}, figures


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        args.size, args.steps, args.sizes, args.size_steps, args.dot_size = 48, 3, "48,96", 3, 48
        args.strengths = "0.1,1,10"
    args.style2 = args.style2 or ("generated:style2" if args.dry_run else "the_scream")
    imgs = {k: H.load_image(getattr(args, k)) for k in ("content", "style", "style2")}
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise H.BenchmarkError(f"unknown part(s) {sorted(unknown)}; the parts are {','.join(PARTS)}")
    fns = {"strip": strip, "blend": blend, "border": border, "sizes": sizes, "dots": dots}
    result: dict[str, Any] = {"figures": []}
    for part in parts:
        H.say(f"strength: {part}")
        out, figs = fns[part](imgs, args)
        result[part] = out
        result["figures"] += [f | {"part": part} for f in figs]
        if hasattr(args, "_checkpoint"):
            args._checkpoint(result)
    if not any(math.isfinite(f["ratio"]) for f in result["figures"] if f["ratio"] is not None):
        raise H.BenchmarkError("no figure with a ratio")
    return result
