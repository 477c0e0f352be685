"""Where a coarse-to-fine level should start (issue 15, the 1024 px stall): the objective per
evaluation of ONE level at ``fine`` px from different starts, after a ``coarse`` px level run once.

One torch thread, ``precision=auto``, seed 0, Tübingen and The Starry Night, the shared VGG16, the
engine's own loop (``napari_nst.iter_stylize`` with ``init=`` the start). Objective against
evaluations does not depend on the machine's load; docs/coarse_to_fine.md quotes the results.

    TAG=_60 nice python benchmarks/c2f_level_start.py coarse 512 1024 60     # the coarse level
    TAG=_60 nice python benchmarks/c2f_level_start.py up 512 1024 16 '{"pyramid": 0}'
    TAG=_60 nice python benchmarks/c2f_level_start.py hf 512 1024 40          # c + up(x - down(c))

Modes: ``coarse`` (saves the coarse result), ``content`` (single scale), ``up`` (the coarse result
enlarged, as before the fix), ``hf`` (the fix); extra JSON: ``pyramid``, ``mask`` (zero the
gradient of pixels at 0 or 1 that points outwards). One line per evaluation: step, objective,
fraction of pixels at 0 or 1, steps backtracked, steps cut by the trust region, process CPU s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from napari_nst.core.api import prepare  # noqa: E402
from napari_nst.core.image.files import read_image  # noqa: E402
from napari_nst.core.optim import engine  # noqa: E402

SHARED = ROOT.parent / "shared"
WEIGHTS = str(SHARED / "weights" / "vgg16-hed-features.pth")
WORK = Path(os.environ.get("WORK", "/tmp/c2f2"))
BOX: dict[str, Any] = {}


def _patch(mask: bool) -> None:
    """Keep the optimiser for the diagnostics; ``mask``: projected gradient at the bounds."""
    make = engine._make_optimizer

    def mk(opts: Any, var: Any) -> Any:
        BOX["o"], BOX["var"] = make(opts, var), var
        return BOX["o"]

    engine._make_optimizer = mk  # type: ignore[assignment]
    if mask:
        objective = engine._objective

        def obj(ctx: Any, terms: Any) -> Any:
            f = objective(ctx, terms)

            def g(x: torch.Tensor) -> Any:
                total, parts, grad = f(x)
                return total, parts, grad.masked_fill(((x <= 0) & (grad > 0)) | ((x >= 1) & (grad < 0)), 0.0)

            return g

        engine._objective = obj  # type: ignore[assignment]


def run(content: Any, style: Any, size: int, steps: int, init: Any, pyramid: int, extra: dict[str, Any]) -> Any:
    c, s, opts = prepare(content, style, size=size, steps=steps, weights=WEIGHTS, device="cpu", seed=0,
                         preview_every=10**6, init=init, pyramid=pyramid)  # fmt: skip
    opts.extra.update(extra)
    rows, t0, last = [], time.process_time(), None
    for r in engine.run(c, s, opts):
        v = BOX["var"].image().detach()
        sat = float(((v <= 0) | (v >= 1)).float().mean())
        o = BOX["o"]
        rows.append([r.step, round(r.losses["total"], 4), round(sat, 3), o.steps_back, o.steps_shortened,
                     round(time.process_time() - t0, 1)])  # fmt: skip
        print(rows[-1], flush=True)
        last = r
    return rows, last.image if last is not None else None


def hf_start(content: Any, c_img: np.ndarray, fine: int) -> np.ndarray:
    """``c + up(x - down(c))`` at ``fine`` px, as ``engine._next_level_start`` computes it."""
    c, _, o = prepare(content, content, size=fine, weights=WEIGHTS)
    shape = o.level_shapes(c.shape[:2])[-1]
    ct = engine.resize(engine.to_tensor(c, torch.device("cpu")), shape)
    change = engine.to_tensor(c_img, torch.device("cpu")) - engine.resize(ct, c_img.shape[:2])
    x = ct + F.interpolate(change, size=shape, mode="bilinear", align_corners=False)
    return x.clamp(0, 1)[0].permute(1, 2, 0).numpy().copy()


def main() -> None:
    torch.set_num_threads(1)
    mode, coarse, fine, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    tag = os.environ.get("TAG", "")
    WORK.mkdir(parents=True, exist_ok=True)
    content = read_image(SHARED / "images" / "tubingen.jpg")
    style = read_image(SHARED / "images" / "starry_night.jpg")
    _patch(bool(extra.pop("mask", False)))
    pyramid = int(extra.pop("pyramid", 4))
    if mode == "coarse":
        rows, img = run(content, style, coarse, n, "content", 4, extra)
        np.save(WORK / f"coarse_{coarse}_{fine}{tag}.npy", img)
    else:
        c_img = np.load(WORK / f"coarse_{coarse}_{fine}{tag}.npy")
        init: Any = {"content": "content", "up": c_img}.get(mode)
        if init is None:
            init = hf_start(content, c_img, fine)
        rows, _ = run(content, style, fine, n, init, pyramid, extra)
    (WORK / f"{mode}_{coarse}_{fine}{tag}.json").write_text(json.dumps(rows) + "\n")


if __name__ == "__main__":
    main()
