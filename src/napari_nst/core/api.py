"""The Python API: ``stylize`` and ``iter_stylize``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Union

import numpy as np

from .images import ArrayLike, to_rgb_float
from .options import Options
from .records import Pastiche, Progress

ImageInput = Union[ArrayLike, str, "os.PathLike[str]"]


def _load(image: ImageInput, name: str, limits: Any) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        from .io import read_image

        image = read_image(image)
    return to_rgb_float(image, limits=limits, name=name)


def _check_weights_path(weights: Any) -> None:
    """Fail early (no torch needed) on a weights path that cannot be a file."""
    from pathlib import Path

    from .errors import WeightsError

    if weights is None:
        return
    p = Path(weights).expanduser()
    if not p.exists():
        raise WeightsError(f"no weights file at {str(p)!r}; check the path")
    if p.is_dir():
        raise WeightsError(f"{str(p)!r} is a directory; pass the weights file (.pth) inside it")


StyleInput = Union[ImageInput, "list[ImageInput]", "tuple[ImageInput, ...]"]


def prepare(content: ImageInput, style: StyleInput, **options: Any) -> tuple[np.ndarray, Any, Options]:
    """Validate everything before any work: the images as float32 RGB and the options.

    ``style``: one image, or a list of them (returned as a list of arrays).
    """
    opts = Options.from_kwargs(**options)
    c = _load(content, "content", opts.content_limits)
    opts.check_size(c.shape[:2])
    _check_weights_path(opts.weights)
    several = isinstance(style, (list, tuple))
    loaded = _load_styles(style, c.shape[:2], opts)
    _check_controls(c, [s.shape[:2] for s in loaded], opts)
    if isinstance(opts.init, np.ndarray):
        to_rgb_float(opts.init, name="init")  # fail early on a bad init array
    return c, (loaded if several else loaded[0]), opts


def _load_styles(style: StyleInput, content_shape: tuple[int, int], opts: Options) -> list[np.ndarray]:
    """One style image or a list of them, loaded and checked against the content and the options."""
    several = isinstance(style, (list, tuple))
    given = list(style) if several else [style]  # type: ignore[arg-type]
    if not given:
        from .errors import OptionError

        raise OptionError("style is an empty list; give at least one style image")
    opts.check_scales(len(given))
    loaded = []
    for i, one in enumerate(given):
        s = _load(one, f"style {i}" if several else "style", opts.style_limits)
        opts.check_style_size(content_shape, s.shape[:2], i)
        loaded.append(s)
    return loaded


def _check_controls(c: np.ndarray, style_shapes: list[tuple[int, int]], opts: Options) -> None:
    """style_blend, regions, region_styles and style_regions against the images (no torch)."""
    from .errors import OptionError
    from .regions import check_mapping, check_regions, check_style_regions, check_styled

    n_styles = len(style_shapes)

    if opts.style_blend is not None:
        if len(opts.style_blend) != n_styles:
            raise OptionError(
                f"style_blend has {len(opts.style_blend)} weights but there "
                f"{'is 1 style image' if n_styles == 1 else f'are {n_styles} style images'}; "
                "give one weight per style"
            )
        if sum(opts.style_blend) <= 0:
            raise OptionError("style_blend's weights are all 0; give at least one a positive weight")
    mapping = check_mapping(opts.region_styles, n_styles)
    if opts.regions is not None:
        opts.regions = check_regions(opts.regions, c.shape[:2])
        check_styled(opts.regions, mapping)
    elif opts.region_styles:
        raise OptionError("region_styles is given but regions is not; give the label image too (regions=...)")
    opts.style_regions = check_style_regions(opts.style_regions, style_shapes, opts.regions is not None)


ResumeInput = Union[Pastiche, str, "os.PathLike[str]"]


Keep = Callable[[Pastiche], None]


class StyleRun(Generator[Progress, None, None]):
    """A run of :func:`iter_stylize` (or :func:`iter_stylize_stack`): iterate it for
    :class:`~napari_nst.core.records.Progress` records; it is a generator (``close()`` stops the
    run within one evaluation).

    :meth:`last` hands back the newest pastiche once the run has ended, however it ended.
    ``records(keep)``: the engine's generator, which calls ``keep`` with that pastiche.
    """

    def __init__(self, records: Callable[[Keep], Iterator[Progress]], settings: dict[str, Any] | None = None) -> None:
        self.settings = settings or {}
        self._last: Pastiche | None = None
        self._inner = records(self._keep)  # a generator: no work before the first next()
        self._records = self._run()

    def _run(self) -> Generator[Progress, None, None]:
        yield from self._inner

    def _keep(self, pastiche: Pastiche) -> None:
        pastiche.settings = self.settings
        self._last = pastiche

    def last(self) -> Pastiche | None:
        """The newest pastiche (:class:`~napari_nst.core.records.Pastiche`: the image of the last
        finished evaluation, its step, losses, level and the run's settings) once the run has
        ended: finished, closed, interrupted (KeyboardInterrupt) or failed after its first
        evaluation. None while the run goes on, or when it ended before its first evaluation.
        Pass it as ``resume=`` to continue the run. A stack's: the unfinished frame's (``frame``),
        None when the run ended between frames (or on a cluster)."""
        return self._last

    def __iter__(self) -> StyleRun:
        return self

    def __next__(self) -> Progress:
        return next(self._records)

    def send(self, value: None) -> Progress:
        return self._records.send(value)

    def throw(  # type: ignore[override]
        self, typ: Any, val: BaseException | None = None, tb: TracebackType | None = None
    ) -> Progress:
        exc = typ if val is None else val
        return self._records.throw(exc() if isinstance(exc, type) else exc)

    def close(self) -> None:
        """Stop the run (a no-op once it has ended); :meth:`last` then has its newest pastiche."""
        self._records.close()
        getattr(self._inner, "close", lambda: None)()  # also when it never started


def run_settings(content: np.ndarray, style: Any, opts: Options) -> dict[str, Any]:
    """What a resumed run must match: options and image digests (:mod:`napari_nst.core.resume`)."""
    from .resume import run_settings as settings

    return settings(opts, content, style)


def _resume_from(resume: ResumeInput | None, settings: dict[str, Any]) -> Pastiche | None:
    """The pastiche to continue from, checked against this run's settings (OptionError naming
    each difference)."""
    if resume is None:
        return None
    from . import resume as saved
    from .errors import OptionError

    if isinstance(resume, (str, os.PathLike)):
        found, where = saved.load(resume), repr(os.fspath(resume))
    elif isinstance(resume, Pastiche):
        found, where = resume, "the given pastiche"
    else:
        raise OptionError(
            f"resume must be a Pastiche (a stopped run's last()) or the path of an interrupted run's output, "
            f"got {type(resume).__name__}"
        )
    saved.check(found, settings, where)
    return found


def iter_stylize(
    content: ImageInput, style: StyleInput, *, resume: ResumeInput | None = None, **options: Any
) -> StyleRun:
    """Run Gatys style transfer, yielding a progress record per objective evaluation.

    Parameters
    ----------
    content, style : array or path
        ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` arrays of any integer or float dtype (mapped to
        [0, 1] as documented in :mod:`napari_nst.core.images`), or image file paths. Never modified.
        ``style`` may be a list of images: their Gram targets are blended (``style_blend``), or
        each paints its own regions (``regions``, ``region_styles``).
    **options
        See :class:`napari_nst.core.options.Options` (size, steps, content_weight, style_weight, ...).
    resume : Pastiche or path, optional
        Continue an interrupted run: a :class:`~napari_nst.core.records.Pastiche` (an earlier
        run's ``last()``) or the path of an output that an interrupted ``napari-nst stylize`` saved
        (its record ``OUT.nst.json`` beside it). The content, style and options must be those it
        was made with (``device`` may differ; OptionError naming each difference otherwise); the
        run makes the remaining evaluations, from the saved full-precision image at its level.
        The optimiser's history (L-BFGS's curvature pairs) starts empty, so the result is close
        to, not the same as, that of a run never stopped.

    Returns
    -------
    StyleRun
        A generator of :class:`~napari_nst.core.records.Progress` records: ``step`` (1-based;
        a resumed run goes on from the saved step), ``total``, ``losses`` (``content``, ``style``,
        ``total`` ...), ``image`` (float32 (H, W, 3) in [0, 1], or None on records skipped by
        ``preview_every``). Closing it stops the run within one evaluation and frees device
        memory; its ``last()`` then hands back the image of the last finished evaluation (also
        after an exception such as KeyboardInterrupt, and after the end).

    Raises (at the call)
    --------------------
    ValueError
        Bad images or options (``ImageError``, ``OptionError``, ``WeightsError``), or a ``resume``
        that does not match, with a message that says what to change. Errors that need the
        device (memory) are raised at the first ``next``.
    """
    c, s, opts = prepare(content, style, **options)
    settings = run_settings(c, s, opts)
    start = _resume_from(resume, settings)

    def records(keep: Keep) -> Iterator[Progress]:
        from .engine import run

        return run(c, s, opts, keep=keep, resume=start)

    return StyleRun(records, settings)


def _run(c: np.ndarray, s: Any, opts: Options) -> Iterator[Any]:
    from .engine import run

    yield from run(c, s, opts)


def stylize(
    content: ImageInput,
    style: StyleInput,
    *,
    progress: bool | None = None,
    resume: ResumeInput | None = None,
    **options: Any,
) -> np.ndarray:
    """The whole run, blocking: the pastiche as float32 ``(H, W, 3)`` in [0, 1].

    Same arguments as :func:`iter_stylize` (``resume`` included), and ``progress``: a tqdm bar on
    stderr with the evaluations, losses and time left, preceded, for a run that will take over
    30 s, by one line "about N s on cpu (estimated after the first evaluations)". None (default):
    shown when stderr is a terminal (not in a log file or a pipe); True/False: always/never.

    A run that ends early (KeyboardInterrupt, an error after its first evaluation) raises as
    usual, and the exception carries the newest pastiche as ``exc.pastiche`` (a
    :class:`~napari_nst.core.records.Pastiche`, or None before the first evaluation): pass it as
    ``resume=`` to continue.
    """
    records = iter_stylize(content, style, resume=resume, **options)  # validates before any work
    if progress is None:
        progress = _is_terminal(sys.stderr)
    image = None
    try:
        with console_progress(bool(progress)) as bar:
            for rec in records:
                if rec.image is not None:
                    image = rec.image
                if bar is not None:
                    bar.update(rec)
    except BaseException as exc:
        records.close()  # the engine hands back its newest pastiche
        exc.pastiche = records.last()  # type: ignore[attr-defined]
        raise
    assert image is not None  # the last record always carries the image
    return np.asarray(image)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextmanager
def console_progress(show: bool) -> Iterator[Any]:
    """A :class:`~napari_nst.core.estimate.ConsoleProgress` on stderr (None when ``show`` is False);
    ``stylize`` and the command line both use it."""
    if not show:
        yield None
        return
    from .engine import split_steps
    from .estimate import ConsoleProgress

    bar = ConsoleProgress(sys.stderr, counts=split_steps)
    try:
        yield bar
    finally:
        bar.close()


# --------------------------------------------------------------------------- stacks


def stack_frames(stack: Any, axis: int = 0, limits: Any = None) -> Any:
    """``stack`` (an array whose ``axis`` runs over frames, a sequence of 2-D images, or the path of
    a multi-page TIFF, a folder of numbered images or a video: :func:`~napari_nst.core.io.read_stack`) as a
    :class:`~napari_nst.core.stack.FrameSource`; raises ``ImageError`` (a ValueError) for a 2-D
    array or one RGB image, an axis out of range, or an empty stack."""
    from .errors import ImageError
    from .frames import FrameSource

    if isinstance(stack, (str, os.PathLike)):  # a multi-page TIFF, a folder of images, a video
        from .io import read_stack

        stack = read_stack(stack)
    if isinstance(stack, (list, tuple)) or hasattr(stack, "shapes"):  # images, or a lazy reader (io.py)
        if len(stack) == 0:
            raise ImageError("the stack has no frames")
        shapes = list(stack.shapes) if hasattr(stack, "shapes") else [np.shape(f) for f in stack]
        sizes = sorted({tuple(sh[:2]) for sh in shapes})
        if len(sizes) > 1:
            first = next(i for i, sh in enumerate(shapes) if tuple(sh[:2]) != tuple(shapes[0][:2]))
            raise ImageError(
                f"the frames differ in size: frame 0 is {shapes[0][0]}x{shapes[0][1]} px, frame {first} "
                f"is {shapes[first][0]}x{shapes[first][1]} px; give frames of one size"
            )
        return FrameSource(stack, limits)
    arr = np.asarray(stack)
    if arr.ndim < 3:
        raise ImageError(
            f"a stack needs a frame axis and two image axes; this array has shape {arr.shape}: "
            "for one image use napari_nst.stylize"
        )
    if not -arr.ndim <= int(axis) < arr.ndim:
        raise ImageError(f"axis={axis} is out of range for a stack of shape {arr.shape}; use 0 to {arr.ndim - 1}")
    frames = np.moveaxis(arr, int(axis), 0)
    if frames.ndim == 3 and frames.shape[-1] in (3, 4):  # frames 3 or 4 px wide: an RGB(A) image
        raise ImageError(
            f"shape {arr.shape} along axis {axis} is {frames.shape[0]} frames of {frames.shape[1:]}: "
            "this looks like one RGB image; use napari_nst.stylize, or put the frame axis first"
        )
    if frames.shape[0] == 0:
        raise ImageError(f"the stack of shape {arr.shape} has no frames along axis {axis}")
    if limits is None and frames.size and not _unit_range(frames):
        colour = frames[..., :-1] if frames.ndim == 4 and frames.shape[-1] in (2, 4) else frames
        lo, hi = float(np.min(colour)), float(np.max(colour))  # one range for all frames: no flicker
        limits = (lo, hi) if hi > lo and np.isfinite(hi - lo) else None
    return FrameSource(frames, limits)


def _unit_range(frames: np.ndarray) -> bool:
    """Whether each frame maps by its dtype alone (uint8, or floats inside [0, 1])."""
    if frames.dtype == np.uint8:
        return True
    return frames.dtype.kind == "f" and bool(np.nanmin(frames) >= 0.0) and bool(np.nanmax(frames) <= 1.0)


def prepare_stack(stack: Any, style: StyleInput, axis: int = 0, **options: Any) -> tuple[Any, Any, Options]:
    """Validate a stack run before any work: frames, style(s) and options (ValueError naming the fix)."""
    opts = Options.from_kwargs(**options)
    frames = stack_frames(stack, axis, opts.content_limits)
    first = frames[0]
    opts.check_size(first.shape[:2])
    _check_weights_path(opts.weights)
    several = isinstance(style, (list, tuple))
    styles = _load_styles(style, first.shape[:2], opts)
    shapes = [s.shape[:2] for s in styles]
    regions = opts.regions
    per_frame = regions is not None and np.ndim(regions) == 3
    if per_frame:  # every frame's labels, then frame 0's as one image's (with style_blend and the rest)
        regions = _check_region_stack(regions, len(frames), first.shape[:2], len(styles), opts)
        opts.regions = regions[0]
    _check_controls(first, shapes, opts)  # one label image: the same regions in every frame
    if per_frame:
        opts.regions = regions
    if isinstance(opts.init, np.ndarray):
        to_rgb_float(opts.init, name="init")
    return frames, (styles if several else styles[0]), opts


def _check_region_stack(regions: Any, n: int, shape: tuple[int, int], n_styles: int, opts: Options) -> np.ndarray:
    """``regions`` (N, H, W): one label image per frame (frame axis first), e.g. a Labels layer of
    the stack's dims; OptionError naming the fix otherwise."""
    from .errors import OptionError
    from .regions import check_mapping, check_regions, check_styled

    arr = np.asarray(regions)
    if arr.shape[0] != n:
        raise OptionError(
            f"regions has {arr.shape[0]} label images (shape {arr.shape}) but the stack has {n} frames; give "
            "one per frame (frame axis first), or one (H, W) label image for every frame"
        )
    mapping = check_mapping(opts.region_styles, n_styles)
    check_regions(arr[0], shape)  # dtype and frame size
    for t in range(n):
        try:
            check_styled(arr[t], mapping)
        except OptionError as exc:
            raise OptionError(f"frame {t}: {exc}") from None
    return arr


def iter_stylize_stack(
    stack: Any,
    style: StyleInput,
    axis: int = 0,
    *,
    start: int = 0,
    previous: Any = None,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    chunk_frames: int | None = None,
    overlap: int | None = None,
    in_order: bool = False,
    **options: Any,
) -> StyleRun:
    """Stylise every frame of ``stack``, each consistent with the one before; yield per evaluation.

    ``stack``: an array whose ``axis`` runs over frames (or z slices) and whose other axes are one
    image each as :func:`iter_stylize` takes it ((N, H, W), (N, H, W, 3), (N, H, W, 4), any dtype;
    integer stacks are mapped with one range for all frames), a sequence of such images, or the
    path of a multi-page TIFF, a folder of numbered images or a video (``napari-nst[video]``).
    ``style``: one image or a list (``style_blend``); ``regions``: one (H, W) label image for
    every frame, or (N, H, W), one per frame (frame axis first); ``preserve_color`` keeps each
    frame's own colours. Records are :class:`~napari_nst.core.records.Progress` with
    ``frame``/``frames``; a frame's last record (``step == total``) carries its pastiche. Frame t
    starts from frame t-1's pastiche carried along the optical flow, kept there by the temporal
    term (``temporal_weight``; 0 = independent frames); later frames get ``frame_steps``
    evaluations. ``start``/``previous``: continue a stopped stack at frame ``start`` from the
    pastiche of frame ``start - 1``.
    Closing the generator stops at once. Errors in the input raise ValueError at the call.

    On a dask.distributed cluster (``client``, a ``scheduler`` address, or a LocalCluster of
    ``workers`` workers started here): the frames are split into contiguous chunks on different
    workers (``chunk_frames`` each, None: one chunk per worker), each chunk warm-started within
    itself, ``overlap`` frames cross-faded at each chunk border (None: 2); one record per frame,
    its last, as frames finish (``in_order``: in frame order). See docs/distributed.md.

    Returns a :class:`StyleRun`: when the run ends before its last frame is finished (closed,
    KeyboardInterrupt, an error), its ``last()`` is the unfinished frame's newest pastiche
    (in this process; None on a cluster).
    """
    frames, s, opts = prepare_stack(stack, style, axis, **options)
    if not 0 <= int(start) < len(frames):
        raise ValueError(f"start={start} is not a frame of this stack of {len(frames)}; use 0 to {len(frames) - 1}")
    if int(start) > 0 and previous is None:
        raise ValueError("start > 0 needs previous=, the pastiche of frame start - 1 (or start at 0)")
    if client is not None or scheduler or workers:
        from .stack_distributed import run_on_cluster

        where = dict(client=client, scheduler=scheduler, workers=workers)
        prev = None if previous is None else to_rgb_float(previous, name="previous")
        cluster = run_on_cluster(
            frames,
            s,
            opts,
            **where,
            start=int(start),
            previous=prev,
            chunk_frames=chunk_frames,
            overlap=overlap,
            in_order=in_order,
        )
        return StyleRun(lambda keep: cluster)
    return StyleRun(lambda keep: _run_stack(frames, s, opts, int(start), previous, keep))


def _run_stack(
    frames: Any, s: Any, opts: Options, start: int, previous: Any, keep: Keep | None = None
) -> Iterator[Any]:
    from .stack import run_stack

    yield from run_stack(frames, s, opts, start, previous, keep)


def stylize_stack(stack: Any, style: StyleInput, axis: int = 0, **options: Any) -> np.ndarray:
    """The whole stack, blocking: float32 ``(N, h, w, 3)`` in [0, 1] (frame axis first).

    Same arguments as :func:`iter_stylize_stack`.
    """
    out: np.ndarray | None = None
    for rec in iter_stylize_stack(stack, style, axis, **options):
        if rec.step == rec.total and rec.image is not None:
            if out is None:
                out = np.zeros((rec.frames, *rec.image.shape), np.float32)
            out[rec.frame] = rec.image
    assert out is not None
    return out
