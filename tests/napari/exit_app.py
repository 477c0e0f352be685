"""napari with a run in progress, as a separate process, for tests/napari/test_exit.py.

``python exit_app.py ENGINE [close [early]]``

- ENGINE ``real``: ``napari-nst demo --run`` itself (``cli.main``), with tiny settings and a run
  that would go on for hours; ``$NAPARI_NST_WEIGHTS`` names the weights file.
- ENGINE ``blocked``: the same, but the engine is a stand-in whose read blocks until the run is
  cancelled or killed (what the widget's thread does while the engine process loads torch, or
  computes a big evaluation): no torch, no child process.
- ``close``: close napari's main window (as its close button does) once the first record has
  arrived, or, with ``early``, as soon as the engine process (``blocked``: the read) has started.

Prints, flushed, for the test to wait on: ``engine PID`` (the engine process has started),
``progress`` (the first record arrived), ``blocked`` (the stand-in's read is waiting).
"""

from __future__ import annotations

import os
import sys
import threading


def say(*words: object) -> None:
    print(*words, flush=True)


BLOCKED = threading.Event()


class BlockedEngine:
    """Stands in for EngineProcess: yields nothing until cancelled or killed."""

    def __init__(self, content, style, **options):
        self._ended = threading.Event()

    def cancel(self):
        self._ended.set()

    def kill(self):
        self._ended.set()

    def __iter__(self):
        say("blocked")
        BLOCKED.set()
        self._ended.wait()
        return
        yield


def main() -> int:
    engine = sys.argv[1]
    close = "close" in sys.argv[2:]
    early = "early" in sys.argv[2:]

    from qtpy.QtCore import QTimer

    from napari_nst import _demo, cli
    from napari_nst._qt.controller import RunController

    if engine == "blocked":
        from napari_nst._run import runner

        runner.EngineProcess = BlockedEngine  # what the widget's engine factory (local_engines) makes

    state: dict = {}

    def close_window() -> None:
        state["viewer"].window._qt_window.close()

    original_yielded = RunController._on_yielded

    def on_yielded(self, item):
        if not state.get("progress") and type(item).__name__ == "Progress":
            state["progress"] = True
            say("progress")
            if close:
                QTimer.singleShot(0, close_window)
        return original_yielded(self, item)

    RunController._on_yielded = on_yielded

    original_setup = _demo.setup_demo

    def setup(viewer):
        widget = original_setup(viewer)
        state["viewer"], state["widget"] = viewer, widget
        widget.size.value, widget.steps.value, widget.device.value = 32, 100_000, "cpu"
        widget.model.value = "vgg16"
        widget.weights.value = os.environ.get("NAPARI_NST_WEIGHTS") or None
        widget.content_layers.value, widget.style_layers.value = "relu2_2", "relu1_1, relu2_1"
        timer = QTimer(viewer.window._qt_window)

        def poll() -> None:  # the engine process's id once it has one; the stand-in's read waiting
            run = widget.controller.run
            pid = getattr(getattr(run, "proc", None), "pid", None)
            started = BLOCKED.is_set() if engine == "blocked" else pid is not None
            if started:
                timer.stop()
                if pid is not None:
                    say("engine", pid)
                if close and early:
                    close_window()

        timer.timeout.connect(poll)
        timer.start(20)
        return widget

    _demo.setup_demo = setup
    return cli.main(["demo", "--run"])


if __name__ == "__main__":
    sys.exit(main())
