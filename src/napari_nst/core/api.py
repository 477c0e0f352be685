"""The Python API: ``stylize``, ``iter_stylize`` and their stack versions (inputs checked in :mod:`.inputs`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from napari_nst.core.image.arrays import to_rgb_float
from napari_nst.core.inputs import ImageInput, StyleInput, prepare, prepare_stack
from napari_nst.core.options import Options
from napari_nst.core.preview import preview

__all__ = ["iter_stylize", "iter_stylize_stack", "prepare", "prepare_stack", "preview", "stylize", "stylize_stack"]


def iter_stylize(content: ImageInput, style: StyleInput, **options: Any) -> Iterator[Any]:
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

    Yields
    ------
    napari_nst.core.optim.engine.Progress
        ``step`` (1-based), ``total``, ``losses`` (``content``, ``style``, ``total`` ...), ``image``
        (float32 (H, W, 3) in [0, 1], or None on records skipped by ``preview_every``).
        Closing the generator stops the run within one evaluation and frees device memory.

    Raises (at the first ``next``)
    ------------------------------
    ValueError
        Bad images or options (``ImageError``, ``OptionError``, ``WeightsError``), with a message
        that says what to change.
    """
    c, s, opts = prepare(content, style, **options)
    return _run(c, s, opts)


def _run(c: np.ndarray, s: Any, opts: Options) -> Iterator[Any]:
    from napari_nst.core.optim.engine import run

    yield from run(c, s, opts)


def stylize(content: ImageInput, style: StyleInput, *, progress: bool | None = None, **options: Any) -> np.ndarray:
    """The whole run, blocking: the pastiche as float32 ``(H, W, 3)`` in [0, 1].

    Same arguments as :func:`iter_stylize`, and ``progress``: a tqdm bar on stderr with the
    evaluations, losses and time left, preceded, for a run that will take over 30 s, by one line
    "about N s on cpu (estimated after the first evaluations)". None (default): shown when stderr
    is a terminal (not in a log file or a pipe); True/False: always/never.
    """
    records = iter_stylize(content, style, **options)  # validates before any work
    if progress is None:
        progress = _is_terminal(sys.stderr)
    image = None
    with console_progress(bool(progress)) as bar:
        for rec in records:
            if rec.image is not None:
                image = rec.image
            if bar is not None:
                bar.update(rec)
    assert image is not None  # the last record always carries the image
    return np.asarray(image)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextmanager
def console_progress(show: bool) -> Iterator[Any]:
    """A :class:`~napari_nst.core.progress.ConsoleProgress` on stderr (None when ``show`` is False);
    ``stylize`` and the command line both use it."""
    if not show:
        yield None
        return
    from napari_nst.core.optim.engine import split_steps
    from napari_nst.core.progress import ConsoleProgress

    bar = ConsoleProgress(sys.stderr, counts=split_steps)
    try:
        yield bar
    finally:
        bar.close()


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
) -> Iterator[Any]:
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
    """
    frames, s, opts = prepare_stack(stack, style, axis, **options)
    if not 0 <= int(start) < len(frames):
        raise ValueError(f"start={start} is not a frame of this stack of {len(frames)}; use 0 to {len(frames) - 1}")
    if int(start) > 0 and previous is None:
        raise ValueError("start > 0 needs previous=, the pastiche of frame start - 1 (or start at 0)")
    if client is not None or scheduler or workers:
        from napari_nst.core.distributed.stack import run_on_cluster

        where = dict(client=client, scheduler=scheduler, workers=workers)
        prev = None if previous is None else to_rgb_float(previous, name="previous")
        return run_on_cluster(
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
    return _run_stack(frames, s, opts, int(start), previous)


def _run_stack(frames: Any, s: Any, opts: Options, start: int, previous: Any) -> Iterator[Any]:
    from napari_nst.core.stack.engine import run_stack

    yield from run_stack(frames, s, opts, start, previous)


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
