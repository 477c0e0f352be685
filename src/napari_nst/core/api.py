"""The Python API: ``stylize``, ``iter_stylize`` and their stack versions (inputs checked in :mod:`.inputs`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Any, Union

import numpy as np

from napari_nst.core.image.arrays import to_rgb_float
from napari_nst.core.inputs import ImageInput, StyleInput, prepare, prepare_stack
from napari_nst.core.live import STACK_REFUSAL, LiveChannel
from napari_nst.core.options import Options
from napari_nst.core.preview import preview
from napari_nst.core.progress import console_progress
from napari_nst.core.records import Pastiche, Progress

__all__ = ["iter_stylize", "iter_stylize_stack", "prepare", "prepare_stack", "preview", "stylize", "stylize_stack"]


ResumeInput = Union[Pastiche, str, "os.PathLike[str]"]


Keep = Callable[[Pastiche], None]


class StyleRun(Generator[Progress, None, None]):
    """A run of :func:`iter_stylize` (or :func:`iter_stylize_stack`): iterate it for
    :class:`~napari_nst.core.records.Progress` records; it is a generator (``close()`` stops the
    run within one evaluation).

    :meth:`last` hands back the newest pastiche once the run has ended, however it ended.
    :meth:`update` changes the objective's options while the run goes on.
    ``records(keep)``: the engine's generator, which calls ``keep`` with that pastiche;
    ``live``: the run's channel for :meth:`update` (None: the run refuses updates, ``refused``
    says why); ``settings_of``: the settings of the options as updated (what a resumed run must match).
    """

    def __init__(
        self,
        records: Callable[[Keep], Iterator[Progress]],
        settings: dict[str, Any] | None = None,
        live: LiveChannel | None = None,
        settings_of: Callable[[Options], dict[str, Any]] | None = None,
        refused: str = "",
    ) -> None:
        self.settings = settings or {}
        self._live, self._settings_of, self._refused = live, settings_of, refused
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

    def update(self, **options: Any) -> int:
        """Change options while the run goes on (thread-safe: call it from any thread).

        Only the objective's options: ``style_strength``, ``style_weight``, ``content_weight``,
        ``style_layer_weights``, ``style_blend``, ``preserve_color``, ``region_styles``,
        ``tv_weight`` (:data:`napari_nst.core.live.LIVE_OPTIONS`). They are checked here, at once
        (:class:`~napari_nst.core.errors.OptionError` naming the fix; an option that decides the
        image's size, the network or the run's start, such as ``size``, ``steps``, ``model``,
        ``device`` or ``precision``, is refused: stop the run and start a new one). The engine
        applies them before its next evaluation and goes on from the current image, with a fresh
        optimiser (L-BFGS's history belongs to the old objective). The first record made under
        them carries them as ``update`` (several updates within one evaluation: merged) and this
        call's number as ``update_id``, at its ``step``; it always carries an image. Returns the
        number (1, 2, ...). No effect once the run has ended.
        """
        if self._live is None:
            from napari_nst.core.errors import OptionError

            raise OptionError(self._refused or "this run does not take options while it runs")
        number = self._live.send(options)
        if self._settings_of is not None:
            self.settings = self._settings_of(self._live.options.current)
        return number

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
    from napari_nst.core.resume import run_settings as settings

    return settings(opts, content, style)


def _resume_from(resume: ResumeInput | None, settings: dict[str, Any]) -> Pastiche | None:
    """The pastiche to continue from, checked against this run's settings (OptionError naming
    each difference)."""
    if resume is None:
        return None
    from napari_nst.core import resume as saved
    from napari_nst.core.errors import OptionError

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
        [0, 1] as documented in :mod:`napari_nst.core.image.arrays`), or image file paths. Never modified.
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
        after an exception such as KeyboardInterrupt, and after the end). Its ``update(**options)``
        changes the objective's options during the run (docs/live.md).

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
    live = LiveChannel(opts, len(s) if isinstance(s, list) else 1)

    def records(keep: Keep) -> Iterator[Progress]:
        from napari_nst.core.optim.engine import run

        return run(c, s, opts, keep=keep, resume=start, updates=live.updates)

    return StyleRun(records, settings, live, lambda o: run_settings(c, s, o))


def _run(c: np.ndarray, s: Any, opts: Options) -> Iterator[Any]:
    from napari_nst.core.optim.engine import run

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

    Same arguments as :func:`iter_stylize` (``resume`` included), and ``progress``: a bar on stderr
    with the evaluations, the time so far and left, and the losses
    (:class:`~napari_nst.core.progress.ConsoleProgress`), preceded, for a run that will take over
    30 s, by one line "about N s on cpu (estimated after the first evaluations)". None (default):
    shown when stderr is a terminal (not in a log file or a pipe); True/False: always/never.

    A run that ends early (KeyboardInterrupt, an error after its first evaluation) raises as
    usual, and the exception carries the newest pastiche as ``exc.pastiche`` (a
    :class:`~napari_nst.core.records.Pastiche`, or None before the first evaluation): pass it as
    ``resume=`` to continue.
    """
    records = iter_stylize(content, style, resume=resume, **options)  # validates before any work
    image = None
    try:
        with console_progress(progress) as bar:
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
    every frame, or (N, H, W), one per frame (frame axis first); so does ``mask`` (outside it each
    frame keeps its own content); ``preserve_color`` keeps each frame's own colours. Records are
    :class:`~napari_nst.core.records.Progress` with ``frame``/``frames``; a frame's last record
    (``step == total``) carries its pastiche. Frame t starts from frame t-1's pastiche carried
    along the optical flow, kept there by the temporal term (``temporal_weight``; 0 = independent
    frames); later frames get ``frame_steps`` evaluations. ``start``/``previous``: continue a
    stopped stack at frame ``start`` from the pastiche of frame ``start - 1``.
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
        from napari_nst.core.distributed.stack import run_on_cluster

        prev = None if previous is None else to_rgb_float(previous, name="previous")
        where: dict[str, Any] = dict(client=client, scheduler=scheduler, workers=workers)
        chunks: dict[str, Any] = dict(start=int(start), previous=prev, chunk_frames=chunk_frames, overlap=overlap)
        cluster = run_on_cluster(frames, s, opts, **where, **chunks, in_order=in_order)
        return StyleRun(lambda keep: cluster, refused=STACK_REFUSAL)
    return StyleRun(lambda keep: _run_stack(frames, s, opts, int(start), previous, keep), refused=STACK_REFUSAL)


def _run_stack(
    frames: Any, s: Any, opts: Options, start: int, previous: Any, keep: Keep | None = None
) -> Iterator[Any]:
    from napari_nst.core.stack.engine import run_stack

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
