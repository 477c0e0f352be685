"""What the user reads about a run: progress and ETA, the final line, errors as messages (no Qt)."""

from __future__ import annotations

import math
import time

from napari_nst.core.errors import DeviceMemoryError, EngineProcessError, InstallError, NonFiniteLossError, WeightsError
from napari_nst.core.records import Progress

#: weight of the previous estimate when smoothing the seconds per step (exponential moving average)
RATE_SMOOTHING = 0.7


def fmt_loss(v: float) -> str:
    return f"{v:.3g}"


def fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class RateTracker:
    """Seconds per evaluation at the current level, smoothed, and the time left from it."""

    def __init__(self, final_shape: tuple[int, int]) -> None:
        self.final_shape = final_shape
        self.rate: float | None = None
        self._level = 0
        self._step = 0
        self._time = 0.0

    def add(self, rec: Progress, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        step = rec.stack_step or rec.step  # a stack counts its evaluations over all frames
        if rec.level != self._level or self._step == 0:
            self._level, self._step, self._time = rec.level, step, now  # a new level: restart
            return
        if step > self._step:
            r = (now - self._time) / (step - self._step)
            smooth = self.rate is not None and step - self._step >= 2
            self.rate = RATE_SMOOTHING * self.rate + (1 - RATE_SMOOTHING) * r if smooth else r  # type: ignore[operator]
            self._step, self._time = step, now

    def eta(self, rec: Progress) -> float:
        """Seconds left (NaN before a rate is known); later levels are larger: scaled by pixels."""
        if self.rate is None:
            return float("nan")
        if rec.stack_total:  # the whole stack
            return (rec.stack_total - rec.stack_step) * self.rate
        left = (rec.total - rec.step) * self.rate
        if rec.level < rec.levels and rec.shape[0]:
            grow = (self.final_shape[0] * self.final_shape[1]) / max(1, rec.shape[0] * rec.shape[1])
            return left * grow  # an upper estimate
        return left


def progress_text(rec: Progress, rate: RateTracker) -> str:
    losses = "  ".join(f"{k} {fmt_loss(v)}" for k, v in rec.losses.items())
    level = f" · level {rec.level}/{rec.levels} ({rec.shape[1]}×{rec.shape[0]})" if rec.levels > 1 else ""
    per_step = f" · {rate.rate:.2g} s/step" if rate.rate else ""
    eta = rate.eta(rec)
    left = f" · about {fmt_time(eta)} left" if math.isfinite(eta) else ""
    frame = f"Frame {rec.frame + 1} of {rec.frames} · " if rec.frames > 1 else ""
    tiles = f" in tiles of {rec.tile_size} px" if getattr(rec, "tile_size", 0) else ""  # core/objective/tiles.py
    return f"{frame}Step {rec.step}/{rec.total}{level} on {rec.device}{tiles}{per_step}{left}\n{losses}"


def done_text(rec: Progress) -> str:
    w = ", ".join(f"{k} {fmt_loss(v)}" for k, v in rec.weights.items())
    if rec.frames > 1:
        return (
            f"Done: {rec.frames} frames, {rec.stack_step} steps in {fmt_time(rec.elapsed)} on {rec.device}.\n"
            f"Weights used: {w}"
        )
    return f"Done: {rec.step} steps in {fmt_time(rec.elapsed)} on {rec.device}.\nWeights used: {w}"


def stopped_text(rec: Progress | None, reason: str | None, kept: bool) -> str:
    why = f" ({reason})" if reason else ""
    step = f" at step {rec.step}/{rec.total}" if rec is not None else ""
    if rec is not None and rec.frames > 1:
        done = rec.frame + (rec.step == rec.total)
        step = f" at frame {rec.frame + 1} of {rec.frames} ({done} finished; Continue resumes at the next)"
    return f"Stopped{step}{why}" + ("; the pastiche so far is kept" if kept else "") + "."


def failure_text(exc: BaseException) -> str:
    """A failed run's exception as a message that says what to do."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, InstallError):  # names the package to install
        return msg
    if isinstance(exc, WeightsError):
        return f"Network weights: {msg}"
    if isinstance(exc, DeviceMemoryError):
        fit = exc.suggested_size
        return f"Out of memory: {msg}" + (
            f" Set Size to {fit} (or less) and press Run again, or choose Device cpu." if fit else ""
        )
    if isinstance(exc, MemoryError):
        return f"Out of memory: {msg}. Lower Size and press Run again."
    if isinstance(exc, (NonFiniteLossError, ValueError)):
        return msg
    if isinstance(exc, EngineProcessError):
        return f"The style-transfer process failed: {msg}"
    return f"Style transfer failed ({type(exc).__name__}): {msg}"
