"""napari ends during a run: Ctrl-C in its terminal, or its window closed.

Most tests start ``napari-nst demo --run`` (tests/napari/exit_app.py) in a session of its own, as a
terminal would, waits for the run to be going, then sends SIGINT (to the whole process group, as
Ctrl-C does, or to napari alone) or closes the window; napari must end within EXIT_TIMEOUT and
leave no engine process behind. A process that does not end is killed (with its group), so that
a hang fails the test instead of hanging the suite. The last tests do the same in this process:
napari's own quit (``await_workers``) and ``viewer.close()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gui, pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]

APP = Path(__file__).with_name("exit_app.py")
SRC = Path(__file__).resolve().parents[2] / "src"
#: seconds napari has to end once asked (it ends well within one; the machine may be loaded)
EXIT_TIMEOUT = 20
#: seconds to wait for the run to be going (napari starts; the engine process imports torch)
START_TIMEOUT = 240


class App:
    """The napari process and the lines it prints."""

    def __init__(self, tmp_path: Path, *args: str, weights: Path | None = None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
        env["NAPARI_CONFIG"] = str(tmp_path / "napari-settings.yaml")  # not the user's napari settings
        if weights is not None:
            env["NAPARI_NST_WEIGHTS"] = str(weights)
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group, as a shell gives a command
        )
        self.lines: list[str] = []
        self.err: list[str] = []
        self._new = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line.strip())
                self._new.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err.extend(line.rstrip("\n") for line in self.proc.stderr)

    def wait_for(self, word: str) -> str:
        """The first line starting with ``word`` (the test fails if napari ends or takes too long)."""
        deadline = time.monotonic() + START_TIMEOUT
        with self._new:
            while True:
                found = [line for line in self.lines if line.split()[:1] == [word]]
                if found:
                    return found[0]
                if self.proc.poll() is not None:
                    pytest.fail(f"napari ended (exit code {self.proc.returncode}) before {word!r}: {self.stderr()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {word!r} within {START_TIMEOUT} s: {self.stderr()}")
                self._new.wait(0.5)

    def interrupt(self, group: bool = True) -> None:
        """Ctrl-C in the terminal (SIGINT to the whole process group), or SIGINT to napari alone."""
        if group:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGINT)

    def ended(self) -> int:
        """napari's exit code; fails (after killing it) if napari has not ended within EXIT_TIMEOUT."""
        try:
            return self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"napari did not end within {EXIT_TIMEOUT} s: {self.stderr()}")

    def stderr(self) -> str:
        time.sleep(0.2)  # the reader thread catches up
        return "\n".join(self.err[-30:])

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


@pytest.fixture
def app(tmp_path):
    started: list[App] = []

    def start(*args: str, weights: Path | None = None) -> App:
        a = App(tmp_path, *args, weights=weights)
        started.append(a)
        return a

    yield start
    for a in started:  # never leave napari or an engine process behind, whatever happened
        a.kill()


def gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for its parent's exit counts as ended)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + EXIT_TIMEOUT
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


def interrupted_quietly(app: App, code: int) -> None:
    """Exit status 130 and one line about it, no traceback. (CPython sometimes ends by re-raising
    SIGINT on itself, -2 here, though the interrupt was handled: seen for a Ctrl-C during the
    imports; a shell reports both as 130.)"""
    err = app.stderr()
    assert code in (130, -signal.SIGINT), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "napari-nst: interrupted" in err, err


def test_ctrl_c_in_terminal_during_run_ends_napari_and_engine(app, vgg16_weights):
    a = app("real", weights=vgg16_weights)
    pid = int(a.wait_for("engine").split()[1])
    a.wait_for("progress")
    a.interrupt(group=True)  # napari and its engine process both get SIGINT
    interrupted_quietly(a, a.ended())
    assert wait_gone(pid)


def test_ctrl_c_in_terminal_while_engine_starts(app, vgg16_weights):
    a = app("real", weights=vgg16_weights)
    pid = int(a.wait_for("engine").split()[1])
    time.sleep(1.0)  # the engine process is importing torch or reading the weights
    a.interrupt(group=True)
    interrupted_quietly(a, a.ended())
    assert wait_gone(pid)


def test_sigint_to_napari_alone_while_engine_read_blocks(app):
    a = app("blocked")
    a.wait_for("blocked")
    a.interrupt(group=False)
    interrupted_quietly(a, a.ended())


def test_closing_window_while_engine_read_blocks(app):
    a = app("blocked", "close", "early")
    a.wait_for("blocked")
    assert a.ended() == 0, a.stderr()


def test_closing_window_during_run_ends_engine(app, vgg16_weights):
    a = app("real", "close", weights=vgg16_weights)
    pid = int(a.wait_for("engine").split()[1])
    a.wait_for("progress")
    assert a.ended() == 0, a.stderr()
    assert wait_gone(pid)


# --------------------------------------------------------------------------- in this process


class BlockedEngine:
    """Stands in for EngineProcess: yields nothing until killed (a read waiting for the engine)."""

    instances: list = []

    def __init__(self, content, style, **options):
        self.ended = threading.Event()
        self.killed = False
        BlockedEngine.instances.append(self)

    def cancel(self):
        self.ended.set()

    def kill(self):
        self.killed = True
        self.ended.set()

    def __iter__(self):
        self.ended.wait()
        return
        yield


def test_napari_quitting_ends_a_run_whose_read_blocks(make_napari_viewer, qtbot, images, monkeypatch):
    """What napari does when the application quits: ask every thread worker to quit, then wait."""
    from napari.qt.threading import WorkerBase
    from nst_helpers import viewer_with_widget

    from napari_nst._run import runner

    BlockedEngine.instances = []
    monkeypatch.setattr(runner, "EngineProcess", BlockedEngine)  # what local_engines makes
    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images)
    widget.run.clicked.emit()
    worker = widget.worker
    qtbot.waitUntil(lambda: len(BlockedEngine.instances) == 1, timeout=30_000)
    WorkerBase.await_workers(msecs=EXIT_TIMEOUT * 1000)  # raises RuntimeError if a worker is still running
    assert not worker.is_running and BlockedEngine.instances[0].killed


def test_closing_viewer_while_engine_starts_ends_engine_and_worker(make_napari_viewer, qtbot, images, vgg16_weights):
    """viewer.close() before the first record: the widget's thread waits in the engine's pipe."""
    from nst_helpers import RUN_TIMEOUT, tiny, viewer_with_widget

    viewer, widget, c, s = viewer_with_widget(make_napari_viewer, images)
    tiny(widget, vgg16_weights, steps=100_000, size=32)
    widget.run.clicked.emit()
    run, worker = widget._run, widget.worker
    qtbot.waitUntil(lambda: run.proc is not None and run.proc.pid is not None, timeout=RUN_TIMEOUT)
    pid = run.proc.pid
    assert run.last is None  # no record yet: the engine process is loading torch
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=EXIT_TIMEOUT * 1000)
    assert wait_gone(pid)
    from napari_nst.core.process import client as remote

    assert remote.idle_engines() == []
