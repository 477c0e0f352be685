"""Child-process side of :mod:`napari_nst.core.remote`: ``python -m napari_nst.core.worker``.

Reads one pickled request on stdin, runs the engine, writes ("progress", record) messages,
then ("done", None) or ("error", exception) on the original stdout. Anything else that would
print to stdout (libraries, tqdm) is sent to stderr so that it cannot corrupt the stream.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from typing import Any, BinaryIO

from .errors import EngineProcessError
from .remote import receive, send


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


def _records(request: dict[str, Any]) -> Any:
    """The engine's records for a request: one image, or a stack (``request["stack"]``)."""
    if "stack" in request:
        from .frames import FrameSource
        from .stack import run_stack

        st = request["stack"]
        return run_stack(FrameSource(st["frames"], st["limits"]), request["style"], request["options"], st["start"],
                         st["previous"])
    from .engine import run

    return run(request["content"], request["style"], request["options"])


def serve(request: dict[str, Any], out: BinaryIO) -> None:
    min_interval = request.get("min_interval", 0.0)
    last_sent = 0.0
    for rec in _records(request):
        if rec.image is not None and min_interval > 0:
            now = time.monotonic()
            if now - last_sent < min_interval and not rec.last_of_level:
                rec.image = None  # throttled: a GUI cannot show more anyway
            else:
                last_sent = now
        send(out, ("progress", rec))


def main() -> int:
    out = _protocol_stream()
    try:
        request = receive(sys.stdin.buffer)
    except EOFError:
        return 2
    if request.get("nice") and hasattr(os, "nice"):
        os.nice(int(request["nice"]))
    try:
        serve(request, out)
    except BaseException as exc:  # every failure goes back to the parent as a message
        traceback.print_exc(file=sys.stderr)
        try:
            send(out, ("error", _picklable(exc)))
        except BrokenPipeError:
            pass
        return 1
    send(out, ("done", None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
