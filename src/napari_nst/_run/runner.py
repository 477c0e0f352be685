"""The runner: turns a plan into progress records (no Qt; runs in a worker thread).

One :class:`Runner` for every kind of run: it reads the plan's inputs (:func:`napari_nst._run.job.read_job`)
and relays the records of the engine its factory makes for them. The widget's factory,
:func:`local_engines`, makes the engine in a child process (one image or a stack) or on a dask
scheduler's workers: napari's process never imports torch (see docs/napari.md). The tests pass
a fake factory.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from napari_nst._run.dask_stack import DaskStackProcess
from napari_nst._run.job import EngineJob, read_job
from napari_nst._run.plan import RunPlan
from napari_nst.core.errors import EngineProcessError, InstallError, OptionError
from napari_nst.core.live import STACK_REFUSAL
from napari_nst.core.process import client as remote
from napari_nst.core.process.client import EngineProcess, StackEngineProcess
from napari_nst.core.records import Progress

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
_LIVE_PROCESSES: set[Engine] = set()


@atexit.register
def _kill_live_processes() -> None:  # pragma: no cover - runs at exit
    for proc in list(_LIVE_PROCESSES):
        proc.kill()


def prewarm(options: dict[str, Any]) -> bool:
    """Start a warm engine process for the widget's current settings, so that the first Run does
    not wait for torch and the weights; False when switched off (``$NAPARI_NST_PREWARM=0``) or the
    settings are not valid yet (the run will say why)."""
    if os.environ.get(PREWARM_ENV, "1") == "0":
        return False
    try:
        remote.prewarm(nice=ENGINE_NICE, **{k: options[k] for k in _PREWARM_OPTIONS if k in options})
    except (OptionError, OSError) as exc:
        log.debug("no prewarm: %s", exc)
        return False
    return True


def measure_plans(options: dict[str, Any]) -> dict[str, Any]:
    """Measure the fastest compute plan for runs with ``options`` in the (warm) engine process and
    keep it there (``{"text", "path", "plan"}``, see ``remote.measure_plans``). Blocking: from a thread."""
    from napari_nst.core.process import client as remote

    return remote.measure_plans(nice=ENGINE_NICE, **options)


def shutdown() -> None:
    """Free the memory of the warm engine processes (napari closes, or the widget goes away)."""
    remote.shutdown_engines()


@dataclass
class Notes:
    """Sentences for the user about how the inputs were read (which slice, level, colormap)."""

    lines: list[str]


class Engine(Protocol):
    """What the runner asks of an engine: its records, and ``cancel``/``kill`` from any thread."""

    def __iter__(self) -> Iterator[Progress]: ...
    def cancel(self) -> None: ...
    def kill(self) -> None: ...


#: makes the engine for a job (the widget's is :func:`local_engines`; the tests pass a fake)
EngineFactory = Callable[[EngineJob], Engine]


def local_engines(job: EngineJob) -> Engine:
    """The engines of napari's widget: a child process on this machine (:class:`EngineProcess`, or
    :class:`StackEngineProcess` for a stack), or a dask scheduler's workers for a stack with an
    address (:class:`napari_nst._run.dask_stack.DaskStackProcess`). None of them imports torch here."""
    if job.stack and job.address:
        return DaskStackProcess(
            job.content, job.style, address=job.address, start=job.start, previous=job.previous, **job.options
        )
    if job.stack:
        return StackEngineProcess(
            job.content, job.style, start=job.start, previous=job.previous, nice=ENGINE_NICE, **job.options
        )
    return EngineProcess(job.content, job.style, nice=ENGINE_NICE, **job.options)


class Runner:
    """Runs one plan in an engine made by ``engines`` (one image, a stack, on this machine or on a
    cluster: the factory decides); :meth:`cancel` and :meth:`kill` from any thread."""

    def __init__(self, engines: EngineFactory) -> None:
        self._engines = engines
        self.proc: Engine | None = None  #: the engine of the current run (None before it started)
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
            proc.kill()

    def update(self, options: dict[str, Any]) -> int | None:
        """Options changed during the run, for the engine's next evaluation (thread-safe): the
        update's number, or None when the engine has not started yet (try again). Raises
        OptionError when the engine refuses them (a stack's, or an option checked against the run)."""
        proc = self.proc
        if proc is None or self.cancelled:
            return None
        send = getattr(proc, "update", None)
        if send is None:
            raise OptionError(STACK_REFUSAL)
        return int(send(**options))

    def run(self, plan: RunPlan) -> Generator[Any, None, tuple[str, BaseException | None]]:
        """Worker-thread side of a run: yields :class:`Notes`, then :class:`Progress` records.

        Reads the inputs, then relays the engine's records; touches no layer and no widget.
        Returns ``(outcome, exception or None)`` with outcome ``finished``, ``stopped`` or
        ``failed``; every exception is returned, to be reported on the main thread.
        """
        try:
            job, notes = read_job(plan, PREVIEW_INTERVAL)
            yield Notes(notes)
            yield from self._records(job)
            return ("stopped" if self.cancelled else "finished", None)
        except Exception as exc:
            if not isinstance(exc, (ValueError, MemoryError, EngineProcessError, InstallError)):
                log.exception("style transfer failed")
            return ("failed", exc)

    def _records(self, job: EngineJob) -> Iterator[Progress]:
        """The engine's progress records for ``job``; ends quietly when cancelled."""
        proc = self._engines(job)
        self.proc = proc
        if self.cancelled:
            proc.cancel()
        _LIVE_PROCESSES.add(proc)
        try:
            yield from proc
        finally:
            proc.cancel()  # no-op after a normal end; stops the engine if this generator is closed
            _LIVE_PROCESSES.discard(proc)
