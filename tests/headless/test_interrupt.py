"""Interrupted runs keep their work, and resume: the engine's hand-back (``StyleRun.last()``),
the command line under SIGINT and SIGTERM, ``--resume``, stacks and batches.

Real runs on tiny images with seeded random weights (conftest's ``fast``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import napari_nst
from napari_nst import iter_stylize
from napari_nst.cli import SaveEvery, _save_due, _save_every, as_flags, main, partial_frame_path
from napari_nst.core.errors import OptionError
from napari_nst.core.objective import losses
from napari_nst.core.optim import engine
from napari_nst.core.records import Pastiche

_STYLE_TERM = losses.StyleTerm.__call__


class InterruptAt:
    """Counts objective evaluations and raises ``exc`` inside evaluation number ``at`` (0: never),
    as Ctrl-C's KeyboardInterrupt arrives in the middle of torch's work. A new one replaces the last."""

    def __init__(self, monkeypatch, at: int, exc=KeyboardInterrupt) -> None:
        self.calls = 0
        original = _STYLE_TERM
        spy = self

        def call(term, features, image):
            spy.calls += 1
            if spy.calls == at:
                raise exc()
            return original(term, features, image)

        monkeypatch.setattr(losses.StyleTerm, "__call__", call)


@pytest.fixture
def files(tmp_path, content, style):
    cp, sp = tmp_path / "content.png", tmp_path / "style.png"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    return cp, sp


def _flags(fast, steps=10):
    return [
        "--size",
        str(fast["size"]),
        "--steps",
        str(steps),
        "--model",
        "vgg16",
        "--weights",
        fast["weights"],
        "--device",
        "cpu",
        "--scales",
        "1",
    ]


# --------------------------------------------------------------------------- the engine's hand-back


def test_closing_the_generator_hands_back_the_last_evaluation_at_no_cost_during_the_run(
    content, style, fast, monkeypatch
):
    """No record carries an image (preview_every is large), yet closing after step 3 hands back step
    3's image, exactly the one evaluated; the host copy is made once, on the way out."""
    every = list(iter_stylize(content, style, **{**fast, "steps": 6, "preview_every": 1}))
    copies = []
    to_numpy = engine.to_numpy
    monkeypatch.setattr(engine, "to_numpy", lambda t: copies.append(1) or to_numpy(t))
    run = iter_stylize(content, style, **{**fast, "steps": 6, "preview_every": 100})
    assert run.last() is None
    for rec in run:
        assert rec.image is None
        if rec.step == 3:
            break
    assert not copies, "no image copied to the host during the run"
    run.close()
    kept = run.last()
    assert copies == [1]
    assert isinstance(kept, Pastiche) and (kept.step, kept.total, kept.level, kept.levels) == (3, 6, 1, 1)
    assert kept.shape == (23, 32) and kept.image.dtype == np.float32 and not kept.complete
    np.testing.assert_array_equal(kept.image, every[2].image)
    assert kept.losses == every[2].losses
    assert kept.settings["options"]["steps"] == 6 and len(kept.settings["style"]) == 1


def test_keyboard_interrupt_mid_evaluation_keeps_the_previous_one(content, style, fast, monkeypatch):
    every = list(iter_stylize(content, style, **{**fast, "steps": 6}))
    InterruptAt(monkeypatch, at=5)  # Ctrl-C inside evaluation 5: 4 is the last finished
    run = iter_stylize(content, style, **{**fast, "steps": 6, "preview_every": 100})
    with pytest.raises(KeyboardInterrupt):
        for _ in run:
            pass
    assert run.last().step == 4
    np.testing.assert_array_equal(run.last().image, every[3].image)


def test_stylize_attaches_the_pastiche_to_the_exception(content, style, fast, monkeypatch):
    InterruptAt(monkeypatch, at=3)
    with pytest.raises(KeyboardInterrupt) as info:
        napari_nst.stylize(content, style, **{**fast, "steps": 6})
    assert info.value.pastiche.step == 2 and info.value.pastiche.image.shape == (23, 32, 3)


def test_a_finished_run_hands_back_its_final_pastiche(content, style, fast):
    run = iter_stylize(content, style, **fast)
    records = list(run)
    assert run.last().complete and run.last().step == fast["steps"]
    np.testing.assert_array_equal(run.last().image, records[-1].image)


def test_closed_before_the_first_evaluation_hands_back_nothing(content, style, fast):
    run = iter_stylize(content, style, **fast)
    run.close()
    assert run.last() is None


# --------------------------------------------------------------------------- resume (API)


def test_resume_reaches_the_objective_of_a_run_never_stopped(content, style, fast):
    """A run stopped at evaluation 30 of 60 and resumed ends within the spread that the random start
    alone makes (seeds 0 and 1, ``init="noise"``): the resumed run's L-BFGS history starts empty,
    a perturbation of its path no larger than another random start. Its first evaluation is the
    saved image's (the same objective value), and its steps continue the count."""
    opts = {**fast, "steps": 60, "init": "noise", "seed": 0}
    full = [r.losses["total"] for r in iter_stylize(content, style, **opts)]
    other = list(iter_stylize(content, style, **{**opts, "seed": 1}))[-1].losses["total"]
    run = iter_stylize(content, style, **opts)
    for rec in run:
        if rec.step == 30:
            break
    run.close()
    stopped = run.last()
    resumed = list(iter_stylize(content, style, resume=stopped, **opts))
    assert [r.step for r in resumed] == list(range(31, 61))
    assert resumed[0].losses["total"] == pytest.approx(stopped.losses["total"], rel=1e-4)
    final, spread = resumed[-1].losses["total"], abs(full[-1] - other)
    # nothing lost: not worse than the run never stopped by more than that spread (it may end
    # lower: under AVX2 in float32 the never-stopped run ended at 0.039, seed 1 at 0.017, the
    # resumed one at 0.013)
    assert final - full[-1] <= max(spread, 0.05 * full[-1]), (final, full[-1], other)
    assert final < 0.5 * stopped.losses["total"]  # and it did make progress after the restart


@pytest.mark.parametrize(
    "offset", [-6, 0, 1, 3]
)  # from the end of level 1: mid-level 1; its last; level 2's first; mid
def test_resume_coarse_to_fine_at_the_right_level(content, style, fast, offset):
    opts = {**fast, "size": 64, "steps": 16, "scales": 2}
    full = list(iter_stylize(content, style, **opts))
    end1 = next(r.step for r in full if r.last_of_level)  # 12 of 16 (engine.split_steps)
    at = end1 + offset
    run = iter_stylize(content, style, **opts)
    for rec in run:
        if rec.step == at:
            break
    run.close()
    stopped = run.last()
    assert stopped.level == (1 if at <= end1 else 2) and stopped.levels == 2
    assert stopped.shape == (full[0].shape if at <= end1 else full[-1].shape)
    resumed = list(iter_stylize(content, style, resume=stopped, **opts))
    assert resumed[0].step == at + 1 and resumed[-1].step == 16
    assert resumed[0].level == (1 if at < end1 else 2) and resumed[-1].shape == full[-1].shape
    assert [r.step for r in resumed if r.last_of_level] == [s for s in (end1, 16) if s > at]
    if at != end1:  # mid-level: the first evaluation is the saved image's
        assert resumed[0].losses["total"] == pytest.approx(stopped.losses["total"], rel=1e-4)
    else:  # level 2 starts from level 1's last evaluated image (a run never stopped: from the optimiser's
        # next point, one step further), carried up: close to the uninterrupted start (the content's is 3x;
        # 0.8-1.3x across CPUs and precisions: 1.3x under AVX2 in float32)
        assert resumed[0].losses["total"] == pytest.approx(full[end1].losses["total"], rel=0.5)


def test_resume_with_other_settings_names_each_difference(content, style, fast):
    run = iter_stylize(content, style, **{**fast, "steps": 6})
    next(run)
    next(run)
    run.close()
    stopped = run.last()
    with pytest.raises(OptionError, match=r"other settings: steps=6 \(now 7\); style_weight=auto \(now 2\.0\)"):
        iter_stylize(content, style, resume=stopped, **{**fast, "steps": 7, "style_weight": 2.0})
    with pytest.raises(OptionError, match="the style image"):
        iter_stylize(content, np.ascontiguousarray(style[::-1]), resume=stopped, **{**fast, "steps": 6})
    with pytest.raises(OptionError, match="leave out resume"):
        iter_stylize(content, style, resume=stopped, **{**fast, "steps": 6, "seed": 3})
    # the device may differ; the options that do not change the pastiche may too
    iter_stylize(content, style, resume=stopped, **{**fast, "steps": 6, "preview_every": 3})
    done = iter_stylize(content, style, **{**fast, "steps": 6})
    list(done)
    with pytest.raises(OptionError, match="complete, nothing is left"):
        next(iter_stylize(content, style, resume=done.last(), **{**fast, "steps": 6}))
    with pytest.raises(OptionError, match="resume must be a Pastiche"):
        iter_stylize(content, style, resume=3, **fast)


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_cli_killed_by_a_signal_saves_the_pastiche(files, tmp_path, fast, sig, code, word):
    """The real thing: `napari-nst stylize` in its own process, signalled once it has saved step 2."""
    cp, sp = files
    out = tmp_path / "out.png"
    cmd = [sys.executable, "-m", "napari_nst.cli", "stylize", str(cp), str(sp), "-o", str(out)]
    cmd += [*_flags(fast, steps=1_000_000), "--save-every", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "out-00002.png").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no saved file after 300 s"
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    record = json.loads((tmp_path / "out.png.nst.json").read_text())
    assert record["step"] >= 2 and record["total"] == 1_000_000 and record["complete"] is False
    assert f"{word} at step {record['step']}/1000000: saved {out}" in err
    assert np.asarray(Image.open(out)).shape == (23, 32, 3)
    state = np.load(tmp_path / record["state"])["image"]
    assert state.dtype == np.float32 and state.shape == (23, 32, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), (np.clip(state, 0, 1) * 255 + 0.5).astype(np.uint8))


def test_cli_interrupted_then_resumed_runs_the_remaining_evaluations(files, tmp_path, fast, monkeypatch, capsys):
    cp, sp = files
    out = tmp_path / "out.png"
    args = ["stylize", str(cp), str(sp), "-o", str(out), *_flags(fast, steps=10), "--quiet"]
    InterruptAt(monkeypatch, at=5)  # Ctrl-C during evaluation 5
    assert main(args) == 130
    err = capsys.readouterr().err
    assert f"napari-nst: interrupted at step 4/10: saved {out}; --resume continues the run" in err
    assert json.loads((tmp_path / "out.png.nst.json").read_text())["step"] == 4
    InterruptAt(monkeypatch, at=1)  # a fresh run notes the unfinished one; stopped before it saves anything
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "holds an interrupted run (step 4/10); starting afresh" in err and "nothing to save" in err
    assert json.loads((tmp_path / "out.png.nst.json").read_text())["step"] == 4
    counted = InterruptAt(monkeypatch, at=0)  # counts only
    assert main([*args, "--resume"]) == 0
    assert counted.calls == 10 - 4 and np.asarray(Image.open(out)).shape == (23, 32, 3)
    assert not list(tmp_path.glob("out.png.nst*")), "a finished run leaves no resume record"
    assert main([*args, "--resume"]) == 1
    assert "no record of an interrupted run" in capsys.readouterr().err


def test_cli_resume_with_other_settings_is_one_line_in_flags(files, tmp_path, fast, monkeypatch, capsys):
    cp, sp = files
    out = tmp_path / "out.png"
    args = ["stylize", str(cp), str(sp), "-o", str(out), *_flags(fast, steps=6), "--quiet"]
    InterruptAt(monkeypatch, at=3)
    assert main(args) == 130
    capsys.readouterr()
    assert main([*args, "--style-weight", "2", "--resume"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"napari-nst: error: cannot resume {str(out)!r}: it was made with other settings: --style-weight auto "
        "(now 2.0). Use the settings and images it was made with, or start afresh (leave out --resume)"
    )


def test_cli_error_after_the_first_evaluation_keeps_the_pastiche(files, tmp_path, fast, monkeypatch, capsys):
    cp, sp = files
    out = tmp_path / "out.png"
    InterruptAt(monkeypatch, at=4, exc=lambda: RuntimeError("the device went away"))
    assert main(["stylize", str(cp), str(sp), "-o", str(out), *_flags(fast), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "napari-nst: error: the device went away (the pastiche of step 3/10 is saved to the output; "
        "--resume continues the run)"
    )
    assert json.loads((tmp_path / "out.png.nst.json").read_text())["step"] == 3 and out.exists()


def test_save_every_parses_counts_times_and_auto():
    assert _save_every("50") == SaveEvery(steps=50)
    assert _save_every("90s") == SaveEvery(seconds=90.0)
    assert _save_every("5min") == SaveEvery(seconds=300.0) == _save_every("5m")
    assert _save_every("auto").auto and _save_every("auto").seconds == 60.0
    assert _save_every("0") == SaveEvery() == _save_every("0s")
    for bad in ("-1", "ten", "5 parsecs", "1.5"):
        with pytest.raises(Exception, match="number of evaluations"):
            _save_every(bad)


class _Rec:
    def __init__(self, step, elapsed):
        self.step, self.elapsed = step, elapsed


class _Estimate:
    def __init__(self, total):
        self.total = total

    def total_seconds(self):
        return self.total


def test_save_due_auto_only_in_long_runs_and_once_a_minute():
    auto = _save_every("auto")
    assert not _save_due(auto, _Rec(10, 61.0), 0.0, _Estimate(100.0))  # a 100 s run: never
    assert _save_due(auto, _Rec(10, 61.0), 0.0, _Estimate(1800.0))  # a 30 min run: every 60 s
    assert not _save_due(auto, _Rec(11, 100.0), 61.0, _Estimate(1800.0))
    assert _save_due(SaveEvery(seconds=30.0), _Rec(3, 31.0), 0.0, None)
    assert _save_due(SaveEvery(steps=5), _Rec(10, 0.1), 0.0, None)
    assert not _save_due(SaveEvery(steps=5), _Rec(11, 100.0), 0.0, None)
    assert not _save_due(SaveEvery(), _Rec(11, 1e6), 0.0, None)


# --------------------------------------------------------------------------- stacks


def test_stack_interrupted_keeps_finished_frames_and_the_current_one(tmp_path, content, style, fast, monkeypatch):
    import tifffile

    frames = np.stack([content, np.roll(content, 2, axis=1), np.roll(content, 4, axis=1)])
    src, style_file, out = tmp_path / "in.tif", tmp_path / "s.png", tmp_path / "out.tif"
    tifffile.imwrite(src, frames)
    Image.fromarray(style).save(style_file)
    # frame 0: 6 evaluations, frame 1: 3 (frame_steps); Ctrl-C in frame 1's second
    InterruptAt(monkeypatch, at=8)
    args = ["stylize-stack", str(src), str(style_file), "-o", str(out), *_flags(fast, steps=6), "--frame-steps", "3"]
    code = main([*args, "--quiet"])
    assert code == 130
    assert tifffile.imread(out).shape == (23, 32, 3)  # one finished frame
    partial = partial_frame_path(out, 1)
    assert partial == tmp_path / "out-frame-00001-partial.png" and np.asarray(Image.open(partial)).shape == (23, 32, 3)


def test_stack_api_hands_back_the_unfinished_frame(content, style, fast):
    frames = np.stack([content, np.roll(content, 2, axis=1)])
    run = napari_nst.iter_stylize_stack(frames, style, **{**fast, "steps": 4, "frame_steps": 3})
    for rec in run:
        if rec.frame == 1 and rec.step == 2:
            break
    run.close()
    kept = run.last()
    assert (kept.frame, kept.frames, kept.step, kept.total) == (1, 2, 2, 3)
    between = napari_nst.iter_stylize_stack(frames, style, **{**fast, "steps": 4, "frame_steps": 3})
    for rec in between:
        if rec.step == rec.total:  # frame 0 finished (its record has its pastiche): nothing unfinished
            break
    between.close()
    assert between.last() is None


# --------------------------------------------------------------------------- batches


def test_batch_marks_the_item_in_progress_interrupted_and_resume_continues_it(
    tmp_path, content, style, fast, monkeypatch
):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.roll(content, k, axis=0)).save(folder / f"c{k}.png")
    out = tmp_path / "out"
    opts = {**fast, "steps": 5}
    InterruptAt(monkeypatch, at=8)  # item 0: 5 evaluations; item 1 stopped in its third
    with pytest.raises(KeyboardInterrupt):
        napari_nst.batch(folder, style, out, workers=0, **opts)
    items = json.loads((out / "batch.json").read_text())["items"]
    assert [e["status"] for e in items] == ["done", "interrupted", "pending"]
    assert (items[1]["step"], items[1]["total"]) == (2, 5) and "interrupted at step 2/5" in items[1]["error"]
    assert np.asarray(Image.open(out / "c1.png")).shape == (23, 32, 3)
    assert json.loads((out / "c1.png.nst.json").read_text())["step"] == 2
    counted = InterruptAt(monkeypatch, at=0)
    results = napari_nst.batch(folder, style, out, workers=0, resume=True, **opts)
    assert [r.status for r in results] == ["done"] * 3 and [r.skipped for r in results] == [True, False, False]
    assert counted.calls == (5 - 2) + 5  # item 1 from its step 2, item 2 whole
    assert not list(out.glob("*.nst*")), "finished items leave no resume record"


# --------------------------------------------------------------------------- the engine process (widget)


def test_engine_process_hands_back_the_pastiche_when_stopped(content, style, fast):
    from napari_nst.core.process.client import EngineProcess

    proc = EngineProcess(content, style, **{**fast, "steps": 1000, "preview_every": 1000})
    seen = 0
    for _ in proc:
        seen += 1
        if seen == 2:
            proc.cancel()
    kept = proc.last()
    assert kept is not None and kept.step >= 2 and kept.total == 1000 and kept.image.shape == (23, 32, 3)


# --------------------------------------------------------------------------- messages and flags


@pytest.mark.parametrize(
    "message, flags",
    [
        ("use device='auto' or device='cpu'", "use --device auto or --device cpu"),
        ("give the label image too (regions=...)", "give the label image too (--regions LABELS_FILE)"),
        ("use size=300 or less, or precision='bfloat16'", "use --size 300 or less, or --precision bfloat16"),
        ("lower style_weight/content_weight or use", "lower --style-weight/--content-weight or use"),
        (
            "increase size (now 20) or use fewer scales (now 3)",
            "increase --size (now 20) or use fewer --scales (now 3)",
        ),
        (
            "steps must be between 1 and 10, got 0: raise steps",
            "--steps must be between 1 and 10, got 0: raise --steps",
        ),
        (
            "tile_size=96: stacks are not tiled yet; leave tile_size empty",
            "--tile-size 96: stacks are not tiled yet; leave out --tile-size",
        ),
        ("the size of the image; a style in steps", "the size of the image; a style in steps"),
        ("pass model='vgg16'", "pass --model vgg16"),
    ],
)
def test_messages_name_flags_on_the_command_line(message, flags):
    assert as_flags(message) == flags


def test_stack_only_flags_only_on_stylize_stack(capsys):
    for command, shown in (("stylize", False), ("batch", False), ("stylize-stack", True)):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert ("--temporal-weight" in text) is shown and ("--frame-steps" in text) is shown


def test_batch_style_takes_one(capsys):
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    text = capsys.readouterr().out
    assert "--style STYLE " in text and "STYLE [STYLE ...]" not in text.split("--style", 1)[1].split("\n")[0]


def test_size_error_names_the_network_of_the_weights_file(files, tmp_path, fast, capsys):
    cp, sp = files
    code = main(
        ["stylize", str(cp), str(sp), "-o", str(tmp_path / "o.png"), "--size", "20"] + ["--weights", fast["weights"]]
    )
    err = capsys.readouterr().err
    assert code == 1 and "vgg16 up to relu5_1 needs at least 16 px" in err and "increase --size (now 20)" in err


def test_batch_without_distributed_says_the_note_once(monkeypatch, tmp_path, content, style, fast, capsys):
    import warnings

    monkeypatch.setitem(sys.modules, "distributed", None)
    cp, sp = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(content).save(cp)
    Image.fromarray(style).save(sp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["batch", str(cp), "--style", str(sp), "-o", str(tmp_path / "out"), *_flags(fast, steps=2)])
    err = capsys.readouterr().err
    assert code == 0 and err.count("dask.distributed is not installed") == 1
    assert not [w for w in caught if "distributed" in str(w.message)]


def test_partial_frame_paths_sit_beside_the_output(tmp_path):
    assert partial_frame_path(tmp_path / "out.tif", 3) == tmp_path / "out-frame-00003-partial.png"
    assert partial_frame_path(tmp_path / "frames", 0) == tmp_path / "frames-frame-00000-partial.png"
    assert partial_frame_path(tmp_path / "clip.mp4", 12) == tmp_path / "clip-frame-00012-partial.png"


def test_resume_record_round_trips(tmp_path):
    from napari_nst.core import resume

    image = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    gray = np.repeat(image[..., :1], 3, axis=-1)
    p = Pastiche(image, step=3, total=9, losses={"total": 1.5}, shape=(5, 7), size=7, settings={"a": [1]}, state=gray)
    resume.save(tmp_path / "o.png", p)
    back = resume.load(tmp_path / "o.png")
    np.testing.assert_array_equal(back.image, image)  # full precision, not the PNG's 8 bits
    np.testing.assert_array_equal(back.state, gray)
    assert (back.step, back.total, back.losses, back.settings) == (3, 9, {"total": 1.5}, {"a": [1]})
    resume.save(tmp_path / "o.png", Pastiche(image, step=4, total=9, shape=(5, 7)))
    assert [q.name for q in tmp_path.glob("o.png.nst-*.npz")] == ["o.png.nst-00000004.npz"]
    resume.clear(tmp_path / "o.png")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["o.png"]
    with pytest.raises(OptionError, match="no record of an interrupted run"):
        resume.load(tmp_path / "o.png")
    Path(tmp_path / "o.png.nst.json").write_text("{")
    with pytest.raises(OptionError, match="unreadable"):
        resume.load(tmp_path / "o.png")


def test_a_resumed_run_is_estimated_from_where_it_starts():
    from napari_nst.core.progress import RunEstimate
    from napari_nst.core.records import Progress

    est = RunEstimate(announce_over=10.0)
    # the resumed run's first record (step 51: setup and one evaluation), then one second per evaluation
    for step, elapsed in ((51, 2.0), (52, 3.0), (53, 4.0)):
        est.add(Progress(step=step, total=100, losses={}, image=None, shape=(1000, 1000), elapsed=elapsed))
    assert est.remaining_seconds() == pytest.approx(47.0)


def test_resume_with_sizes_left_to_another_device_says_which_to_give():
    from napari_nst.core.optim.engine import resume_point

    saved = Pastiche(np.zeros((192, 256, 3), np.float32), step=40, total=300, shape=(192, 256), size=512)
    with pytest.raises(
        OptionError, match=r"300 evaluations at 512 px, this one 100 at 256 px; give size=512 and steps=300"
    ):
        resume_point(saved, [(192, 256)], [100])
    assert as_flags("give size=512 and steps=300 as") == "give --size 512 and --steps 300 as"
    with pytest.raises(OptionError, match=r"step 40 is made at level 1 of 2 \(96x128 px\)"):
        resume_point(dataclasses.replace(saved, size=256), [(96, 128), (192, 256)], [220, 80])  # other levels
    at_level_2 = Pastiche(np.zeros((192, 256, 3), np.float32), 230, 300, level=2, levels=2, shape=(192, 256), size=256)
    assert resume_point(at_level_2, [(96, 128), (192, 256)], [220, 80]) == (2, 10, False)


def test_resume_in_luminance_mode_starts_from_the_network_image(content, style, fast):
    """The pastiche handed back has the content's colours (its luminance with the content's chroma,
    clamped to [0, 1]); its ``state`` is the image the network evaluated, which the resumed run
    starts from: the same objective value at the saved step."""
    opts = {**fast, "steps": 6, "preserve_color": "luminance"}
    run = iter_stylize(content, style, **opts)
    for rec in run:
        if rec.step == 3:
            break
    run.close()
    stopped = run.last()
    assert stopped.state is not None and not np.array_equal(stopped.state, stopped.image)
    resumed = list(iter_stylize(content, style, resume=stopped, **opts))
    assert [r.step for r in resumed] == [4, 5, 6]
    assert resumed[0].losses["total"] == pytest.approx(stopped.losses["total"], rel=1e-4)
