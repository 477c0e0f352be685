"""Child-process side of :mod:`napari_nst.core.process.client`: ``python -m napari_nst.core.process.child [--nice N]``.

Serves requests ``(kind, id, body)`` read from stdin, one after the other, until stdin closes:

- ``("run", id, {"content", "style", "options", "updates"})``: runs the engine (``updates``:
  ``[(number, options)]`` changed before it started, applied at its first evaluation) and writes
  ``("started", id, None)``, ``("progress", id, record)``..., then ``("done", id, None)`` or
  ``("error", id, exception)``; a run that ends early (cancelled, or an error after its first
  evaluation) first writes ``("stopped", id, pastiche)``, the last finished evaluation's
  :class:`~napari_nst.core.records.Pastiche` (a stack's: its unfinished frame's);
- ``("warm", id, {"options"})``: imports torch, sets up the device and reads the network's
  weights (kept in the weights cache of :mod:`napari_nst.core.encoder.vgg` for the next run);
- ``("tune", id, {"options"})``: measures the fastest compute plan for runs with these options
  (core/compute/tune.py) and keeps it; answers ``("progress", id, {"text", "path", "plan"})`` (the table as
  text, the cache file, the plan ``auto`` uses now), then ``("done", id, None)``;
- ``("cancel", id, None)``: ends request ``id`` after the evaluation in progress (or before it
  starts); it then answers ``("done", id, None)``;
- ``("update", id, (number, options))``: options of run ``id`` changed during the run (checked by
  the parent), applied before its next evaluation (:mod:`napari_nst.core.live`).

SIGINT is ignored: Ctrl-C in a terminal reaches every process of its group, this one too, and
the parent decides what ends the run (it cancels or kills this process). A KeyboardInterrupt here
would otherwise travel back as the run's error and be raised in the parent's reading thread.

The messages go to the original stdout; anything else that would print to stdout (libraries,
tqdm) is sent to stderr so that it cannot corrupt the stream. After each request the run's memory
is given back (tensors dropped, garbage collected, the device's and the C allocator's caches
emptied); torch, the device context and the last weights file read stay loaded.
"""

from __future__ import annotations

import gc
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from typing import Any, BinaryIO

from napari_nst.core.errors import EngineProcessError, InstallError
from napari_nst.core.live import Updates
from napari_nst.core.process.client import receive, send


def _protocol_stream() -> BinaryIO:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return out


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return EngineProcessError(f"{type(exc).__name__}: {exc}")


def _records(request: dict[str, Any], keep: Any = None, updates: Any = None) -> Any:
    """The engine's records for a request: one image, or a stack (``request["stack"]``);
    ``keep`` gets the newest pastiche when the run ends; ``updates``: options changed during a
    one-image run (a :class:`napari_nst.core.live.Updates`)."""
    if "stack" in request:
        from napari_nst.core.stack.engine import run_stack
        from napari_nst.core.stack.frames import FrameSource

        st = request["stack"]
        return run_stack(
            FrameSource(st["frames"], st["limits"]),
            request["style"],
            request["options"],
            st["start"],
            st["previous"],
            keep,
        )
    from napari_nst.core.optim.engine import run

    return run(request["content"], request["style"], request["options"], keep, updates=updates)


class Inbox:
    """Reads stdin on a thread: requests are queued, cancel and update messages are noted at once."""

    def __init__(self, stream: BinaryIO) -> None:
        self.requests: queue.Queue[tuple[str, int, Any] | None] = queue.Queue()
        self._cancelled: set[int] = set()
        self._updates: dict[int, Updates] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(stream,), daemon=True, name="nst-inbox").start()

    def _read(self, stream: BinaryIO) -> None:
        try:
            while True:
                kind, rid, body = receive(stream)
                if kind == "cancel":
                    with self._lock:
                        self._cancelled.add(rid)
                elif kind == "update":
                    number, options = body
                    self.updates(rid).put(options, number)
                else:
                    self.requests.put((kind, rid, body))
        except Exception:  # EOF (the parent closed our input or is gone) or a broken message
            pass
        self.requests.put(None)

    def cancelled(self, rid: int) -> bool:
        with self._lock:
            return rid in self._cancelled

    def updates(self, rid: int) -> Updates:
        """Request ``rid``'s mailbox of options changed during the run (made on first use)."""
        with self._lock:
            return self._updates.setdefault(rid, Updates())

    def forget(self, rid: int) -> None:
        with self._lock:
            self._cancelled.discard(rid)
            self._updates.pop(rid, None)


def serve(
    request: dict[str, Any], out: BinaryIO, rid: int = 0, cancelled: Any = lambda: False, updates: Any = None
) -> None:
    """Run the engine on ``request``; send each record; stop between evaluations once ``cancelled()``;
    ``updates``: the run's mailbox of options changed during it."""
    kept: list[Any] = []
    records = _records(request, kept.append, updates)  # images only where wanted: preview_every and preview_interval
    try:
        for rec in records:
            if cancelled():
                break
            send(out, ("progress", rid, rec))
            if cancelled():
                break
    finally:
        getattr(records, "close", lambda: None)()  # the engine frees the run's tensors (its own finally)
        if kept and kept[-1].step < kept[-1].total:  # ended early: the newest pastiche goes back first
            send(out, ("stopped", rid, kept[-1]))


def warm(request: dict[str, Any]) -> None:
    """Load what a run of these options needs first: torch, the device, the network's weights."""
    import torch

    from napari_nst.core.compute.device import pick_device
    from napari_nst.core.encoder.vgg import build_vgg

    opts = request["options"]
    device = pick_device(opts.device)
    net = build_vgg(opts.model, opts.layers, weights=opts.weights, pooling=opts.pooling).to(device)
    with torch.no_grad():  # the first pass sets up the convolution backend (oneDNN, cuDNN)
        net(torch.rand(1, 3, 32, 32, device=device))
    del net


def tune_plans(request: dict[str, Any]) -> dict[str, Any]:
    """Measure the compute plans for runs with ``request["options"]``; the table as text."""
    from napari_nst.core.compute import tune

    table = tune.tune_options(request["options"])
    if table is None:
        return {"text": "Nothing to measure on this device: the built-in rules hold.", "path": "", "plan": ""}
    chosen = table.choose("auto")
    return {"text": table.text(), "path": str(tune.cache_path()), "plan": chosen.label if chosen else ""}


def release_memory() -> None:
    """Give the memory of the request just served back to the device and the operating system."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        mps = getattr(torch, "mps", None)
        if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            mps.empty_cache()
    if sys.platform.startswith("linux"):
        try:  # glibc keeps freed heap memory in its arenas; this returns it (RSS falls back)
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def handle(kind: str, rid: int, body: Any, out: BinaryIO, inbox: Inbox) -> bool:
    """Serve one request and send its end message; False when this process should end now (an
    InstallError: torch or torchvision half imported; the next run gets a fresh process)."""
    try:
        if not inbox.cancelled(rid):
            send(out, ("started", rid, None))
            if kind == "run":
                updates = inbox.updates(rid)
                for number, options in body.get("updates", ()):  # made before the run started
                    updates.put(options, number)
                serve(body, out, rid, lambda: inbox.cancelled(rid), updates)
            elif kind == "warm":
                warm(body)
            elif kind == "tune":
                send(out, ("progress", rid, tune_plans(body)))
    except BaseException as exc:  # every failure goes back to the parent as a message
        traceback.print_exc(file=sys.stderr)
        send(out, ("error", rid, _picklable(exc)))
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt, SystemExit: this process ends
        return not isinstance(exc, InstallError)
    else:
        send(out, ("done", rid, None))
    finally:
        inbox.forget(rid)
    return True


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends this process (see the docstring)
    args = sys.argv[1:] if argv is None else argv
    nice = int(args[args.index("--nice") + 1]) if "--nice" in args else 0
    out = _protocol_stream()
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    inbox = Inbox(sys.stdin.buffer)
    while True:
        item = inbox.requests.get()
        if item is None:
            return 0
        kind, rid, body = item
        del item
        try:
            if not handle(kind, rid, body, out, inbox):
                sys.stderr.flush()
                os._exit(0)  # not a return: the inbox thread's read of stdin would abort the interpreter's exit
        except BrokenPipeError:
            return 1  # the parent is gone
        finally:
            body = None
            release_memory()


if __name__ == "__main__":
    sys.exit(main())
