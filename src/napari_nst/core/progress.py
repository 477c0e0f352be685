"""How long a run will take and how its progress reads: the one estimate, the one time formatter
and the console's progress bar (no torch here: the napari process uses the estimate too).

The cost model is one number measured on the device doing the work: seconds per objective
evaluation per megapixel of working image. An evaluation's cost grows with the pixels (the
network's forward and backward dominate), so one measured rate covers every level of a
coarse-to-fine run (each level twice the size of the one before, its evaluations split as the
engine splits them: ``options.split_steps``), every frame of a stack, and any later run at another
size on the same device. The rate is measured on the engine's own clock (``Progress.elapsed``)
between records, smoothed; an evaluation that starts a level (or a frame, or the run) also pays
for its targets (the network's passes over the content and style, a frame's optical flow), so the
time up to it is left out of the rate.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from napari_nst.core.options import split_steps

Shape = tuple[int, int]

#: Runs expected to take longer than this (seconds) get the up-front line (``RunEstimate.announcement``).
ANNOUNCE_OVER_S = 30.0

#: weight of the previous rate when a new interval is measured (exponential moving average)
RATE_SMOOTHING = 0.7


def megapixels(shape: Shape) -> float:
    return max(1, int(shape[0])) * max(1, int(shape[1])) / 1e6


def seconds_per_megapixel(seconds_per_eval: float, shape: Shape) -> float:
    """The cost model's number: ``seconds_per_eval`` measured at ``shape``, per megapixel."""
    return float(seconds_per_eval) / megapixels(shape)


def estimate_seconds(
    shape: Shape | Sequence[Shape],
    steps: int | Sequence[int],
    seconds_per_eval: float,
    measured_shape: Shape | None = None,
) -> float:
    """Seconds for ``steps`` evaluations at ``shape``, given ``seconds_per_eval`` measured at
    ``measured_shape`` (default: ``shape``; the rate scales with the pixels).

    For a coarse-to-fine run pass the levels' shapes and their evaluation counts as two lists.
    """
    shapes: list[Shape] = [_shape(shape)] if isinstance(shape[0], numbers.Integral) else [_shape(s) for s in shape]
    counts = [int(steps)] if isinstance(steps, numbers.Integral) else [int(n) for n in steps]  # type: ignore[union-attr]
    if len(shapes) != len(counts):
        raise ValueError(f"{len(shapes)} shapes but {len(counts)} evaluation counts; give one count per shape")
    ref = measured_shape if measured_shape is not None else shapes[-1]
    rate = seconds_per_megapixel(seconds_per_eval, ref)
    return float(sum(n * rate * megapixels(s) for s, n in zip(shapes, counts, strict=True)))


def _shape(s: Any) -> Shape:
    h, w = s
    return int(h), int(w)


# --------------------------------------------------------------------------- words


def format_seconds(seconds: float) -> str:
    """``"45 s"``, ``"3 min"``, ``"1 h 20 min"`` (``"?"`` for an unknown or negative time).

    Rounded as an estimate reads: seconds up to 90 s, minutes up to 90 min."""
    s = float(seconds)
    if not math.isfinite(s) or s < 0:
        return "?"
    if s < 89.5:
        return f"{round(s)} s"
    if s < 89.5 * 60:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"


def format_loss(value: float) -> str:
    """A loss as the status line and the bar show it (three significant digits)."""
    return f"{value:.3g}"


# --------------------------------------------------------------------------- the estimate


def _level_counts(total: int, levels: int) -> list[int]:
    """The record's evaluations per level, as the engine split them (one level if they cannot be)."""
    return split_steps(total, levels) if 1 < levels <= total else [max(0, total)]


def work_left(rec: Any) -> float:
    """Megapixel-evaluations the run has left after record ``rec`` (a :class:`~napari_nst.core.records.Progress`):
    the rest of its frame, level by level (each level four times the pixels of the one before), and
    for a stack the evaluations of the frames still to make, each costing its frame's average."""
    counts = _level_counts(int(rec.total), int(rec.levels))
    level = min(max(1, int(rec.level)), len(counts))
    cost = [megapixels(rec.shape) * 4.0 ** (k - level) for k in range(1, len(counts) + 1)]  # per evaluation
    done_here = int(rec.step) - sum(counts[: level - 1])
    left = max(0, counts[level - 1] - done_here) * cost[level - 1]
    left += sum(n * c for n, c in zip(counts[level:], cost[level:], strict=True))
    if int(rec.frames) > 1 and rec.stack_total:
        later = max(0, int(rec.stack_total) - int(rec.stack_step) - (int(rec.total) - int(rec.step)))
        average = sum(n * c for n, c in zip(counts, cost, strict=True)) / max(1, sum(counts))
        left += later * average
    return left


def _starts_level(rec: Any) -> bool:
    """Whether ``rec``'s evaluation is the first of its level (it paid for the level's targets too)."""
    counts = _level_counts(int(rec.total), int(rec.levels))
    level = min(max(1, int(rec.level)), len(counts))
    return int(rec.step) - sum(counts[: level - 1]) == 1


def _evaluations(rec: Any) -> int:
    """Evaluations the run has done by ``rec`` (a stack's over all its frames)."""
    return int(rec.stack_step) if int(rec.frames) > 1 and rec.stack_total else int(rec.step)


class RunEstimate:
    """How long a run has left, from its own records: feed it each one (:meth:`add`).

    Covers single images, coarse-to-fine levels and stacks (frame by frame here, or one record per
    frame from a cluster). ``rate`` is seconds per evaluation per megapixel; None until measured
    over an interval that is not a level's (or frame's, or the run's) first evaluation alone.
    A caller without records (a batch's images) uses :meth:`observe` with its own units of work.
    """

    def __init__(self, announce_over: float = ANNOUNCE_OVER_S) -> None:
        self.announce_over = float(announce_over)
        self.rate: float | None = None
        self.device = "cpu"
        self.elapsed = 0.0
        self.left: float | None = None  # units of work left after the last record
        self.unit_cost = 1.0  # the work of one evaluation at the last record's shape
        self._evals: int | None = None
        self._announced = False

    def add(self, rec: Any) -> None:
        """A progress record: the run's time so far, what it has left, on which device."""
        evals = _evaluations(rec)
        alone = self._evals is not None and evals - self._evals == 1 and _starts_level(rec)
        self._evals = evals
        self.device = str(rec.device).split(":")[0]
        self.unit_cost = megapixels(rec.shape)
        self.observe(float(rec.elapsed), work_left(rec), measure=not alone)

    def observe(self, elapsed: float, left: float, measure: bool = True) -> None:
        """``left`` units of work remain after ``elapsed`` seconds; ``measure``: the time since the
        last observation counts towards the rate (False: it included one-off work)."""
        if measure and self.left is not None and self.left > left and elapsed >= self.elapsed:
            r = (elapsed - self.elapsed) / (self.left - left)
            self.rate = r if self.rate is None else RATE_SMOOTHING * self.rate + (1 - RATE_SMOOTHING) * r
        self.elapsed, self.left = float(elapsed), float(left)

    def seconds_per_step(self) -> float | None:
        """Seconds one evaluation takes at the last record's shape (None before a rate is known)."""
        return None if self.rate is None else self.rate * self.unit_cost

    def remaining_seconds(self) -> float | None:
        """Seconds the run has left (None before a rate is known)."""
        if self.rate is None or self.left is None:
            return None
        return self.rate * self.left

    def total_seconds(self) -> float | None:
        """Expected wall time of the whole run (None before a rate is known)."""
        left = self.remaining_seconds()
        return None if left is None else self.elapsed + left

    def announcement(self) -> str | None:
        """The one up-front line, e.g. ``"about 3 min on cpu (estimated after the first
        evaluations)"``: returned once, as soon as there is a rate, and only if the run will take
        longer than ``announce_over`` seconds."""
        total = self.total_seconds()
        if self._announced or total is None:
            return None
        self._announced = True
        if total <= self.announce_over:
            return None
        return f"about {format_seconds(total)} on {self.device} (estimated after the first evaluations)"


# --------------------------------------------------------------------------- the console's bar


class ConsoleProgress:
    """The progress bar on the console (tqdm on ``file``, stderr by default) of ``stylize``,
    ``stylize-stack`` and ``batch``: what is done of how much, the time so far, the time left
    (:class:`RunEstimate`) and the losses; before that, for a run that will take longer than
    ``announce_over`` seconds, the one up-front line.

    Feed it progress records (:meth:`update`), or for work counted in other units (a batch's
    images) :meth:`advance`. Lines printed while it is shown go above it: :meth:`write`, or
    :meth:`printing` around another's prints.
    """

    def __init__(self, file: Any = None, announce_over: float | None = None, unit: str = "eval") -> None:
        self.file = file if file is not None else sys.stderr
        self.unit = unit
        self.estimate = RunEstimate(ANNOUNCE_OVER_S if announce_over is None else announce_over)
        self.bar: Any = None

    def update(self, rec: Any) -> None:
        """A progress record of a run (a stack's: its bar counts the whole stack's evaluations)."""
        self.estimate.add(rec)
        line = self.estimate.announcement()
        if line:
            self.write(line)
        stack = int(rec.frames) > 1 and bool(rec.stack_total)
        words = [f"frame {rec.frame + 1}/{rec.frames}"] if int(rec.frames) > 1 else []
        words += [f"{k}={format_loss(v)}" for k, v in rec.losses.items()]
        self._show(_evaluations(rec), int(rec.stack_total) if stack else int(rec.total), float(rec.elapsed), words)

    def advance(self, done: int, total: int, elapsed: float) -> None:
        """``done`` of ``total`` units finished after ``elapsed`` seconds (the rate is measured from
        the first one on: the time up to it holds the start-up)."""
        self.estimate.observe(float(elapsed), float(total - done), measure=done > 1)
        self._show(done, total, float(elapsed), [])

    def _show(self, n: int, total: int, elapsed: float, words: list[str]) -> None:
        per = self.estimate.seconds_per_step()
        left = self.estimate.remaining_seconds()
        head = [format_seconds(elapsed)]
        if left is not None and n < total:
            head.append(f"about {format_seconds(left)} left")
        if per is not None:
            head.append(f"{per:.2g} s/{self.unit}")
        text = ", ".join(head + words).replace("{", "{{").replace("}", "}}")
        form = "{l_bar}{bar}| {n_fmt}/{total_fmt} [" + text + "]"
        if self.bar is None:
            from tqdm import tqdm

            start = n if n < total else 0
            self.bar = tqdm(
                total=total, initial=start, unit=self.unit, dynamic_ncols=True, file=self.file, bar_format=form
            )
        self.bar.bar_format = form
        if n < total:
            self.bar.update(n - self.bar.n)
        else:  # the end is drawn by close() alone (else twice in a log)
            self.bar.n = n

    def write(self, line: str) -> None:
        """A line above the bar (or just the line before the bar is shown)."""
        if self.bar is None:
            print(line, file=self.file, flush=True)
        else:
            self.bar.write(line, file=self.file)

    @contextmanager
    def printing(self) -> Iterator[None]:
        """Around prints of others to the bar's stream: the bar steps aside and comes back below."""
        if self.bar is None:
            yield
            return
        from tqdm import tqdm

        with tqdm.external_write_mode(file=self.file):
            yield

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextmanager
def console_progress(show: bool | None = None, unit: str = "eval") -> Iterator[ConsoleProgress | None]:
    """A :class:`ConsoleProgress` on stderr, closed afterwards; None when ``show`` is False.
    ``show`` None: when stderr is a terminal (not in a log file or a pipe)."""
    if show is None:
        show = is_terminal(sys.stderr)
    if not show:
        yield None
        return
    bar = ConsoleProgress(sys.stderr, unit=unit)
    try:
        yield bar
    finally:
        bar.close()
