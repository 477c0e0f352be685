"""What the user reads about a run: progress and ETA, the final line, errors as messages (no Qt)."""

from __future__ import annotations

from napari_nst.core.errors import DeviceMemoryError, EngineProcessError, InstallError, NonFiniteLossError, WeightsError
from napari_nst.core.progress import RunEstimate, format_loss, format_seconds
from napari_nst.core.records import Progress


def progress_text(rec: Progress, estimate: RunEstimate) -> str:
    """The status line of a running run; ``estimate`` has been fed ``rec`` (RunState.add)."""
    losses = "  ".join(f"{k} {format_loss(v)}" for k, v in rec.losses.items())
    level = f" · level {rec.level}/{rec.levels} ({rec.shape[1]}×{rec.shape[0]})" if rec.levels > 1 else ""
    per = estimate.seconds_per_step()
    per_step = f" · {per:.2g} s/step" if per else ""
    eta = estimate.remaining_seconds()
    left = f" · about {format_seconds(eta)} left" if eta is not None else ""
    frame = f"Frame {rec.frame + 1} of {rec.frames} · " if rec.frames > 1 else ""
    tiles = f" in tiles of {rec.tile_size} px" if getattr(rec, "tile_size", 0) else ""  # core/objective/tiles.py
    return f"{frame}Step {rec.step}/{rec.total}{level} on {rec.device}{tiles}{per_step}{left}\n{losses}"


def done_text(rec: Progress) -> str:
    w = ", ".join(f"{k} {format_loss(v)}" for k, v in rec.weights.items())
    if rec.frames > 1:
        return (
            f"Done: {rec.frames} frames, {rec.stack_step} steps in {format_seconds(rec.elapsed)} on {rec.device}.\n"
            f"Weights used: {w}"
        )
    return f"Done: {rec.step} steps in {format_seconds(rec.elapsed)} on {rec.device}.\nWeights used: {w}"


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
