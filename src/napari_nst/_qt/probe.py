"""The device probe in a thread; its answer reaches the main thread through a Qt signal."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from napari_nst._devices import probe_devices


def start_probe(on_done: Callable[[dict[str, Any]], None]) -> Any:
    """Ask torch (in a child process, from a thread) which GPUs there are; ``on_done`` on the main thread.

    Returns the signal carrier: keep a reference to it until the answer came.
    """
    from qtpy.QtCore import QObject, Signal  # type: ignore[attr-defined]

    class _Emitter(QObject):
        done = Signal(object)

    emitter = _Emitter()
    emitter.done.connect(on_done)

    def work() -> None:
        result = probe_devices()
        try:
            emitter.done.emit(result)
        except RuntimeError:  # the widget is gone
            pass

    threading.Thread(target=work, name="napari-nst-device-probe", daemon=True).start()
    return emitter
