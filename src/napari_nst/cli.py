"""Command line: ``napari-nst stylize CONTENT STYLE -o OUT.png`` and ``napari-nst demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .core.options import INITS, OPTIMIZERS, PRECISIONS, Options

_DEFAULTS = Options()


def _layers(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_stylize(sub: Any) -> None:
    p = sub.add_parser(
        "stylize", help="stylise an image file with another's style",
        description="Gatys neural style transfer: paint CONTENT in the style of STYLE.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("content", help="content image file (PNG, JPEG, TIFF incl. 16-bit, ...)")
    p.add_argument("style", help="style image file")
    p.add_argument("-o", "--output", required=True, help="output file (.png, .jpg, .tif = 16-bit)")
    p.add_argument("--size", type=int, default=_DEFAULTS.size, help="long edge of the output, pixels")
    p.add_argument("--steps", type=int, default=_DEFAULTS.steps, help="objective evaluations")
    p.add_argument("--content-weight", type=float, default=None, help="a (default: automatic, see README)")
    p.add_argument("--style-weight", type=float, default=None, help="b (default: automatic, see README)")
    p.add_argument("--tv-weight", type=float, default=_DEFAULTS.tv_weight, help="total-variation weight (0 = off)")
    p.add_argument("--content-layers", type=_layers, default=_DEFAULTS.content_layers, help="comma-separated")
    p.add_argument("--style-layers", type=_layers, default=_DEFAULTS.style_layers, help="comma-separated")
    p.add_argument("--style-layer-weights", type=_floats, default=None, help="comma-separated w_l (default equal, sum 1)")
    p.add_argument("--model", choices=("vgg19", "vgg16"), default=_DEFAULTS.model)
    p.add_argument("--weights", default=None,
                   help="VGG weights .pth (default: $NAPARI_NST_WEIGHTS, else torchvision's ImageNet weights)")
    p.add_argument("--pooling", choices=("max", "avg"), default=_DEFAULTS.pooling)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=_DEFAULTS.optimizer)
    p.add_argument("--init", default=_DEFAULTS.init, help=f"{' or '.join(INITS)}, or an image file to start from")
    p.add_argument("--scales", type=int, default=_DEFAULTS.scales, help="coarse-to-fine levels (1 = single scale)")
    p.add_argument("--pyramid", type=int, default=_DEFAULTS.pyramid,
                   help="coarser layers the optimiser moves the image through (0 = the pixels, as in the paper)")
    p.add_argument("--style-scale", type=float, default=_DEFAULTS.style_scale, help="style image size relative to the output")
    p.add_argument("--device", default=_DEFAULTS.device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=PRECISIONS, default=_DEFAULTS.precision)
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also write every N-th evaluation's image as OUT-NNNNN.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from .core.io import read_image

    init: Any = args.init
    if init not in INITS:
        init = read_image(init)
    opts = dict(
        size=args.size, steps=args.steps, content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, content_layers=args.content_layers, style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights, model=args.model, weights=args.weights,
        pooling=args.pooling, optimizer=args.optimizer, init=init, scales=args.scales,
        pyramid=args.pyramid, style_scale=args.style_scale, device=args.device, precision=args.precision, seed=args.seed,
    )
    if args.save_every < 0:
        raise ValueError("--save-every must be 0 (off) or a positive number of evaluations")
    opts["preview_every"] = args.save_every if args.save_every else args.steps
    return opts


def _stylize(args: argparse.Namespace) -> int:
    from .core.api import iter_stylize
    from .core.errors import NonFiniteLossError
    from .core.io import output_format, read_image, write_image

    out = Path(args.output)
    for given in (args.content, args.style):
        if Path(given).exists() and out.exists() and out.resolve() == Path(given).resolve():
            raise ValueError(f"the output {str(out)!r} is one of the input images; choose another file name")
    output_format(out)  # a bad extension or folder fails now, not after the whole run
    content, style = read_image(args.content), read_image(args.style)
    records = iter_stylize(content, style, **_options(args))  # validates before any work
    bar = _progress_bar(args)
    last = None
    try:
        for rec in records:
            if rec.image is not None:
                last = rec.image
                if args.save_every and rec.step % args.save_every == 0 and rec.step != rec.total:
                    write_image(out.with_name(f"{out.stem}-{rec.step:05d}{out.suffix}"), rec.image)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in rec.losses.items()}, refresh=False)
    except KeyboardInterrupt:
        if last is not None:
            write_image(out, last)
            print(f"napari-nst: stopped; the last pastiche is saved to {out}", file=sys.stderr)
        return 130
    except NonFiniteLossError as exc:
        if exc.last_image is not None:
            partial = out.with_name(f"{out.stem}-partial{out.suffix}")
            write_image(partial, exc.last_image)
            raise ValueError(f"{exc} (saved to {partial})") from None
        raise
    finally:
        if bar is not None:
            bar.close()
    assert last is not None
    write_image(out, last)
    if not args.quiet:
        print(f"saved {out} ({last.shape[1]}x{last.shape[0]}; losses {rec.losses}; weights {rec.weights})")
    return 0


def _progress_bar(args: argparse.Namespace) -> Any:
    if args.quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=args.steps, unit="eval", dynamic_ncols=True, file=sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(run=args.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-nst", description="Neural style transfer for napari and the shell.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stylize(sub)
    d = sub.add_parser("demo", help="open napari with sample images and the Style Transfer widget")
    d.add_argument("--run", action="store_true", help="press Run at once")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _stylize(args) if args.command == "stylize" else _demo(args)
    except (ValueError, MemoryError, RuntimeError, OSError) as exc:
        msg = " ".join(str(exc).split())  # one line
        print(f"napari-nst: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
