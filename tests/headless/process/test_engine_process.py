"""The engine in a child process: same records, errors re-raised, cancel ends the run at once;
the warm engine (a child kept between runs) is reused, survives Stop and errors, is replaced when
it dies, exits when idle, and builds the right network for each run's options."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from napari_nst.core.api import iter_stylize
from napari_nst.core.errors import EngineProcessError, ImageError, WeightsError
from napari_nst.core.process import client as remote
from napari_nst.core.process.client import (
    EngineProcess,
    idle_engines,
    iter_stylize_process,
    prewarm,
    shutdown_engines,
)


@pytest.fixture(autouse=True)
def _no_warm_engine_left(monkeypatch):
    """Each test starts without a warm engine and leaves none behind. A cancelled child has a
    minute to confirm (on a loaded machine a few seconds may pass before it is scheduled)."""
    monkeypatch.setattr(remote, "CANCEL_GRACE", 60.0)
    shutdown_engines()
    yield
    shutdown_engines()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie (killed, not reaped yet) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_until(cond, limit: float = 60.0) -> bool:
    """Poll ``cond`` (a liveness wait, not a timing assertion)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _run(proc: EngineProcess) -> list:
    return list(proc)


# --------------------------------------------------------------------------- one run


def test_records_stream_back(content, style, fast):
    recs = list(iter_stylize_process(content, style, **{**fast, "steps": 3}))
    assert [r.step for r in recs] == [1, 2, 3]
    assert recs[-1].image.shape == (23, 32, 3) and recs[-1].image.dtype == np.float32


def test_bad_input_raised_in_the_parent_before_a_child_starts(style, fast):
    with pytest.raises(ImageError, match="the content image"):
        EngineProcess(np.zeros((3, 3)), style, **fast)


def test_child_errors_keep_their_type_and_the_child_stays(content, style, fast, tmp_path):
    first = EngineProcess(content, style, **fast)
    _run(first)
    missing = tmp_path / "missing.pth"
    missing.write_bytes(b"")
    failing = EngineProcess(content, style, **{**fast, "weights": str(missing)})
    with pytest.raises(WeightsError, match="is empty"):
        _run(failing)
    again = EngineProcess(content, style, **fast)
    assert [r.step for r in _run(again)][-1] == fast["steps"]
    assert failing.pid == first.pid == again.pid and again.reused


def test_cancel_from_another_thread_ends_quietly_and_keeps_the_warm_child(content, style, fast):
    proc = EngineProcess(content, style, **{**fast, "steps": 10_000})
    seen = []
    for rec in proc:
        seen.append(rec.step)
        if rec.step == 2:
            threading.Thread(target=proc.cancel).start()
    assert proc.cancelled and 2 <= seen[-1] < 10_000
    assert proc.returncode is None and not _gone(proc.pid)
    nxt = EngineProcess(content, style, **{**fast, "steps": 3})
    assert [r.step for r in _run(nxt)] == [1, 2, 3]  # nothing of the cancelled run leaks in
    assert nxt.pid == proc.pid and nxt.reused


def test_cancel_without_warm_kills_the_child(content, style, fast):
    proc = EngineProcess(content, style, warm=False, **{**fast, "steps": 10_000})
    for rec in proc:
        if rec.step == 2:
            threading.Thread(target=proc.cancel).start()
    assert proc.cancelled and proc.returncode == -signal.SIGKILL
    assert idle_engines() == []


def test_a_run_without_warm_ends_its_child(content, style, fast):
    proc = EngineProcess(content, style, warm=False, **fast)
    assert len(_run(proc)) == fast["steps"]
    assert proc.returncode == 0 and idle_engines() == []


def test_closing_the_generator_cancels_the_run(content, style, fast):
    proc = EngineProcess(content, style, **{**fast, "steps": 10_000})
    it = iter(proc)
    next(it)
    it.close()
    assert proc.cancelled and proc.returncode is None
    nxt = EngineProcess(content, style, **fast)
    assert len(_run(nxt)) == fast["steps"] and nxt.pid == proc.pid

    cold = EngineProcess(content, style, warm=False, **{**fast, "steps": 10_000})
    it = iter(cold)
    next(it)
    it.close()
    assert cold.returncode is not None  # the child is gone


def test_kill_ends_a_warm_child_at_once(content, style, fast):
    proc = EngineProcess(content, style, **{**fast, "steps": 10_000})
    for rec in proc:
        if rec.step == 2:
            threading.Thread(target=proc.kill).start()
    assert proc.cancelled and proc.returncode == -signal.SIGKILL and idle_engines() == []


def test_throttled_images_keep_the_last(content, style, fast):
    recs = list(EngineProcess(content, style, preview_interval=3600, **{**fast, "steps": 4}))  # the engine's throttle
    assert recs[-1].image is not None
    assert sum(r.image is not None for r in recs) <= 2


# --------------------------------------------------------------------------- the warm engine


def test_runs_in_a_row_reuse_the_child(content, style, fast):
    procs = [EngineProcess(content, style, **fast) for _ in range(3)]
    for p in procs:
        assert [r.step for r in _run(p)] == list(range(1, fast["steps"] + 1))
    assert len({p.pid for p in procs}) == 1
    assert [p.reused for p in procs] == [False, True, True]
    assert idle_engines() == [procs[0].pid]


def test_a_child_that_does_not_confirm_the_cancel_is_killed(content, style, fast, monkeypatch):
    monkeypatch.setattr(remote, "CANCEL_GRACE", 0.2)
    proc = EngineProcess(content, style, **{**fast, "steps": 10_000})
    for rec in proc:
        if rec.step == 2:
            os.kill(proc.pid, signal.SIGSTOP)  # a child stuck in an evaluation: it cannot confirm
            proc.cancel()
    assert proc.cancelled
    assert _wait_until(lambda: _gone(proc.pid))
    nxt = EngineProcess(content, style, **fast)
    assert len(_run(nxt)) == fast["steps"] and nxt.pid != proc.pid


def test_a_child_killed_while_idle_is_replaced(content, style, fast):
    first = EngineProcess(content, style, **fast)
    _run(first)
    os.kill(first.pid, signal.SIGKILL)
    nxt = EngineProcess(content, style, **fast)
    assert len(_run(nxt)) == fast["steps"] and nxt.pid != first.pid


def test_a_child_killed_during_a_run_fails_that_run_only(content, style, fast):
    proc = EngineProcess(content, style, **{**fast, "steps": 10_000})
    with pytest.raises(EngineProcessError, match="ended unexpectedly"):
        for rec in proc:
            if rec.step == 2:
                os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and idle_engines() == []
    nxt = EngineProcess(content, style, **fast)
    assert len(_run(nxt)) == fast["steps"] and nxt.pid != proc.pid


def test_an_idle_child_exits_after_the_timeout(content, style, fast, monkeypatch):
    monkeypatch.setattr(remote, "IDLE_TIMEOUT", 0.2)
    proc = EngineProcess(content, style, **fast)
    _run(proc)
    assert _wait_until(lambda: idle_engines() == [] and _gone(proc.pid))


def test_shutdown_engines_ends_the_idle_child(content, style, fast):
    proc = EngineProcess(content, style, **fast)
    _run(proc)
    assert idle_engines() == [proc.pid]
    assert shutdown_engines() == 1
    assert idle_engines() == [] and _gone(proc.pid)


def test_prewarm_starts_the_child_the_next_run_uses(content, style, fast):
    prewarm(**fast)
    (pid,) = idle_engines()
    proc = EngineProcess(content, style, **fast)
    assert len(_run(proc)) == fast["steps"]
    assert proc.pid == pid and proc.reused


def test_prewarm_rejects_bad_options(fast):
    with pytest.raises(ValueError, match="pooling"):
        prewarm(**{**fast, "pooling": "median"})
    assert idle_engines() == []


def test_each_run_gets_the_network_its_options_ask_for(content, style, fast, vgg19_random_full, tmp_path):
    """One warm child, runs whose options change the network (pooling, model, weights file):
    each gives what the engine gives in this process for the same options and seed."""
    import torch

    other16 = tmp_path / "vgg16-other.pth"  # the same random weights, the first convolution changed
    state = torch.load(fast["weights"], weights_only=True)
    state["features.0.weight"] = state["features.0.weight"].flip(0).clone()
    torch.save(state, other16)
    base = {**fast, "steps": 3, "seed": 0, "precision": "float32"}
    variants = [
        base,
        {**base, "pooling": "avg"},
        {**base, "model": "vgg19", "weights": str(vgg19_random_full)},
        {**base, "weights": str(other16)},
        base,
    ]
    pids = set()
    finals = []
    for opts in variants:
        proc = EngineProcess(content, style, **opts)
        got = _run(proc)[-1]
        pids.add(proc.pid)
        want = list(iter_stylize(content, style, **opts))[-1]
        assert got.losses == pytest.approx(want.losses, rel=1e-4), opts
        np.testing.assert_allclose(got.image, want.image, atol=1e-4)
        finals.append(got.losses["total"])
    assert len(pids) == 1
    assert len({round(t, 6) for t in finals[:4]}) == 4  # the four networks differ


# --------------------------------------------------------------------------- Ctrl-C and quitting


def test_ctrl_c_in_the_terminal_does_not_end_the_child(content, style, fast):
    """SIGINT reaches every process of the terminal's group; the child leaves it to its parent."""
    proc = EngineProcess(content, style, **{**fast, "steps": 8})
    steps = []
    for rec in proc:
        steps.append(rec.step)
        if rec.step == 2:
            os.kill(proc.pid, signal.SIGINT)
    assert steps == list(range(1, 9))  # the run went on to its end
    assert idle_engines() == [proc.pid]  # and the child is kept, warm


class _SilentChild:
    """A child that says nothing more (loading torch, or in a long evaluation) and whose pipe
    does not close when it is killed (a grandchild holding it open)."""

    def __init__(self, *messages):
        import queue

        self.messages = queue.Queue()
        for m in messages:
            self.messages.put(m)
        self.killed = False

    def finished(self, rid):
        return False

    def kill(self):
        self.killed = True


def test_an_interrupt_in_the_child_is_not_raised_as_keyboardinterrupt(content, style, fast):
    """Raised in napari's worker thread, a KeyboardInterrupt made napari's quit wait for ever."""
    proc = EngineProcess(content, style, **fast)
    child = _SilentChild(("started", 1, None), ("error", 1, KeyboardInterrupt()))
    with pytest.raises(BaseException) as info:  # a KeyboardInterrupt would end pytest itself: caught too
        list(proc._stream(child, 1))
    assert isinstance(info.value, EngineProcessError) and "interrupted" in str(info.value)


def test_kill_wakes_an_iteration_waiting_for_the_next_record(content, style, fast):
    proc = EngineProcess(content, style, **fast)
    child = _SilentChild(("started", 1, None))
    proc._child, proc._rid = child, 1
    ended = []
    reader = threading.Thread(target=lambda: ended.append(list(proc._stream(child, 1))), daemon=True)
    reader.start()
    proc.kill()
    reader.join(60)  # a liveness guard: without the wake-up this thread waits for ever
    assert ended == [[]] and child.killed and proc.cancelled
