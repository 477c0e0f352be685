"""Connects a run's worker thread to its sink, the status text, the loss plot and the progress bar.

The worker (napari's ``thread_worker``) runs :meth:`napari_nst._run.runner.Runner.run` and yields
records; on the main thread they are coalesced (:class:`napari_nst._run.state.RunState`) and the
newest is shown at most as often as napari can draw it (:class:`UpdateThrottle`). Layers are
only touched here, on the main thread.
"""

from __future__ import annotations

import time
import weakref
from functools import partial
from typing import Any, Protocol

from napari_nst._qt import notify
from napari_nst._qt.run_worker import RunWorker
from napari_nst._qt.throttle import UpdateThrottle
from napari_nst._run.plan import RunPlan
from napari_nst._run.runner import EngineFactory, Notes, Runner, shutdown
from napari_nst._run.sink import LayerSink
from napari_nst._run.state import RunState
from napari_nst._run.status import done_text, failure_text, progress_text, stopped_text
from napari_nst.core.errors import NonFiniteLossError
from napari_nst.core.records import Progress

#: while an update is being applied, the end of a run is handled this many milliseconds later
BUSY_RETRY_MS = 10


class RunView(Protocol):
    """What the controller shows things on (the widget)."""

    plot: Any

    def show_status(self, text: str) -> None: ...
    def set_running(self) -> None: ...
    def set_idle(self) -> None: ...
    def set_stopping(self) -> None: ...


class RunController:
    """Starts, stops and follows one run at a time; ``engines`` makes each run's engine."""

    def __init__(self, viewer: Any, view: RunView, parent: Any, engines: EngineFactory) -> None:
        self._viewer = viewer
        self._view = view
        self._engines = engines
        self.run: RunState | None = None
        self.worker: Any = None
        self.last_pastiche: Any = None
        self.closed = False
        self._result: Any = None
        self._busy = False
        self._throttle = UpdateThrottle(parent, self._on_timer)
        # shared with the callback for the native widget's destruction, which must not hold self
        self._box: list[RunState] = []
        parent.destroyed.connect(partial(_on_native_destroyed, self._box, weakref.ref(self)))
        viewer.layers.events.removed.connect(self._on_layer_removed)

    # ------------------------------------------------------------------ start / stop

    def start(self, plan: RunPlan, sources: dict[str, Any], sink: Any = None) -> None:
        from napari.qt.threading import create_worker

        run = RunState(
            plan, sink if sink is not None else LayerSink(self._viewer, plan), sources, Runner(self._engines)
        )
        self.run, self._box[:], self._result = run, [run], None
        self._view.plot.clear(plan.steps)
        self._view.show_status(
            "Starting the engine (loading torch and the network; a first run on this machine "
            "also measures its fastest compute plan, a few seconds) ..."
        )
        # No napari.utils.progress bar in the activity dock: with Mesa's software OpenGL it kept napari
        # at about a quarter of a core from its creation on, even after close (measured with
        # time.process_time in an idle viewer: 1 % -> 25 %); the status line and the loss plot
        # below the button show the step, losses and time left.
        worker = create_worker(run.runner.run, plan, _start_thread=False, _worker_class=RunWorker)
        # napari quits (Ctrl-C, last window closed) and waits for its workers: end the engine now
        worker.on_quit = run.kill
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._finalize)
        worker.aborted.connect(self.kill)
        self.worker = worker
        self._view.set_running()
        worker.start()

    def stop(self, reason: str | None = None) -> bool:
        """Ask the run to end within one evaluation; False when none is running."""
        if self.run is None or self.worker is None:
            return False
        self.run.stop(reason)
        return True

    def kill(self, *_: Any) -> None:
        if self.run is not None:
            self.run.kill()

    def close(self) -> None:
        """The widget goes away: end the run and the warm engine processes, touch nothing any more."""
        self.closed = True
        self.kill()
        shutdown()

    # ------------------------------------------------------------------ records

    def _on_yielded(self, item: Any) -> None:
        run = self.run
        if run is None or self.closed or run.outcome != "running":
            return
        if isinstance(item, Notes):
            run.notes = list(item.lines)
            for note in run.notes:
                notify.info(note)
            return
        rec: Progress = item
        if run.first_record_at is None:
            run.first_record_at = time.perf_counter()
        self._view.plot.add(
            rec.stack_step or rec.step, rec.losses.get("total", float("nan")), new_level=rec.level != run.level
        )
        changed = run.applied(rec)  # options changed during the run, applied from this step on
        if changed is not None:
            self._view.plot.mark(rec.stack_step or rec.step, changed)
        run.add(rec)
        self._throttle.request()

    def _on_timer(self) -> None:
        self.flush()  # looked up at each call (benchmarks/responsiveness.py times it)

    def flush(self) -> None:
        """Apply the newest pending record: layer data, placement, status, progress, plot."""
        run = self.run
        if run is None or self.closed:
            return
        if self._busy:  # re-entered (napari's progress bar processes events): try again shortly
            self._throttle.schedule()
            return
        self._busy = True
        try:
            img_rec, rec = run.take()
            for done in run.take_finished():  # a stack's finished frames are all shown
                assert done.image is not None  # a finished frame carries its pastiche
                run.sink.show(run.plan.task_for(done), done.image, done.shape, run.metadata())
            if img_rec is not None and img_rec.image is not None and run.outcome == "running" and not run.stop_reason:
                t0 = time.perf_counter()
                run.sink.show(run.plan.task_for(img_rec), img_rec.image, img_rec.shape, run.metadata())
                self.last_pastiche = run.sink.layer
                self._throttle.drawn_after(t0)
            if rec is not None and run.outcome == "running":
                run.last = rec
                shown = f" · display every {self._throttle.interval:.2g} s" if self._throttle.draw_cost else ""
                self._view.show_status(progress_text(rec, run.estimate) + shown + run.live_text())
                run.sink.set_metadata(run.metadata())
            self._view.plot.update()
        finally:
            self._busy = False

    def show_live(self) -> None:
        """The status again, with what changed during the run (_qt/live_link.py)."""
        run = self.run
        if run is None or self.closed or run.outcome != "running":
            return
        head = progress_text(run.last, run.estimate) if run.last is not None else "Starting the engine ..."
        self._view.show_status(head + run.live_text())

    # ------------------------------------------------------------------ the end

    def _on_returned(self, result: Any) -> None:
        if self.run is not None:
            self._result = result

    def _on_errored(self, exc: BaseException) -> None:  # a bug in Runner.run itself
        if self.run is not None:
            self._result = ("failed", exc)

    def _finalize(self, *_: Any) -> None:
        """The worker has finished: last image, outcome, metadata, messages, idle again."""
        run = self.run
        if run is None or self.closed:
            if run is not None:
                run.runner.cancel()  # never leave a child behind
            self.worker = None
            return
        if self._busy:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(BUSY_RETRY_MS, self._finalize)
            return
        run.runner.cancel()  # no-op when it ended
        self.flush()
        self._busy = True
        try:
            self._conclude(run)
            self.worker = None
            self._view.set_idle()
        finally:
            self._busy = False
        if run.outcome == "stopped" and run.stop_reason:
            notify.warn(f"Style transfer stopped: {run.stop_reason}.")

    def _conclude(self, run: RunState) -> None:
        outcome, exc = self._result if isinstance(self._result, tuple) else ("finished", None)
        self._result = None
        if outcome == "failed":
            run.outcome, run.error = "failed", exc
            self._fail(run, exc)
        else:
            run.outcome = "stopped" if outcome == "stopped" or run.stop_requested else "finished"
        run.sink.set_metadata(run.metadata())
        run.sink.finish()  # 8-bit, so that napari's own writers save it as PNG/JPEG
        changed = f"\nChanged during the run: {run.live_applied}" if run.live_applied else ""
        if run.outcome == "finished" and run.last is not None:
            self._view.show_status(done_text(run.last) + changed)
        elif run.outcome == "stopped":
            self._view.show_status(stopped_text(run.last, run.stop_reason, kept=run.sink.alive()) + changed)

    def _fail(self, run: RunState, exc: BaseException) -> None:
        text = failure_text(exc)
        if isinstance(exc, NonFiniteLossError) and exc.last_image is not None:
            if run.sink.layer is None or run.sink.alive():  # keep the last finite image
                run.sink.show(run.plan.tasks[0], exc.last_image, exc.last_image.shape[:2], run.metadata())
                self.last_pastiche = run.sink.layer
        self._view.show_status("Failed: " + text)
        notify.error(text)

    def _on_layer_removed(self, event: Any) -> None:
        run, layer = self.run, getattr(event, "value", None)
        if run is None or self.worker is None or layer is None or self.closed:
            return
        reason = run.deleted(layer)
        if reason:
            self.stop(reason)
            self._view.set_stopping()


def _on_native_destroyed(box: list[RunState], owner: Any, *_: Any) -> None:
    """The dock widget is gone (viewer closed): kill its engine process at once, touch no Qt object."""
    controller = owner()
    if controller is not None:
        controller.closed = True
    for run in box:
        run.kill()
    box.clear()
    shutdown()
