"""The yardstick: Gatys style transfer the textbook way (the PyTorch tutorial's recipe).

On napari-nst's objective (the seed's formulas, ``a * L_content + b * L_style``), with the same
network, weights, images, size and ``a``, ``b`` as napari-nst:

* float32 everywhere, default (contiguous) memory format;
* the network run up to the last loss layer at every evaluation;
* ``torch.optim.LBFGS([x])`` with default settings (lr 1, max_iter 20, history 100, no line
  search), started from the content image, ``optimizer.step(closure)`` called until the wanted
  number of evaluations is reached;
* the image clamped to [0, 1] at the start of each evaluation (``input_img.data.clamp_(0, 1)``).

Also here: :func:`setup`, which loads the images and network the same way for both sides, and
:func:`objective`, the one float32 function that scores every result of every benchmark.

Run ``python benchmarks/baseline.py --size 256 --steps 300`` for a single baseline run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_nst.core.encoder import vgg  # noqa: E402
from napari_nst.core.encoder.vgg import VGGFeatures, build_vgg  # noqa: E402
from napari_nst.core.image.arrays import resized_shape, to_rgb_float  # noqa: E402
from napari_nst.core.image.files import read_image  # noqa: E402
from napari_nst.core.objective.losses import content_loss, gram, gram_loss  # noqa: E402
from napari_nst.core.optim import engine  # noqa: E402
from napari_nst.core.options import CONTENT_LAYERS, STYLE_LAYERS  # noqa: E402

SHARED = Path(os.environ.get("NAPARI_NST_SHARED", ROOT.parent / "shared"))
WEIGHTS = str(SHARED / "weights" / "vgg16-hed-features.pth")
CONTENT = str(SHARED / "images" / "tubingen.jpg")
STYLE = str(SHARED / "images" / "starry_night.jpg")
MODEL = "vgg16"
LAYERS = list(dict.fromkeys([*CONTENT_LAYERS, *STYLE_LAYERS]))


@dataclass
class Problem:
    """One benchmark problem: images at the working size, float32 targets and the weights a, b."""

    content: np.ndarray  # full-resolution float32 (H, W, 3), what napari-nst is given
    style: np.ndarray
    size: int
    shape: tuple[int, int]
    net: VGGFeatures  # float32 network (cpu unless moved)
    content_t: torch.Tensor  # (1, 3, h, w) at ``shape``
    style_t: torch.Tensor
    p: dict[str, torch.Tensor]  # content features (float32)
    grams: dict[str, torch.Tensor]  # style Gram matrices (float32)
    nm: dict[str, tuple[int, int]]
    a: float
    b: float
    device: torch.device


def setup(
    size: int, device: str = "cpu", content: str = CONTENT, style: str = STYLE, weights: str = WEIGHTS
) -> Problem:
    """Images, network and targets exactly as napari-nst prepares its finest level (float32)."""
    dev = torch.device(device)
    c = to_rgb_float(read_image(content), name="content")
    s = to_rgb_float(read_image(style), name="style")
    shape = resized_shape(c.shape[:2], size)
    net = build_vgg(MODEL, LAYERS, weights=weights, pooling="max").to(dev)
    # the yardstick's own network (same weight tensors): build_vgg hands out one cached network per
    # layer set, and napari-nst's runs in the same process set its pooling and convolutions per run
    vgg._NETS.clear()
    # contiguous: at full size resize() returns the permuted (strided) tensor, and torch's L-BFGS
    # needs a gradient it can .view(-1)
    ct = engine.resize(engine.to_tensor(c, dev), shape).contiguous()
    st = engine.resize(engine.to_tensor(s, dev), resized_shape(s.shape[:2], size)).contiguous()
    with torch.no_grad():
        cf, sf = net(ct), net(st)
    p = {n: cf[n].float() for n in CONTENT_LAYERS}
    grams = {n: gram(sf[n]) for n in STYLE_LAYERS}
    nm = {n: (cf[n].shape[1], cf[n].shape[2] * cf[n].shape[3]) for n in STYLE_LAYERS}
    layer_w = {n: 1.0 / len(STYLE_LAYERS) for n in STYLE_LAYERS}

    class _Auto:  # napari-nst's automatic a and b (Options with content/style_weight None)
        content_weight = None
        style_weight = None

    a, b = engine.resolve_weights(_Auto, p, grams, layer_w, nm)  # type: ignore[arg-type]
    return Problem(c, s, size, shape, net, ct, st, p, grams, nm, a, b, dev)


def textbook_gram(features: torch.Tensor) -> torch.Tensor:
    """``F F^T`` through plain autograd (two matrix products in backward), as the tutorial does;
    napari-nst's ``losses.gram`` has a one-product backward since issue 11, the yardstick keeps this."""
    f = features.reshape(features.shape[-3], -1)
    return f @ f.T


def _loss(prob: Problem, feats: dict[str, torch.Tensor]) -> torch.Tensor:
    lc = sum(content_loss(feats[n], prob.p[n]) for n in CONTENT_LAYERS)
    ls = sum(gram_loss(textbook_gram(feats[n]), prob.grams[n], *prob.nm[n]) for n in STYLE_LAYERS) / len(STYLE_LAYERS)
    return prob.a * lc + prob.b * ls


def objective(prob: Problem, image: np.ndarray | torch.Tensor) -> float:
    """THE score: float32 ``a*L_content + b*L_style`` of ``image`` ((H, W, 3) or (1, 3, H, W)) at
    the problem's shape, clamped to [0, 1] (resized first if it has another shape)."""
    with torch.no_grad():
        x = image if isinstance(image, torch.Tensor) else engine.to_tensor(np.asarray(image, np.float32), prob.device)
        x = engine.resize(x.to(prob.device).float().clamp(0, 1), prob.shape)
        return float(_loss(prob, prob.net(x)))


def run_baseline(prob: Problem, steps: int, trace: list | None = None) -> tuple[torch.Tensor, float]:
    """The tutorial's loop for ``steps`` evaluations; returns the image and seconds taken.

    ``trace`` (if given) receives ``(evaluations, seconds, objective)`` after every evaluation;
    the objective there is the closure's value (of the clamped image, float32, the same formula).
    """
    x = prob.content_t.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x])  # the defaults: lr=1, max_iter=20, history_size=100
    count = [0]
    t0 = time.perf_counter()

    def closure() -> torch.Tensor:
        with torch.no_grad():
            x.clamp_(0, 1)
        optimizer.zero_grad()
        loss = _loss(prob, prob.net(x))
        loss.backward()
        count[0] += 1
        if trace is not None:
            trace.append((count[0], time.perf_counter() - t0, float(loss.detach())))
        return loss

    while count[0] < steps:
        before = count[0]
        # stop after exactly ``steps`` evaluations (the last .step() does fewer iterations)
        group = optimizer.param_groups[0]
        group["max_iter"] = min(20, steps - count[0])
        group["max_eval"] = group["max_iter"] * 5 // 4
        optimizer.step(closure)
        if count[0] == before:  # converged by the optimiser's tolerances: nothing more to do
            break
    if prob.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        x.clamp_(0, 1)
    return x.detach(), seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    prob = setup(args.size, args.device)
    x, sec = run_baseline(prob, args.steps)
    print(
        f"baseline {prob.shape}: {args.steps} evaluations in {sec:.2f} s "
        f"({sec / args.steps * 1000:.1f} ms/eval), objective {objective(prob, x):.5g} (a={prob.a:.4g}, b={prob.b:.4g})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
