"""The runner: turns a task into progress records (no Qt; runs in a worker thread).

Today's runner is the engine in a child process (:class:`napari_nst.core.remote.EngineProcess`):
napari's process never imports torch (see docs/napari.md). Another runner (a dask cluster) would
offer the same two calls: :meth:`ProcessRunner.records` and a thread-safe :meth:`ProcessRunner.cancel`.

:func:`run_task` is the whole worker-thread side of a run: read the inputs, then relay records;
it touches no layer and no widget.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import EngineProcessError
from ..core.records import Progress
from .inputs import read_input
from .plan import Task

log = logging.getLogger(__name__)

#: the engine makes a preview image at most this often (seconds); the last of each level always
PREVIEW_INTERVAL = 0.1
#: lower CPU priority of the engine process, so that napari stays responsive on a busy CPU
ENGINE_NICE = 10
#: environment variable: "0" = do not start a warm engine process when the widget opens
PREWARM_ENV = "NAPARI_NST_PREWARM"
#: the options a warm engine process loads ahead of the first run (torch, the device, the weights)
_PREWARM_OPTIONS = ("model", "weights", "device", "pooling", "precision")

# every live engine process, so that none outlives napari (killed at interpreter exit)
_LIVE_PROCESSES: set[Any] = set()


@atexit.register
def _kill_live_processes() -> None:  # pragma: no cover - runs at exit
    for proc in list(_LIVE_PROCESSES):
        getattr(proc, "kill", proc.cancel)()


def prewarm(options: dict[str, Any]) -> bool:
    """Start a warm engine process for the widget's current settings, so that the first Run does
    not wait for torch and the weights; False when switched off (``$NAPARI_NST_PREWARM=0``) or the
    settings are not valid yet (the run will say why)."""
    if os.environ.get(PREWARM_ENV, "1") == "0":
        return False
    from ..core import remote
    from ..core.errors import OptionError

    try:
        remote.prewarm(nice=ENGINE_NICE, **{k: options[k] for k in _PREWARM_OPTIONS if k in options})
    except (OptionError, OSError) as exc:
        log.debug("no prewarm: %s", exc)
        return False
    return True


def measure_plans(options: dict[str, Any]) -> dict[str, Any]:
    """Measure the fastest compute plan for runs with ``options`` in the (warm) engine process and
    keep it there (``{"text", "path", "plan"}``, see ``remote.measure_plans``). Blocking: from a thread."""
    from ..core import remote

    return remote.measure_plans(nice=ENGINE_NICE, **options)


def shutdown() -> None:
    """Free the memory of the warm engine processes (napari closes, or the widget goes away)."""
    from ..core import remote

    remote.shutdown_engines()


@dataclass
class Notes:
    """Sentences for the user about how the inputs were read (which slice, level, colormap)."""

    lines: list[str]


@dataclass
class Inputs:
    """A task's images, read and converted in the worker thread."""

    content: np.ndarray
    style: Any  #: one image, or a list of them (several styles)
    options: dict[str, Any]  #: the task's options, with ``init`` an image where a layer was given
    notes: list[str]


def read_inputs(task: Task) -> Inputs:
    """Each input once, at about the size the engine works at (see :func:`read_input`)."""
    size = int(task.options["size"])
    content, c_note = read_input(task.content, task.axes, size, "content")
    style, s_note = read_input(task.style, task.style_axes, task.style_long_edge, "style")
    options, i_note = dict(task.options), None
    if task.init is not None and task.init_axes is not None:
        options["init"], i_note = read_input(task.init, task.init_axes, size, "init")
    notes = [n for n in (c_note, s_note, i_note) if n]
    if task.extra_styles:  # several styles: the engine takes a list
        styles = [style]
        for k, (snap, axes) in enumerate(zip(task.extra_styles, task.extra_style_axes, strict=True), start=2):
            img, note = read_input(snap, axes, task.long_edge_of(snap, axes), f"style {k}")
            styles.append(img)
            notes += [note] if note else []
        style = styles  # type: ignore[assignment]
    if task.regions is not None:
        from .labels import read_labels

        options["regions"] = read_labels(task.regions, task.full_shape, content.shape[:2])
    if any(snap is not None for snap in task.style_regions):  # which part of each style image
        options["style_regions"] = _style_labels(task, style if isinstance(style, list) else [style])
    return Inputs(content, style, options, notes)


def _style_labels(task: Task, styles: list[np.ndarray]) -> list[np.ndarray | None]:
    """Each style image's Labels layer read at the shape the style image was read at."""
    from .inputs import slice_shape
    from .labels import read_labels

    snaps = [task.style, *task.extra_styles]
    axes = [task.style_axes, *task.extra_style_axes]
    return [
        None if lab is None else read_labels(lab, slice_shape(snap, ax), img.shape[:2])
        for lab, snap, ax, img in zip(task.style_regions, snaps, axes, styles, strict=True)
    ]


class ProcessRunner:
    """Runs one task at a time in an engine process; :meth:`cancel` from any thread."""

    def __init__(self) -> None:
        self.proc: Any = None  #: the current :class:`EngineProcess` (or the tests' fake)
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """End the run within one evaluation; a warm engine process is kept for the next run."""
        self._cancelled.set()
        proc = self.proc
        if proc is not None:
            proc.cancel()

    def kill(self) -> None:
        """End the run and its engine process at once (the widget or napari goes away)."""
        self._cancelled.set()
        proc = self.proc
        if proc is not None:
            getattr(proc, "kill", proc.cancel)()

    def records(self, inputs: Inputs) -> Iterator[Progress]:
        """The engine's progress records for ``inputs``; ends quietly when cancelled."""
        from ..core import remote  # looked up now: the tests replace EngineProcess

        # the engine makes a preview image only where one will be shown (no images made to be dropped)
        options = {**inputs.options, "preview_interval": PREVIEW_INTERVAL}
        proc = remote.EngineProcess(inputs.content, inputs.style, nice=ENGINE_NICE, **options)
        self.proc = proc
        if self.cancelled:
            proc.cancel()
        _LIVE_PROCESSES.add(proc)
        try:
            yield from proc
        finally:
            proc.cancel()  # no-op after a normal end; kills the child if this generator is closed
            _LIVE_PROCESSES.discard(proc)


def run_task(runner: ProcessRunner, task: Task) -> Generator[Any, None, tuple[str, BaseException | None]]:
    """Worker-thread side of a run: yields :class:`Notes`, then :class:`Progress` records.

    Returns ``(outcome, exception or None)`` with outcome ``finished``, ``stopped`` or ``failed``;
    every exception is returned, to be reported on the main thread.
    """
    try:
        inputs = read_inputs(task)
        yield Notes(inputs.notes)
        yield from runner.records(inputs)
        return ("stopped" if runner.cancelled else "finished", None)
    except Exception as exc:
        if not isinstance(exc, (ValueError, MemoryError, EngineProcessError)):
            log.exception("style transfer failed")
        return ("failed", exc)
