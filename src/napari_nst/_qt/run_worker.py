"""The thread worker of a run: napari's ``GeneratorWorker`` whose ``quit()`` also ends the engine.

When the application quits (Ctrl-C in napari's terminal, the last window closed), napari calls
``quit()`` on every thread worker (``QApplication.aboutToQuit``) and then waits, without a time
limit, until all of them have finished. A ``GeneratorWorker`` only looks at that request between
two records; a run's thread waits for the next record in the engine's pipe (seconds while the
engine process loads torch, minutes for one evaluation of a big image), so napari would wait that
long, or for ever. Here ``quit()`` also calls ``on_quit`` (the controller kills the run, which is
thread-safe): the engine process ends and the waiting read returns at once.

Importing this module imports napari's Qt threading (the widget's side only).
"""

from __future__ import annotations

from collections.abc import Callable

from napari.qt.threading import GeneratorWorker


class RunWorker(GeneratorWorker):  # type: ignore[misc]
    """A run's worker; ``on_quit`` is called (on the quitting thread) when napari asks it to quit."""

    on_quit: Callable[[], None] | None = None

    def quit(self) -> None:
        super().quit()
        callback = self.on_quit
        if callback is not None:
            callback()
