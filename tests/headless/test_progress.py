"""The run-time estimate (core/progress.py) and stylize's progress bar."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

import napari_nst
from napari_nst.core import progress as estimate
from napari_nst.core.progress import ConsoleProgress, RunEstimate, estimate_seconds, format_seconds


def test_estimate_scales_with_pixels_and_levels():
    assert estimate_seconds((100, 100), 50, 2.0) == pytest.approx(100.0)
    # measured at a quarter of the pixels: each evaluation at (200, 200) costs 4x
    assert estimate_seconds((200, 200), 10, 1.0, measured_shape=(100, 100)) == pytest.approx(40.0)
    # two levels, rate measured at the finest
    assert estimate_seconds([(50, 50), (100, 100)], [20, 10], 1.0) == pytest.approx(20 * 0.25 + 10)
    with pytest.raises(ValueError, match="one count per shape"):
        estimate_seconds([(50, 50), (100, 100)], [20], 1.0)


def test_format_seconds():
    got = [format_seconds(s) for s in (0.4, 45, 150, 80 * 60, 2 * 3600 + 20 * 60)]
    assert got == ["0 s", "45 s", "2 min", "80 min", "2 h 20 min"]


def test_run_estimate_uses_the_second_evaluation_and_announces_once():
    e = RunEstimate([((100, 100), 100)], "cuda:0")
    assert e.total_seconds() is None and e.announcement() is None
    e.update(1, 5.0, (100, 100))  # the first pays for the targets: 5 s
    assert e.total_seconds() == pytest.approx(500.0) and e.announcement() is None  # waits for the second
    e.update(2, 5.5, (100, 100))  # then 0.5 s per evaluation
    assert e.total_seconds() == pytest.approx(5 + 99 * 0.5)
    assert e.remaining_seconds() == pytest.approx(98 * 0.5)
    assert e.announcement() == "about 54 s on cuda (estimated after the first evaluations)"
    assert e.announcement() is None
    short = RunEstimate([((100, 100), 10)])
    short.update(1, 1.0, (100, 100))
    short.update(2, 2.0, (100, 100))
    assert short.announcement() is None  # 10 s: not worth a line


def test_run_estimate_over_levels():
    e = RunEstimate(estimate.level_plan((50, 50), [20, 10]))
    assert e.plan == [((50, 50), 20), ((100, 100), 10)]
    e.update(1, 1.0, (50, 50))
    e.update(2, 1.5, (50, 50))  # 0.5 s at 50x50, so 2 s at 100x100
    assert e.remaining_seconds() == pytest.approx(18 * 0.5 + 10 * 2.0)


def _rec(step, total=40, elapsed=None, levels=1):
    return SimpleNamespace(
        step=step,
        total=total,
        elapsed=elapsed if elapsed is not None else 10.0 * step,
        shape=(64, 64),
        levels=levels,
        device="cpu",
        losses={"content": 0.5, "total": 3.25},
    )


def test_console_progress_prints_the_estimate_first_then_the_bar():
    out = io.StringIO()
    with ConsoleProgress(out) as bar:
        for k in range(1, 41):
            bar.update(_rec(k))
    text = out.getvalue()
    assert "about 7 min on cpu (estimated after the first evaluations)" in text
    assert text.index("about 7 min") < text.index("40/40")
    assert text.count("40/40") == 1 and "total=3.25" in text and text.count("about") == 1  # the end drawn once


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
