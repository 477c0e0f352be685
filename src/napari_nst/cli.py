"""Command line: ``napari-nst stylize CONTENT STYLE [STYLE ...] -o OUT.png``, ``napari-nst batch CONTENT...
--style STYLE -o OUTDIR``, ``napari-nst tune`` and ``napari-nst demo``."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .core.errors import OptionError
from .core.options import INITS, MAX_STEPS, specs
from .core.spec import Spec


def _arg_type(sp: Spec) -> Any:
    """argparse's ``type`` for an option: the option's own text parser."""

    def parse(text: str) -> Any:
        try:
            return sp.parse(text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = sp.kind  # argparse names the type in its messages
    return parse


def _help(sp: Spec) -> str:
    """The option's documentation, with its default in words unless the text says it already."""
    extra = f" Choices: {', '.join(sp.choices)}." if sp.choices and sp.kind != "choice" else ""
    default = "" if sp.nullable and "None" in sp.help else f" Default: {sp.default_text}."
    return f"{sp.help}{extra}{default}".replace("%", "%%")


_METAVARS = {
    "int": "N",
    "seed": "N",
    "float": "X",
    "auto_float": "X",
    "names": "LAYER,...",
    "floats": "W,...",
    "path": "FILE",
    "device": "DEVICE",
    "init": "INIT",
    "limits": "LO,HI",
    "log_float": "X",
    "regions": "LABELS_FILE",
    "mapping": "LABEL:STYLE,...",
    "bytes": "BYTES",
    "scales": "X[,X...]",
    "style_regions": "LABELS_FILE[,...]",
}


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per engine option, generated from :func:`specs` (absent flags keep the defaults)."""
    group = parser.add_argument_group("style-transfer options (see README's Options table)")
    for sp in specs():
        if not sp.cli:
            continue
        metavar = "{" + ",".join(sp.choices) + "}" if sp.kind == "choice" and sp.choices else _METAVARS[sp.kind]
        group.add_argument(
            sp.flag,
            dest=sp.name,
            type=_arg_type(sp),
            default=argparse.SUPPRESS,
            choices=sp.choices if sp.kind == "choice" else None,
            metavar=metavar,
            help=_help(sp),
        )


def _add_stylize(sub: Any) -> None:
    p = sub.add_parser(
        "stylize",
        help="stylise an image file with another's style",
        description="Gatys neural style transfer: paint CONTENT in the style of STYLE (several STYLEs: "
        "blended, or one per region).",
    )
    p.add_argument("content", help="content image file (PNG, JPEG, TIFF incl. 16-bit, ...)")
    p.add_argument(
        "style",
        nargs="+",
        metavar="STYLE",
        help="style image file; several blend their styles (--style-blend) or paint regions "
        "(--regions, --region-styles)",
    )
    p.add_argument("-o", "--output", required=True, help="output file (.png, .jpg, .tif = 16-bit)")
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        metavar="N",
        help="also write every N-th evaluation's image as OUT-NNNNN.png (default: 0, off)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_option_flags(p)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line (the others keep Options' defaults)."""
    from .core.io import read_image

    opts = {sp.name: getattr(args, sp.name) for sp in specs() if sp.cli and hasattr(args, sp.name)}
    if isinstance(opts.get("init"), str) and opts["init"] not in INITS:
        opts["init"] = read_image(opts["init"])  # an image file to start from
    if opts.get("regions") is not None:
        opts["regions"] = _read_labels(opts["regions"])
    if opts.get("style_regions") is not None:
        opts["style_regions"] = [None if p is None else _read_labels(p) for p in opts["style_regions"]]
    if args.save_every < 0:
        raise ValueError("--save-every must be 0 (off) or a positive number of evaluations")
    if args.save_every:
        opts["preview_every"] = args.save_every
    else:  # only the final image is wanted
        opts["preview_every"] = opts.get("steps") or MAX_STEPS
    return opts


def _read_labels(path: str) -> Any:
    """A label image file as an integer (H, W) array (a napari Labels layer saved as PNG or TIFF)."""
    import numpy as np

    from .core.io import read_image

    arr = read_image(path)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and all(np.array_equal(arr[..., 0], arr[..., k]) for k in (1, 2)):
        arr = arr[..., 0]  # a gray label image saved as RGB(A)
    if arr.ndim != 2:
        raise ValueError(
            f"the label image {path!r} has shape {arr.shape}; give a single-channel label image (integer "
            "labels, e.g. a napari Labels layer saved as PNG or TIFF)"
        )
    if arr.dtype.kind == "f" and np.array_equal(arr, np.round(arr)):
        arr = arr.astype(np.int64)
    return arr


def _stylize(args: argparse.Namespace) -> int:
    from .core.api import iter_stylize
    from .core.io import output_format, read_image

    out = Path(args.output)
    for given in (args.content, *args.style):
        if Path(given).exists() and out.exists() and out.resolve() == Path(given).resolve():
            raise ValueError(f"the output {str(out)!r} is one of the input images; choose another file name")
    output_format(out)  # a bad extension or folder fails now, not after the whole run
    content = read_image(args.content)
    styles = [read_image(p) for p in args.style]
    records = iter_stylize(content, styles if len(styles) > 1 else styles[0], **_options(args))  # validates first
    return _drive(records, out, args)


def _drive(records: Any, out: Path, args: argparse.Namespace) -> int:
    """Run to the end with the progress bar (and its up-front estimate); write the pastiche."""
    from .core.api import console_progress
    from .core.errors import NonFiniteLossError
    from .core.io import write_image

    last = rec = None
    note = ""
    try:
        with console_progress(not args.quiet) as bar:
            for rec in records:
                if rec.note and rec.note != note:  # e.g. tiles chosen because the whole image does not fit
                    note = rec.note
                    print(f"napari-nst: note: {note}", file=sys.stderr)
                if rec.image is not None:
                    last = rec.image
                    if args.save_every and rec.step % args.save_every == 0 and rec.step != rec.total:
                        write_image(out.with_name(f"{out.stem}-{rec.step:05d}{out.suffix}"), rec.image)
                if bar is not None:
                    bar.update(rec)
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
    assert last is not None and rec is not None
    write_image(out, last)
    if not args.quiet:
        print(f"saved {out} ({last.shape[1]}x{last.shape[0]}; losses {rec.losses}; weights {rec.weights})")
    return 0


def _add_batch(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="stylise many images with one style (on a dask cluster if there is one)",
        description="Stylise every CONTENT image with STYLE and the same options: OUTDIR/<content stem>.png and "
        "OUTDIR/batch.json (one entry per image). Runs on a dask.distributed cluster: --scheduler's, "
        "else a LocalCluster on this machine; sequentially here without napari-nst[distributed]. "
        "Exit status 0 when every image is done, 1 when any failed (listed). See docs/distributed.md.",
    )
    p.add_argument("content", nargs="+", help="content image files, globs (quoted) or folders (their image files)")
    p.add_argument(
        "--style",
        nargs="+",
        required=True,
        metavar="STYLE",
        help="the style image file (exactly one for now; several styles are a feature still to come)",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument(
        "--format",
        choices=("png", "tif"),
        default="png",
        help="output files: png (8-bit) or tif (16-bit). Default: png.",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a running dask scheduler, e.g. tcp://host:8786 (default: a LocalCluster on this machine)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="LocalCluster workers; 0 = sequentially in this process (default: by machine, see docs/batch_results.md)",
    )
    p.add_argument("--threads-per-worker", type=int, metavar="N", help="LocalCluster threads per worker (default: 1)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip images that OUTDIR/batch.json records as done whose file is unchanged",
    )
    p.add_argument("--quiet", action="store_true", help="no line per finished image")
    p.set_defaults(save_every=0)  # only the final image of each run is wanted
    add_option_flags(p)


def _batch(args: argparse.Namespace) -> int:
    from .core.batch import batch, paths

    if args.workers is not None and args.workers < 0:
        raise ValueError("--workers must be 0 (sequentially here) or a positive number")
    if args.threads_per_worker is not None and args.threads_per_worker < 1:
        raise ValueError("--threads-per-worker must be a positive number")

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        results = batch(
            args.content,
            args.style,
            args.output,
            format=args.format,
            resume=args.resume,
            scheduler=args.scheduler,
            workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            log=log,
            **_options(args),
        )
    except KeyboardInterrupt:
        print(
            f"napari-nst: stopped; finished images and {Path(args.output) / 'batch.json'} are kept: rerun with "
            "--resume to continue",
            file=sys.stderr,
        )
        return 130
    failed = paths(results, "failed")
    done = len(results) - len(failed)
    skipped = sum(r.skipped for r in results)
    print(
        f"napari-nst: {done} of {len(results)} done"
        + (f" ({skipped} kept from before)" if skipped else "")
        + f"; {Path(args.output) / 'batch.json'}",
        file=sys.stderr,
    )
    if failed:
        errors = {r.content: r.error for r in results if r.status == "failed"}
        print(f"napari-nst: {len(failed)} failed:", file=sys.stderr)
        for name in failed:
            print(f"  {name}: {errors[name]}", file=sys.stderr)
        return 1
    return 0


def _add_stylize_stack(sub: Any) -> None:
    p = sub.add_parser(
        "stylize-stack",
        help="stylise every frame of a stack or time-lapse, consistently",
        description="Stylise each frame of IN (a multi-page TIFF, a folder of numbered images, or a video with "
        "napari-nst[video]) in the style of STYLE; frame t starts from frame t-1's pastiche carried along the "
        "optical flow (README: Stacks and time-lapses). --regions takes a multi-page TIFF of labels, one page per "
        "frame (or one label image for every frame).",
    )
    p.add_argument(
        "input",
        metavar="IN",
        help="multi-page TIFF (N, H, W[, 3]), a folder of numbered images, or a video (.mp4, .mov, .mkv, .avi, .webm)",
    )
    p.add_argument(
        "style",
        nargs="+",
        metavar="STYLE",
        help="style image file; several blend their styles (--style-blend) or paint regions (--regions)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="OUT.tif: a multi-page 16-bit TIFF; OUT.mp4 (.mov, .mkv, .avi, .webm): a video, its finished frames "
        "kept as PNG files in OUT.mp4.frames until it is complete; any other name: a folder of PNG files",
    )
    p.add_argument("--axis", type=int, default=0, help="the TIFF's frame axis (default: 0)")
    p.add_argument(
        "--fps",
        type=float,
        metavar="X",
        help="frames per second of a video OUT (default: the input video's, else 25)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_cluster_flags(p)
    p.set_defaults(save_every=0)
    add_option_flags(p)


def _add_cluster_flags(p: argparse.ArgumentParser) -> None:
    """stylize-stack on a dask cluster (docs/distributed.md): chunks of frames on different workers."""
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on this dask scheduler's workers (e.g. tcp://host:8786): contiguous chunks of frames on "
        "different workers, each warm-started within itself (default: this process, frame after frame)",
    )
    p.add_argument("--workers", type=int, metavar="N", help="run on a LocalCluster of N worker processes started here")
    p.add_argument(
        "--chunk-frames", type=int, metavar="N", help="frames per chunk on a cluster (default: one chunk per worker)"
    )
    p.add_argument(
        "--overlap",
        type=int,
        metavar="N",
        help="frames made by both chunks at each chunk border and cross-faded, to soften the jump there (default: 2)",
    )


def _stylize_stack(args: argparse.Namespace) -> int:
    from .core.api import iter_stylize_stack
    from .core.io import FolderFrames, read_stack, read_stack_labels, stack_writer

    frames = read_stack(args.input)
    regions = vars(args).pop("regions", None)  # a stack of labels, not the one image _options reads
    names = frames.names if isinstance(frames, FolderFrames) else None
    writer = stack_writer(args.output, names, fps=args.fps or getattr(frames, "fps", None))
    writer.check_inputs(args.input, *args.style)
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be 1 or more (without it the stack runs in this process)")
    options = _options(args)
    if regions is not None:
        options["regions"] = read_stack_labels(regions)
    style = args.style if len(args.style) > 1 else args.style[0]
    cluster = dict(scheduler=args.scheduler, workers=args.workers, chunk_frames=args.chunk_frames, overlap=args.overlap)
    # validates first; frames in order for the writer
    records = iter_stylize_stack(frames, style, axis=args.axis, in_order=True, **cluster, **options)
    return _drive_stack(records, writer, args)


def _drive_stack(records: Any, writer: Any, args: argparse.Namespace) -> int:
    """Write each frame as it is finished; Ctrl-C keeps every finished frame."""
    bar, rec, note = None, None, ""
    try:
        for rec in records:
            if bar is None and not args.quiet:
                from tqdm import tqdm

                bar = tqdm(total=rec.stack_total, unit="eval", dynamic_ncols=True, file=sys.stderr)
            if rec.note and rec.note != note:
                note = rec.note
                print(f"napari-nst: note: {note}", file=sys.stderr)
            if rec.step == rec.total and rec.image is not None:
                if hasattr(writer, "frames"):
                    writer.frames = rec.frames  # a video: its PNG frames go once all are in it
                writer.write(rec.frame, rec.image)
            if bar is not None:
                bar.set_postfix_str(f"frame {rec.frame + 1}/{rec.frames}", refresh=False)
                bar.update(rec.stack_step - bar.n)
    except KeyboardInterrupt:
        writer.close()
        print(f"napari-nst: stopped; {writer.written} finished frame(s) saved to {_kept(writer)}", file=sys.stderr)
        return 130
    except BaseException:
        writer.close()  # the finished frames are kept
        raise
    finally:
        if bar is not None:
            bar.close()
    writer.close()
    if not args.quiet and rec is not None:
        print(f"saved {writer.written} frames to {_kept(writer)}")
    return 0


def _kept(writer: Any) -> str:
    return str(getattr(writer, "kept", writer.out))


def _add_tune(sub: Any) -> None:
    p = sub.add_parser(
        "tune",
        help="measure the fastest way to run the network on this machine (and show it)",
        description="Time the candidate compute plans (precision, memory layout, convolution algorithm, pooling) "
        "on one forward + backward of the network at --size on --device, keep the table for later runs at that "
        "size class (first runs on a machine measure it themselves) and print it. --show prints the tables kept "
        "without measuring. NAPARI_NST_TUNE=0 makes runs use the built-in rules instead.",
    )
    p.add_argument("--size", type=int, metavar="N", help="long edge of the runs to measure for (default: by device)")
    p.add_argument("--device", default="auto", help="device to measure on (default: auto)")
    p.add_argument("--model", choices=("vgg19", "vgg16"), help="network (default: the weights file's, else vgg19)")
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="the network's weights (default: $NAPARI_NST_WEIGHTS, else untrained weights: timings do not depend "
        "on them, and nothing is downloaded)",
    )
    p.add_argument("--budget", type=float, default=None, metavar="S", help="seconds of timing (default: 2.5)")
    p.add_argument("--show", action="store_true", help="print the tables kept, measure nothing")


def _tune(args: argparse.Namespace) -> int:
    from .core import tune
    from .core.options import Options

    if args.show:
        tables = tune.tables()
        if not tables:
            print(f"no measured plans kept in {tune.cache_path()}; run 'napari-nst tune' to measure")
            return 0
        for kept in tables:
            print(kept.text() + "\n")
        print(f"(kept in {tune.cache_path()})")
        return 0
    if args.budget is not None and not args.budget > 0:
        raise ValueError("--budget must be a positive number of seconds")
    opts = Options.from_kwargs(size=args.size, device=args.device, model=args.model, weights=args.weights)
    print("napari-nst: measuring the compute plans (a few seconds) ...", file=sys.stderr, flush=True)
    table = tune.tune_options(opts, budget=args.budget or tune.BUDGET)
    if table is None:
        print("nothing to measure on this device: runs use the built-in rules")
        return 0
    print(table.text())
    print(
        f"kept in {tune.cache_path()}: runs in this size class use the plan marked 'auto' (or, with an explicit "
        "precision, the one marked with it)"
        + ("; NAPARI_NST_TUNE=0 is set, so runs use the built-in rules for now" if not tune.enabled() else "")
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(run=args.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-nst", description="Neural style transfer for napari and the shell.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stylize(sub)
    _add_batch(sub)
    _add_stylize_stack(sub)
    _add_tune(sub)
    d = sub.add_parser("demo", help="open napari with sample images and the Style Transfer widget")
    d.add_argument("--run", action="store_true", help="press Run at once")
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, and answer an unknown flag with the subcommand's usage and the closest flag."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = _subparsers(parser)[args.command]
        known = [o for a in sub._actions for o in a.option_strings]
        hints = []
        for word in unknown:
            close = difflib.get_close_matches(word.split("=")[0], known, n=1) if word.startswith("-") else []
            if close:
                hints.append(f"did you mean {close[0]!r} for {word!r}?")
        sub.error(f"unrecognized arguments: {' '.join(unknown)}" + ("; " + "; ".join(hints) if hints else ""))
    return args


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        commands = {
            "stylize": _stylize,
            "stylize-stack": _stylize_stack,
            "batch": _batch,
            "tune": _tune,
            "demo": _demo,
        }
        return commands[args.command](args)
    except (ValueError, MemoryError, RuntimeError, OSError) as exc:
        msg = " ".join(str(exc).split())  # one line
        print(f"napari-nst: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
