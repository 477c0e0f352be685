"""How long a run will take, estimated from its own first evaluations (no torch here: the napari
process may use it).

The cost model is one number measured on the device doing the work: seconds per objective
evaluation per megapixel of working image. An evaluation's cost grows with the pixels (the
network's forward and backward dominate), so one measured rate covers every level of a
coarse-to-fine run and any later run at another size on the same device. The first evaluation
also pays for the targets (the content's and style's forward passes) and one-off setup, so the
rate is taken from the time between the first and second evaluations once there is one, and
from the first evaluation alone (an overestimate) before that.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable, Sequence
from typing import Any

Shape = tuple[int, int]

#: Runs expected to take longer than this (seconds) get the up-front line (``RunEstimate.announcement``).
ANNOUNCE_OVER_S = 30.0


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


def format_seconds(seconds: float) -> str:
    """``"45 s"``, ``"3 min"``, ``"1 h 20 min"``."""
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    return f"{int(s // 3600)} h {round(s % 3600 / 60):02d} min"


class RunEstimate:
    """Feed it each progress record's ``step``, ``elapsed`` and ``shape``; it estimates the run.

    ``plan``: the levels' working shapes and evaluation counts, ``[(shape, count), ...]``
    (one entry for a single-scale run). A resumed run's records start after step 1: its first
    record stands for step 1's (setup included) and the estimates are of what is left of it.
    """

    def __init__(
        self, plan: Sequence[tuple[Shape, int]], device: str = "cpu", announce_over: float = ANNOUNCE_OVER_S
    ) -> None:
        self.plan = [(tuple(s), int(n)) for s, n in plan]
        self.device = str(device).split(":")[0]
        self.announce_over = float(announce_over)
        self.rate: float | None = None  # seconds per evaluation per megapixel
        self._first: float | None = None
        self._first_step = 1
        self._step, self._elapsed, self._evals_measured = 0, 0.0, 0
        self._announced = False

    def update(self, step: int, elapsed: float, shape: Shape) -> None:
        if step == 1 or self._first is None:
            self._first, self._first_step = elapsed, int(step)
            self.rate = seconds_per_megapixel(elapsed, shape)
            self._evals_measured = 1
        elif step == self._first_step + 1:
            self.rate = seconds_per_megapixel(max(elapsed - self._first, 1e-9), shape)
            self._evals_measured = 2
        self._step, self._elapsed = int(step), float(elapsed)

    def total_seconds(self) -> float | None:
        """Expected wall time of the whole run (None before the first evaluation)."""
        if self.rate is None or self._first is None:
            return None
        return self._first + self._seconds_after(self._first_step)

    def remaining_seconds(self) -> float | None:
        if self.rate is None:
            return None
        return self._seconds_after(self._step)

    def _seconds_after(self, done: int) -> float:
        assert self.rate is not None
        left, seconds = done, 0.0
        for shape, count in self.plan:
            todo = max(0, count - left)
            left = max(0, left - count)
            seconds += todo * self.rate * megapixels(_shape(shape))
        return seconds

    def announcement(self) -> str | None:
        """The one up-front line, e.g. ``"about 3 min on cpu (estimated after the first
        evaluations)"``: returned once, as soon as the estimate rests on two evaluations (or the
        run has only one), and only if the run will take longer than ``announce_over`` seconds."""
        if self._announced or self.rate is None:
            return None
        total_steps = sum(n for _, n in self.plan) - self._first_step + 1
        if self._evals_measured < min(2, total_steps):
            return None
        self._announced = True
        total = self.total_seconds()
        if total is None or total <= self.announce_over:
            return None
        return f"about {format_seconds(total)} on {self.device} (estimated after the first evaluations)"


def level_plan(first_shape: Shape, counts: Sequence[int]) -> list[tuple[Shape, int]]:
    """``[(shape, count), ...]`` of a run whose first (coarsest) level works at ``first_shape``;
    each level is twice the size of the one before (as ``Options.level_shapes``, up to rounding)."""
    h, w = first_shape
    return [((h * 2**k, w * 2**k), int(n)) for k, n in enumerate(counts)]


class ConsoleProgress:
    """A tqdm bar on ``file`` (stderr) for a run fed with its progress records: evaluations,
    losses and tqdm's ETA, and before that the one-line up-front estimate (long runs only).

    ``counts(total, levels)`` gives the evaluations per level (the engine's ``split_steps``);
    without it a multi-level run is estimated as if it were all at its first level's size.
    """

    def __init__(
        self,
        file: Any = None,
        counts: Callable[[int, int], Sequence[int]] | None = None,
        announce_over: float | None = None,
    ) -> None:
        self.file = file if file is not None else sys.stderr
        self.counts = counts
        self.announce_over = ANNOUNCE_OVER_S if announce_over is None else float(announce_over)
        self.bar: Any = None
        self.estimate: RunEstimate | None = None

    def update(self, rec: Any) -> None:
        if self.bar is None:
            from tqdm import tqdm

            n = list(self.counts(rec.total, rec.levels)) if self.counts and rec.levels > 1 else [rec.total]
            self.estimate = RunEstimate(level_plan(rec.shape, n), rec.device, self.announce_over)
            # a resumed run starts at its saved step: the bar (and its rate) from there
            self.bar = tqdm(total=rec.total, initial=rec.step - 1, unit="eval", dynamic_ncols=True, file=self.file)
        assert self.estimate is not None
        self.estimate.update(rec.step, rec.elapsed, rec.shape)
        line = self.estimate.announcement()
        if line:
            self.bar.write(line, file=self.file)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in rec.losses.items()}, refresh=False)
        if rec.step < rec.total:
            self.bar.update(rec.step - self.bar.n)
        else:  # the last evaluation is drawn by close() alone (else twice in a log)
            self.bar.n = rec.step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
