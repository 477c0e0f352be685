"""The automatic style/content balance against the textbook's (issue 13).

The engine's automatic weights are ``a = 1 / L_content(0)`` and ``b = STYLE_BALANCE / L_style(0)``
(core/optim/engine.py), so its objective is proportional to ``L_content + STYLE_BALANCE * (L_content(0) /
L_style(0)) * L_style``. The textbook run (``a = 1``, ``b = 100``: the seed's formulas with the
weights of the issue's reference run) is the same objective with ``STYLE_BALANCE = 100 *
L_style(0) / L_content(0) = 5000 a / b`` (``a``, ``b``: the automatic weights a run reports at
``STYLE_BALANCE = 50``). ``--weights-only`` computes that textbook-equivalent balance for every
photo/painting pair (one evaluation each); the full mode runs each pair with the textbook weights
and with the automatic ones at each ``--balance``, and reports

* ``style ratio``: the pastiche's style term over the content photo's (the first record's style
  term, of the photo itself): how far the Grams moved toward the painting's;
* ``content ratio``: the pastiche's content term over the painting's (the painting resized to the
  content's shape, scored by the same content term): how far the pastiche moved away from the photo
  (0: the photo's features, 1: as far as the painting itself);

and writes the pastiches as one strip per pair (``--strips``) to look at.

    nice python benchmarks/balance.py --weights-only
    nice python benchmarks/balance.py --balance 50 10 --pairs tubingen:starry_night astronaut:the_scream

Writes docs/balance.json (``--out``) and prints Markdown tables. Photos: the shared Tübingen and
scikit-image's astronaut (a face), chelsea (an animal), coffee (a still life) and rocket (a
landscape with sky); paintings: the shared Starry Night and The Scream; the shared VGG16 weights.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHARED = ROOT.parent / "shared"
WEIGHTS = str(SHARED / "weights" / "vgg16-hed-features.pth")
PHOTOS = ("tubingen", "astronaut", "chelsea", "coffee", "rocket")
PAINTINGS = ("starry_night", "the_scream")


def image(name: str) -> np.ndarray:
    from napari_nst.core.image.arrays import to_rgb_float
    from napari_nst.core.image.files import read_image

    if (SHARED / "images" / f"{name}.jpg").exists():
        return to_rgb_float(read_image(SHARED / "images" / f"{name}.jpg"))
    import skimage.data

    return to_rgb_float(getattr(skimage.data, name)())


def first_record(content: np.ndarray, style: np.ndarray, size: int, **kw: object) -> object:
    import napari_nst

    return next(iter(napari_nst.iter_stylize(content, style, size=size, steps=1, weights=WEIGHTS, device="cpu", **kw)))


def textbook_balance(content: np.ndarray, style: np.ndarray, size: int) -> float:
    """``5000 a / b`` with the automatic weights of STYLE_BALANCE = 50."""
    rec = first_record(content, style, size)
    return 5000.0 * rec.weights["content"] / rec.weights["style"] * (50.0 / _balance())


def _balance() -> float:
    from napari_nst.core.optim import engine

    return float(engine.STYLE_BALANCE)


def run(content: np.ndarray, style: np.ndarray, size: int, steps: int, **kw: object) -> tuple[dict, np.ndarray]:
    import napari_nst

    first = last = None
    for rec in napari_nst.iter_stylize(
        content, style, size=size, steps=steps, weights=WEIGHTS, device="cpu", seed=0, preview_every=steps, **kw
    ):
        first = first or rec
        last = rec
    assert first is not None and last is not None and last.image is not None
    return {"first": first.losses, "last": last.losses, "weights": last.weights}, last.image


def painting_content_term(content: np.ndarray, style: np.ndarray, size: int) -> float:
    """The content term of the painting, resized to the content's working shape."""
    import torch

    from napari_nst.core.image.arrays import resized_shape
    from napari_nst.core.image.tensors import resize, to_numpy, to_tensor

    shape = resized_shape(content.shape[:2], size)
    painting = to_numpy(resize(to_tensor(style, torch.device("cpu")), shape))
    rec = first_record(content, style, size, init=painting, content_weight=1.0, style_weight=1.0)
    return float(rec.losses["content"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--weights-only", action="store_true")
    ap.add_argument("--balance", type=float, nargs="*", default=[50.0])
    ap.add_argument("--pairs", nargs="*", default=[f"{p}:{s}" for p in PHOTOS for s in PAINTINGS])
    ap.add_argument("--strips", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "balance.json"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    import torch

    from napari_nst.core.optim import engine

    if args.threads:
        torch.set_num_threads(args.threads)
    out = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    out.setdefault("load_average", []).append(os.getloadavg())
    pairs = [tuple(p.split(":")) for p in args.pairs]
    if args.weights_only:
        tb = {f"{p}:{s}": textbook_balance(image(p), image(s), args.size) for p, s in pairs}
        out["textbook_balance"] = tb
        print("| pair | STYLE_BALANCE equal to a = 1, b = 100 |\n| --- | --- |")
        print("\n".join(f"| {k} | {v:.3g} |" for k, v in tb.items()))
        vals = list(tb.values())
        print(f"median {statistics.median(vals):.3g}, geometric mean {float(np.exp(np.mean(np.log(vals)))):.3g}")
    else:
        runs = out.setdefault("runs", {})
        for p, s in pairs:
            c, st = image(p), image(s)
            ref = painting_content_term(c, st, args.size)
            configs = {"textbook": dict(content_weight=1.0, style_weight=100.0)}
            configs.update({f"auto {b:g}": dict(balance=b) for b in args.balance})
            tiles = []
            for name, kw in configs.items():
                engine.STYLE_BALANCE = float(kw.pop("balance", 50.0))
                t = time.process_time()
                res, img = run(c, st, args.size, args.steps, **kw)
                res.update(
                    style_ratio=res["last"]["style"] / res["first"]["style"],
                    content_ratio=res["last"]["content"] / ref,
                    cpu_s=time.process_time() - t,
                )
                runs[f"{p}:{s}:{name}"] = res
                print(f"{p}:{s} {name}: style ratio {res['style_ratio']:.4f}, content ratio {res['content_ratio']:.4f}")
                tiles.append(img)
            _strip(tiles, Path(args.strips) / f"balance-{p}-{s}.png")
    out["load_average"].append(os.getloadavg())
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


def _strip(tiles: list[np.ndarray], path: Path) -> None:
    from napari_nst.core.image.files import write_image

    h = min(t.shape[0] for t in tiles)
    gap = np.ones((h, 4, 3), np.float32)
    row = np.concatenate([x for t in tiles for x in (t[:h], gap)][:-1], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, row)


if __name__ == "__main__":
    sys.exit(main())
