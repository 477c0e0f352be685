"""Run the engine in a separate Python process and stream its progress records back.

Why a process (the napari widget always uses this):

- torch's compiler stack imports ``triton``, whose LLVM clashes with Mesa's software OpenGL
  (Xvfb, VMs, remote desktops): importing it after napari made its GL context segfaults. The
  napari process never imports torch; only the child does.
- the child has its own GIL, so napari's event loop stays responsive during a CPU run;
- Stop ends the run at once (the child is killed), and the OS takes back all its memory;
- an out-of-memory crash or a segfault in torch kills the child, not napari.

This module imports numpy and the standard library only. The same framing (length-prefixed
pickles over pipes) would carry the engine to another machine.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any, BinaryIO, Optional

from .api import ImageInput, prepare
from .errors import EngineProcessError
from .records import Progress

_HEADER = struct.Struct("!Q")


def send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    """The next message, or EOFError when the other side is gone."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our own child process, over our own pipe


class EngineProcess:
    """One style-transfer run in a child process; iterate it for :class:`Progress` records.

    Arguments are those of :func:`napari_nst.iter_stylize`; they are validated here, in this
    process, before the child starts. ``min_interval`` (seconds) limits how often images are sent
    (records in between carry ``image=None``; the last record of each level always has one).
    ``nice`` lowers the child's CPU priority (POSIX) so that a GUI stays responsive.

    :meth:`cancel` may be called from any thread: it kills the child at once and the iteration
    ends without an error.
    """

    def __init__(
        self, content: ImageInput, style: ImageInput, *, min_interval: float = 0.0, nice: int = 0,
        **options: Any,
    ) -> None:
        c, s, opts = prepare(content, style, **options)
        self._request = {"content": c, "style": s, "options": opts, "min_interval": float(min_interval),
                         "nice": int(nice)}
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._cancelled = threading.Event()
        self._stderr: deque[str] = deque(maxlen=40)
        self.returncode: Optional[int] = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop the run now (thread-safe); the iteration then ends quietly."""
        self._cancelled.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "napari_nst.core.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True).start()
        return proc

    def _drain(self, stream: BinaryIO) -> None:
        for line in iter(stream.readline, b""):
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def __iter__(self) -> Iterator[Progress]:
        if self._cancelled.is_set():
            return
        self._proc = proc = self._start()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                send(proc.stdin, self._request)
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass  # the child died at once; reported below
            while True:
                try:
                    kind, payload = receive(proc.stdout)
                except EOFError:
                    break
                if kind == "progress":
                    yield payload
                elif kind == "error":
                    raise payload
                elif kind == "done":
                    return
            if not self._cancelled.is_set():
                code = proc.wait()
                tail = "\n".join(list(self._stderr)[-8:])
                raise EngineProcessError(
                    f"the style-transfer process ended unexpectedly (exit code {code})"
                    + (f"; its last output:\n{tail}" if tail else "")
                )
        finally:
            if proc.poll() is None:
                proc.kill()
            self.returncode = proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None and not stream.closed:
                    try:
                        stream.close()
                    except OSError:  # the drain thread may be reading it
                        pass


class StackEngineProcess(EngineProcess):
    """:func:`napari_nst.iter_stylize_stack` in a child process (same iteration and ``cancel``).

    ``frames``: the stack with its frame axis first (validated here, without torch); ``start`` and
    ``previous`` as in ``iter_stylize_stack``.
    """

    def __init__(self, frames: Any, style: ImageInput, *, start: int = 0, previous: Any = None,
                 min_interval: float = 0.0, nice: int = 0, **options: Any) -> None:
        from .api import prepare_stack

        source, s, opts = prepare_stack(frames, style, 0, **options)
        super().__init__(source[0], s, min_interval=min_interval, nice=nice, **options)
        self._request["stack"] = {"frames": source.frames, "limits": source.limits, "start": int(start),
                                  "previous": previous}


def iter_stylize_process(content: ImageInput, style: ImageInput, **options: Any) -> Iterator[Progress]:
    """:func:`napari_nst.iter_stylize`, but the work happens in a child process.

    Closing the generator kills the child.
    """
    yield from EngineProcess(content, style, **options)
