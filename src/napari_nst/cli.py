"""Command line: ``napari-nst stylize CONTENT STYLE [STYLE ...] -o OUT.png``, ``napari-nst preview CONTENT
STYLE [STYLE ...] -o OUT.png``, ``napari-nst batch CONTENT... --style STYLE -o OUTDIR``, ``napari-nst tune``
and ``napari-nst demo``.

Ctrl-C (SIGINT, exit status 130) and SIGTERM (143) end a run keeping its work: the newest pastiche
is written to the output with its record for ``--resume`` (core/resume.py).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_nst.core.errors import MissingExtraError, OptionError, Terminated
from napari_nst.core.options import INITS, MAX_STEPS, STACK_OPTIONS, spec, specs
from napari_nst.core.spec import Spec

#: ``--save-every auto``: save the newest pastiche (and its record for --resume) this often (s) ...
AUTO_SAVE_S = 60.0
#: ... in a run estimated (after its first evaluations) to take longer than this (s)
AUTO_SAVE_OVER_S = 120.0
#: exit status after SIGINT (Ctrl-C) and SIGTERM: 128 + the signal's number, as shells report it
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


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
    "mask": "MASK_FILE",
}


def add_option_flags(
    parser: argparse.ArgumentParser, stack: bool = False, only: Sequence[str] | None = None, title: str | None = None
) -> None:
    """One flag per engine option, generated from :func:`specs` (absent flags keep the defaults);
    the stack-only options (:data:`STACK_OPTIONS`) only where ``stack``; ``only``: just these options."""
    group = parser.add_argument_group(title or "style-transfer options (see README's Options table)")
    for sp in specs():
        if not sp.cli or (sp.name in STACK_OPTIONS and not stack) or (only is not None and sp.name not in only):
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


def _version() -> str:
    from napari_nst import __version__

    return __version__


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
        type=_save_every,
        default=SaveEvery(seconds=AUTO_SAVE_S, auto=True),
        metavar="N|TIME|auto",
        help="save the newest pastiche to OUT while the run goes on, so that a killed run loses little: N = "
        "every N-th evaluation, each also as OUT-NNNNN.png; a time such as 90s or 5min = that often; auto = "
        f"every {AUTO_SAVE_S:.0f} s in a run estimated to take over {AUTO_SAVE_OVER_S / 60:.0f} min; 0 = only at "
        "the end. Each save, and Ctrl-C or SIGTERM, also writes the record --resume needs: OUT.nst.json and a "
        "full-precision copy OUT.nst-NNNNNNNN.npz (removed when the run finishes). Default: auto.",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run whose record is beside OUT (OUT.nst.json): the same images and "
        "options, the remaining evaluations from the saved full-precision image",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_option_flags(p)


@dataclass(frozen=True)
class SaveEvery:
    """``--save-every``: every ``steps`` evaluations, or every ``seconds`` (``auto``: only in a
    long run); all zero: only at the end."""

    steps: int = 0
    seconds: float = 0.0
    auto: bool = False


_TIME_UNITS = {"": None, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _save_every(text: str) -> SaveEvery:
    t = text.strip().lower()
    if t == "auto":
        return SaveEvery(seconds=AUTO_SAVE_S, auto=True)
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([a-z]*)", t)
    unit = _TIME_UNITS.get(m.group(2), 0.0) if m else 0.0
    if m is None or unit == 0.0 or (unit is None and "." in m.group(1)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a number of evaluations (50), a time (90s, 5min), auto, or 0 (only at the end)"
        )
    if unit is None:
        return SaveEvery(steps=int(m.group(1)))
    seconds = float(m.group(1)) * unit
    if seconds <= 0:
        return SaveEvery()
    return SaveEvery(seconds=seconds)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line (the others keep Options' defaults)."""
    from napari_nst.core.image.files import read_image

    opts = {sp.name: getattr(args, sp.name) for sp in specs() if sp.cli and hasattr(args, sp.name)}
    if isinstance(opts.get("init"), str) and opts["init"] not in INITS:
        opts["init"] = read_image(opts["init"])  # an image file to start from
    if opts.get("regions") is not None:
        opts["regions"] = _read_labels(opts["regions"])
    if opts.get("style_regions") is not None:
        opts["style_regions"] = [None if p is None else _read_labels(p) for p in opts["style_regions"]]
    if opts.get("mask") is not None:  # nonzero = restyle
        from napari_nst.core.image.masks import read_mask

        opts["mask"] = read_mask(opts["mask"])
    every = args.save_every if isinstance(args.save_every, SaveEvery) else SaveEvery()
    if every.steps:
        opts["preview_every"] = every.steps
    elif every.seconds:  # the engine copies an image at most this often (and the last of each level)
        opts["preview_every"], opts["preview_interval"] = 1, every.seconds
    else:  # only the final image is wanted (an interrupted run's comes from the engine's hand-back)
        opts["preview_every"] = opts.get("steps") or MAX_STEPS
    return opts


def _read_labels(path: str) -> Any:
    """A label image file as an integer (H, W) array (a napari Labels layer saved as PNG or TIFF)."""
    import numpy as np

    from napari_nst.core.image.files import read_image

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
    from napari_nst.core.api import iter_stylize
    from napari_nst.core.image.files import output_format, read_image

    out = Path(args.output)
    for given in (args.content, *args.style, *([args.mask] if getattr(args, "mask", None) else [])):
        if Path(given).exists() and out.exists() and out.resolve() == Path(given).resolve():
            raise ValueError(f"the output {str(out)!r} is one of the input images; choose another file name")
    output_format(out)  # a bad extension or folder fails now, not after the whole run
    content = read_image(args.content)
    styles = [read_image(p) for p in args.style]
    style = styles if len(styles) > 1 else styles[0]
    if not args.resume:
        _note_unfinished(out)
    records = iter_stylize(content, style, resume=out if args.resume else None, **_options(args))  # validates first
    return _drive(records, out, args)


def _note_unfinished(out: Path) -> None:
    from napari_nst.core.resume import saved_step

    found = saved_step(out)
    if found is not None:
        print(
            f"napari-nst: note: {out} holds an interrupted run (step {found[0]}/{found[1]}); starting afresh "
            "(--resume would continue it)",
            file=sys.stderr,
        )


def _drive(records: Any, out: Path, args: argparse.Namespace) -> int:
    """Run to the end with the progress bar (and its up-front estimate); write the pastiche, and
    the newest one with its record while the run goes on (``--save-every``) and when it ends early."""
    from napari_nst.core import resume
    from napari_nst.core.image.files import write_image
    from napari_nst.core.progress import RunEstimate, console_progress

    every: SaveEvery = args.save_every
    last = rec = None
    note, saved_at = "", 0.0
    estimate: RunEstimate | None = None
    try:
        with console_progress(not args.quiet) as bar:
            for rec in records:
                if rec.note and rec.note != note:  # e.g. tiles chosen because the whole image does not fit
                    note = rec.note
                    print(f"napari-nst: note: {note}", file=sys.stderr)
                if every.auto:
                    estimate = estimate or RunEstimate()
                    estimate.add(rec)
                if rec.image is not None:
                    last = rec
                    if rec.step < rec.total and _save_due(every, rec, saved_at, estimate):
                        with _signals_held():  # a save is never cut in half; Ctrl-C acts right after it
                            if every.steps:
                                write_image(out.with_name(f"{out.stem}-{rec.step:05d}{out.suffix}"), rec.image)
                            resume.save(out, resume.from_record(rec, records.settings))
                        saved_at = rec.elapsed
                if bar is not None:
                    bar.update(rec)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        return _ended_early(records, out, exc)
    except Exception as exc:
        kept = _keep_newest(records, out)
        raise _with(exc, kept) from None
    assert last is not None and rec is not None and last.image is not None
    write_image(out, last.image)
    resume.clear(out)  # finished: nothing is left to resume
    if not args.quiet:
        print(f"saved {out} ({last.image.shape[1]}x{last.image.shape[0]}; losses {rec.losses}; weights {rec.weights})")
    return 0


def _save_due(every: SaveEvery, rec: Any, saved_at: float, estimate: Any) -> bool:
    if every.steps:
        return bool(rec.step % every.steps == 0)
    if not every.seconds or rec.elapsed - saved_at < every.seconds:
        return False
    if every.auto:
        total = estimate.total_seconds() if estimate is not None else None
        return total is not None and total > AUTO_SAVE_OVER_S
    return True


def _where(p: Any) -> str:
    """``step 84/300`` (and the level and working size of a coarse-to-fine run's coarser levels)."""
    text = f"step {p.step}/{p.total}"
    if p.levels > 1:
        text += f" (level {p.level}/{p.levels}, {p.shape[1]}x{p.shape[0]} px)"
    return text


def _ended_early(records: Any, out: Path, exc: BaseException) -> int:
    """Ctrl-C or SIGTERM: the newest pastiche and its record to ``out``; the exit status."""
    code, what = (EXIT_SIGTERM, "terminated") if isinstance(exc, Terminated) else (EXIT_SIGINT, "interrupted")
    kept = _keep_newest(records, out)
    if kept is None:
        print(f"napari-nst: {what} before the first evaluation finished; nothing to save", file=sys.stderr)
    else:
        print(f"napari-nst: {what} at {kept}: saved {out}; --resume continues the run", file=sys.stderr)
    return code


def _keep_newest(records: Any, out: Path) -> str | None:
    """Stop the run, write its newest pastiche to ``out`` with its record; where it was (None: no
    finished evaluation, nothing written)."""
    from napari_nst.core import resume

    records.close()  # the engine hands back its newest pastiche
    newest = records.last()
    if newest is None:
        return None
    with _signals_held(reraise=False):
        resume.save(out, newest)
    return _where(newest)


def _with(exc: Exception, kept: str | None) -> Exception:
    """The error, with where the pastiche so far is kept, as the exception family main() reports."""
    if kept is None:
        return exc
    return _with_text(exc, f"the pastiche of {kept} is saved to the output; --resume continues the run")


def _with_text(exc: Exception, text: str) -> Exception:
    for family in (ValueError, MemoryError, OSError, RuntimeError):
        if isinstance(exc, family):
            return family(f"{exc} ({text})")
    return exc


@contextmanager
def _signals_held(reraise: bool = True) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (a file is never half written), then act
    (``reraise``) or are dropped (the command is ending anyway)."""
    got: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        got.append(signum)

    try:
        before = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals cannot arrive here anyway
        yield
        return
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    if got and reraise:
        raise Terminated() if signal.SIGTERM in got else KeyboardInterrupt()


def _add_preview(sub: Any) -> None:
    from napari_nst.core.preview import CONTROLS, LIMITS

    p = sub.add_parser(
        "preview",
        help="an instant preview: a feed-forward network paints CONTENT in the style of STYLE in about a second",
        description="An instant pastiche from an arbitrary-style feed-forward network (Ghiasi et al. 2017; "
        'needs napari-nst[preview]: pip install "napari-nst[preview]"). Not the optimisation: a first look, '
        "painted at 384 px and resized to --size. See docs/preview.md.",
    )
    p.add_argument("content", help="content image file (PNG, JPEG, TIFF incl. 16-bit, ...)")
    p.add_argument(
        "style",
        nargs="+",
        metavar="STYLE",
        help="style image file; several blend their styles (--style-blend) or paint regions (--regions, "
        "--region-styles)",
    )
    p.add_argument("-o", "--output", required=True, help="output file (.png, .jpg, .tif = 16-bit)")
    p.add_argument(
        "--size",
        type=_arg_type(spec("size")),
        metavar="N",
        help="long edge of the output in pixels (default: the content's, at most 1024)",
    )
    add_option_flags(p, only=[n for n in (*CONTROLS, *LIMITS) if n != "size"], title="controls (as for stylize)")


def _preview(args: argparse.Namespace) -> int:
    from napari_nst.core.image.files import output_format, read_image, write_image
    from napari_nst.core.preview import CONTROLS, LIMITS, preview

    out = _checked_output(args.output, (args.content, *args.style))
    output_format(out)
    opts = {n: getattr(args, n) for n in (*CONTROLS, *LIMITS) if hasattr(args, n)}
    if opts.get("regions") is not None:
        opts["regions"] = _read_labels(opts["regions"])
    if opts.get("mask") is not None:  # nonzero = restyle
        from napari_nst.core.image.masks import read_mask

        opts["mask"] = read_mask(opts["mask"])
    styles = [read_image(p) for p in args.style]
    image = preview(read_image(args.content), styles if len(styles) > 1 else styles[0], size=args.size, **opts)
    write_image(out, image)
    print(f"saved {out} ({image.shape[1]}x{image.shape[0]}; instant preview)")
    return 0


def _checked_output(output: str, inputs: Sequence[str]) -> Path:
    """The output path, refused when it is one of the input images (which are never overwritten)."""
    out = Path(output)
    for given in inputs:
        if Path(given).exists() and out.exists() and out.resolve() == Path(given).resolve():
            raise ValueError(f"the output {str(out)!r} is one of the input images; choose another file name")
    return out


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
        required=True,
        metavar="STYLE",
        help="the style image file (one; several styles per batch are a feature still to come)",
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
        help="LocalCluster workers; 0 = sequentially in this process (default: by machine, see docs/benchmarks.md)",
    )
    p.add_argument("--threads-per-worker", type=int, metavar="N", help="LocalCluster threads per worker (default: 1)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip images that OUTDIR/batch.json records as done whose file is unchanged",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no line per finished image")
    p.set_defaults(save_every=0)  # only the final image of each run is wanted
    add_option_flags(p)


def _batch(args: argparse.Namespace) -> int:
    from napari_nst.core.distributed.batch import batch, paths

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
            progress=not args.quiet,
            **_options(args),
        )
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(
            f"napari-nst: {'terminated' if terminated else 'interrupted'}; the finished images and "
            f"{Path(args.output) / 'batch.json'} are kept (an image stopped half-way is marked interrupted there, "
            "its pastiche so far saved): rerun with --resume to continue",
            file=sys.stderr,
        )
        return EXIT_SIGTERM if terminated else EXIT_SIGINT
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
        "frame (or one label image for every frame); --mask a multi-page TIFF, one mask per frame (or one image "
        "for every frame).",
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
    add_option_flags(p, stack=True)


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
    from napari_nst.core.api import iter_stylize_stack
    from napari_nst.core.image.stacks import FolderFrames, read_stack, read_stack_labels, stack_writer

    frames = read_stack(args.input)
    regions = vars(args).pop("regions", None)  # a stack of labels, not the one image _options reads
    mask = vars(args).pop("mask", None)  # a multi-page TIFF (one mask per frame) or one image
    names = frames.names if isinstance(frames, FolderFrames) else None
    writer = stack_writer(args.output, names, fps=args.fps or getattr(frames, "fps", None))
    writer.check_inputs(args.input, *args.style, *([mask] if mask else []))
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be 1 or more (without it the stack runs in this process)")
    options = _options(args)
    if regions is not None:
        options["regions"] = read_stack_labels(regions)
    if mask is not None:
        from napari_nst.core.image.masks import read_mask

        options["mask"] = read_mask(mask, stack=True)
    style = args.style if len(args.style) > 1 else args.style[0]
    cluster = dict(scheduler=args.scheduler, workers=args.workers, chunk_frames=args.chunk_frames, overlap=args.overlap)
    # validates first; frames in order for the writer
    records = iter_stylize_stack(frames, style, axis=args.axis, in_order=True, **cluster, **options)
    return _drive_stack(records, writer, args)


def _drive_stack(records: Any, writer: Any, args: argparse.Namespace) -> int:
    """Write each frame as it is finished; Ctrl-C, SIGTERM or an error keep every finished frame
    and the unfinished frame's newest pastiche (beside the output)."""
    from napari_nst.core.progress import ConsoleProgress

    bar = None if args.quiet else ConsoleProgress(sys.stderr)  # the one bar (stylize's and batch's too)
    rec, note = None, ""
    try:
        for rec in records:
            if rec.note and rec.note != note:
                note = rec.note
                print(f"napari-nst: note: {note}", file=sys.stderr)
            if rec.step == rec.total and rec.image is not None:
                if hasattr(writer, "frames"):
                    writer.frames = rec.frames  # a video: its PNG frames go once all are in it
                writer.write(rec.frame, rec.image)
            if bar is not None:
                bar.update(rec)
    except KeyboardInterrupt as exc:
        writer.close()
        code, what = (EXIT_SIGTERM, "terminated") if isinstance(exc, Terminated) else (EXIT_SIGINT, "interrupted")
        partial = _keep_frame(records, args.output)
        print(
            f"napari-nst: {what}{partial[0] if partial else ''}; {writer.written} finished frame(s) saved to "
            f"{_kept(writer)}" + (f"; the frame's pastiche so far: {partial[1]}" if partial else ""),
            file=sys.stderr,
        )
        return code
    except Exception as exc:
        writer.close()  # the finished frames are kept
        partial = _keep_frame(records, args.output)
        if partial is None:
            raise
        raise _with_text(exc, f"{partial[0].strip()}: the frame's pastiche so far is saved to {partial[1]}") from None
    except BaseException:
        writer.close()
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


def partial_frame_path(output: str | Path, frame: int) -> Path:
    """Where a stopped stack keeps its unfinished frame's pastiche: beside the output, as
    ``<output stem>-frame-NNNNN-partial.png`` (never inside it, where it would pass for a frame)."""
    out = Path(output).expanduser()
    return out.with_name(f"{out.stem if out.suffix else out.name}-frame-{frame:05d}-partial.png")


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
    from napari_nst.core.compute import tune
    from napari_nst.core.options import Options

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


def _keep_frame(records: Any, output: str) -> tuple[str, Path] | None:
    """Stop a stack run; write its unfinished frame's newest pastiche beside ``output``:
    (`` at frame F/N, step S/T``, the file), or None (no unfinished frame with an evaluation)."""
    from napari_nst.core.image.files import write_image

    records.close()
    newest = records.last() if hasattr(records, "last") else None
    if newest is None:
        return None
    path = partial_frame_path(output, newest.frame)
    with _signals_held(reraise=False):
        write_image(path, newest.image)
    return f" at frame {newest.frame + 1}/{newest.frames}, {_where(newest)}", path


def _demo(args: argparse.Namespace) -> int:
    from napari_nst._demo import run_demo

    try:
        return run_demo(run=args.run)
    except KeyboardInterrupt:  # napari re-raises Ctrl-C once its window is closed and the run ended
        print("napari-nst: interrupted (Ctrl-C); napari closed", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-nst", description="Neural style transfer for napari and the shell.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stylize(sub)
    _add_preview(sub)
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
            "preview": _preview,
            "stylize-stack": _stylize_stack,
            "batch": _batch,
            "tune": _tune,
        }
        with _sigterm_raises(args.command != "demo"), _announce_measuring(not getattr(args, "quiet", False)):
            return {**commands, "demo": _demo}[args.command](args)
    except (ValueError, MemoryError, RuntimeError, OSError, MissingExtraError) as exc:
        msg = as_flags(" ".join(str(exc).split()))  # one line, in the command line's words
        print(f"napari-nst: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # before the run started (reading the images, importing torch ...)
        terminated = isinstance(exc, Terminated)
        print(f"napari-nst: {'terminated' if terminated else 'interrupted'}; nothing to save yet", file=sys.stderr)
        return EXIT_SIGTERM if terminated else EXIT_SIGINT


@contextmanager
def _announce_measuring(show: bool) -> Iterator[None]:
    """Print, before a first run on this machine measures its compute plan, what it times
    (core/compute/tune.py's ``announce``), so that the pause before the first step is explained."""
    logger = logging.getLogger("napari_nst.tune")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("napari-nst: %(message)s"))
    level = logger.level
    if show:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


@contextmanager
def _sigterm_raises(install: bool) -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) while the command runs, so that a
    job scheduler ending the job gets what Ctrl-C gets: the work done so far saved, no traceback."""
    before = None
    if install:
        try:
            before = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread
            before = None
    try:
        yield
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


# --------------------------------------------------------------------------- messages in the command line's words


def as_flags(message: str) -> str:
    """An engine message (shared with the Python API) in the command line's words: ``name=value``
    of an option becomes ``--flag value`` (``regions=...``: ``--regions LABELS_FILE``), a bare option
    name with an underscore becomes its flag, and one-word names where they follow a verb of
    advice (``increase size`` -> ``increase --size``). Made from :func:`specs`, so every option is
    covered; messages are written once, for both."""
    flags = {sp.name: sp for sp in specs() if sp.cli}

    def assignment(m: re.Match[str]) -> str:
        sp = flags[m.group(1)]
        value = m.group(2).strip("'\"")
        if value in ("...", ""):
            value = _METAVARS.get(sp.kind, "VALUE")
        elif value == "None":
            value = "auto" if sp.nullable else value
        return f"{sp.flag} {value}"

    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    out = re.sub(rf"(?<![\w.-])({names})=('[^']*'|\"[^\"]*\"|\.\.\.|[^\s,;:)]+)", assignment, message)
    out = re.sub(
        rf"(?<![\w.-])({names})(?![\w=(-])",
        lambda m: flags[m.group(1)].flag if "_" in m.group(1) else m.group(1),
        out,
    )
    one_word = "|".join(sorted((re.escape(n) for n in flags if "_" not in n), key=len, reverse=True))
    out = re.sub(
        rf"\b(increase|lower|raise|use|give|set|leave|drop)( fewer| more)? ({one_word})\b(?![\w=(])",
        lambda m: f"{m.group(1)}{m.group(2) or ''} {flags[m.group(3)].flag}",
        out,
    )
    out = re.sub(rf"(?:^|(?<=: )|(?<=; ))({one_word}) must\b", lambda m: f"{flags[m.group(1)].flag} must", out)
    out = re.sub(r"\bleave (--[\w-]+) empty\b", r"leave out \1", out)
    out = re.sub(r"\(leave out resume\)", "(leave out --resume)", out)
    return out


if __name__ == "__main__":
    sys.exit(main())
