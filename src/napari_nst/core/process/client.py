"""Run the engine in a separate Python process and stream its progress records back.

Why a process (the napari widget always uses this):

- torch's compiler stack imports ``triton``, whose LLVM clashes with Mesa's software OpenGL
  (Xvfb, VMs, remote desktops): importing it after napari made its GL context segfaults. The
  napari process never imports torch; only the child does.
- the child has its own GIL, so napari's event loop stays responsive during a CPU run;
- an out-of-memory crash or a segfault in torch kills the child, not napari.

A warm engine: a child that has finished a run is kept (one at a time) for the next
:class:`EngineProcess`, with torch imported, the last weights file read and the device's context
(CUDA) set up, so that a later run starts in well under a second instead of the several seconds a
new Python process with torch takes. The child returns the run's memory after each run (its
tensors dropped, the allocator caches emptied); an idle child exits after :data:`IDLE_TIMEOUT`
seconds, or at once with :func:`shutdown_engines`. :func:`prewarm` starts one in the background.
Stop ends a run in a warm child within one evaluation (a cancel message, checked by the child
between evaluations); a child that does not confirm within :data:`CANCEL_GRACE` seconds is
killed, and the next run starts a fresh one. A run that ended early sends back its newest
pastiche (:meth:`EngineProcess.last`). A child that crashes or is killed fails only the run
it was doing (:class:`EngineProcessError`). ``warm=False`` gives a run its own child, killed by
:meth:`EngineProcess.cancel` and ended after the run.

This module imports numpy and the standard library only. The same framing (length-prefixed
pickles over pipes) would carry the engine to another machine.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Generator, Iterator
from typing import IO, Any

from napari_nst.core.errors import EngineProcessError
from napari_nst.core.inputs import ImageInput, prepare
from napari_nst.core.live import STACK_REFUSAL, LiveChannel
from napari_nst.core.records import Progress

_HEADER = struct.Struct("!Q")

#: seconds a warm engine process waits, idle, for the next run before it exits
IDLE_TIMEOUT = 600.0
#: seconds a cancelled run in a warm process has to end (it is checked between evaluations)
#: before the process is killed; the next run then starts a fresh process
CANCEL_GRACE = 3.0
#: warm processes kept idle at most
KEEP_IDLE = 1


def send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    """The next message, or EOFError when the other side is gone."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our own child process, over our own pipe


# --------------------------------------------------------------------------- one child

_REQUEST_IDS = itertools.count(1)


class _Child:
    """One engine process (``python -m napari_nst.core.process.child``) and the thread reading its messages.

    Requests go in on stdin as ``(kind, id, body)``; the child answers ``("started", id)``, then
    ``("progress", id, record)``... and ``("done", id)`` or ``("error", id, exception)``, one request
    after the other. Every message lands in :attr:`messages`; ``("eof", None, None)`` last.
    """

    def __init__(self, key: tuple[Any, ...], nice: int) -> None:
        self.key = key
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # the child imports this very package, wherever this process found it
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH", "")] if p])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "napari_nst.core.process.child", "--nice", str(int(nice))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.messages: queue.Queue[tuple[str, int | None, Any]] = queue.Queue()
        self.stderr: deque[str] = deque(maxlen=40)
        self.ended = 0  # the id of the last request the child has finished
        self.dead = False  # its stdout is closed: it has exited or is about to
        self.stopped: dict[int, Any] = {}  # the newest pastiche of a run that ended early (the latest only)
        self.timer: threading.Timer | None = None  # the idle timeout, while in the pool
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._cancelling: set[int] = set()
        threading.Thread(target=self._read, daemon=True, name=f"nst-engine-{self.pid}-out").start()
        threading.Thread(target=self._drain, daemon=True, name=f"nst-engine-{self.pid}-err").start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return not self.dead and self.proc.poll() is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                kind, rid, payload = receive(self.proc.stdout)
                if kind == "stopped":
                    with self._cond:
                        self.stopped = {rid: payload}
                    continue
                if kind in ("done", "error"):
                    with self._cond:
                        self.ended = max(self.ended, rid)
                        self._cond.notify_all()
                self.messages.put((kind, rid, payload))
        except Exception:  # EOF, a broken pipe, a message that does not unpickle: the child is lost
            pass
        with self._cond:
            self.dead = True
            self._cond.notify_all()
        self.messages.put(("eof", None, None))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr.append(line.decode("utf-8", "replace").rstrip())

    def request(self, kind: str, body: Any) -> int:
        """Send a request; its id (ids increase, so the child finishes them in id order)."""
        with self._send_lock:
            rid = next(_REQUEST_IDS)
            self._send((kind, rid, body))
        return rid

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            assert self.proc.stdin is not None
            send(self.proc.stdin, message)
        except (OSError, ValueError):  # the child is gone (BrokenPipe) or stdin closed: EOF follows
            pass

    def finished(self, rid: int) -> bool:
        with self._cond:
            return self.ended >= rid or self.dead

    def stopped_pastiche(self, rid: int, timeout: float) -> Any:
        """The newest pastiche request ``rid`` sent back when it ended early (None if it did not),
        waiting at most ``timeout`` seconds for the request to end."""
        with self._cond:
            self._cond.wait_for(lambda: self.ended >= rid or self.dead, timeout=timeout)
            return self.stopped.pop(rid, None)

    def update(self, rid: int, number: int, options: dict[str, Any]) -> None:
        """Options changed during run ``rid`` (checked already), for its next evaluation."""
        with self._send_lock:
            self._send(("update", rid, (number, options)))

    def cancel(self, rid: int) -> None:
        """Ask the child to end request ``rid`` (thread-safe, idempotent); kill it after the grace."""
        with self._cond:
            if self.ended >= rid or self.dead or rid in self._cancelling:
                return
            self._cancelling.add(rid)
        with self._send_lock:
            self._send(("cancel", rid, None))
        self.messages.put(("wake", rid, None))
        timer = threading.Timer(CANCEL_GRACE, self._enforce, (rid,))
        timer.daemon = True
        timer.start()

    def _enforce(self, rid: int) -> None:
        if not self.finished(rid):
            self.kill()

    def close_input(self) -> None:
        """No more requests: the child exits once it has finished the ones it has."""
        with self._send_lock:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            except OSError:
                pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass

    def reap(self) -> int:
        """Wait for the (ending) process; its exit code. Closes the pipes."""
        code = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:  # a reader thread may still be in it
                pass
        return code

    def last_output(self) -> str:
        return "\n".join(list(self.stderr)[-8:])


# --------------------------------------------------------------------------- the pool

_POOL_LOCK = threading.Lock()
_IDLE: list[_Child] = []


def _pool_key(nice: int) -> tuple[Any, ...]:
    """Children are interchangeable when started the same way: same interpreter, environment
    (thread counts, weights variable, PYTHONPATH ...) and priority (a child cannot raise its own)."""
    return (sys.executable, int(nice), tuple(sorted(os.environ.items())))


def _take(key: tuple[Any, ...]) -> _Child | None:
    """An idle warm child started with ``key``, taken out of the pool (None if there is none)."""
    with _POOL_LOCK:
        for child in list(_IDLE):
            if not child.alive():
                _IDLE.remove(child)
                _discard(child)
            elif child.key == key:
                _IDLE.remove(child)
                if child.timer is not None:
                    child.timer.cancel()
                    child.timer = None
                return child
    return None


def _release(child: _Child) -> None:
    """Back into the pool after a run (possibly still ending a cancelled one): idle until the next."""
    if not child.alive():
        _discard(child)
        return
    with _POOL_LOCK:
        _IDLE.append(child)
        evicted = _IDLE[:-KEEP_IDLE] if KEEP_IDLE > 0 else list(_IDLE)
        del _IDLE[: len(evicted)]
        if child in _IDLE:
            child.timer = threading.Timer(IDLE_TIMEOUT, _expire, (child,))
            child.timer.daemon = True
            child.timer.start()
    for old in evicted:
        _discard(old)


def _expire(child: _Child) -> None:
    with _POOL_LOCK:
        if child not in _IDLE or child.timer is None or threading.current_thread() is not child.timer:
            return  # taken for a run (or replaced) in the meantime
        _IDLE.remove(child)
    _discard(child, grace=2.0)


def _discard(child: _Child, grace: float = 0.0) -> None:
    """End a child for good: it exits when its input closes; killed if still there after ``grace``."""
    child.close_input()
    if grace > 0:
        try:
            child.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    child.kill()
    child.reap()


def shutdown_engines() -> int:
    """End the idle warm engine processes now and so free all their memory; how many ended.

    A run in progress is not touched (cancel it first); its process is kept after the run as usual.
    """
    with _POOL_LOCK:
        children = list(_IDLE)
        _IDLE.clear()
        for child in children:
            if child.timer is not None:
                child.timer.cancel()
    for child in children:
        _discard(child)
    return len(children)


def idle_engines() -> list[int]:
    """Process ids of the warm engine processes waiting for a run."""
    with _POOL_LOCK:
        return [c.pid for c in _IDLE if c.alive()]


def prewarm(*, nice: int = 0, **options: Any) -> None:
    """Start a warm engine process in the background (if none is idle) and have it import torch,
    set up the device and read the network's weights for ``options`` (those of :class:`Options`;
    ``nice`` as for :class:`EngineProcess`). Returns at once.

    Bad options raise :class:`OptionError` here; a failure in the child (e.g. a weights file that
    cannot be read) is left to the run, which reports it.
    """
    from napari_nst.core.options import Options

    opts = Options.from_kwargs(**options)
    key = _pool_key(nice)
    child = _take(key) or _Child(key, nice)
    child.request("warm", {"options": opts})
    _release(child)


def measure_plans(*, nice: int = 0, **options: Any) -> dict[str, Any]:
    """Measure the fastest compute plan for runs with ``options`` in a warm engine process (this
    process does not import torch) and keep it there for later runs (core/compute/tune.py). Blocking (a few
    seconds): call it from a thread. Returns ``{"text", "path", "plan"}``: the table as text, the
    file it is kept in and the plan ``precision="auto"`` uses now. Raises :class:`OptionError` for
    bad options, :class:`EngineProcessError` when the process fails."""
    from napari_nst.core.options import Options

    opts = Options.from_kwargs(**options)
    key = _pool_key(nice)
    child = _take(key) or _Child(key, nice)
    rid = child.request("tune", {"options": opts})
    result: dict[str, Any] | None = None
    try:
        while True:
            kind, mid, payload = child.messages.get()
            if kind == "eof":
                raise EngineProcessError(
                    "the style-transfer process ended while measuring the compute plan"
                    + (f"; its last output:\n{child.last_output()}" if child.last_output() else "")
                )
            if mid != rid:
                continue
            if kind == "progress":
                result = dict(payload)
            elif kind == "error":
                raise payload
            elif kind == "done":
                break
    finally:
        _release(child)
    if result is None:
        raise EngineProcessError("the style-transfer process did not answer the measurement")
    return result


atexit.register(shutdown_engines)


# --------------------------------------------------------------------------- one run


class EngineProcess:
    """One style-transfer run in a child process; iterate it for :class:`Progress` records.

    Arguments are those of :func:`napari_nst.iter_stylize`; they are validated here, in this
    process, before the child starts; how often a record carries an image is the options'
    ``preview_every`` and ``preview_interval`` (the engine makes no image it would not send).
    ``nice`` lowers the child's CPU priority (POSIX) so that a GUI stays responsive. ``warm``
    (default True): run in a warm engine process kept between runs (see the module's docstring);
    False: in a process of its own.

    :meth:`cancel` may be called from any thread: the iteration ends at once without an error (a
    warm child ends the run within one evaluation and is kept; a process of its own is killed).
    Closing the iteration early cancels the run too. :meth:`update` (any thread) changes the
    objective's options during the run, as :meth:`napari_nst.core.api.StyleRun.update` does.
    """

    def __init__(
        self,
        content: ImageInput,
        style: ImageInput,
        *,
        nice: int = 0,
        warm: bool = True,
        **options: Any,
    ) -> None:
        c, s, opts = prepare(content, style, **options)
        self._request = {"content": c, "style": s, "options": opts}
        self._live = LiveChannel(opts, len(s) if isinstance(s, list) else 1, self._deliver)
        self._live_lock = threading.Lock()
        self._sent: list[tuple[int, dict[str, Any]]] = []  # every update, sent again to a replacement child
        self._nice = int(nice)
        self._warm = bool(warm)
        self._child: _Child | None = None
        self._rid = 0
        self._cancelled = threading.Event()
        self._killed = False
        #: the child's exit code when it ended with this run (crashed, killed, or not warm); else None
        self.returncode: int | None = None
        #: True when this run was given a warm process that an earlier run had started
        self.reused = False
        self._last: Any = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def pid(self) -> int | None:
        """The process id of the child doing this run (None before it starts)."""
        child = self._child
        return child.pid if child is not None else None

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        child = self._child
        return child.proc if child is not None else None

    def cancel(self) -> None:
        """Stop the run now (thread-safe); the iteration then ends quietly. A no-op after its end."""
        self._cancelled.set()
        child, rid = self._child, self._rid
        if child is None or child.finished(rid):
            return
        if self._warm:
            child.cancel(rid)
        else:
            child.kill()

    def update(self, **options: Any) -> int:
        """Change the objective's options while the run goes on (thread-safe); checked here, at
        once (OptionError naming the fix, or saying to stop first for an option such as ``size``);
        the engine applies them before its next evaluation. The update's number (1, 2, ...), which
        the first record made under it carries as ``update_id``."""
        return self._live.send(options)

    def _deliver(self, number: int, options: dict[str, Any]) -> None:
        with self._live_lock:
            self._sent.append((number, options))
            child = self._child
            if child is not None and not child.finished(self._rid):  # else sent when the run starts (_start)
                child.update(self._rid, number, options)

    def last(self, timeout: float = CANCEL_GRACE) -> Any:
        """The newest :class:`~napari_nst.core.records.Pastiche` of a run that ended early
        (cancelled, or an error after its first evaluation): the image of the last evaluation the
        child finished, sent back when it stopped. Waits at most ``timeout`` seconds for the child
        to end the run (a cancelled warm child finishes the evaluation in progress first). None
        when the run finished (its last record has the image), ended before its first
        evaluation, or its process was killed (``warm=False``, :meth:`kill`, or no answer within
        :data:`CANCEL_GRACE`)."""
        child = self._child
        if self._last is None and child is not None:
            self._last = child.stopped_pastiche(self._rid, timeout)
        return self._last

    def kill(self) -> None:
        """Stop the run and end its process at once, warm or not (e.g. when napari closes).

        Thread-safe; a thread waiting in the iteration for the next record returns at once, even
        before the killed process's pipe reports its end."""
        self._killed = True
        self._cancelled.set()  # first: the end of the pipe that follows is no failure
        child = self._child
        if child is not None:
            child.kill()
            child.messages.put(("wake", self._rid, None))

    def __iter__(self) -> Iterator[Progress]:
        if self._cancelled.is_set():
            return
        retry = self._warm
        while True:
            child = self._start()
            try:
                end = yield from self._stream(child, self._rid)
            finally:
                self._finish(child, self._rid)
            if end == "unstarted" and self.reused and retry and not self._cancelled.is_set():
                retry = False  # a warm child lost before it took the run (killed while idle): a fresh one
                continue
            break
        if end in ("lost", "unstarted") and not self._cancelled.is_set():
            tail = child.last_output()
            raise EngineProcessError(
                f"the style-transfer process ended unexpectedly (exit code {self.returncode})"
                + (f"; its last output:\n{tail}" if tail else "")
            )

    def _start(self) -> _Child:
        key = _pool_key(self._nice)
        child = _take(key) if self._warm else None
        self.reused = child is not None
        if child is None:
            child = _Child(key, self._nice)
        with self._live_lock:  # updates made before the run started go with it
            self._rid = child.request("run", {**self._request, "updates": list(self._sent)})
            self._child = child
        if not self._warm:
            child.close_input()
        return child

    def _stream(self, child: _Child, rid: int) -> Generator[Progress, None, str]:
        """Yield the run's records; how it ended: done, cancelled, lost (the child died during the
        run) or unstarted (the child died before it took the run)."""
        started = False
        while not self._cancelled.is_set():
            kind, mid, payload = child.messages.get()
            if kind == "eof":
                return "lost" if started else "unstarted"
            if mid != rid:
                continue  # a message of an earlier (cancelled) run, or a wake-up that came late
            if kind == "started":
                started = True
            elif kind == "progress":
                yield payload
            elif kind == "error":
                if not isinstance(payload, Exception):  # KeyboardInterrupt, SystemExit: the child was
                    # interrupted; raised here it would end this thread's caller (napari's worker thread)
                    raise EngineProcessError(f"the style-transfer process was interrupted ({type(payload).__name__})")
                raise payload
            elif kind == "done":
                return "done"
        return "cancelled"

    def _finish(self, child: _Child, rid: int) -> None:
        """After the iteration (ended, failed, cancelled or closed): keep the child or end it."""
        if self._killed:
            child.kill()
        elif not child.finished(rid):  # cancelled, or the consumer stopped iterating
            self._cancelled.set()
            if self._warm:
                child.cancel(rid)
            else:
                child.kill()
        if self._warm and not self._killed and child.alive():
            _release(child)
        else:
            self.returncode = child.reap()


class StackEngineProcess(EngineProcess):
    """:func:`napari_nst.iter_stylize_stack` in a child process (same iteration and ``cancel``).

    ``frames``: the stack with its frame axis first (validated here, without torch); ``start`` and
    ``previous`` as in ``iter_stylize_stack``.
    """

    def __init__(
        self,
        frames: Any,
        style: ImageInput,
        *,
        start: int = 0,
        previous: Any = None,
        nice: int = 0,
        **options: Any,
    ) -> None:
        from napari_nst.core.inputs import prepare_stack

        source, s, opts = prepare_stack(frames, style, 0, **options)
        first = dict(options)
        if opts.regions is not None and opts.regions.ndim == 3:  # one label image per frame
            first["regions"] = opts.regions[0]
        if opts.mask is not None and opts.mask.ndim == 3:  # one mask per frame (checked: some frame's marks pixels)
            first["mask"] = opts.mask.any(0)
        super().__init__(source[0], s, nice=nice, **first)
        self._request["options"] = opts
        self._live = LiveChannel(opts, len(s) if isinstance(s, list) else 1, self._refuse)
        self._request["stack"] = {
            "frames": source.frames,
            "limits": source.limits,
            "start": int(start),
            "previous": previous,
        }

    @staticmethod
    def _refuse(number: int, options: dict[str, Any]) -> None:
        from napari_nst.core.errors import OptionError

        raise OptionError(STACK_REFUSAL)


def iter_stylize_process(content: ImageInput, style: ImageInput, **options: Any) -> Iterator[Progress]:
    """:func:`napari_nst.iter_stylize`, but the work happens in a child process.

    Closing the generator cancels the run (see :class:`EngineProcess`).
    """
    yield from EngineProcess(content, style, **options)
