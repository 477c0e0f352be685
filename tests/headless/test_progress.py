"""The run-time estimate (core/progress.py), the time formatter, the console's progress bar, and
the widget's status line that uses them."""

from __future__ import annotations

import io

import pytest

import napari_nst
from napari_nst._run.status import done_text, progress_text
from napari_nst.core import progress as estimate
from napari_nst.core.options import split_steps
from napari_nst.core.progress import ConsoleProgress, RunEstimate, estimate_seconds, format_seconds
from napari_nst.core.records import Progress


def test_estimate_scales_with_pixels_and_levels():
    assert estimate_seconds((100, 100), 50, 2.0) == pytest.approx(100.0)
    # measured at a quarter of the pixels: each evaluation at (200, 200) costs 4x
    assert estimate_seconds((200, 200), 10, 1.0, measured_shape=(100, 100)) == pytest.approx(40.0)
    # two levels, rate measured at the finest
    assert estimate_seconds([(50, 50), (100, 100)], [20, 10], 1.0) == pytest.approx(20 * 0.25 + 10)
    with pytest.raises(ValueError, match="one count per shape"):
        estimate_seconds([(50, 50), (100, 100)], [20], 1.0)


def test_format_seconds():
    got = [format_seconds(s) for s in (0.4, 45, 89.4, 150, 80 * 60, 2 * 3600 + 20 * 60, 3 * 3600 - 10)]
    assert got == ["0 s", "45 s", "89 s", "2 min", "80 min", "2 h 20 min", "3 h 00 min"]
    assert format_seconds(float("nan")) == format_seconds(-1) == "?"


def _rec(step, total=100, elapsed=0.0, shape=(100, 100), level=1, levels=1, **kw):
    return Progress(
        step=step,
        total=total,
        losses={"content": 0.5, "total": 3.25},
        image=None,
        level=level,
        levels=levels,
        shape=shape,
        elapsed=elapsed,
        device=kw.pop("device", "cpu"),
        **kw,
    )


def _single(steps, first, per_eval, shape=(100, 100), device="cpu"):
    """Records of a single-scale run whose first evaluation takes ``first`` s, the others ``per_eval``."""
    return [_rec(k, steps, first + (k - 1) * per_eval, shape, device=device) for k in range(1, steps + 1)]


def test_the_estimate_skips_the_first_evaluation_and_announces_once():
    e = RunEstimate()
    recs = _single(100, 5.0, 0.5, device="cuda:0")  # the first pays for the targets: 5 s
    e.add(recs[0])
    assert e.remaining_seconds() is None and e.announcement() is None  # waits for the second
    e.add(recs[1])  # then 0.5 s per evaluation
    assert e.seconds_per_step() == pytest.approx(0.5)
    assert e.remaining_seconds() == pytest.approx(98 * 0.5)
    assert e.total_seconds() == pytest.approx(5.5 + 98 * 0.5)
    assert e.announcement() == "about 54 s on cuda (estimated after the first evaluations)"
    assert e.announcement() is None
    short = RunEstimate()
    for rec in _single(10, 1.0, 1.0):
        short.add(rec)
        assert short.announcement() is None  # 10 s: not worth a line


def test_the_rate_follows_a_change_smoothly():
    e = RunEstimate()
    for rec in _single(100, 1.0, 1.0)[:10]:
        e.add(rec)
    assert e.seconds_per_step() == pytest.approx(1.0)
    e.add(_rec(11, 100, 12.0))  # one evaluation of 2 s: part of the way
    assert 1.0 < e.seconds_per_step() < 2.0
    for k in range(12, 40):
        e.add(_rec(k, 100, 12.0 + (k - 11) * 2.0))
    assert e.seconds_per_step() == pytest.approx(2.0, rel=1e-3)
    assert e.remaining_seconds() == pytest.approx(61 * 2.0, rel=1e-3)


def test_the_estimate_over_levels():
    counts = split_steps(30, 2)  # [22, 8]: the engine's split
    e = RunEstimate()
    e.add(_rec(1, 30, 1.0, (50, 50), 1, 2))
    e.add(_rec(2, 30, 1.5, (50, 50), 1, 2))  # 0.5 s at 50x50, so 2 s at 100x100
    assert e.remaining_seconds() == pytest.approx((counts[0] - 2) * 0.5 + counts[1] * 2.0)
    t = 1.5 + (counts[0] - 2) * 0.5
    e.add(_rec(counts[0], 30, t, (50, 50), 1, 2))
    assert e.remaining_seconds() == pytest.approx(counts[1] * 2.0)
    # the next level's first evaluation also computes its targets: left out of the rate
    e.add(_rec(counts[0] + 1, 30, t + 30.0, (100, 100), 2, 2))
    assert e.seconds_per_step() == pytest.approx(2.0)
    assert e.remaining_seconds() == pytest.approx((counts[1] - 1) * 2.0)


def _stack_rec(frame, step, total, stack_step, stack_total, elapsed, frames=3):
    return _rec(step, total, elapsed, frame=frame, frames=frames, stack_step=stack_step, stack_total=stack_total)


def test_the_estimate_of_a_stack_counts_the_frames_to_come():
    # frame 0: 10 evaluations, frames 1 and 2: 4 each; 1 s per evaluation
    e = RunEstimate()
    e.add(_stack_rec(0, 1, 10, 1, 18, 3.0))
    e.add(_stack_rec(0, 2, 10, 2, 18, 4.0))
    assert e.remaining_seconds() == pytest.approx(16.0)
    e.add(_stack_rec(0, 10, 10, 10, 18, 12.0))
    e.add(_stack_rec(1, 1, 4, 11, 18, 20.0))  # a frame's first evaluation (optical flow): left out
    assert e.seconds_per_step() == pytest.approx(1.0)
    assert e.remaining_seconds() == pytest.approx(7.0)


def test_the_estimate_of_a_stack_on_a_cluster():
    # one record per finished frame (its last), frames of 4 evaluations of 1 s each
    e = RunEstimate()
    e.add(_stack_rec(0, 4, 4, 4, 12, 6.0))
    e.add(_stack_rec(1, 4, 4, 8, 12, 10.0))
    assert e.remaining_seconds() == pytest.approx(4.0)


def test_console_progress_prints_the_estimate_first_then_the_bar():
    out = io.StringIO()
    with ConsoleProgress(out) as bar:
        for rec in _single(40, 10.0, 10.0, (64, 64)):
            bar.update(rec)
    text = out.getvalue()
    assert "about 7 min on cpu (estimated after the first evaluations)" in text
    assert text.index("about 7 min") < text.index("40/40")
    assert text.count("40/40") == 1 and "total=3.25" in text  # the end drawn once
    assert text.count("(estimated") == 1 and "[7 min, 10 s/eval, content=0.5" in text


def test_console_progress_of_a_stack_counts_its_evaluations():
    out = io.StringIO()
    with ConsoleProgress(out) as bar:
        for k, (frame, step, total) in enumerate([(0, 1, 2), (0, 2, 2), (1, 1, 2), (1, 2, 2)], start=1):
            bar.update(_stack_rec(frame, step, total, k, 4, float(k), frames=2))
    text = out.getvalue()
    assert "4/4" in text and "frame 2/2" in text and "content=0.5" in text


def test_console_progress_of_a_batch_counts_its_images():
    out = io.StringIO()
    with ConsoleProgress(out, unit="image") as bar:
        bar.advance(0, 3, 0.0)
        for done in (1, 2, 3):
            with bar.printing():
                print(f"done   image {done}", file=out)
            bar.advance(done, 3, 10.0 * done)
    text = out.getvalue()
    assert "3/3" in text and "done   image 3" in text and "10 s/image" in text


def test_the_widgets_status_line_uses_the_estimate():
    e = RunEstimate()
    recs = _single(100, 5.0, 0.5)
    e.add(recs[0])
    assert "left" not in progress_text(recs[0], e) and "s/step" not in progress_text(recs[0], e)
    e.add(recs[1])
    text = progress_text(recs[1], e)
    assert text.startswith("Step 2/100 on cpu") and "0.5 s/step" in text and "about 49 s left" in text
    assert "content 0.5" in text
    end = _rec(100, 100, 125.0, weights={"content": 1.0})
    assert done_text(end).startswith("Done: 100 steps in 2 min on cpu.")


def test_stylize_progress_bar_on_request(content, style, fast, capsys):
    napari_nst.stylize(content, style, **{**fast, "steps": 3}, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "eval" in err and "total=" in err


def test_stylize_is_quiet_when_stderr_is_not_a_terminal(content, style, fast, capsys):
    napari_nst.stylize(content, style, **{**fast, "steps": 2})  # pytest's captured stderr is no terminal
    napari_nst.stylize(content, style, **{**fast, "steps": 2}, progress=False)
    assert capsys.readouterr().err == ""


def test_stylize_announces_a_long_run(content, style, fast, capsys, monkeypatch):
    monkeypatch.setattr(estimate, "ANNOUNCE_OVER_S", 0.0)  # every run is "long"
    napari_nst.stylize(content, style, **{**fast, "steps": 3}, progress=True)
    err = capsys.readouterr().err
    assert err.count("(estimated after the first evaluations)") == 1 and " on cpu " in err
